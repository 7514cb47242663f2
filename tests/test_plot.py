"""Plots tell the truth, read back from what was drawn (the figure's artists): a gap in a
recording is a break in the lines and a shaded span, never a fall to zero; bars sit on the
centre of their bin; the time axis names its zone; the title names host, recording and
range. The recording: 30 snapshots every 100 ms on a simulated clock, the recorder stopped
for 2 s after snapshot 14 (both clocks went on), one ESTABLISHED connection in snapshots
5..10 and a listener all along."""

import os
import signal
import sys

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Polygon, Rectangle

matplotlib.use("Agg")

import tcpsnap
import tcpsnap._host
from _changes_util import WALL0, Scripted, row
from tcpsnap import ROW_DTYPE, Recorder, TcpState, plot

IV, MS, SEC = 100_000_000, 1_000_000, 1_000_000_000
T0 = pd.Timestamp(WALL0, unit="ns", tz="UTC")
EST = row(TcpState.ESTABLISHED, "10.0.0.1", 5000, "10.0.0.2", 443, cookie=7)
LISTEN = row(TcpState.LISTEN, "0.0.0.0", 80, "0.0.0.0", 0, cookie=9)


class PausedClock:
    """One snapshot per 100 ms; before snapshot 15 both clocks jump 2 s (SIGSTOP)."""

    def __init__(self):
        self.k = -1

    def time_ns(self):
        self.k += 1
        return WALL0 + self.k * IV + (2 * SEC if self.k >= 15 else 0)

    def monotonic_ns(self):
        return 10**12 + self.k * IV + MS + (2 * SEC if self.k >= 15 else 0)


@pytest.fixture(scope="module")
def gapped(tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "rec"
    tables = [np.array(([EST] if 5 <= k <= 10 else []) + [LISTEN], ROW_DTYPE) for k in range(30)]
    snap = Scripted(tables, pids=False)
    with Recorder(path, interval=0, snapshotter=snap, clock=PausedClock(), nice=None) as rec:
        snap.rec = rec
        rec.run()
    return path, tcpsnap.read(path), tcpsnap.snapshots(path)


def num(ts):
    """A UTC time as matplotlib draws it on a UTC axis."""
    return mdates.date2num(pd.Timestamp(ts).tz_convert("UTC").tz_localize(None).to_pydatetime())


def lines(ax):
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def spans(ax):
    """The shaded gap spans as (x0, x1) in axis numbers."""
    out = []
    for p in ax.patches:
        if isinstance(p, (Polygon, Rectangle)) and p.get_facecolor()[:3] == matplotlib.colors.to_rgb(plot.GAP_COLOR):
            xs = p.get_xy()[:, 0] if isinstance(p, Polygon) else [p.get_x(), p.get_x() + p.get_width()]
            out.append((min(xs), max(xs)))
    return out


def test_states_gap_is_a_break_and_a_shade_not_zero(gapped):
    path, df, snaps = gapped
    fig = plot.plot_states(df, freq="1s", tz="UTC", snapshots=snaps, source=path)
    ax = fig.axes[0]
    ln = lines(ax)
    assert set(ln) == {"LISTEN", "ESTABLISHED"}
    # bins [0,1) [1,2) [2,3) [3,4) [4,5) s; [2,3) has no snapshot: NaN. Each bin's mean is
    # drawn flat across the bin: two points, at its edges
    edges = [num(T0 + pd.Timedelta(j * SEC)) for j in range(5) for j in (j, j + 1)]
    for name in ln:
        np.testing.assert_allclose(mdates.date2num(ln[name].get_xdata()), edges)
    # stacked: LISTEN (1 all along) at the bottom, ESTABLISHED above it (in snapshots 5..9
    # of the first bin's 0..9, then 10 of 10..14: a mean of 0.5, then 0.2)
    np.testing.assert_array_equal(np.asarray(ln["LISTEN"].get_ydata(), float),
                                  np.repeat([1, 1, np.nan, 1, 1], 2))
    np.testing.assert_allclose(np.asarray(ln["ESTABLISHED"].get_ydata(), float),
                               np.repeat([1.5, 1.2, np.nan, 1, 1], 2))
    assert spans(ax) == [pytest.approx((num(T0 + pd.Timedelta(2 * SEC)), num(T0 + pd.Timedelta(3 * SEC))))]
    assert ax.get_xlabel() == "time (UTC)"
    host = tcpsnap._host.host_name()
    assert ax.get_title() == (f"TCP connections by state\nhost {host} · {path} · "
                              f"{T0.tz_localize(None)} .. {(T0 + pd.Timedelta(4_900 * MS)).strftime('%H:%M:%S')} UTC")


def test_churn_bars_centred_and_no_bar_in_the_gap(gapped):
    path, df, snaps = gapped
    fig = plot.plot_churn(df, freq="1s", tz="UTC", snapshots=snaps, source=path)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_label() != "no snapshot taken"
            and p.get_facecolor()[:3] != matplotlib.colors.to_rgb(plot.GAP_COLOR)]
    # opened then closed, one bar per bin with snapshots (4), none for the gap
    assert len(bars) == 8
    centres = sorted({round(b.get_x() + b.get_width() / 2, 9) for b in bars})
    want = [num(T0 + pd.Timedelta(j * SEC + SEC // 2)) for j in (0, 1, 3, 4)]
    np.testing.assert_allclose(centres, want)
    heights = [b.get_height() for b in bars]
    assert heights == [1, 0, 0, 0, -0.0, -1, -0.0, -0.0]
    assert len(spans(ax)) == 1
    assert ax.get_xlabel() == "time (UTC)"
    assert ax.get_title().startswith("Connection churn: opened and closed\nhost ")


def test_axis_names_the_zone(gapped, monkeypatch):
    path, df, snaps = gapped
    ax = plot.plot_states(df, freq="1s", tz="Europe/Paris", snapshots=snaps).axes[0]
    assert ax.get_xlabel() == "time (Europe/Paris)"
    # 2026-11-18 is winter time: UTC+1, so the first bin starts at 12:06:40 Paris
    x = ax.get_lines()[0].get_xdata()
    assert mdates.date2num(x[0]) == pytest.approx(num(T0) + 1 / 24)
    assert ax.get_title().endswith("12:06:44 Europe/Paris")
    monkeypatch.setenv("TZ", "America/New_York")
    ax = plot.plot_states(df, freq="1s", snapshots=snaps).axes[0]
    assert ax.get_xlabel() == "time (America/New_York)"


def test_too_many_bins_is_refused_with_a_freq_that_works(gapped):
    path, df, snaps = gapped
    with pytest.raises(ValueError, match=r"--freq 1ns cuts 4.9 s into 4,900,000,000 bins, over the "
                                         r"100,000 a plot draws; try --freq 1ms or more"):
        plot.plot_states(df, freq="1ns", snapshots=snaps)


def test_cli_plot_draws_without_pyplot(gapped, tmp_path):
    """``tcpsnap plot`` writes its PNG from a plain Figure on the Agg canvas: pyplot (its
    import, its figure manager) is never loaded, nor pandas (the states plot is counted,
    binned and drawn from numpy), and on Linux not even matplotlib: a forked child imports
    it and draws while the command counts; in a session that uses pyplot, the plot
    functions draw through it (the figure shows there)."""
    import subprocess
    import sys

    path = gapped[0]
    png = tmp_path / "s.png"
    code = f"""
import sys
from tcpsnap.cli import main
assert main(["plot", {str(path)!r}, "-o", {str(png)!r}, "--utc"]) == 0
print("matplotlib.pyplot" in sys.modules, "pandas" in sys.modules, "matplotlib.figure" in sys.modules)
import matplotlib.pyplot as plt
import tcpsnap
from tcpsnap import plot
fig = plot.plot_states(tcpsnap.read({str(path)!r}), freq="1s", tz="UTC")
print(fig in [plt.figure(n) for n in plt.get_fignums()])
from tcpsnap.cli import exit_process
exit_process(0)  # Arrow's threads read: no teardown (apache/arrow#34314)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "False", str(sys.platform != "linux"), "True"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "threads"])
@pytest.mark.parametrize(("tz", "freq", "start", "end"), [
    ("UTC", None, None, None), ("Europe/Paris", "300ms", None, None), ("UTC", "7s", None, None),
    ("UTC", None, "2026-11-18T11:06:40.45Z", "2026-11-18T11:06:44.05Z")])
def test_cli_states_draws_what_plot_states_draws(gapped, tmp_path, tz, freq, start, end, forked, monkeypatch):
    """``tcpsnap plot --kind states`` counts, bins and draws from numpy
    (``aggregate.state_tally``, ``tally.state_bins``, ``plot.draw_state_bins``), drawn in
    a forked child (Linux) or on the command's own thread (elsewhere): its picture is
    ``plot_states`` of the rows in memory, pixel for pixel and byte for byte (gaps, bins,
    zone, title, legend)."""
    from tcpsnap import _plotfork
    from tcpsnap.cli import main

    if forked and sys.platform != "linux":
        pytest.skip("the drawing is forked on Linux only")
    path = gapped[0]
    opts = ["--tz", tz] + (["--freq", freq] if freq else []) + (["--start", start, "--end", end] if start else [])
    started = []
    with monkeypatch.context() as m:
        m.setattr(plot, "plot_states", None)         # the command draws from numpy, not through it
        if forked:
            m.setattr(_plotfork, "start", lambda out, _s=_plotfork.start: started.append(_s(out)) or started[-1])
        else:
            m.setattr(_plotfork, "start", lambda out: None)
        assert main(["plot", str(path), "-o", str(tmp_path / "cli.png"), *opts]) == 0
    if forked:                      # drawn by a child, reaped
        assert len(started) == 1 and started[0].pid != os.getpid()
        with pytest.raises(ChildProcessError):
            os.waitpid(started[0].pid, os.WNOHANG)
    df, snaps = tcpsnap.read(path, start, end), tcpsnap.snapshots(path, start, end)
    fig = plot.plot_states(df, freq=freq, tz=tz, snapshots=snaps, source=str(path))
    fig.savefig(tmp_path / "mem.png")
    assert (tmp_path / "cli.png").read_bytes() == (tmp_path / "mem.png").read_bytes()


def test_draw_state_bins_draws_the_gap(gapped):
    """The numpy path's artists: a gap is a break and a shaded span, the bins' means drawn
    flat across their bins, the zone and the range named."""
    from tcpsnap.reading import aggregate, open_recording, tally

    path = gapped[0]
    host, t = aggregate.state_tally(open_recording(path), None, None)
    fig = plot.draw_state_bins(tally.state_bins(t, SEC), "1s", host, (int(t.ts.min()), int(t.ts.max())), tz="UTC",
                               source=path)
    ax = fig.axes[0]
    ln = lines(ax)
    edges = [num(T0 + pd.Timedelta(j * SEC)) for j in range(5) for j in (j, j + 1)]
    np.testing.assert_allclose(mdates.date2num(ln["ESTABLISHED"].get_xdata()), edges)
    np.testing.assert_array_equal(np.asarray(ln["LISTEN"].get_ydata(), float), np.repeat([1, 1, np.nan, 1, 1], 2))
    np.testing.assert_allclose(np.asarray(ln["ESTABLISHED"].get_ydata(), float),
                               np.repeat([1.5, 1.2, np.nan, 1, 1], 2))
    assert spans(ax) == [pytest.approx((num(T0 + pd.Timedelta(2 * SEC)), num(T0 + pd.Timedelta(3 * SEC))))]
    assert ax.get_xlabel() == "time (UTC)"
    assert ax.get_ylabel() == "connections (mean per 1s)"
    assert ax.get_title() == (f"TCP connections by state\nhost {host} · {path} · "
                              f"{T0.tz_localize(None)} .. {(T0 + pd.Timedelta(4_900 * MS)).strftime('%H:%M:%S')} UTC")


def _forked(monkeypatch):
    """The drawers ``tcpsnap plot`` forks, recorded as it starts them."""
    from tcpsnap import _plotfork

    if sys.platform != "linux":
        pytest.skip("the drawing is forked on Linux only")
    started = []
    monkeypatch.setattr(_plotfork, "start", lambda out, _s=_plotfork.start: started.append(_s(out)) or started[-1])
    return started


def _reaped(pid):
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_cli_forked_drawing_errors_are_the_one_line_they_are_in_one_process(gapped, tmp_path, capsys, monkeypatch):
    """What the drawing child raises comes back as the command's one line and exit
    status: a PNG that cannot be written (a folder in its place) is the system's error
    naming the file (exit 1); a type matplotlib cannot write is a usage error (exit 2);
    a child killed before it answers is named with its signal. The child is reaped each
    time."""
    from tcpsnap import _plotfork
    from tcpsnap.cli import main

    started = _forked(monkeypatch)
    (tmp_path / "dir.png").mkdir()
    assert main(["plot", str(gapped[0]), "-o", str(tmp_path / "dir.png")]) == 1
    assert capsys.readouterr().err == f"tcpsnap: error: {tmp_path / 'dir.png'}: Is a directory\n"
    assert main(["plot", str(gapped[0]), "-o", str(tmp_path / "x.xyz")]) == 2
    assert capsys.readouterr().err == (f"tcpsnap plot: error: cannot tell the image type of {tmp_path / 'x.xyz'}: "
                                       f"name it .png, .svg or .pdf (see 'tcpsnap plot --help')\n")
    monkeypatch.setattr(_plotfork, "_child", lambda *a: os.kill(os.getpid(), signal.SIGKILL))
    assert main(["plot", str(gapped[0]), "-o", str(tmp_path / "k.png")]) == 1
    assert capsys.readouterr().err == ("tcpsnap: error: the process drawing the plot ended without writing it "
                                       f"(killed by signal {int(signal.SIGKILL)})\n")
    assert not (tmp_path / "k.png").exists()
    assert len(started) == 3
    for d in started:
        _reaped(d.pid)


def test_cli_forked_drawing_stopped_when_the_count_fails(gapped, tmp_path, capsys, monkeypatch):
    """A failure of the command's own part (too many bins, found after the count) is its
    one line; the child, still importing or waiting, is stopped and reaped, and writes
    nothing."""
    from tcpsnap.cli import main

    started = _forked(monkeypatch)
    assert main(["plot", str(gapped[0]), "-o", str(tmp_path / "x.png"), "--freq", "1ns"]) == 2
    assert "--freq 1ns cuts 4.9 s into 4,900,000,000 bins" in capsys.readouterr().err
    assert len(started) == 1
    _reaped(started[0].pid)
    assert not (tmp_path / "x.png").exists()


def test_cli_states_other_recordings_fall_back_to_threads(gapped, tmp_path, monkeypatch):
    """A recording the numpy count does not answer (here: a filter, ``where``) is read
    piece by piece in the command's own process, the forked child stopped: the same
    picture as ``plot_states`` of those rows."""
    from tcpsnap.cli import main

    started = _forked(monkeypatch)
    path = gapped[0]
    assert main(["plot", str(path), "-o", str(tmp_path / "cli.png"), "--utc", "--state", "listening"]) == 0
    assert len(started) == 1
    _reaped(started[0].pid)
    df = tcpsnap.read(path)
    fig = plot.plot_states(df[df["state"] == "LISTEN"], tz="UTC", snapshots=tcpsnap.snapshots(path), source=str(path))
    fig.savefig(tmp_path / "mem.png")
    assert (tmp_path / "cli.png").read_bytes() == (tmp_path / "mem.png").read_bytes()


def test_cli_plot_imports_its_own_command_module_only():
    """``tcpsnap plot`` builds a parser of its own command (``cli.COMMANDS``): the other
    commands' modules (and their imports) are start-up time it does not use. Every
    command of the whole parser is in ``COMMANDS``, with the module that registers it."""
    import subprocess

    from tcpsnap import cli

    full = cli.build_parser()
    choices = next(a for a in full._actions if a.dest == "command").choices
    assert sorted(choices) == sorted(cli.COMMANDS)
    for name, module in cli.COMMANDS.items():
        only = next(a for a in cli.build_parser(name)._actions if a.dest == "command").choices
        assert name in only and all(cli.COMMANDS[c] == module for c in only)
    code = ("import sys\nfrom tcpsnap import cli\ncli.build_parser('plot')\n"
            "print(sorted(m for m in sys.modules if m.startswith('tcpsnap._cmd_')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.split() == ["['tcpsnap._cmd_analyse',", "'tcpsnap._cmd_ship']"]


def test_cli_plot_freezes_the_collector_at_exit_only(gapped, tmp_path):
    """``tcpsnap plot`` (forked) has the interpreter's exit skip the cyclic collections of
    the module teardown (``gc.freeze`` at exit): nothing is frozen while the caller's
    process goes on, everything once it exits."""
    import subprocess

    if sys.platform != "linux":
        pytest.skip("the drawing is forked on Linux only")
    code = f"""
import atexit, gc
atexit.register(lambda: print("at exit", gc.get_freeze_count() > 0))
from tcpsnap.cli import main
assert main(["plot", {str(gapped[0])!r}, "-o", {str(tmp_path / "s.png")!r}]) == 0
print("after main", gc.get_freeze_count())
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["after main 0", "at exit True"]
