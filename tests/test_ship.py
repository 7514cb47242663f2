"""tcpsnap ship: a recording's finished files land in a real S3 server (moto on 127.0.0.1),
each once, checksummed, confirmed before anything local is deleted."""

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

import tcpsnap._host
from _recordings import record_at, v1_tables
from _s3 import BUCKET, CREDS, Moto, Relay
from _sockets import wait_for
from tcpsnap.cli import main
from tcpsnap.record.retention import Retention
from tcpsnap.record.safedir import SafeDir
from tcpsnap.ship import Shipper, Target, pending

DATE = "2026-11-18"   # WALL0 of the scripted recordings


@pytest.fixture(scope="module")
def moto():
    m = Moto()
    yield m
    m.stop()


@pytest.fixture
def s3(moto, monkeypatch):
    """A fresh versioned bucket (a second PUT of a key would leave a second version)."""
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    c = moto.client()
    for b in c.list_buckets().get("Buckets", []):
        for v in c.list_object_versions(Bucket=b["Name"]).get("Versions", []):
            c.delete_object(Bucket=b["Name"], Key=v["Key"], VersionId=v["VersionId"])
        for u in c.list_multipart_uploads(Bucket=b["Name"]).get("Uploads", []):
            c.abort_multipart_upload(Bucket=b["Name"], Key=u["Key"], UploadId=u["UploadId"])
        c.delete_bucket(Bucket=b["Name"])
    c.create_bucket(Bucket=BUCKET)
    c.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return c


def record_host(path, host, monkeypatch, boot="boot-1", first_slot=0):
    monkeypatch.setattr(socket, "gethostname", lambda: host)
    monkeypatch.setattr(tcpsnap._host, "boot_id", lambda: boot)
    record_at(path, v1_tables(), first_slot=first_slot, rotate="0.3s")
    monkeypatch.undo()
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    return sorted(Path(path).glob("date=*/*.parquet"))


def sha(b):
    return hashlib.sha256(b).hexdigest()


def versions(c, prefix=""):
    return sorted((v["Key"], v["Size"]) for v in
                  c.list_object_versions(Bucket=BUCKET, Prefix=prefix).get("Versions", []))


def ship_cli(rec, moto, *extra, url=f"s3://{BUCKET}/tcpsnap"):
    return main(["ship", str(rec), url, "--endpoint-url", moto.url, *extra])


def test_ship_exact_objects_and_checksums_then_twice_one_object(tmp_path, moto, s3, monkeypatch, capsys):
    files = record_host(tmp_path / "rec", "web-1", monkeypatch)
    assert len(files) == 3
    assert ship_cli(tmp_path / "rec", moto) == 0
    want = sorted((f"tcpsnap/date={DATE}/host=web-1/{f.name}", f.stat().st_size) for f in files)
    assert versions(s3) == want
    for f in files:
        key = f"tcpsnap/date={DATE}/host=web-1/{f.name}"
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert body == f.read_bytes()
        h = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        assert h["Metadata"]["tcpsnap-sha256"] == sha(f.read_bytes())
        assert base64.b64decode(h["ChecksumSHA256"]).hex() == sha(f.read_bytes())
    todo, done = pending(tmp_path / "rec")
    assert (todo, len(done)) == ([], 3)
    capsys.readouterr()
    # twice: nothing uploaded, still one version of each object
    assert ship_cli(tmp_path / "rec", moto) == 0
    assert "shipped 0 file(s)" in capsys.readouterr().err
    assert versions(s3) == want
    # the receipts gone (a lost folder state): the objects are found, not uploaded again
    for r in (tmp_path / "rec" / "_tcpsnap_shipped").iterdir():
        r.unlink()
    assert ship_cli(tmp_path / "rec", moto) == 0
    assert "shipped 0 file(s) (0 B) to s3://fleet/tcpsnap; 3 already there" in capsys.readouterr().err
    assert versions(s3) == want
    assert all(f.exists() for f in files)  # no --delete-after-ship: every local file stays


def test_three_hosts_colliding_cookies_one_layout(tmp_path, moto, s3, monkeypatch):
    """Same cookies, same file names on three hosts: three distinct objects each."""
    names = {}
    for h in ("web-1", "web-2", "db-1"):
        names[h] = [f.name for f in record_host(tmp_path / h, h, monkeypatch, boot=f"b-{h}")]
        assert ship_cli(tmp_path / h, moto) == 0
    assert names["web-1"] == names["web-2"] == names["db-1"]
    keys = [k for k, _ in versions(s3)]
    assert keys == sorted(f"tcpsnap/date={DATE}/host={h}/{n}" for h in names for n in names[h])


def test_status_says_what_is_pending(tmp_path, moto, s3, monkeypatch, capsys):
    files = record_host(tmp_path / "rec", "web-1", monkeypatch)
    assert main(["ship", "--status", str(tmp_path / "rec")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{tmp_path / 'rec'}: 0 file(s) shipped, 3 pending (")
    assert [x.split()[1] for x in out[1:]] == [f"date={DATE}/{f.name}" for f in files]
    assert ship_cli(tmp_path / "rec", moto) == 0
    capsys.readouterr()
    assert main(["ship", "--status", str(tmp_path / "rec")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'rec'}: 3 file(s) shipped, 0 pending (0 B)\n"


def test_delete_after_ship_deletes_only_confirmed(tmp_path, moto, s3, monkeypatch):
    files = record_host(tmp_path / "rec", "web-1", monkeypatch)
    assert ship_cli(tmp_path / "rec", moto) == 0
    # an object lost behind our back: its file is not confirmed, so it is kept and shipped again
    lost = f"tcpsnap/date={DATE}/host=web-1/{files[0].name}"
    for v in s3.list_object_versions(Bucket=BUCKET, Prefix=lost)["Versions"]:
        s3.delete_object(Bucket=BUCKET, Key=lost, VersionId=v["VersionId"])
    body0 = files[0].read_bytes()
    sh = Shipper(tmp_path / "rec", Target(f"s3://{BUCKET}/tcpsnap", endpoint_url=moto.url),
                 delete_after=True)
    assert sh.ship_all(give_up=30) == 0
    assert sh.stats.shipped_files == 1             # the lost one, again
    assert s3.get_object(Bucket=BUCKET, Key=lost)["Body"].read() == body0
    # the two older files deleted, each confirmed; the newest stays (the recorder's seq)
    assert [f.exists() for f in files] == [False, False, True]
    assert sh.stats.deleted == 2
    assert len(versions(s3)) == 3
    # the receipts of deleted files are dropped (they would pile up), the newest's stays
    assert os.listdir(tmp_path / "rec" / "_tcpsnap_shipped") == [f"date={DATE}__{files[2].name}.json"]


def test_symlinks_are_neither_followed_nor_shipped(tmp_path, moto, s3, monkeypatch):
    files = record_host(tmp_path / "rec", "web-1", monkeypatch)
    other = record_host(tmp_path / "other", "secret-host", monkeypatch)
    part = tmp_path / "rec" / f"date={DATE}"
    (part / "tcpsnap-20261118T110700.000Z.parquet").symlink_to(other[0])
    (tmp_path / "rec" / "date=2026-11-19").symlink_to(other[0].parent, target_is_directory=True)
    assert ship_cli(tmp_path / "rec", moto) == 0
    assert [k for k, _ in versions(s3)] == [f"tcpsnap/date={DATE}/host=web-1/{f.name}" for f in files]


def test_retention_keeps_unshipped_files_unless_the_disk_limit_forces(tmp_path, moto, s3, monkeypatch):
    files = record_host(tmp_path / "rec", "web-1", monkeypatch)
    sh = Shipper(tmp_path / "rec", Target(f"s3://{BUCKET}/tcpsnap", endpoint_url=moto.url))
    assert sh.ship_all(give_up=30) == 0
    receipts = sorted((tmp_path / "rec" / "_tcpsnap_shipped").iterdir())
    receipts[1].unlink()                       # files[1] now counts as unshipped
    far = lambda: 2_000_000_000 * 10**9         # a clock long after the recording
    ret = Retention(keep="1h", now_ns=far, unshipped=sh.unshipped)
    with SafeDir.open(tmp_path / "rec") as root:
        assert ret.run(root) == [f"date={DATE}/{files[0].name}", f"date={DATE}/{files[2].name}"]
    assert ret.stats["retention_deleted_unshipped"] == 0
    assert [f.exists() for f in files] == [False, True, False]
    ret = Retention(max_bytes=1, now_ns=far, unshipped=sh.unshipped)
    new = [f for f in record_host(tmp_path / "rec", "web-1", monkeypatch, first_slot=100) if f != files[1]]
    assert len(new) == 3
    with SafeDir.open(tmp_path / "rec") as root:
        deleted = ret.run(root)
    # forced by the byte limit: files[1] and the new files but the newest (never deleted
    # for space), all unshipped, each counted (and logged as a warning)
    assert deleted == [f"date={DATE}/{f.name}" for f in (files[1], new[0], new[1])]
    assert ret.stats["retention_deleted_unshipped"] == 3
    assert new[2].exists()


def test_server_down_backoff_then_everything_arrives(tmp_path, moto, s3, monkeypatch):
    files = record_host(tmp_path / "rec", "web-1", monkeypatch)
    relay = Relay(moto.port)
    relay.down()
    sh = Shipper(tmp_path / "rec", Target(f"s3://{BUCKET}/tcpsnap", endpoint_url=relay.url),
                 backoff=(0.5, 4.0))
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("left", sh.ship_all(give_up=120)))
    t.start()
    # the server unreachable until three tries failed (0.5, 1, 2, 4 s apart): counted, not
    # slept, as a loaded machine may run fewer in a given time
    assert wait_for(lambda: sh.stats.failures >= 3, timeout=120)
    assert versions(s3) == []
    assert all(f.exists() for f in files)
    relay.up()
    t.join(60)
    relay.down()
    assert out["left"] == 0
    assert len(versions(s3)) == 3
    assert all(f.exists() for f in files)


def _cli_env(**kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(kw)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return env


def test_kill_9_mid_upload_leaves_no_object_and_rerun_completes(tmp_path, moto, s3):
    """A 20 MiB file in 5 MiB parts at 4 MiB/s: killed after its first part, no object
    exists; the next run aborts the incomplete upload and ships the whole file once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = tmp_path / "rec" / f"date={DATE}"
    part.mkdir(parents=True)
    big = part / "tcpsnap-20261118T110640.000Z.parquet"
    rng = np.random.default_rng(1)
    t = pa.table({"x": rng.integers(0, 2**63, 20 << 17, dtype=np.int64)})
    t = t.replace_schema_metadata({"tcpsnap.host": "big-1"})
    pq.write_table(t, big, compression="none")
    assert big.stat().st_size > 20 << 20
    key = f"tcpsnap/date={DATE}/host=big-1/{big.name}"
    env = _cli_env(**CREDS)
    p = subprocess.Popen([sys.executable, "-m", "tcpsnap", "ship", str(tmp_path / "rec"),
                          f"s3://{BUCKET}/tcpsnap", "--endpoint-url", moto.url,
                          "--part-size", "5MiB", "--limit-rate", "4MiB"], env=env,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            ups = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
            if ups and s3.list_parts(Bucket=BUCKET, Key=key, UploadId=ups[0]["UploadId"]).get("Parts"):
                break
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
            time.sleep(0.05)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert versions(s3) == []                   # no object, not even a partial one
    assert len(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == 1
    # another host's upload in progress below the same prefix: not ours to abort
    theirs = f"tcpsnap/date={DATE}/host=big-2/{big.name}"
    s3.create_multipart_upload(Bucket=BUCKET, Key=theirs)
    r = subprocess.run([sys.executable, "-m", "tcpsnap", "ship", str(tmp_path / "rec"),
                        f"s3://{BUCKET}/tcpsnap", "--endpoint-url", moto.url, "--part-size", "5MiB"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert versions(s3) == [(key, big.stat().st_size)]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])] == [theirs]
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    assert sha(obj["Body"].read()) == sha(big.read_bytes()) == obj["Metadata"]["tcpsnap-sha256"]


def test_missing_credentials_one_line_exit_1(tmp_path, moto, s3, monkeypatch):
    record_host(tmp_path / "rec", "web-1", monkeypatch)
    env = _cli_env(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                   AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    r = subprocess.run([sys.executable, "-m", "tcpsnap", "ship", str(tmp_path / "rec"),
                        f"s3://{BUCKET}/x", "--endpoint-url", moto.url], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.startswith("tcpsnap: error: no AWS credentials found")
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("url", ["http://fleet/x", "s3://", "s3://Bad_Bucket/x", "s3://fleet/a//b"])
def test_bad_url_exit_2(tmp_path, url, capsys):
    (tmp_path / "rec").mkdir()
    assert main(["ship", str(tmp_path / "rec"), url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tcpsnap ship: error: ") and err.count("\n") == 1


def test_no_such_bucket_exit_1(tmp_path, moto, s3, monkeypatch, capsys):
    record_host(tmp_path / "rec", "web-1", monkeypatch)
    assert ship_cli(tmp_path / "rec", moto, url="s3://no-such-bucket/x") == 1
    err = capsys.readouterr().err
    assert err.startswith("tcpsnap: error: bucket s3://no-such-bucket/") and err.count("\n") == 1


def test_record_ship_ships_every_finished_file(tmp_path, moto, s3):
    """A live recording on this machine with --ship: every file it finished is in the
    bucket when it exits, the last one too, under this host's name."""
    r = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "rec"), "--duration", "2s",
                        "--rotate", "500ms", "--interval", "100ms", "--no-pids", "--nice", "0",
                        "--ship", f"s3://{BUCKET}/live", "--endpoint-url", moto.url,
                        "--metrics-textfile", str(tmp_path / "m.prom")],
                       env=_cli_env(**CREDS), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "rec").glob("date=*/*.parquet"))
    assert len(files) >= 3
    host = socket.gethostname()
    assert versions(s3, "live/") == sorted((f"live/{f.parent.name}/host={host}/{f.name}", f.stat().st_size)
                                           for f in files)
    assert f"shipped {len(files)} files to s3://{BUCKET}/live; 0 pending" in r.stderr
    prom = dict(x.rsplit(" ", 1) for x in (tmp_path / "m.prom").read_text().splitlines()
                if x and not x.startswith("#"))
    assert prom["tcpsnap_upload_backlog_files"] == "0.0"
    assert prom["tcpsnap_uploaded_files_total"] == f"{len(files)}.0"
    assert prom["tcpsnap_upload_failures_total"] == "0.0"
    assert float(prom["tcpsnap_upload_cpu_seconds_total"]) > 0     # the shipping thread's own CPU
    assert float(prom["tcpsnap_upload_last_success_timestamp_seconds"]) > 1.7e9


def test_record_ship_bad_url_exit_2_before_recording(tmp_path, capsys):
    assert main(["record", str(tmp_path / "rec"), "--ship", "http://fleet/x", "--duration", "1s"]) == 2
    assert capsys.readouterr().err.startswith("tcpsnap record: error: 'http://fleet/x' is not an S3 URL")
    assert not (tmp_path / "rec").exists()


def _big_file(rec, host="big-1", mib=20):
    """One finished file of ``mib`` MiB (incompressible) under ``rec/date=DATE/``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = rec / f"date={DATE}"
    part.mkdir(parents=True, exist_ok=True)
    big = part / "tcpsnap-20261118T110640.000Z.parquet"
    t = pa.table({"x": np.random.default_rng(1).integers(0, 2**63, mib << 17, dtype=np.int64)})
    pq.write_table(t.replace_schema_metadata({"tcpsnap.host": host}), big, compression="none")
    return big


def _slow_ship(rec, moto, rate="4MiB"):
    """``tcpsnap ship`` of ``rec`` in a subprocess, uploading at ``rate``: returns it once
    it holds the folder's shipper lock and has started uploading."""
    p = subprocess.Popen([sys.executable, "-m", "tcpsnap", "ship", str(rec), f"s3://{BUCKET}/tcpsnap",
                          "--endpoint-url", moto.url, "--part-size", "5MiB", "--limit-rate", rate],
                         env=_cli_env(**CREDS), stderr=subprocess.PIPE, text=True)
    c = moto.client()
    deadline = time.monotonic() + 60
    while not ((rec / ".tcpsnap-ship.lock").exists() and c.list_multipart_uploads(Bucket=BUCKET).get("Uploads")):
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
        time.sleep(0.05)
    return p


def test_two_shippers_on_one_folder_the_second_stops_with_one_line(tmp_path, moto, s3, capsys):
    """A second 'tcpsnap ship' of a folder being shipped: exit 1, one line naming the pid
    of the first; the first ships every file once (one version of each object, one
    receipt each), and the lock file is gone after."""
    rec = tmp_path / "rec"
    big = _big_file(rec)
    p = _slow_ship(rec, moto)
    try:
        assert ship_cli(rec, moto) == 1
        err = capsys.readouterr().err
        assert err == (f"tcpsnap: error: {rec} is already being shipped (pid {p.pid}); "
                       f"one shipper per folder\n")
        assert main(["ship", "--status", str(rec)]) == 0      # --status reads, takes no lock
        assert "0 file(s) shipped, 1 pending" in capsys.readouterr().out
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    key = f"tcpsnap/date={DATE}/host=big-1/{big.name}"
    assert versions(s3) == [(key, big.stat().st_size)]
    assert os.listdir(rec / "_tcpsnap_shipped") == [f"date={DATE}__{big.name}.json"]
    assert not (rec / ".tcpsnap-ship.lock").exists()
    assert ship_cli(rec, moto) == 0                           # free again: nothing left to do
    assert "shipped 0 file(s)" in capsys.readouterr().err
    assert versions(s3) == [(key, big.stat().st_size)]


def test_record_ship_beside_a_running_ship_stops_before_recording(tmp_path, moto, s3):
    """'record --ship DIR' while 'tcpsnap ship DIR' runs: exit 1, one line, no snapshot
    recorded, the running shipper undisturbed."""
    rec = tmp_path / "rec"
    big = _big_file(rec, host=socket.gethostname())
    p = _slow_ship(rec, moto)
    try:
        r = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(rec), "--duration", "2s",
                            "--interval", "100ms", "--no-pids", "--ship", f"s3://{BUCKET}/tcpsnap",
                            "--endpoint-url", moto.url], env=_cli_env(**CREDS), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 1
        assert r.stderr.endswith(f"tcpsnap: error: {rec} is already being shipped (pid {p.pid}); "
                                 f"one shipper per folder\n"), r.stderr
        assert "Traceback" not in r.stderr and "recorded" not in r.stderr
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    assert sorted(rec.glob("date=*/*.parquet")) == [big]      # nothing recorded
    assert versions(s3) == [(f"tcpsnap/date={DATE}/host={socket.gethostname()}/{big.name}", big.stat().st_size)]


def _thread_names(pid):
    out = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.append(Path(t, "comm").read_text().strip())
        except OSError:     # a thread that ended meanwhile
            pass
    return out


def test_ship_beside_record_ship_is_refused_and_nothing_is_uploaded_twice(tmp_path, moto, s3):
    """'tcpsnap ship DIR' while 'record --ship DIR' records and ships: the second is
    refused (exit 1, one line, the recorder's pid) as often as it is tried; when the
    recording ends every file is in the bucket exactly once (a versioned bucket: one
    version each) with one receipt each."""
    rec = tmp_path / "rec"
    p = subprocess.Popen([sys.executable, "-m", "tcpsnap", "record", str(rec), "--duration", "4s",
                          "--rotate", "500ms", "--interval", "100ms", "--no-pids", "--nice", "0",
                          "--ship", f"s3://{BUCKET}/live", "--endpoint-url", moto.url],
                         env=_cli_env(**CREDS), stderr=subprocess.PIPE, text=True)
    refused = 0
    try:
        deadline = time.monotonic() + 60
        while not (rec / ".tcpsnap-ship.lock").exists():
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
            time.sleep(0.05)
        # the shipping thread is named (top -H, and what bench_ship --live measures)
        names: list[str] = []
        while "tcpsnap-ship" not in names and p.poll() is None:
            names = _thread_names(p.pid)
        assert "tcpsnap-ship" in names
        while p.poll() is None:
            r = subprocess.run([sys.executable, "-m", "tcpsnap", "ship", str(rec), f"s3://{BUCKET}/live",
                                "--endpoint-url", moto.url], env=_cli_env(**CREDS), capture_output=True,
                               text=True, timeout=120)
            if r.returncode == 0:
                # the recording let go of the lock on its way out (its shipper ends before
                # the process does): this one found nothing left to ship
                p.wait(120)
                assert "shipped 0 file(s)" in r.stderr, r.stderr
                break
            assert r.returncode == 1, r.stderr
            assert r.stderr == (f"tcpsnap: error: {rec} is already being shipped (pid {p.pid}); "
                                f"one shipper per folder\n")
            refused += 1
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    assert refused >= 1
    files = sorted(rec.glob("date=*/*.parquet"))
    assert len(files) >= 4
    host = socket.gethostname()
    assert versions(s3, "live/") == sorted((f"live/{f.parent.name}/host={host}/{f.name}", f.stat().st_size)
                                           for f in files)
    assert sorted(os.listdir(rec / "_tcpsnap_shipped")) == sorted(f"{f.parent.name}__{f.name}.json" for f in files)
    assert not (rec / ".tcpsnap-ship.lock").exists()


def test_a_folder_shipped_elsewhere_before_is_shipped_again_here(tmp_path, moto, s3, capsys):
    """Receipts name the object they vouch for: shipping to another prefix (or bucket)
    uploads every file there too, and the receipts then name the new objects."""
    import json

    from tcpsnap._units import human_bytes

    rec = tmp_path / "rec"
    files = [_big_file(rec, mib=1)]
    assert ship_cli(rec, moto, url=f"s3://{BUCKET}/a") == 0
    assert ship_cli(rec, moto, url=f"s3://{BUCKET}/a/b") == 0     # a prefix below the first
    assert ship_cli(rec, moto, url=f"s3://{BUCKET}/a") == 0
    err = capsys.readouterr().err.splitlines()
    size = human_bytes(files[0].stat().st_size)
    assert [x.split(";")[:2] for x in err] == [
        [f"tcpsnap: shipped 1 file(s) ({size}) to s3://{BUCKET}/a", " 0 already there"],
        [f"tcpsnap: shipped 1 file(s) ({size}) to s3://{BUCKET}/a/b", " 0 already there"],
        [f"tcpsnap: shipped 0 file(s) (0 B) to s3://{BUCKET}/a", " 1 already there"]]
    name = f"date={DATE}/host=big-1/{files[0].name}"
    assert versions(s3) == sorted([(f"a/{name}", files[0].stat().st_size), (f"a/b/{name}", files[0].stat().st_size)])
    receipt = json.loads((rec / "_tcpsnap_shipped" / f"date={DATE}__{files[0].name}.json").read_text())
    assert (receipt["url"], receipt["endpoint"]) == (f"s3://{BUCKET}/a/{name}", moto.url)
    # the same URL on another endpoint (another store: MinIO, then AWS) is another place
    other = Moto()
    try:
        other.client().create_bucket(Bucket=BUCKET)
        assert main(["ship", str(rec), f"s3://{BUCKET}/a", "--endpoint-url", other.url]) == 0
        assert [o["Key"] for o in other.client().list_objects_v2(Bucket=BUCKET)["Contents"]] == [f"a/{name}"]
    finally:
        other.stop()
    assert ship_cli(rec, moto, url=f"s3://{BUCKET}/a") == 0     # and back: found there, not uploaded
    assert "shipped 0 file(s) (0 B) to s3://fleet/a; 1 already there" in capsys.readouterr().err
    assert len(versions(s3)) == 2
