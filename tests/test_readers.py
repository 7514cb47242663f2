"""Every reader, every time form, every moment.

- Time forms: one parser (``tcpsnap.reading.to_utc``) behind ``start``/``end``,
  ``table_at``'s ``when``, ``filters`` on ``timestamp`` and the CLI's ``--start``/``--end``,
  with one zone rule (no zone means UTC, whatever the local zone): a table of forms and the
  exact instant each is.
- Live and crashed recordings (``test_*_while_recording``, ``test_*_after_kill_9``): pandas,
  pyarrow, DuckDB, polars and tcpsnap read the documented globs exactly (as many snapshots
  as the finished files' footers say), while a real ``tcpsnap record`` runs and after it
  was killed before recovery; ``info`` says who is recording and what is unfinished.
"""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

import _sockets  # the suite's polling helper
import tcpsnap
from _recordings import V1, V1_ROWS, rows_of
from tcpsnap.reading import to_utc

NS = 10**9
T0_NS = 1_795_000_000 * NS          # 2026-11-18 11:06:40 UTC, the first snapshot of the v1 fixtures


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ------------------------------------------------------------------ time forms

#: (form, the instant it is, ns since the epoch)
FORMS = [
    ("2026-11-18 11:06:40", T0_NS),
    ("2026-11-18T11:06:40", T0_NS),
    ("2026-11-18 11:06:40.3", T0_NS + 300_000_000),
    ("2026-11-18T11:06:40.000000001", T0_NS + 1),
    ("2026-11-18T11:06:40Z", T0_NS),
    ("2026-11-18 12:06:40+01:00", T0_NS),
    ("2026-11-18T06:06:40.5-05:00", T0_NS + 500_000_000),
    ("2026-11-18", T0_NS - (11 * 3600 + 6 * 60 + 40) * NS),
    ("20261118T110640", T0_NS),
    ("  2026-11-18 11:06:40  ", T0_NS),
    ("@1795000000", T0_NS),
    ("@1795000000.25", T0_NS + 250_000_000),
    ("@ 1795000000.000000001", T0_NS + 1),
    (T0_NS, T0_NS),
    (np.int64(T0_NS), T0_NS),
    (dt.datetime(2026, 11, 18, 11, 6, 40), T0_NS),
    (dt.datetime(2026, 11, 18, 11, 6, 40, 300000), T0_NS + 300_000_000),
    (dt.datetime(2026, 11, 18, 12, 6, 40, tzinfo=dt.timezone(dt.timedelta(hours=1))), T0_NS),
    (dt.datetime(2026, 11, 18, 11, 6, 40, tzinfo=dt.UTC), T0_NS),
    (dt.date(2026, 11, 18), T0_NS - (11 * 3600 + 6 * 60 + 40) * NS),
    (pd.Timestamp("2026-11-18 11:06:40"), T0_NS),
    (pd.Timestamp("2026-11-18 12:06:40", tz="Europe/Berlin"), T0_NS),
    (pd.Timestamp(T0_NS + 7, tz="UTC"), T0_NS + 7),
    (np.datetime64("2026-11-18T11:06:40.300"), T0_NS + 300_000_000),
]

BAD_FORMS = [
    (1795000000.0, ValueError, "a float is ambiguous"),
    ("10:00", ValueError, "give the date too"),
    ("11:06:40.3", ValueError, "give the date too"),
    ("today", ValueError, "give the date too"),
    ("yesterday", ValueError, "not a time: 'yesterday'"),
    ("now-5 parsecs", ValueError, "not a time: 'now-5 parsecs'"),
    ("", ValueError, "not a time: ''"),
    ("@12x", ValueError, "not a time: '@12x'"),
    (True, TypeError, "not a time: True"),
    ([2026, 11, 18], TypeError, "not a time: list"),
    (None, TypeError, "not a time: None"),
]


@pytest.fixture
def elsewhere(monkeypatch):
    """A local zone far from UTC (and another in a child process): no zone still means UTC."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")          # UTC+14
    time.tzset()
    yield {**os.environ, "TZ": "America/Anchorage"}
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("form,ns", FORMS, ids=[repr(f)[:40] for f, _ in FORMS])
def test_every_time_form_is_one_exact_instant(elsewhere, form, ns):
    t = to_utc(form)
    assert isinstance(t, pd.Timestamp) and str(t.tz) == "UTC" and t.value == ns


@pytest.mark.parametrize("form,exc,msg", BAD_FORMS, ids=[repr(f)[:20] for f, _, _ in BAD_FORMS])
def test_what_is_not_a_time_says_so(form, exc, msg):
    with pytest.raises(exc) as e:
        to_utc(form)
    assert msg in str(e.value) and "'@1795000000' (epoch seconds)" in str(e.value) and "\n" not in str(e.value)


def test_now_is_utc_now_whatever_the_local_zone(elsewhere):
    for form, delta in (("now", 0), ("NOW", 0), ("now-5m", -300 * NS), ("now - 1h30m", -5400 * NS),
                        ("now+2s", 2 * NS), ("now-500ms", -500_000_000)):
        before = time.time_ns()
        got = to_utc(form).value
        after = time.time_ns()
        assert before + delta <= got <= after + delta, form


def test_read_start_end_filters_and_table_at_take_every_form(elsewhere):
    """The same instant in every form selects the same rows, through start/end, filters on
    timestamp (every operator) and table_at."""
    rec = V1 / "full"
    by_form = {}
    for form, ns in FORMS:
        if ns != T0_NS + 300_000_000:
            continue
        start = tcpsnap.read(rec, start=form)
        end = tcpsnap.read(rec, end=form)
        ge = tcpsnap.read(rec, filters=[("timestamp", ">=", form)])
        lt = tcpsnap.read(rec, filters=[("timestamp", "<", form)])
        eq = tcpsnap.read(rec, filters=[("timestamp", "==", form)])
        isin = tcpsnap.read(rec, filters=[("timestamp", "in", [form, T0_NS + 700_000_000])])
        dnf = tcpsnap.read(rec, filters=[[("timestamp", "==", form)], [("seq", "==", 0)]])
        by_form[repr(form)] = [rows_of(x) for x in (start, end, ge, lt, eq, isin, dnf)]
        assert rows_of(tcpsnap.table_at(rec, form)) == [r for r in V1_ROWS if r[0] == 3]
    assert len(by_form) == 3          # a string, a datetime, a numpy datetime64
    want = [[r for r in V1_ROWS if r[0] >= 3], [r for r in V1_ROWS if r[0] < 3], [r for r in V1_ROWS if r[0] >= 3],
            [r for r in V1_ROWS if r[0] < 3], [r for r in V1_ROWS if r[0] == 3],
            [r for r in V1_ROWS if r[0] in (3, 7)], [r for r in V1_ROWS if r[0] in (0, 3)]]
    assert all(v == want for v in by_form.values())
    # the changes recording too
    assert rows_of(tcpsnap.read(V1 / "changes", start="@1795000000.3", end="2026-11-18T12:06:40.6+01:00")) == \
        [r for r in V1_ROWS if 3 <= r[0] < 6]
    assert rows_of(tcpsnap.read(V1 / "changes", filters=[("timestamp", ">=", dt.datetime(2026, 11, 18, 11, 6, 40, 700000))])) == \
        [r for r in V1_ROWS if r[0] == 7]


def test_a_bad_time_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="not a time: '10:00'"):
        tcpsnap.read(V1 / "full", start="10:00")
    with pytest.raises(ValueError, match="a float is ambiguous"):
        tcpsnap.table_at(V1 / "full", 1795000000.3)
    with pytest.raises(ValueError, match="not a time: 'soon'"):
        tcpsnap.read(V1 / "full", filters=[("timestamp", ">", "soon")])


@pytest.mark.parametrize("cmd", ["export", "plot"])
def test_cli_time_options_take_the_same_forms_and_zone_rule(elsewhere, tmp_path, cmd):
    """--start/--end of export and plot: the API's forms, no zone = UTC (the child runs in
    another zone), and a time that is none is a one-line usage error (exit 2)."""
    env = elsewhere
    if cmd == "plot":
        pytest.importorskip("matplotlib")
    for start, end in (("2026-11-18 11:06:40.3", "2026-11-18 11:06:40.6"),
                       ("2026-11-18T12:06:40.3+01:00", "@1795000000.6"),
                       ("@1795000000.3", "2026-11-18T11:06:40.600Z")):
        if cmd == "export":
            p = cli("export", V1 / "full", "--to", "jsonl", "--start", start, "--end", end, env=env)
            assert p.returncode == 0, p.stderr
            got = sorted({json.loads(x)["seq"] for x in p.stdout.splitlines()})
            assert got == [3, 5], (start, end)
        else:
            png = tmp_path / "x.png"
            p = cli("plot", V1 / "full", "-o", png, "--start", start, "--end", end, "--utc", env=env)
            assert p.returncode == 0 and png.stat().st_size > 1000, p.stderr
    p = cli(cmd, V1 / "full", "--to" if cmd == "export" else "-o", "csv" if cmd == "export" else tmp_path / "y.png",
            "--start", "now-5m", env=env)
    assert p.returncode in (0, 1)                  # fine (export: empty) or "no snapshots in that range"
    if cmd == "export":
        assert p.returncode == 0 and len(p.stdout.splitlines()) == 1     # the header: nothing that recent
    for bad in ("10:00", "soon", "now-x"):
        p = cli(cmd, V1 / "full", "--to" if cmd == "export" else "-o", "csv" if cmd == "export" else tmp_path / "z.png",
                "--start", bad, env=env)
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr == (f"tcpsnap {cmd}: error: argument --start: not a time: {bad!r} (give '2026-11-26 10:00' "
                            "(UTC unless it has a zone, e.g. +01:00 or Z), 'now-5m', '@1795000000' (epoch seconds)) "
                            f"(see 'tcpsnap {cmd} --help')\n")


def test_time_forms_are_documented_in_the_help():
    for cmd in ("export", "plot"):
        out = " ".join(cli(cmd, "--help").stdout.split())     # wrapped to the terminal
        assert "now-5m" in out and "@1795000000" in out and "no zone means UTC" in out



# ------------------------------------------------------------------ while recording, after a crash

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="records the live table (Linux)")


def wait_for(pred, timeout=30.0):
    return _sockets.wait_for(pred, timeout=timeout, step=0.05)


def finished(d):
    return sorted(d.glob("date=*/*.parquet"))


def unfinished(d):
    return sorted(p for p in d.glob("date=*/.*") if p.is_file())


def footers(d):
    """(rows, snapshots) the finished files' footers say: snapshots from their seq ranges
    (seq is gapless, +1 per snapshot), checked to be one run 0..N-1."""
    import pyarrow.parquet as pq

    rows, ranges = 0, []
    for f in finished(d):
        md = pq.read_metadata(f)
        rows += md.num_rows
        ranges.append((int(md.metadata[b"tcpsnap.first_seq"]), int(md.metadata[b"tcpsnap.last_seq"])))
    ranges.sort()
    assert ranges and ranges[0][0] == 0 and all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:])), ranges
    return rows, ranges[-1][1] + 1


def every_reader(d):
    """What each documented way of reading the folder counts: (rows, distinct seq,
    connection rows) per reader; tcpsnap.read's (connection rows, distinct seq)."""
    import duckdb
    import polars as pl

    out = {}
    df = pd.read_parquet(d)
    out["pandas"] = (len(df), df.seq.nunique(), int((df.kind == "connection").sum()))
    t = ds.dataset(d, format="parquet", partitioning="hive").to_table(columns=["seq", "kind"])
    out["pyarrow"] = (t.num_rows, len(set(t.column("seq").to_pylist())),
                      t.column("kind").to_pylist().count("connection"))
    for glob in ("date=*/*.parquet", "**/*.parquet"):
        out[f"duckdb {glob}"] = duckdb.sql(
            f"select count(*), count(distinct seq), count(*) filter (where kind = 'connection') "
            f"from read_parquet('{d}/{glob}', hive_partitioning=true)").fetchall()[0]
    lf = pl.scan_parquet(f"{d}/date=*/*.parquet", hive_partitioning=True)
    got = lf.select(pl.len(), pl.col("seq").n_unique(), (pl.col("kind") == "connection").sum()).collect().row(0)
    out["polars"] = tuple(int(x) for x in got)
    r = tcpsnap.read(d, columns=["seq"])
    out["tcpsnap"] = (len(r), r.seq.nunique())
    return out


def check_readers(d):
    rows, snaps = footers(d)
    got = every_reader(d)
    conn = got["pandas"][2]
    assert 0 < conn <= rows and rows - conn <= snaps           # the rest: a row per empty snapshot
    for name in ("pandas", "pyarrow", "duckdb date=*/*.parquet", "duckdb **/*.parquet", "polars"):
        assert tuple(got[name]) == (rows, snaps, conn), (name, got, rows, snaps)
    assert got["tcpsnap"][0] == conn and got["tcpsnap"][1] <= snaps
    return rows, snaps


@pytest.fixture
def recorder(tmp_path):
    procs = []

    def start(*args):
        p = subprocess.Popen([sys.executable, "-m", "tcpsnap", "record", *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, 9)
        p.wait()


@linux
def test_every_reader_reads_the_folder_exactly_while_recording(tmp_path, recorder):
    pytest.importorskip("duckdb")
    pytest.importorskip("polars")
    rec = tmp_path / "rec"
    p = recorder(rec, "--interval", "20ms", "--rotate", "0.4s", "--no-pids", "-q")
    assert wait_for(lambda: len(finished(rec)) >= 2 and unfinished(rec)), p.stderr
    assert (rec / ".tcpsnap.lock").read_text().strip() == str(p.pid)
    # readers racing the recorder: each sees some finished files, none fails
    for _ in range(3):
        every_reader(rec)
    # the recorder stopped (SIGSTOP) for a moment: a fixed folder to count exactly; it
    # still holds its lock and its file in progress
    os.kill(p.pid, 19)
    try:
        rows, snaps = check_readers(rec)
        s = json.loads(cli("info", rec, "--json").stdout)
        assert s["recorder"]["pid"] == p.pid and s["recorder"]["running"] is True
        assert s["recorder"]["unfinished"] == [str(x.relative_to(rec)) for x in unfinished(rec)]
        assert s["snapshots"] <= snaps and s["files"] == len(finished(rec))
        text = cli("info", rec).stdout
        assert text.splitlines()[1].startswith(f"recorder     recording now (pid {p.pid}); the file in progress since ")
        part = unfinished(rec)[0].parent               # one date= folder of it: the same recorder
        assert cli("info", part).stdout.splitlines()[1].startswith(f"recorder     recording now (pid {p.pid})")
    finally:
        os.kill(p.pid, 18)
    p.send_signal(2)
    assert p.wait(timeout=30) == 0, p.stderr.read()
    assert not unfinished(rec) and not (rec / ".tcpsnap.lock").exists()
    rows2, snaps2 = check_readers(rec)
    assert rows2 > rows and snaps2 > snaps
    assert "recorder" not in cli("info", rec).stdout


@linux
def test_every_reader_reads_the_folder_exactly_after_kill_9(tmp_path, recorder):
    pytest.importorskip("duckdb")
    pytest.importorskip("polars")
    rec = tmp_path / "rec"
    p = recorder(rec, "--interval", "20ms", "--rotate", "1s", "--flush", "50ms", "--no-pids", "-q")

    def journaled():            # the file in progress holds snapshots (in its journal)
        return [x for x in unfinished(rec) if ".parquet.j" in x.name and x.stat().st_size > 0]

    assert wait_for(lambda: len(finished(rec)) >= 2 and journaled())
    os.kill(p.pid, 9)
    p.wait()
    left = unfinished(rec)
    assert left and (rec / ".tcpsnap.lock").exists()
    rows, snaps = check_readers(rec)
    # tcpsnap says what is not read yet, and how to get it
    p2 = cli("info", rec)
    assert p2.returncode == 0
    line = p2.stdout.splitlines()[1]
    # (two files only if it was killed while publishing one and starting the next)
    assert re.fullmatch(rf"recorder     not recording: a recorder \(pid {p.pid}\) stopped without finishing "
                        rf"(1 file|2 files) since 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}} UTC \([0-9.]+ (B|KiB|MiB)\), not read "
                        rf"until 'tcpsnap recover {re.escape(str(rec))}' \(or the next 'tcpsnap record "
                        rf"{re.escape(str(rec))}'\) finishes (it|them)", line), line
    assert p2.stderr == f"tcpsnap: note: {rec}: {line.removeprefix('recorder     ')}\n"
    # recovered: the unfinished file joins, every reader agrees again
    r = cli("recover", rec)
    assert r.returncode == 0 and r.stderr.startswith("recovered "), r.stderr
    assert not unfinished(rec) and not (rec / ".tcpsnap.lock").exists()
    rows2, snaps2 = check_readers(rec)
    assert rows2 > rows and snaps2 > snaps
    p3 = cli("info", rec)
    assert "recorder" not in p3.stdout and p3.stderr == ""


@linux
def test_a_recording_with_nothing_finished_yet(tmp_path, recorder):
    rec = tmp_path / "rec"
    p = recorder(rec, "--interval", "50ms", "--no-pids", "-q")          # one file every 15 minutes
    assert wait_for(lambda: any(x.name.endswith(".tmp") for x in unfinished(rec)))
    i = cli("info", rec)
    assert i.returncode == 0, i.stderr
    lines = i.stdout.splitlines()
    assert lines[0] == f"recording    {rec}"
    assert lines[1].startswith(f"recorder     recording now (pid {p.pid}); the file in progress since ")
    assert lines[-1] == "snapshots    0 (nothing finished yet)"
    with pytest.raises(FileNotFoundError) as e:
        tcpsnap.read(rec)
    assert str(e.value).startswith(f"no finished file in {rec} yet: recording now (pid {p.pid}); ")
    p.send_signal(15)
    assert p.wait(timeout=30) == 0
    assert len(tcpsnap.read(rec)) > 0


def test_a_lock_file_alone_is_no_recorder(tmp_path):
    """A lock file no process holds, with nothing unfinished (a recorder killed before its
    first file, or a lock left by hand), is nothing to report; with unfinished files and
    a dead pid, the recorder stopped."""
    from tcpsnap.reading.live import recorder_state

    rec = tmp_path / "rec"
    (rec / "date=2026-11-18").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (rec / ".tcpsnap.lock").write_text(f"{dead.pid}\n")
    assert recorder_state(rec) is None
    (rec / "date=2026-11-18" / ".tcpsnap-20261118T110640.000Z.parquet.tmp").write_bytes(b"PAR1")
    st = recorder_state(rec)
    assert (st.pid, st.running, st.unfinished, st.unfinished_bytes, st.since) == (
        dead.pid, False, ["date=2026-11-18/.tcpsnap-20261118T110640.000Z.parquet.tmp"], 4,
        "2026-11-18 11:06:40.000 UTC")
    assert st.describe(rec) == (f"not recording: a recorder (pid {dead.pid}) stopped without finishing 1 file "
                                f"since 2026-11-18 11:06:40.000 UTC (4 B), not read until 'tcpsnap recover {rec}' "
                                f"(or the next 'tcpsnap record {rec}') finishes it")
    assert recorder_state(tmp_path / "nothing") is None and recorder_state(V1 / "full") is None
