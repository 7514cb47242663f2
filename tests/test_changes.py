"""Changes mode: the events of known histories, crash recovery with keyframes, analysis
on changes recordings, and (in a private network namespace) connections that live
between two snapshots, caught by the kernel's socket-destroy feed."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tcpsnap
from _changes_util import canon, record, row
from conftest import CAN_UNSHARE_NET
from tcpsnap import ROW_DTYPE, TcpState, analysis
from tcpsnap.reading import to_full

S = TcpState


def _events(path):
    ev = tcpsnap.read(path, mode="changes")
    return ev[ev["family"] != 0]


def test_fin_wait_to_time_wait_to_gone(tmp_path):
    lst = row(S.LISTEN, "127.0.0.1", 80, "0.0.0.0", 0, cookie=1)
    seq = [None, S.ESTABLISHED, S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2, S.TIME_WAIT, S.TIME_WAIT, None]
    tables = []
    for st in seq:
        t = [lst]
        if st is not None:
            t.append(row(st, "127.0.0.1", 5000, "127.0.0.1", 80, cookie=2))
        tables.append(np.array(t, ROW_DTYPE))
    record(tmp_path / "r", tables, "changes")
    ev = _events(tmp_path / "r")
    c = ev[ev["cookie"] == 2]
    assert list(zip(c["seq"], c["event"].astype(str), c["state"].astype(str))) == [
        (1, "opened", "ESTABLISHED"), (3, "state", "FIN_WAIT1"), (4, "state", "FIN_WAIT2"),
        (5, "state", "TIME_WAIT"), (7, "closed", "TIME_WAIT")]
    assert c["seen_in_snapshot"].all()
    # the listener: in the first keyframe only
    assert ev[ev["cookie"] == 1]["event"].astype(str).tolist() == ["keyframe"]


def test_other_fields_make_changed_events(tmp_path):
    names = {100: "srv", 200: "cli", 300: "cli2"}
    base = [row(S.ESTABLISHED, "127.0.0.1", 5000, "127.0.0.1", 80, cookie=2, pid=100)]
    tables = [np.array(base, ROW_DTYPE)]
    for change in ("rx_queue", "tx_queue", "pid", "same", "uid"):
        r = tables[-1].copy()
        if change == "pid":
            r["pid"] = 200
        elif change != "same":
            r[change] += 5
        tables.append(r)
    record(tmp_path / "r", tables, "changes", names=names)
    record(tmp_path / "f", tables, "full", names=names)
    ev = _events(tmp_path / "r")
    assert ev["event"].astype(str).tolist() == ["keyframe", "queues", "queues", "changed", "changed"]
    assert ev["seq"].tolist() == [0, 1, 2, 3, 5]
    proc = ev["process"].astype(object).tolist()
    assert proc[0] == "srv" and pd.isna(proc[1]) and pd.isna(proc[2]) and proc[3:] == ["cli", "cli"]
    q = ev[ev["event"] == "queues"]       # only what a queues event needs
    assert (q["local_port"] == 0).all() and (q["inode"] == 0).all() and (q["cookie"] == 2).all()
    assert q["rx_queue"].tolist() == [5, 5] and q["tx_queue"].tolist() == [0, 5]
    pd.testing.assert_frame_equal(canon(tcpsnap.read(tmp_path / "r")), canon(tcpsnap.read(tmp_path / "f")))


def test_stable_table_records_markers_only(tmp_path):
    t = np.array([row(S.ESTABLISHED, "10.0.0.1", 1000 + i, "10.0.0.2", 443, cookie=10 + i)
                  for i in range(50)], ROW_DTYPE)
    record(tmp_path / "r", [t] * 30, "changes", keyframe="1m")
    ev = tcpsnap.read(tmp_path / "r", mode="changes")
    assert len(ev) == 30 + 50          # a marker per snapshot, the keyframe's rows
    assert len(tcpsnap.read(tmp_path / "r")) == 30 * 50


def test_analysis_accepts_changes_recordings(tmp_path):
    from test_recorded_analysis import history

    tables = history()
    record(tmp_path / "f", tables, "full", names={100: "srv", 200: "cli"})
    record(tmp_path / "c", tables, "changes", names={100: "srv", 200: "cli"}, keyframe="300ms")
    full, chg = tcpsnap.read(tmp_path / "f"), tcpsnap.read(tmp_path / "c")
    key = ["local_port", "first_seen"]
    lf = analysis.lifetimes(full).sort_values(key).reset_index(drop=True)
    lc = analysis.lifetimes(chg).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(lc, lf, check_categorical=False)
    raw = tcpsnap.read(tmp_path / "c", mode="changes")
    pd.testing.assert_frame_equal(canon(to_full(raw)), canon(full))
    lr = analysis.lifetimes(raw).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(lr, lf, check_categorical=False)
    pd.testing.assert_frame_equal(analysis.state_counts(raw), analysis.state_counts(full))
    with pytest.raises(ValueError):
        tcpsnap.read(tmp_path / "f", mode="changes")


CRASH_CHILD = r"""
import os, signal, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from _changes_util import crash_replay, row
from tcpsnap import ROW_DTYPE, TcpState
from tcpsnap import Recorder
from test_changes import crash_tables
tables = crash_tables()
snap = crash_replay(tables, int(sys.argv[3]))
rec = Recorder(sys.argv[1], interval="10ms", mode="changes", keyframe="100ms", flush="60ms",
               row_group_rows=40, snapshotter=snap, nice=None, destroy=False)
snap.rec = rec
rec.open()
rec.run()
"""


def crash_tables():
    rng = np.random.default_rng(7)
    tables, live = [], {}
    for k in range(120):
        for c in list(live):
            if rng.random() < 0.05:
                del live[c]
            elif rng.random() < 0.2:
                live[c] = int(rng.choice([S.ESTABLISHED, S.FIN_WAIT1, S.CLOSE_WAIT, S.TIME_WAIT]))
        for _ in range(rng.integers(0, 3)):
            live[1000 + k * 10 + len(live)] = int(S.SYN_SENT)
        tables.append(np.array([row(st, "10.0.0.1", c % 60000, "10.0.0.9", 443, cookie=c)
                                for c, st in live.items()], ROW_DTYPE).reshape(-1))
    return tables


def test_keyframe_in_the_middle_of_a_crash_recovered_file(tmp_path):
    tables = crash_tables()
    here = str(Path(__file__).parent)
    folder = tmp_path / "rec"
    p = subprocess.run([sys.executable, "-c", CRASH_CHILD, str(folder), here, "80"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not list(folder.rglob("*.parquet"))          # the only file was in progress
    rec = tcpsnap.recover(folder)
    assert len(rec) == 1 and rec[0].path is not None
    ev = tcpsnap.read(folder, mode="changes")
    markers = ev[ev["family"] == 0]
    seqs = markers["seq"].tolist()
    assert seqs == list(range(len(seqs))) and 20 <= len(seqs) <= 80
    kf = markers[markers["event"] == "keyframe"]["seq"].tolist()
    assert kf[0] == 0 and len(kf) >= 2                   # keyframes inside the recovered file
    got = tcpsnap.read(folder)
    for k in seqs:
        want = tables[k]
        have = got[got["seq"] == k]
        assert sorted(have["cookie"].tolist()) == sorted(want["cookie"].tolist())
        assert sorted(zip(have["cookie"], have["state"].astype(str))) == \
            sorted(zip(want["cookie"].tolist(), [S(s).name for s in want["state"]]))
    # a table in the middle, rebuilt from the keyframe before it, inside the recovered file
    mid = kf[-1] + 1 if kf[-1] + 1 in seqs else kf[-1]
    at = tcpsnap.reading.table_at(folder, seq=mid)
    assert sorted(at["cookie"].tolist()) == sorted(tables[mid]["cookie"].tolist())


needs_netns = pytest.mark.skipif(not CAN_UNSHARE_NET, reason="needs unshare -n (root) on Linux")


@pytest.mark.netns
@needs_netns
def test_destroy_feed_catches_connections_between_snapshots(tmp_path):
    child = Path(__file__).with_name("_changes_netns_child.py")
    p = subprocess.run(["unshare", "-n", sys.executable, str(child), str(tmp_path / "rec")],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(child.parent)})
    if p.returncode != 0 and "needs CAP_NET_ADMIN" in p.stderr:
        pytest.skip("no socket-destroy feed here")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    found = out["found"]
    assert len(found) == 100
    missing = [port for port, evs in found.items() if not evs]
    assert not missing, f"{len(missing)} of 100 connections not in the recording"
    # each connection, both sides: the client's socket (passive close, freed at once) is
    # a closed event from the destroy feed alone; the server's full socket, freed as it
    # became a TIME_WAIT (which the next snapshot records under a cookie of its own), is
    # that TIME_WAIT's connection, not a closed event of its own
    want = [["closed", False, "CLOSED", True], ["opened", True, "TIME_WAIT", False]]
    assert all(evs == want for evs in found.values()), found
    assert set(out["identities"].values()) == {2}      # one per side
    assert out["unseen"] == 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the destroy feed is Linux's")
def test_without_the_destroy_feed_one_warning_and_polling(tmp_path, monkeypatch, caplog):
    import errno

    import tcpsnap._destroy
    from tcpsnap import Recorder

    class Refused:
        def __init__(self, *a, **k):
            raise PermissionError(errno.EPERM, "setsockopt(NETLINK_ADD_MEMBERSHIP, 1): Operation not permitted")

    monkeypatch.setattr(tcpsnap._destroy, "DestroyFeed", Refused)
    with caplog.at_level("WARNING", logger="tcpsnap"):
        with Recorder(tmp_path / "r", interval="50ms", mode="changes", pids=False, nice=None) as rec:
            rec.run(duration="0.2s")
            stats = rec.stats
    warnings = [r for r in caplog.records if "destroy feed" in r.getMessage()]
    assert len(warnings) == 1 and "polling only" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert stats["destroy_feed"] is False and stats["snapshots"] >= 2
    import pyarrow.parquet as pq

    f = next((tmp_path / "r").rglob("*.parquet"))
    assert pq.read_metadata(f).metadata[b"tcpsnap.destroy_feed"] == b"false"
    assert len(tcpsnap.read(tmp_path / "r")) > 0 or stats["rows"] == stats["snapshots"]
    with pytest.raises(PermissionError):
        Recorder(tmp_path / "r2", mode="changes", pids=False, destroy=True).open()


def test_repeated_identities_are_rebuilt_exactly(tmp_path):
    """Two rows with one identity (no cookie, same tuple: neither backend makes them, but
    a table could hold them) force keyframes, and the rebuild stays exact."""
    a = row(S.ESTABLISHED, "10.0.0.1", 7000, "10.0.0.2", 22, cookie=0)
    b = row(S.TIME_WAIT, "10.0.0.1", 7000, "10.0.0.2", 22, cookie=0)
    c = row(S.ESTABLISHED, "10.0.0.1", 7001, "10.0.0.2", 22, cookie=0)
    d = row(S.ESTABLISHED, "10.0.0.1", 7002, "10.0.0.2", 22, cookie=9)
    seq = [[a, c], [a, b, c], [a, b, c, d], [b, c, d], [c], [a, c], [a, a, c], [a]]
    tables = [np.array(t, ROW_DTYPE) for t in seq]
    record(tmp_path / "f", tables, "full")
    record(tmp_path / "c", tables, "changes")
    pd.testing.assert_frame_equal(canon(tcpsnap.read(tmp_path / "c")), canon(tcpsnap.read(tmp_path / "f")))
    ev = tcpsnap.read(tmp_path / "c", mode="changes")
    kf = ev[(ev["family"] == 0) & (ev["event"] == "keyframe")]["seq"].tolist()
    assert kf == [0, 1, 2, 3, 6, 7]      # a repeat in this table or the previous one


def test_record_cli_changes_mode(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "r"), "--mode", "changes",
                        "--keyframe", "300ms", "--duration", "0.6s", "--interval", "100ms", "--no-pids", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    ev = tcpsnap.read(tmp_path / "r", mode="changes")
    markers = ev[ev["family"] == 0]
    assert len(markers) >= 3 and markers["event"].iloc[0] == "keyframe"
    assert (markers["event"] == "keyframe").sum() >= 2
    full = tcpsnap.read(tmp_path / "r")
    assert full.groupby("seq").size().to_dict() == \
        {int(s): int(n) for s, n in zip(markers["seq"], markers["inode"]) if n}
    info = subprocess.run([sys.executable, "-m", "tcpsnap", "info", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "mode         changes" in info.stdout


@pytest.mark.netns
@needs_netns
def test_live_table_with_destroy_feed_rebuilds_exactly(tmp_path):
    """The real kernel, the destroy feed and churn: every rebuilt snapshot equals the
    table the recorder took (the destroy reports close nothing that is still there), but
    for sockets a dump skipped, which the recording keeps (the kernel still held them)."""
    child = Path(__file__).with_name("_changes_netns_exact.py")
    p = subprocess.run(["unshare", "-n", sys.executable, str(child), str(tmp_path / "rec")],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(child.parent)})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["snapshots"] >= 10 and out["bad"] == []
    assert out["refound"] <= out["probed_alive"]
    assert out["destroyed"] > 0 and out["unseen"] > 0 and out["rows"] > 0
    # and the README's DuckDB query, on this recording from the kernel (unseen closes,
    # keyframes), gives table_at's rows
    duckdb = pytest.importorskip("duckdb")
    folder = tmp_path / "rec"
    ev = tcpsnap.read(folder, mode="changes")
    assert (~ev["seen_in_snapshot"]).any()
    marks = ev[ev["kind"] == "snapshot"]["timestamp"]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for when in list(marks.iloc[:: max(1, len(marks) // 8)]) + [marks.iloc[-1] + pd.Timedelta("5ms")]:
        got = con.sql(_readme_sql(folder, when)).df()
        assert _canon_rows(got) == _canon_rows(tcpsnap.table_at(folder, when)), when


# ---------------------------------------------------------------- the README's DuckDB query

def _readme_sql(folder, when):
    """The README's query, as written there, with its folder and moment replaced."""
    import re

    text = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"```sql\n(.*?)```", text, re.S) if b.startswith("WITH ev AS")]
    assert len(blocks) == 1, "the README has one SQL block of the table at a moment"
    sql = blocks[0]
    for placeholder in ("'rec/date=*/*.parquet'", "'2026-11-26 10:00:00+00'"):
        assert sql.count(placeholder) == 1, placeholder
    when = pd.Timestamp(when).tz_convert("UTC")
    text = when.strftime("%Y-%m-%d %H:%M:%S.%f") + f"{when.nanosecond:03d}+00"
    return (sql.replace("'rec/date=*/*.parquet'", f"'{folder}/date=*/*.parquet'")
               .replace("'2026-11-26 10:00:00+00'", f"'{text}'"))


def _canon_rows(df):
    """Rows as sorted tuples of plain values, timestamps in epoch ns, nulls as None."""
    out = []
    cols = list(df.columns)
    for rec in df.itertuples(index=False):
        row = []
        for c, v in zip(cols, rec):
            if c == "timestamp":
                v = pd.Timestamp(v).tz_localize("UTC").value if pd.Timestamp(v).tz is None else pd.Timestamp(v).value
            elif v is None or (isinstance(v, float) and np.isnan(v)):
                v = None
            elif isinstance(v, (np.integer, int)):
                v = int(v)
            else:
                v = str(v)
            row.append(v)
        out.append(tuple(row))
    return sorted(out, key=repr)


def _sql_history():
    """Opens, state changes, closes, queues-only changes (partial rows), connections without
    a cookie (one 4-tuple, gone in between: two connections), repeated identities."""
    a = row(S.ESTABLISHED, "10.0.0.1", 7000, "10.0.0.2", 22, cookie=0)
    b = row(S.TIME_WAIT, "10.0.0.1", 7000, "10.0.0.2", 22, cookie=0)
    busy = row(S.ESTABLISHED, "10.0.0.1", 8000, "10.0.0.3", 443, cookie=77, pid=100)
    v6 = row(S.ESTABLISHED, "fe80::1", 8001, "2001:db8::3", 443, cookie=78, family=6)
    lst = row(S.LISTEN, "0.0.0.0", 80, "0.0.0.0", 0, cookie=1, pid=100)
    tables = []
    for k in range(24):
        t = [lst]
        if k % 7 < 4:
            t.append(a)
        if 9 <= k < 11:
            t += [b, a]                         # the same identity twice
        q = busy.copy()
        q["rx_queue"], q["tx_queue"] = (k * 37) % 5, (k * 11) % 3
        if k < 20:
            t.append(q)
        if 3 <= k < 15:
            r = v6.copy()
            r["state"] = S.ESTABLISHED if k < 8 else S.CLOSE_WAIT
            r["rx_queue"] = k % 2
            t.append(r)
        for c in range(k % 4):                  # short-lived ones
            t.append(row(S.SYN_SENT if c % 2 else S.ESTABLISHED, "10.0.0.1", 9000 + k * 4 + c,
                          "10.0.0.9", 80, cookie=1000 + k * 4 + c, pid=200))
        tables.append(np.array(t, ROW_DTYPE))
    return tables


@pytest.mark.parametrize("which", ["history", "crash", "sql"])
def test_readme_duckdb_query_gives_table_at(tmp_path, which):
    """The README's query, run by DuckDB alone, returns exactly the rows of table_at, at
    every snapshot, between snapshots, across keyframes and file rotations."""
    duckdb = pytest.importorskip("duckdb")
    from test_recorded_analysis import history

    tables = {"history": history, "crash": crash_tables, "sql": _sql_history}[which]()
    folder = tmp_path / "r"
    record(folder, tables, "changes", names={100: "srv", 200: "cli"}, keyframe="500ms", rotate="1s")
    assert len(list(folder.rglob("*.parquet"))) > 1
    ev = tcpsnap.read(folder, mode="changes")
    marks = ev[ev["kind"] == "snapshot"]
    assert (marks["event"] == "keyframe").sum() > 1
    if which == "sql":
        assert (ev["kind"] == "partial").sum() > 0 and (ev["cookie"] == 0).sum() > 0
    every = max(1, len(marks) // 12)
    times = sorted({t + d for t in marks["timestamp"].iloc[::every] for d in (pd.Timedelta(0), pd.Timedelta("50ms"))}
                   | {marks["timestamp"].iloc[5] - pd.Timedelta("1ns")})
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    checked = 0
    for when in times:
        got = con.sql(_readme_sql(folder, when)).df()
        want = tcpsnap.table_at(folder, when)
        assert list(got.columns) == list(want.columns)
        assert _canon_rows(got) == _canon_rows(want), when
        checked += len(want)
    assert checked > len(times)
    # before the first snapshot: no rows (table_at: LookupError)
    first = marks["timestamp"].min() - pd.Timedelta("1ms")
    assert len(con.sql(_readme_sql(folder, first)).df()) == 0
    with pytest.raises(LookupError):
        tcpsnap.table_at(folder, first)
