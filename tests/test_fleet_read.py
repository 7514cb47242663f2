"""tcpsnap.read and tcpsnap info of a shipped fleet: 8 simulated hosts (the same scripted
tables, so the same cookies), each recorded in four runs (hours 0, 1 and 2 of one UTC day
and one run the next day), shipped to a real moto server on 127.0.0.1. Reading one host's
hour fetches that host's objects of that hour and nothing else (counted in the server's
request log), and gives what tcpsnap.read gives for a local copy of the layout."""

import socket
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

import tcpsnap
import tcpsnap._host
from _changes_util import INTERVAL_NS, WALL0
from _recordings import record_at, v1_tables
from _s3 import BUCKET, CREDS, Moto
from tcpsnap._errors import BadRecording, UsageError
from tcpsnap.cli import main

HOSTS = [f"host-{i}" for i in range(8)]
URL = f"s3://{BUCKET}/tcpsnap"
HOUR = 36_000                       # slots of 100 ms
RUNS = [0, HOUR, 2 * HOUR, 24 * HOUR]   # hours 0, 1, 2 of 2026-11-18 (from 11:06:40), and the next day


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """(moto, {host: local recording}, tmp, {object key: size})."""
    mp = pytest.MonkeyPatch()
    for k, v in CREDS.items():
        mp.setenv(k, v)
    tmp = tmp_path_factory.mktemp("fleet8")
    m = Moto(log=tmp / "moto.log")
    try:
        m.client().create_bucket(Bucket=BUCKET)
        recs = {}
        for h in HOSTS:
            with pytest.MonkeyPatch.context() as p:
                p.setattr(socket, "gethostname", lambda h=h: h)
                p.setattr(tcpsnap._host, "boot_id", lambda h=h: f"boot-{h}")
                for slot in RUNS:
                    record_at(tmp / h, v1_tables(), first_slot=slot, rotate="0.3s")
            recs[h] = tmp / h
            assert main(["ship", str(tmp / h), URL, "--endpoint-url", m.url, "-q"]) == 0
        objects = {o["Key"]: o["Size"] for o in m.client().list_objects_v2(Bucket=BUCKET)["Contents"]}
        yield m, recs, tmp, objects
    finally:
        m.stop()
        mp.undo()


def _copy(m, dst, prefix="tcpsnap/"):
    """``aws s3 sync`` of the layout under ``dst``; the copy's root."""
    c = m.client()
    for o in c.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]:
        d = dst / o["Key"]
        d.parent.mkdir(parents=True, exist_ok=True)
        c.download_file(BUCKET, o["Key"], str(d))
    return dst / prefix.rstrip("/")


@pytest.fixture(scope="module")
def copy(fleet):
    m, _, tmp, _ = fleet
    return _copy(m, tmp / "copy")


def test_the_layout_is_as_expected(fleet):
    _, _, _, objects = fleet
    assert len(objects) == 8 * 4 * 3        # 8 hosts, 4 runs of 3 files (rotate 0.3 s, 8 snapshots)
    assert {k.split("/")[1] for k in objects} == {"date=2026-11-18", "date=2026-11-19"}


def test_one_hosts_hour_out_of_8_hosts_touches_only_that_hosts_objects(fleet, copy):
    """Counted on the server: the requests of tcpsnap.read(URL, hosts=[host-3], start,
    end) for the hour 12:00-13:00 (the second run, from 12:06:40) are one LIST of the
    prefix's date= folders, one LIST of date=2026-11-18/host=host-3/, and GETs of the 3
    objects of that hour and of the one before it (it starts before 12:00, so it may hold
    12:00: files are picked by the time of their first snapshot, in their names); no other
    host's or day's key is listed or fetched. The frame is the one tcpsnap.read gives for
    a local copy of the whole layout, and holds the run's snapshots."""
    m, _, _, objects = fleet
    start = pd.Timestamp("2026-11-18 12:00", tz="UTC")
    end = start + pd.Timedelta(hours=1)
    assert pd.Timestamp(WALL0 + HOUR * INTERVAL_NS, unit="ns", tz="UTC") == start + pd.Timedelta("6min 40s")
    mine = sorted(k for k in objects if "/host=host-3/" in k)
    hour = [k for k in mine if "T1206" in k]     # 12:06:40, 12:06:40.3, 12:06:40.6
    assert len(hour) == 3
    hour = [mine[mine.index(hour[0]) - 1], *hour]   # 11:06:40.6, the first run's last file
    since = m.log_size()
    got = tcpsnap.read(URL, start=start, end=end, hosts=["host-3"], endpoint_url=m.url)
    reqs = m.requests(since)
    text = Path(m.log).read_bytes()[since:].decode()
    lists = sorted(line.split("prefix=")[1].split(" ")[0].replace("%3D", "=")
                   for line in text.splitlines() if "list-type=2" in line)
    assert lists == ["tcpsnap/", "tcpsnap/date=2026-11-18/host=host-3/"]
    fetched = sorted(p.removeprefix(f"/{BUCKET}/") for meth, p in reqs
                     if meth in ("GET", "HEAD") and p.removeprefix(f"/{BUCKET}/") in objects)
    assert sorted(set(fetched)) == hour
    nbytes = sum(objects[k] for k in hour)
    assert nbytes < sum(objects.values()) / 20      # 4 of 96 objects
    pdt.assert_frame_equal(got, tcpsnap.read(copy, start=start, end=end, hosts="host-3"))
    assert set(got["host"]) == {"host-3"}
    assert sorted(set(got["seq"])) == [8, 9, 10, 11, 13, 14, 15]   # run 2; its snapshot 12 is empty
    assert len(got) == 18


def test_url_read_is_the_local_copys_read_same_columns_and_types(fleet, copy):
    m, _, _, _ = fleet
    whole = tcpsnap.read(URL, endpoint_url=m.url)
    pdt.assert_frame_equal(whole, tcpsnap.read(copy))
    assert len(whole) == 8 * 4 * 18 and set(whole["host"]) == set(HOSTS)
    assert str(whole["host"].dtype) == "category" and str(whole["timestamp"].dtype) == "datetime64[ns, UTC]"
    # where and columns: pushed into the scan of the fetched files, as locally
    kw = {"where": "dport = :443", "columns": ["timestamp", "seq", "host", "cookie", "state", "remote_port"]}
    sub = tcpsnap.read(URL, hosts=["host-1", "host-6"], endpoint_url=m.url, **kw)
    pdt.assert_frame_equal(sub, tcpsnap.read(copy, hosts=["host-1", "host-6"], **kw))
    assert list(sub.columns) == kw["columns"] and set(sub["remote_port"]) == {443}
    assert set(sub["host"]) == {"host-1", "host-6"} and len(sub) > 0
    # a day: only that day's objects
    day2 = tcpsnap.read(URL, start="2026-11-19", endpoint_url=m.url)
    assert len(day2) == 8 * 18 and day2["timestamp"].min() >= pd.Timestamp("2026-11-19", tz="UTC")
    # the endpoint from the environment, as boto3 takes it
    with pytest.MonkeyPatch.context() as p:
        p.setenv("AWS_ENDPOINT_URL", m.url)
        pdt.assert_frame_equal(tcpsnap.read(URL, hosts="host-0"), tcpsnap.read(copy, hosts="host-0"))


def test_each_hosts_rows_are_its_own_recordings(fleet):
    """Per host, the fleet's rows are exactly what its own local recording holds."""
    m, recs, _, _ = fleet
    whole = tcpsnap.read(URL, endpoint_url=m.url)
    cols = ["timestamp", "seq", "cookie", "state", "local_port", "remote_port", "boot_id"]
    for h, path in recs.items():
        mine = tcpsnap.read(path)
        theirs = whole[whole["host"] == h]
        assert theirs[cols].astype(str).values.tolist() == mine[cols].astype(str).values.tolist()


def test_local_layout_hosts_opens_only_those_hosts_folders(fleet, tmp_path):
    """A local fleet layout with hosts=: other hosts' files are not even opened (one of
    them corrupt: read(hosts=[...]) does not see it; a read of every host names it)."""
    m, _, _, _ = fleet
    local = _copy(m, tmp_path)
    bad = sorted(local.glob("date=*/host=host-5/*.parquet"))[0]
    bad.write_bytes(b"not parquet")
    got = tcpsnap.read(local, hosts=["host-2"])
    assert set(got["host"]) == {"host-2"} and len(got) == 4 * 18
    with pytest.raises(BadRecording, match=str(bad)):
        tcpsnap.read(local)


def test_hosts_on_a_plain_recording_filters_its_rows(fleet):
    _, recs, _, _ = fleet
    assert len(tcpsnap.read(recs["host-4"], hosts="host-4")) == 4 * 18
    assert len(tcpsnap.read(recs["host-4"], hosts=["host-1"])) == 0


def test_a_corrupt_object_is_named_by_its_url(fleet):
    m, _, _, objects = fleet
    c = m.client()
    keys = sorted(k for k in objects if "/host=host-7/" in k)
    for k in keys:
        body = c.get_object(Bucket=BUCKET, Key=k)["Body"].read()
        c.put_object(Bucket=BUCKET, Key="broken/" + k.removeprefix("tcpsnap/"),
                     Body=body if k != keys[1] else b"not parquet")
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(f"s3://{BUCKET}/broken", endpoint_url=m.url)
    assert f"s3://{BUCKET}/broken/{keys[1].removeprefix('tcpsnap/')}: not a readable recording file" in str(e.value)
    assert "tcpsnap-fleet-" not in str(e.value)
    got = tcpsnap.read(f"s3://{BUCKET}/broken", endpoint_url=m.url, skip_bad=True)
    assert set(got["host"]) == {"host-7"} and 0 < len(got) < 4 * 18


@pytest.mark.parametrize("url,hosts,match", [
    ("gs://fleet/x", None, "only s3:// URLs are read"),
    ("s3://Bad_Bucket/x", None, "is not an S3 URL"),
    (URL, ["nobody"], "no shipped file for hosts nobody"),
    (URL, [""], "hosts must be host names"),
    (URL, ["a/b"], "hosts must be host names"),
])
def test_bad_urls_and_hosts_are_usage_errors(fleet, url, hosts, match):
    m, _, _, _ = fleet
    with pytest.raises(UsageError, match=match):
        tcpsnap.read(url, hosts=hosts, endpoint_url=m.url)


def _blocks(text):
    return [b.splitlines() for b in text.strip("\n").split("\n\n")]


def test_info_url_one_summary_per_host_as_each_hosts_own(fleet, capsys):
    """info URL: one block per host, each the block 'info' prints for that host's own
    recording (the 'recording' line names the objects); --json: the same numbers."""
    import json

    m, recs, _, _ = fleet
    assert main(["info", URL, "--endpoint-url", m.url]) == 0
    blocks = _blocks(capsys.readouterr().out)
    assert len(blocks) == 8
    for h, block in zip(HOSTS, blocks, strict=True):
        assert main(["info", str(recs[h])]) == 0
        own = capsys.readouterr().out.splitlines()
        assert block[0] == f"recording    {URL}/date=*/host={h}/ (12 object(s))"
        assert block[1:] == own[1:]
    assert main(["info", URL, "--endpoint-url", m.url, "--host", "host-2", "--host", "host-6", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["url"] == URL and list(doc["hosts"]) == ["host-2", "host-6"]
    for h, s in doc["hosts"].items():
        assert main(["info", str(recs[h]), "--json"]) == 0
        own = json.loads(capsys.readouterr().out)
        for k in ("files", "bytes", "rows", "snapshots", "seq_range", "connections", "hosts", "gaps"):
            assert s[k] == own[k], k


def test_info_url_holds_one_hosts_objects_at_a_time(fleet, monkeypatch, capsys):
    """Bounded like a local info: each host's objects are fetched, summarized and removed
    before the next host's are fetched."""
    from tcpsnap import _cmd_analyse

    m, _, _, _ = fleet
    seen = []
    real = _cmd_analyse.summarize

    def spy(path, **kw):
        if seen:
            assert not Path(seen[-1][0]).exists()     # the previous host's copy is gone
        seen.append((path, sorted({p.parent.name for p in Path(path).rglob("*.parquet")})))
        return real(path, **kw)

    monkeypatch.setattr(_cmd_analyse, "summarize", spy)
    assert main(["info", URL, "--endpoint-url", m.url, "--host", "host-0", "--host", "host-1",
                 "--host", "host-5"]) == 0
    capsys.readouterr()
    assert [hosts for _, hosts in seen] == [["host=host-0"], ["host=host-1"], ["host=host-5"]]


def test_info_of_another_scheme_is_a_one_line_usage_error(capsys):
    assert main(["info", "gs://fleet/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only s3:// URLs are read" in err and "Traceback" not in err



def test_a_changes_mode_fleet_reads_as_its_local_copy(fleet, tmp_path):
    """Two hosts recorded in changes mode, shipped under another prefix: the URL read
    (rebuilt per host from its keyframes) is the local copy's, one host's too."""
    m, _, _, _ = fleet
    for h in ("edge-1", "edge-2"):
        with pytest.MonkeyPatch.context() as p:
            p.setattr(socket, "gethostname", lambda h=h: h)
            p.setattr(tcpsnap._host, "boot_id", lambda h=h: f"boot-{h}")
            record_at(tmp_path / h, v1_tables(), mode="changes", rotate="0.3s")
        assert main(["ship", str(tmp_path / h), f"s3://{BUCKET}/changes", "--endpoint-url", m.url, "-q"]) == 0
    local = _copy(m, tmp_path / "copy", prefix="changes/")
    whole = tcpsnap.read(f"s3://{BUCKET}/changes", endpoint_url=m.url)
    pdt.assert_frame_equal(whole, tcpsnap.read(local))
    assert len(whole) == 2 * 18 and set(whole["host"]) == {"edge-1", "edge-2"}
    one = tcpsnap.read(f"s3://{BUCKET}/changes", hosts="edge-2", endpoint_url=m.url)
    pdt.assert_frame_equal(one, tcpsnap.read(local, hosts="edge-2"))
    assert set(one["host"]) == {"edge-2"} and len(one) == 18
