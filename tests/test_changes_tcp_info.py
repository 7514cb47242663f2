"""Changes mode with internals (``--tcp-info``): the rebuild returns exactly the counters full
mode records, at every snapshot; a ``counters`` event is written only when a counter (or the
state, or the queues) moved -- never for the timers that move on every sample."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcpsnap
from _changes_util import Scripted, SimClock, canon, row
from tcpsnap import ROW_DTYPE, Recorder, TcpState
from tcpsnap._diff import Differ
from tcpsnap._events import EVENTS
from tcpsnap._schema import TCP_INFO_DTYPE, TCP_INFO_TIMERS
from tcpsnap.reading import table_at
from tcpsnap.record.changes import ChangeTracker, counter_mask

STATES = [TcpState.SYN_SENT, TcpState.ESTABLISHED, TcpState.FIN_WAIT1, TcpState.CLOSE_WAIT,
          TcpState.TIME_WAIT]
NAMES = {100: "srv", 200: "cli"}


class ScriptedInfo(Scripted):
    """``Scripted`` with internals: ``tcp_info`` is the table's tcp_info rows."""

    tcp_info_enabled = True
    tcp_info_stats: dict = {}

    def __init__(self, tables, infos, **kw):
        super().__init__(tables, **kw)
        self.infos = [infos[0]] + list(infos)
        self.tcp_info = None

    def take(self):
        self.tcp_info = self.infos[self.i]
        return super().take()


def record_info(path, tables, infos, mode, **kw):
    snap = ScriptedInfo(tables, infos, pids=True, names=NAMES)
    extra = {"mode": mode, "destroy": False} if mode != "full" else {}
    with Recorder(path, interval=0, snapshotter=snap, clock=SimClock(), nice=None, tcp_info=True,
                  **extra, **kw) as rec:
        snap.rec = rec
        rec.run()
        return dict(rec.stats)


def info_row(length=280, acked=0, received=0, retrans=0, rtt=0, timer=0, cong=b"cubic"):
    i = np.zeros(1, TCP_INFO_DTYPE)[0]
    i["tcp_info_len"] = length
    i["bytes_acked"], i["bytes_received"], i["total_retrans"] = acked, received, retrans
    i["rtt"], i["min_rtt"] = rtt, rtt
    for name in TCP_INFO_TIMERS:
        i[name] = timer
    i["congestion"] = cong
    return i


@st.composite
def histories(draw):
    n = draw(st.integers(2, 12))
    nconn = draw(st.integers(0, 10))
    tables = [[] for _ in range(n)]
    infos = [[] for _ in range(n)]
    for c in range(nconn):
        a = draw(st.integers(0, n - 1))
        b = draw(st.integers(a + 1, n))
        quiet = draw(st.booleans())              # only its timers move: no event after opened
        state0 = draw(st.sampled_from(STATES))
        acked = received = retrans = 0
        length = draw(st.sampled_from([280, 232, 144]))
        for k in range(a, b):
            state = state0 if quiet else draw(st.sampled_from(STATES))
            if not quiet:
                acked += draw(st.sampled_from([0, 0, 1, 1448, 2**40]))
                received += draw(st.sampled_from([0, 7, 65536]))
                retrans += draw(st.sampled_from([0, 0, 0, 1]))
                if draw(st.integers(0, 7)) == 0:
                    acked = 0                                # a counter that goes back
            tables[k].append(row(state, "10.0.0.1", 1000 + c, "10.0.0.2", 443, 5000 + c,
                                 pid=draw(st.sampled_from([100, 200])) if not quiet else 100,
                                 rxq=0 if quiet else draw(st.sampled_from([0, 9]))))
            tw = state == TcpState.TIME_WAIT                 # no tcp_info for a mini-socket
            infos[k].append(info_row(0 if tw else length, acked, received, retrans, 50 + c,
                                     timer=draw(st.integers(0, 10**6)),
                                     cong=b"" if tw else draw(st.sampled_from([b"cubic", b"bbr"]))))
    # --tcp-info-every slower than the table: some snapshots sample no internals (None)
    sampled = draw(st.one_of(st.just([True] * n), st.lists(st.booleans(), min_size=n, max_size=n)))
    out_t, out_i = [], []
    for t, i, smp in zip(tables, infos, sampled, strict=True):
        order = draw(st.permutations(range(len(t))))
        out_t.append(np.array([t[j] for j in order], ROW_DTYPE) if t else np.zeros(0, ROW_DTYPE))
        out_i.append(None if not smp else
                     np.array([i[j] for j in order], TCP_INFO_DTYPE) if i else np.zeros(0, TCP_INFO_DTYPE))
    keyframe = draw(st.sampled_from(["300ms", "1m"]))
    return out_t, out_i, keyframe


def _no_timers(df):
    """Without the timers (in a changes recording: as of the connection's last event, by
    design); ``congestion`` as strings (a dictionary lists what its file used)."""
    out = df.drop(columns=[c for c in TCP_INFO_TIMERS if c in df])
    out["congestion"] = out["congestion"].astype(object)
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(h=histories())
def test_changes_counters_rebuild_equals_full(tmp_path_factory, h):
    """Every column full mode records, the internals included (but the timers: as of the
    connection's last event, by design), at every snapshot."""
    tables, infos, keyframe = h
    base = tmp_path_factory.mktemp("tcpinfo")
    record_info(base / "full", tables, infos, "full")
    record_info(base / "chg", tables, infos, "changes", keyframe=keyframe)
    chg = tcpsnap.read(base / "chg")
    if not list((base / "full").rglob("*.parquet")):
        assert sum(map(len, tables)) == 0 and len(chg) == 0
        return
    full = tcpsnap.read(base / "full")
    if len(full) == 0:        # no connection row anywhere (full mode's empty read has no internals columns)
        assert len(chg) == 0
        return
    assert "bytes_acked" in chg.columns and list(chg.columns) == list(full.columns)
    assert list(chg.dtypes.astype(str)) == list(full.dtypes.astype(str))
    pd.testing.assert_frame_equal(_no_timers(canon(chg)), _no_timers(canon(full)))
    k = len(tables) // 2
    at, want = table_at(base / "chg", seq=k), full[full["seq"] == k]
    # (one snapshot's frame has nulls or not as its own rows have: dtypes may differ)
    pd.testing.assert_frame_equal(_no_timers(canon(at)), _no_timers(canon(want)), check_dtype=False,
                                  check_index_type=False)


def _every_history():
    """Two connections over 6 snapshots, internals sampled at snapshots 0 and 3 only (as
    ``--tcp-info-every 300ms --interval 100ms``); connection 78 changes state at the
    unsampled snapshot 1, and 79 opens at the unsampled snapshot 4."""
    tables, infos = [], []
    for k in range(6):
        st1 = TcpState.ESTABLISHED if k == 0 else TcpState.CLOSE_WAIT
        t = [row(TcpState.ESTABLISHED, "10.0.0.1", 1000, "10.0.0.2", 443, 77, pid=100),
             row(st1, "10.0.0.1", 1001, "10.0.0.2", 443, 78, pid=100)]
        i = [info_row(acked=1448 * (k + 1), rtt=50), info_row(acked=10 * (k + 1), rtt=60)]
        if k >= 4:
            t.append(row(TcpState.ESTABLISHED, "10.0.0.1", 1002, "10.0.0.2", 443, 79, pid=200))
            i.append(info_row(acked=5, rtt=70))
        tables.append(np.array(t, ROW_DTYPE))
        infos.append(np.array(i, TCP_INFO_DTYPE) if k in (0, 3) else None)
    return tables, infos


def test_changes_every_unsampled_snapshots_are_null(tmp_path):
    """With internals sampled slower than the table, a changes recording's snapshots that
    sampled none have null internals (every tcp_info column), as full mode's; the sampled
    ones the sample's values, also where the connection's last event came between."""
    tables, infos = _every_history()
    record_info(tmp_path / "full", tables, infos, "full")
    record_info(tmp_path / "chg", tables, infos, "changes")
    full, chg = tcpsnap.read(tmp_path / "full"), tcpsnap.read(tmp_path / "chg")
    assert len(full) == len(chg) == 14
    pd.testing.assert_frame_equal(_no_timers(canon(chg)), _no_timers(canon(full)))
    info_cols = [c for c in full.columns if c in TCP_INFO_DTYPE.names]
    assert "tcp_info_len" in info_cols and "congestion" in info_cols
    for seq, g in chg.groupby("seq"):
        if seq in (0, 3):
            assert g[info_cols].notna().all().all(), seq
        else:
            assert g[info_cols].isna().all().all(), seq
    acked = chg[chg["seq"] == 3].set_index("cookie")["bytes_acked"].to_dict()
    assert acked == {77: 1448 * 4, 78: 40}
    at = table_at(tmp_path / "chg", seq=2)
    assert len(at) == 2 and at["bytes_acked"].isna().all() and at["tcp_info_len"].isna().all()
    # the events stay as recorded: the state change at the unsampled snapshot 1 carries the
    # last sample's counters; only the markers say which snapshots sampled
    ev = tcpsnap.read(tmp_path / "chg", mode="changes")
    m = ev[ev["family"] == 0].set_index("seq")["tcp_info_len"]
    assert m.isna().tolist() == [False, True, True, False, True, True]
    st = ev[(ev["event"] == "state") & (ev["cookie"] == 78)]
    assert st["seq"].tolist() == [1] and st["bytes_acked"].tolist() == [10]


def _tracker_events(infos, rows=None):
    """The event names a tracker writes for one connection over len(infos) snapshots."""
    tr = ChangeTracker(10**15, tcp_info=True)
    r = np.array([row(TcpState.ESTABLISHED, "10.0.0.1", 1, "10.0.0.2", 2, 77)], ROW_DTYPE)
    out = []
    for k, info in enumerate(infos):
        rr = r.copy() if rows is None else rows[k]
        ev_rows, _, extra = tr.step(rr, None, k, k, 0, info=np.array([info], TCP_INFO_DTYPE))
        events, _, _, ev_info = extra
        out.append([EVENTS[e] for e in events[1:]])
        if k and out[-1] == ["counters"]:
            # a partial row: the queues event's fields, and the whole tcp_info
            assert ev_rows[1]["local_port"] == 0 and ev_rows[1]["cookie"] == 77
            assert ev_info[1]["bytes_acked"] == info["bytes_acked"]
    return out


def test_timers_alone_are_no_event():
    infos = [info_row(acked=10, timer=t) for t in (5, 900, 123456)]
    assert _tracker_events(infos) == [["keyframe"], [], []]


@pytest.mark.parametrize("field", ["bytes_acked", "bytes_received", "total_retrans", "rtt", "snd_cwnd",
                                   "tcp_info_len", "congestion", "ca_state"])
def test_a_counter_moving_is_a_counters_event(field):
    a = info_row(acked=10)
    b = a.copy()
    b[field] = b"bbr" if field == "congestion" else b[field] + 1
    assert _tracker_events([a, b, b]) == [["keyframe"], ["counters"], []]


def test_counters_with_a_state_change_is_a_state_event():
    a, b = info_row(acked=10), info_row(acked=20)
    r0 = np.array([row(TcpState.ESTABLISHED, "10.0.0.1", 1, "10.0.0.2", 2, 77)], ROW_DTYPE)
    r1 = np.array([row(TcpState.CLOSE_WAIT, "10.0.0.1", 1, "10.0.0.2", 2, 77)], ROW_DTYPE)
    assert _tracker_events([a, b], rows=[r0, r1]) == [["keyframe"], ["state"]]


def test_counter_mask_leaves_out_the_timers_only():
    m = counter_mask()
    fields = TCP_INFO_DTYPE.fields
    for name in TCP_INFO_DTYPE.names:
        dt, off = fields[name][:2]
        assert m[off:off + dt.itemsize].all() == (name not in TCP_INFO_TIMERS), name
    assert set(TCP_INFO_TIMERS) >= {"last_data_sent", "last_data_recv"}


def test_differ_info_arguments():
    d = Differ(counter_mask())
    rows = np.zeros(2, ROW_DTYPE)
    with pytest.raises(ValueError, match="one per row"):
        d.diff(rows, np.zeros(2, np.int32), False, np.zeros(3, TCP_INFO_DTYPE))
    with pytest.raises(ValueError, match="info_mask"):
        Differ().diff(rows, np.zeros(2, np.int32), False, np.zeros(2, TCP_INFO_DTYPE))


def _encodings(folder):
    """column -> the set of Parquet encodings its chunks use, over every file and row group."""
    import pyarrow.parquet as pq

    out: dict[str, set] = {}
    for f in sorted(folder.rglob("*.parquet")):
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                out.setdefault(col.path_in_schema, set()).update(col.encodings)
    return out


def _moving_history(n=6):
    tables, infos = [], []
    for k in range(n):
        tables.append(np.array([row(TcpState.ESTABLISHED, "10.0.0.1", 1000 + c, "10.0.0.2", 443, 77 + c,
                                    pid=100, rxq=k * 7 + c, txq=k * 3) for c in range(3)], ROW_DTYPE))
        i = np.array([info_row(acked=1448 * k * (c + 1), received=100 * k, rtt=50 + k, timer=k * 100)
                      for c in range(3)], TCP_INFO_DTYPE)
        i["delivery_rate"] = 10**6 + 1000 * k
        i["pacing_rate"] = 2 * i["delivery_rate"]
        infos.append(i)
    return tables, infos


@pytest.mark.skipif(int(__import__("pyarrow").__version__.split(".")[0]) < 16,
                    reason="BYTE_STREAM_SPLIT for integers needs pyarrow 16")
def test_changes_mode_splits_rates_queues_and_timers(tmp_path):
    """Changes mode writes the rates, the queues and the timers BYTE_STREAM_SPLIT with no
    dictionary (events: values used once); full mode keeps its encodings for a steady table
    (rates in a dictionary, timers DELTA_BINARY_PACKED); ``compat`` splits nothing. The
    values read back are what was recorded (the rebuild equals full mode's)."""
    tables, infos = _moving_history()
    record_info(tmp_path / "full", tables, infos, "full")
    record_info(tmp_path / "chg", tables, infos, "changes")
    record_info(tmp_path / "compat", tables, infos, "changes", compat=True)
    cols = ("rx_queue", "tx_queue", "pacing_rate", "delivery_rate", *TCP_INFO_TIMERS)
    chg, full, compat = (_encodings(tmp_path / x) for x in ("chg", "full", "compat"))
    for c in cols:
        assert "BYTE_STREAM_SPLIT" in chg[c] and "RLE_DICTIONARY" not in chg[c], (c, chg[c])
        assert "BYTE_STREAM_SPLIT" not in compat[c], (c, compat[c])
    for c in ("rx_queue", "tx_queue", "pacing_rate", "delivery_rate"):
        assert "RLE_DICTIONARY" in full[c], (c, full[c])
    for c in TCP_INFO_TIMERS:
        assert "DELTA_BINARY_PACKED" in full[c], (c, full[c])
    got, want = tcpsnap.read(tmp_path / "chg"), tcpsnap.read(tmp_path / "full")
    assert len(want) == 18
    pd.testing.assert_frame_equal(_no_timers(canon(got)), _no_timers(canon(want)))
    assert sorted(got["pacing_rate"].unique().tolist()) == [2 * (10**6 + 1000 * k) for k in range(6)]
    assert sorted(got["rx_queue"].unique().tolist()) == sorted({k * 7 + c for k in range(6) for c in range(3)})


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="internals are Linux's")
def test_changes_every_live(tmp_path):
    """Live, in changes mode on loopback: internals sampled once an hour, the table every
    20 ms; the first snapshot has the connection's bytes, every later one null internals
    (not the first sample's carried), and only the first marker says "sampled"."""
    from _sockets import inode, pair

    n = 12_345
    lst, c, s = pair("127.0.0.1")
    ino = inode(c)          # the client's rows by inode: the host may have its port numbers
    try:
        c.sendall(b"q" * n)
        got = 0
        while got < n:
            got += len(s.recv(65536))
        d = tmp_path / "rec"
        with Recorder(d, mode="changes", destroy=False, interval="20ms", tcp_info=True,
                      tcp_info_every="1h", pids=False) as rec:
            rec.run(duration="0.3s")
    finally:
        for x in (c, s, lst):
            x.close()
    df = tcpsnap.read(d)
    mine = df[df["inode"] == ino].sort_values("seq")
    assert len(mine) >= 3
    assert mine["bytes_sent"].iloc[0] == n
    info_cols = [k for k in df.columns if k in TCP_INFO_DTYPE.names]
    assert mine[info_cols].iloc[1:].isna().all().all()
    ev = tcpsnap.read(d, mode="changes")
    marks = ev[ev["family"] == 0].sort_values("seq")["tcp_info_len"]
    assert marks.isna().tolist() == [False] + [True] * (len(marks) - 1)
