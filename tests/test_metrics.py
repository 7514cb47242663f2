"""Health: Prometheus metrics over HTTP (``--metrics``) and as a node_exporter textfile
(``--metrics-textfile``), exact on scripted recordings; journal-style log lines."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

prom_parser = pytest.importorskip("prometheus_client.parser")

import tcpsnap  # noqa: E402
from _changes_util import Scripted, SimClock, row  # noqa: E402
from tcpsnap import Recorder  # noqa: E402
from tcpsnap.record.metrics import CAPTURE_BUCKETS_NS, MetricsExporter, parse_listen  # noqa: E402

LINUX = sys.platform.startswith("linux")
TCPSNAP = [sys.executable, "-m", "tcpsnap"]


def tables(n: int) -> list[np.ndarray]:
    """Snapshot i holds i % 4 connections (0: an empty snapshot, which counts no row)."""
    return [np.array([row(1, "127.0.0.1", 2000 + j, "127.0.0.1", 80, 100 * i + j + 1)
                      for j in range(i % 4)], dtype=tcpsnap.ROW_DTYPE) for i in range(n)]


def rows_of(ts: list[np.ndarray]) -> int:
    return sum(len(t) for t in ts)


def values(text: str, parser=prom_parser) -> dict[str, float]:
    """sample name{labels} -> value, from the Prometheus text format (``parser``:
    ``prometheus_client.openmetrics.parser`` for OpenMetrics)."""
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return values(r.read().decode())


def scripted(path: Path, ts: list[np.ndarray], on_take=None, **kw):
    """A recorder on ``ts`` (one table per snapshot) and its snapshotter; ``on_take(i,
    rec)`` runs before take ``i`` (0: the warm-up; take i > 0 is snapshot i - 1)."""
    snap = Scripted(ts, pids=False, on_take=on_take)
    rec = Recorder(path, interval=0, snapshotter=snap, clock=SimClock(), nice=None, **kw)
    snap.rec = rec
    return rec


# ---------------------------------------------------------------- HTTP

def test_scrape_during_and_after_a_recording_is_exact(tmp_path):
    ts = tables(57)
    seen: dict[int, dict] = {}

    def on_take(i, rec):
        if i in (1, 20, 41):
            seen[i] = scrape(exp.url)

    rec = scripted(tmp_path / "rec", ts, on_take, rotate="2s")  # a file every 20 snapshots
    with MetricsExporter(rec, listen="127.0.0.1:0") as exp:
        assert exp.port and exp.url == f"http://127.0.0.1:{exp.port}/metrics"
        with rec:
            rec.run()
        after = scrape(exp.url)
    for i, v in seen.items():  # snapshots 0 .. i-2 were taken
        assert v["tcpsnap_snapshots_total"] == i - 1
        assert v["tcpsnap_rows_total"] == rows_of(ts[:i - 1])
        assert v["tcpsnap_capture_seconds_count"] == i - 1
    assert after["tcpsnap_snapshots_total"] == 57 == rec.snapshots
    assert after["tcpsnap_rows_total"] == rows_of(ts) == rec.rows == len(tcpsnap.read(tmp_path / "rec"))
    assert after["tcpsnap_overruns_total"] == 0
    # the simulated clock stands still during a take: every capture took 0 s
    assert after["tcpsnap_capture_seconds_count"] == 57
    assert after['tcpsnap_capture_seconds_bucket{le="0.0001"}'] == 57
    assert after['tcpsnap_capture_seconds_bucket{le="+Inf"}'] == 57
    assert after["tcpsnap_capture_seconds_sum"] == 0
    assert after["tcpsnap_files_finished_total"] == len(rec.files) == 3
    assert after["tcpsnap_written_bytes_total"] == rec.bytes_written == sum(
        p.stat().st_size for p in rec.files)
    assert after["tcpsnap_writer_queue_batches"] == 0
    assert abs(after["tcpsnap_last_file_closed_timestamp_seconds"] - time.time()) < 60
    assert after["tcpsnap_upload_backlog_files"] == 0
    assert "tcpsnap_upload_last_success_timestamp_seconds" not in after
    assert after[f'tcpsnap_info{{mode="full",version="{tcpsnap.__version__}"}}'] == 1
    assert "process_cpu_seconds_total" in after
    # a scripted snapshotter counts no dump retries; no pids, no destroy feed, no retention
    for absent in ("tcpsnap_dump_retries_total", "tcpsnap_pid_unreadable_processes",
                   "tcpsnap_destroy_feed_drops_total", "tcpsnap_retention_deleted_files_total"):
        assert absent not in after
    assert "tcpsnap_last_file_closed_timestamp_seconds" not in seen[1]
    # the server is gone after close
    with pytest.raises(OSError):
        urllib.request.urlopen(exp.url or "", timeout=2)


def test_capture_histogram_buckets():
    """Prometheus' le is "at most": a capture of exactly a bound counts in its bucket."""
    from bisect import bisect_left

    assert CAPTURE_BUCKETS_NS[0] == 100_000 and CAPTURE_BUCKETS_NS[-1] == 1_000_000_000
    assert bisect_left(CAPTURE_BUCKETS_NS, 100_000) == 0
    assert bisect_left(CAPTURE_BUCKETS_NS, 100_001) == 1
    assert bisect_left(CAPTURE_BUCKETS_NS, 2_000_000_000) == len(CAPTURE_BUCKETS_NS)


def test_retention_metrics(tmp_path):
    rec = scripted(tmp_path / "rec", tables(30), rotate="1s", max_bytes=1)
    with MetricsExporter(rec, listen=("127.0.0.1", 0)) as exp:
        with rec:
            rec.run()
        v = scrape(exp.url)
    assert len(rec.files) == 4  # 9, 10, 10 and 1 snapshots
    assert v["tcpsnap_retention_deleted_files_total"] == rec.stats["retention_deleted_files"] == 3
    assert v["tcpsnap_retention_deleted_bytes_total"] == rec.stats["retention_deleted_bytes"]
    assert v["tcpsnap_recording_bytes"] == rec.files[-1].stat().st_size
    assert v["tcpsnap_retention_errors_total"] == 0


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0)),
    ("0.0.0.0:9464", ("0.0.0.0", 9464)), ("localhost:1", ("localhost", 1)),
])
def test_parse_listen(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("bad", ["9464", ":9464", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000",
                                 "::1:9464", "[nope]:1", ""])
def test_parse_listen_rejects(bad):
    with pytest.raises(ValueError, match="bad address"):
        parse_listen(bad)


# ---------------------------------------------------------------- the textfile

def test_textfile_is_exact_and_replaced_atomically(tmp_path):
    out = tmp_path / "node" / "tcpsnap.prom"
    out.parent.mkdir()
    # a link planted at the name of the temp file: never written through
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (out.parent / f".tcpsnap.prom.{os.getpid()}.tmp").symlink_to(victim)
    ts = tables(40)
    reads: list[str] = []
    inodes: set[int] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with open(out) as f:
                    inodes.add(os.fstat(f.fileno()).st_ino)
                    reads.append(f.read())
            except FileNotFoundError:
                pass
            time.sleep(0.001)

    def on_take(i, rec):
        time.sleep(0.005)  # let the timer write too
        if i % 5 == 0:
            assert exp.write_textfile()

    rec = scripted(tmp_path / "rec", ts, on_take)
    exp = MetricsExporter(rec, textfile=out, textfile_interval=0.02)
    exp.start()
    assert values(out.read_text())["tcpsnap_snapshots_total"] == 0  # written at start
    t = threading.Thread(target=reader)
    t.start()
    try:
        with rec:
            rec.run()
    finally:
        exp.close()
        stop.set()
        t.join()
    v = values(out.read_text())
    assert v["tcpsnap_snapshots_total"] == 40 and v["tcpsnap_rows_total"] == rows_of(ts)
    assert v["tcpsnap_files_finished_total"] == 1
    assert not any(n.startswith("process_") for n in v)  # node_exporter has its own
    assert exp.writes >= 10 and len(inodes) >= 2  # replaced, not rewritten in place
    # every read saw one whole file: never empty, never cut short
    counts = [values(r)["tcpsnap_snapshots_total"] for r in reads]
    assert len(counts) == len(reads) > 1 and counts == sorted(counts)
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in out.parent.iterdir()) == ["tcpsnap.prom"]


def test_textfile_folder_must_exist(tmp_path):
    rec = Recorder(tmp_path / "rec")
    with pytest.raises(OSError, match="cannot write the metrics textfile in"):
        MetricsExporter(rec, textfile=tmp_path / "missing" / "x.prom").start()


# ---------------------------------------------------------------- the command line

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not LINUX, reason="live capture")
def test_record_cli_metrics_and_textfile(tmp_path):
    d, out = tmp_path / "rec", tmp_path / "tcpsnap.prom"
    p = subprocess.Popen(TCPSNAP + ["record", str(d), "--metrics", "127.0.0.1:0", "--metrics-textfile",
                                    str(out), "--duration", "3s", "--no-pids", "--interval", "10ms"],
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()  # port 0: the address is logged, even without -v
        m = re.search(r"metrics: serving (http://127\.0\.0\.1:\d+/metrics)", line)
        assert m, line
        v = scrape(m.group(1))
        assert v["tcpsnap_snapshots_total"] >= 0 and "process_resident_memory_bytes" in v
        rest = p.stderr.read()
        assert p.wait(timeout=60) == 0, rest
    finally:
        if p.poll() is None:
            p.kill()
    v = values(out.read_text())  # written at exit: the final counts
    df = tcpsnap.read(d)
    seqs = len(set(pq.read_table(d, columns=["seq"]).column("seq").to_pylist()))
    assert v["tcpsnap_snapshots_total"] == seqs > 10
    assert v["tcpsnap_rows_total"] == len(df)
    assert v["tcpsnap_dump_retries_total"] >= 0  # the real snapshotter counts them


@pytest.mark.skipif(not LINUX, reason="live capture")
def test_record_cli_metrics_errors(tmp_path):
    d = tmp_path / "rec"
    for bad in ("9464", ":9464", "localhost"):
        r = subprocess.run(TCPSNAP + ["record", str(d), "--metrics", bad], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and "bad address" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # the port is taken: one line, exit 1, nothing left behind
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(TCPSNAP + ["record", str(d), "--metrics", f"127.0.0.1:{port}",
                                      "--duration", "1s", "--no-pids"],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"tcpsnap: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert not list(d.rglob("*.parquet")) and not (d / ".tcpsnap.lock").exists()
    # no prometheus_client: one line naming the extra, exit 1, the folder untouched
    code = ("import sys; sys.modules['prometheus_client'] = None; from tcpsnap.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    for opt in (["--metrics", "127.0.0.1:0"], ["--metrics-textfile", str(tmp_path / "x.prom")]):
        r = subprocess.run([sys.executable, "-c", code, "record", str(tmp_path / "new"), *opt,
                            "--duration", "1s"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert r.stderr == ("tcpsnap: error: metrics need the prometheus_client package: "
                            "pip install 'tcpsnap[metrics]'\n")
        assert not (tmp_path / "new").exists()


@pytest.mark.skipif(not LINUX, reason="live capture")
def test_journal_lines_have_priorities_and_no_prefix(tmp_path):
    r_fd, w_fd = os.pipe()
    st = os.fstat(w_fd)
    try:
        for stream, journal in ((f"{st.st_dev}:{st.st_ino}", True), (f"{st.st_dev}:1", False)):
            env = dict(os.environ, JOURNAL_STREAM=stream)
            p = subprocess.Popen(TCPSNAP + ["record", str(tmp_path / "rec"), "--duration", "0.2s",
                                            "--no-pids", "-v", "--metrics", "127.0.0.1:0"],
                                 stderr=w_fd, env=env)
            assert p.wait(timeout=60) == 0
            os.set_blocking(r_fd, False)
            text = os.read(r_fd, 1 << 20).decode()
            lines = text.splitlines()
            if journal:
                assert all(re.match(r"<[2-7]>\S", ln) for ln in lines), text
                assert any(ln.startswith("<4>metrics: serving http://127.0.0.1:") for ln in lines), text
                assert any(ln.startswith("<6>recorded ") for ln in lines), text
                assert not any("tcpsnap:" in ln for ln in lines), text
            else:
                assert all(ln.startswith("tcpsnap: ") for ln in lines), text
    finally:
        os.close(r_fd)
        os.close(w_fd)


@pytest.mark.skipif(not LINUX, reason="live capture")
def test_live_changes_mode_metrics(tmp_path):
    out = tmp_path / "t.prom"
    rec = Recorder(tmp_path / "rec", interval="10ms", mode="changes", nice=None)
    with MetricsExporter(rec, textfile=out), rec:  # the textfile's last write after close
        rec.run(duration=0.3)
    v = values(out.read_text())
    assert v["tcpsnap_snapshots_total"] == rec.snapshots > 0
    assert f'tcpsnap_info{{mode="changes",version="{tcpsnap.__version__}"}}' in v
    assert ("tcpsnap_destroy_feed_drops_total" in v) == rec.stats["destroy_feed"]
    assert ("tcpsnap_pid_unreadable_processes" in v) == rec.pids_enabled
