"""Changes mode rebuilds exactly what full mode records: random connection histories,
recorded both ways through the real Recorder (a scripted backend feeding known tables),
agree row for row, every column, at every snapshot."""

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcpsnap
from _changes_util import canon, record, row
from tcpsnap import TcpState
from tcpsnap.reading import table_at

STATES = [TcpState.SYN_SENT, TcpState.ESTABLISHED, TcpState.FIN_WAIT1, TcpState.CLOSE_WAIT,
          TcpState.TIME_WAIT, TcpState.LISTEN]
NAMES = {100: "srv", 200: "cli", 300: "cli"}      # 300 and 200 share a name; 400 has none


@st.composite
def histories(draw):
    n = draw(st.integers(2, 14))
    nconn = draw(st.integers(0, 12))
    tables = [[] for _ in range(n)]
    for c in range(nconn):
        a = draw(st.integers(0, n - 1))
        b = draw(st.integers(a + 1, n))
        cookieless = draw(st.booleans())
        family = draw(st.sampled_from([4, 6]))
        la, ra = ("10.0.0.1", "10.0.0.2") if family == 4 else ("fe80::1", "2001:db8::2")
        lp = 1000 + c                 # cookieless rows: the tuple is the identity, keep it unique
        cookie = 0 if cookieless else 5000 + c
        busy = draw(st.booleans())        # only its queues change: "queues" events
        state0, pid0 = draw(st.sampled_from(STATES)), draw(st.sampled_from([0, 100, 200, 300, 400]))
        for k in range(a, b):
            state = state0 if busy else draw(st.sampled_from(STATES))
            pid = pid0 if busy else draw(st.sampled_from([0, 100, 200, 300, 400]))
            rxq = draw(st.sampled_from([0, 0, 0, 7, 4096]))
            r = row(state, la, lp, ra, 443, cookie, pid=pid, rxq=rxq, family=family)
            if not cookieless and not busy and draw(st.integers(0, 9)) == 0:
                r["local_addr"][0] ^= 1           # a bound socket that connects: its tuple moves
            tables[k].append(r)
    for t in tables:
        if draw(st.booleans()):
            # the kernel's order changes (else it stays: the diff is made in place)
            order = draw(st.permutations(range(len(t))))
            t[:] = [t[i] for i in order]
    from tcpsnap import ROW_DTYPE

    out = [np.array(t, dtype=ROW_DTYPE) if t else np.zeros(0, ROW_DTYPE) for t in tables]
    rotate = draw(st.sampled_from(["300ms", "1s", "15m"]))
    keyframe = draw(st.sampled_from(["200ms", "500ms", "1m"]))
    return out, rotate, keyframe


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(h=histories())
def test_changes_rebuild_equals_full_recording(tmp_path_factory, h):
    tables, rotate, keyframe = h
    base = tmp_path_factory.mktemp("prop")
    record(base / "full", tables, "full", names=NAMES, rotate=rotate)
    record(base / "chg", tables, "changes", names=NAMES, rotate=rotate, keyframe=keyframe)
    chg = tcpsnap.read(base / "chg")
    if not list((base / "full").rglob("*.parquet")):     # full mode writes no file without rows
        assert sum(map(len, tables)) == 0 and len(chg) == 0
        return
    full = tcpsnap.read(base / "full")
    assert list(chg.columns) == list(full.columns)
    assert list(chg.dtypes.astype(str)) == list(full.dtypes.astype(str))
    pd.testing.assert_frame_equal(canon(chg), canon(full))
    # every snapshot is known, also those with no row (full mode has no trace of those)
    ev = tcpsnap.read(base / "chg", mode="changes")
    markers = ev[ev["family"] == 0]
    assert markers["seq"].tolist() == list(range(len(tables)))
    assert markers["inode"].tolist() == [len(t) for t in tables]
    # each file starts with a keyframe
    for f in sorted((base / "chg").rglob("*.parquet")):
        first = pd.read_parquet(f)
        assert first["event"].iloc[0] == "keyframe" and first["family"].iloc[0] == 0
    # one snapshot at a time, by seq and by time
    k = len(tables) // 2
    at = table_at(base / "chg", seq=k)
    pd.testing.assert_frame_equal(canon(at), canon(full[full["seq"] == k]))
    when = markers["timestamp"].iloc[k] + pd.Timedelta("50ms")
    pd.testing.assert_frame_equal(canon(table_at(base / "chg", when)), canon(at))
