"""plot --kind throughput|rtt|retrans, read back from the drawn artists: each bin's value
flat across its bin, a gap (no snapshot) a break in every line and a shaded span. The
recording: test_plot's (30 snapshots every 100 ms, the recorder stopped 2 s after snapshot
14), with internals: one connection that acks 1000 bytes and receives 10 per snapshot,
retransmits once every 5 snapshots, rtt 2 ms (min_rtt 1 ms)."""

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pytest

matplotlib.use("Agg")

import tcpsnap
from _changes_util import row
from tcpsnap import ROW_DTYPE, Recorder, TcpState, plot
from tcpsnap._schema import TCP_INFO_DTYPE
from test_changes_tcp_info import ScriptedInfo, info_row
from test_plot import SEC, T0, PausedClock, lines, num, spans

EST = row(TcpState.ESTABLISHED, "10.0.0.1", 5000, "10.0.0.2", 443, cookie=7)


@pytest.fixture(scope="module", params=["full", "changes"])
def rec(request, tmp_path_factory):
    import pandas as pd

    path = tmp_path_factory.mktemp("plotinfo") / "rec"
    tables = [np.array([EST], ROW_DTYPE) for _ in range(30)]
    infos = []
    for k in range(30):
        i = info_row(acked=1000 * k, received=10 * k, retrans=k // 5, rtt=2000)
        i["min_rtt"] = 1000
        infos.append(np.array([i], TCP_INFO_DTYPE))
    snap = ScriptedInfo(tables, infos, pids=False)
    extra = {"mode": "changes", "destroy": False} if request.param == "changes" else {}
    with Recorder(path, interval=0, snapshotter=snap, clock=PausedClock(), nice=None, tcp_info=True,
                  **extra) as r:
        snap.rec = r
        r.run()
    assert pd.Timedelta(SEC)
    return path


def _edges():
    import pandas as pd

    return [num(T0 + pd.Timedelta(j * SEC)) for j in range(5) for j in (j, j + 1)]


def test_throughput_plot(rec):
    fig = plot.plot_internals(tcpsnap.analysis.Selection(rec), "throughput", freq="1s", tz="UTC", source=rec)
    ax = fig.axes[0]
    ln = lines(ax)
    assert set(ln) == {"out (bytes_acked)", "in (bytes_received)"}
    np.testing.assert_allclose(mdates.date2num(ln["out (bytes_acked)"].get_xdata()), _edges())
    # bin 0: deltas at snapshots 1..9 (9 x 1000 bytes in 1 s), bin 1: 10..14 (5 x), the gap,
    # then 15 (a delta across the gap: 1000) ..19: 5 x, and 20..29: 10 x
    np.testing.assert_array_equal(np.asarray(ln["out (bytes_acked)"].get_ydata(), float),
                                  np.repeat([9000, 5000, np.nan, 5000, 10000], 2))
    np.testing.assert_array_equal(np.asarray(ln["in (bytes_received)"].get_ydata(), float),
                                  np.repeat([90, 50, np.nan, 50, 100], 2))
    assert spans(ax) == [pytest.approx((num(T0 + 2 * np.timedelta64(SEC, "ns")),
                                        num(T0 + 3 * np.timedelta64(SEC, "ns"))))]
    assert ax.get_title().startswith("Throughput (from tcp_info byte counters)\n")


def test_rtt_and_retrans_plots(rec):
    df, snaps = tcpsnap.read(rec), tcpsnap.snapshots(rec)
    ax = plot.plot_internals(df, "rtt", freq="1s", tz="UTC", snapshots=snaps).axes[0]
    ln = lines(ax)
    np.testing.assert_array_equal(np.asarray(ln["rtt, mean"].get_ydata(), float),
                                  np.repeat([2, 2, np.nan, 2, 2], 2))
    np.testing.assert_array_equal(np.asarray(ln["min_rtt, least"].get_ydata(), float),
                                  np.repeat([1, 1, np.nan, 1, 1], 2))
    assert len(spans(ax)) == 1
    ax = plot.plot_internals(df, "retrans", freq="1s", tz="UTC", snapshots=snaps).axes[0]
    # total_retrans k // 5: +1 at snapshots 5, 10 (bin 1: 10..14), 15, 20, 25 ...
    np.testing.assert_array_equal(np.asarray(lines(ax)["retransmitted"].get_ydata(), float),
                                  np.repeat([1, 1, np.nan, 1, 2], 2))
    with pytest.raises(ValueError, match="kind must be"):
        plot.plot_internals(df, "cwnd")


def test_plot_cli_kinds(rec, tmp_path):
    from tcpsnap.cli import main

    for kind in ("throughput", "rtt", "retrans"):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", str(rec), "-o", str(out), "--kind", kind, "--freq", "1s"]) == 0
        assert out.stat().st_size > 1000
