"""Analysis of TCP internals: lifetimes' tcplife columns, throughput from counter deltas (a
counter going back is a reset), top_remotes / by_process by bytes -- from recordings made
with --tcp-info (scripted tables through the real Recorder), in memory and in bounded memory."""

import numpy as np
import pandas as pd
import pytest

import tcpsnap
from _changes_util import INTERVAL_NS, WALL0, row
from tcpsnap import ROW_DTYPE, TcpState, analysis
from tcpsnap._schema import TCP_INFO_DTYPE
from test_changes_tcp_info import info_row, record_info

EST = TcpState.ESTABLISHED

# connection A (cookie 1, pid 100 "srv", to 10.0.0.2): acked 1000, 3000, 3000, then reset to
# 500; received 10, 20, 20, 20. B (cookie 2, pid 200 "cli", to 10.0.0.3): 0 .. 4 * 10**6,
# opened at snapshot 1. C (cookie 3): no tcp_info at all (a TIME_WAIT). Then A closes.
A = [(1000, 10), (3000, 20), (3000, 20), (500, 20)]
B = [None, (0, 0), (2 * 10**6, 5), (4 * 10**6, 9)]


def _tables():
    tables, infos = [], []
    for k in range(4):
        t, i = [], []
        t.append(row(EST, "10.0.0.1", 1, "10.0.0.2", 443, 1, pid=100))
        i.append(info_row(acked=A[k][0], received=A[k][1], retrans=k, rtt=900 - k))
        if B[k] is not None:
            t.append(row(EST, "10.0.0.1", 2, "10.0.0.3", 80, 2, pid=200))
            i.append(info_row(acked=B[k][0], received=B[k][1], rtt=70))
        t.append(row(TcpState.TIME_WAIT, "10.0.0.1", 3, "10.0.0.3", 80, 3))
        i.append(info_row(length=0, cong=b""))
        tables.append(np.array(t, ROW_DTYPE))
        infos.append(np.array(i, TCP_INFO_DTYPE))
    tables.append(np.zeros(0, ROW_DTYPE))
    infos.append(np.zeros(0, TCP_INFO_DTYPE))
    return tables, infos


@pytest.fixture(scope="module", params=["full", "changes"])
def rec(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("ai") / request.param
    tables, infos = _tables()
    record_info(path, tables, infos, request.param)
    return path


def test_lifetimes_have_tcplife_columns(rec):
    life = analysis.lifetimes(tcpsnap.read(rec), snapshots=tcpsnap.snapshots(rec)).set_index("cookie")
    assert life.loc[1, "bytes_out"] == 500 and life.loc[1, "bytes_in"] == 20
    assert life.loc[1, "retrans"] == 3 and life.loc[1, "min_rtt"] == 897
    assert life.loc[2, "bytes_out"] == 4 * 10**6 and life.loc[2, "bytes_in"] == 9
    assert all(pd.isna(life.loc[3, c]) for c in ("bytes_out", "bytes_in", "retrans", "min_rtt"))
    assert str(life["bytes_out"].dtype) == "UInt64"
    bounded = analysis.lifetimes(rec).set_index("cookie")
    pd.testing.assert_frame_equal(bounded[["bytes_out", "bytes_in", "retrans", "min_rtt"]],
                                  life[["bytes_out", "bytes_in", "retrans", "min_rtt"]])


def test_lifetimes_without_internals_are_null(tmp_path):
    from _changes_util import record

    record(tmp_path / "r", [np.array([row(EST, "10.0.0.1", 1, "10.0.0.2", 443, 1)], ROW_DTYPE)])
    life = analysis.lifetimes(tcpsnap.read(tmp_path / "r"))
    assert life["bytes_out"].isna().all() and life["min_rtt"].isna().all()


def test_closed_event_totals_win_in_a_changes_recording(tmp_path):
    """A changes recording's closed event carries the kernel's final tcp_info (here: set
    by hand in the events, as the destroy feed would): lifetimes takes it."""
    tables, infos = _tables()
    record_info(tmp_path / "c", tables, infos, "changes")
    ev = tcpsnap.read(tmp_path / "c", mode="changes")
    closed = (ev["event"] == "closed") & (ev["cookie"] == 1)
    assert closed.sum() == 1
    ev.loc[closed, "bytes_acked"] = 123456
    life = analysis.lifetimes(ev).set_index("cookie")
    assert life.loc[1, "bytes_out"] == 123456 and life.loc[2, "bytes_out"] == 4 * 10**6


def test_throughput_total_per_connection_per_process(rec):
    df = tcpsnap.read(rec)
    snaps = tcpsnap.snapshots(rec)
    tot = analysis.throughput(df, freq="100ms", snapshots=snaps)
    # deltas at snapshots 1, 2, 3: A 2000 / 10, 0 / 0, reset -> 500 / 0; B -, 2e6 / 5, 2e6 / 4
    assert tot["bytes_out"].tolist()[:4] == [0.0, 20000.0, 2 * 10**7, (500 + 2 * 10**6) * 10.0]
    assert tot["bytes_in"].tolist()[:4] == [0.0, 100.0, 50.0, 40.0]
    assert (tot["bytes_out"] >= 0).all()
    per = analysis.throughput(df, freq="100ms", by="connection")
    a = per[per["cookie"] == 1]
    assert a["bytes_out"].tolist() == [20000.0, 0.0, 5000.0]
    assert set(a["process"].astype(str)) == {"srv"}
    proc = analysis.throughput(df, freq="200ms", by="process").set_index("process")
    assert proc.loc["cli", "bytes_out"].sum() == pytest.approx((4 * 10**6) / 0.2)
    # in bounded memory: the same, also when every piece is one snapshot
    pd.testing.assert_frame_equal(analysis.throughput(rec, freq="100ms"), tot)
    from tcpsnap.analysis import Selection

    one = Selection(rec, chunk_rows=1)
    pd.testing.assert_frame_equal(analysis.throughput(one, freq="100ms"), tot)
    pd.testing.assert_frame_equal(analysis.throughput(one, freq="100ms", by="connection")
                                  .drop(columns=["process"]).reset_index(drop=True),
                                  per.drop(columns=["process"]).reset_index(drop=True), check_dtype=False)


def test_throughput_gap_is_nan_and_bad_by(rec):
    snaps = tcpsnap.snapshots(rec)
    cut = snaps[snaps["seq"] != 2]
    df = tcpsnap.read(rec)
    tot = analysis.throughput(df[df["seq"] != 2], freq="100ms", snapshots=cut)
    assert np.isnan(tot["bytes_out"].iloc[2])
    with pytest.raises(ValueError, match="by must be"):
        analysis.throughput(df, by="host")
    assert WALL0 and INTERVAL_NS      # the clock the tables were recorded on (100 ms)


def test_top_remotes_and_by_process_by_bytes(rec):
    top = analysis.top_remotes(rec, by="bytes")
    assert top.index.tolist()[:2] == ["10.0.0.3", "10.0.0.2"]
    assert top.loc["10.0.0.3", "bytes_out"] == 4 * 10**6 and top.loc["10.0.0.2", "bytes_in"] == 20
    by_conn = analysis.top_remotes(tcpsnap.read(rec))
    assert by_conn.index.tolist()[0] == "10.0.0.3"         # two connections
    bp = analysis.by_process(rec, by="bytes")
    assert bp["process"].tolist()[:2] == ["cli", "srv"]
    assert bp.set_index("process").loc["srv", "bytes_out"] == 500
    with pytest.raises(ValueError, match="by must be"):
        analysis.by_process(rec, by="rtt")
