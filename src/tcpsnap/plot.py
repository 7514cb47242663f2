"""Figures a person can read at a glance: states over time, churn, busiest remotes, and
from a recording made with ``--tcp-info`` throughput, round-trip times and retransmits.

Needs matplotlib (``pip install 'tcpsnap[plot]'``; :func:`require` says so in one line).
Each function draws on an Axes (a new figure if none is given) and returns the Figure.

What the figures promise: a bin in which no snapshot was taken (NaN in
``analysis.state_counts`` / ``analysis.churn``: the recorder stopped, a reboot) is drawn
as a gap -- a break in every line, no bar, and a grey shaded span over the bin -- never
as zero; each bin's value is drawn across its bin (a bar centred on it); the time axis names its zone
(``UTC``, ``Europe/Paris``, or this machine's zone); the title names the host(s), the
recording and the time range drawn.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from .reading.tally import StateBins

# pandas and tcpsnap.analysis are imported where a function takes or makes a DataFrame:
# ``tcpsnap plot --kind states`` draws from numpy arrays (``draw_state_bins``) without them

__all__ = ["plot_states", "plot_churn", "plot_remotes", "plot_internals", "INTERNALS", "auto_freq", "require",
           "pyplot", "new_figure", "local_zone", "MAX_BINS", "check_bins", "check_bins_ns", "freq_ns",
           "auto_freq_ns", "local_times", "draw_state_bins"]

#: The most bins a plot draws (a 1 ns bin over 6 s would be 6e9 of them, 44 GiB).
MAX_BINS = 100_000

#: The colour of the spans where no snapshot was taken.
GAP_COLOR = "#868e96"

# Close states first, so the eye finds trouble (CLOSE_WAIT, TIME_WAIT) at a glance.
_COLORS = {
    "ESTABLISHED": "#2b8a3e", "LISTEN": "#1c7ed6", "TIME_WAIT": "#adb5bd", "CLOSE_WAIT": "#e03131",
    "SYN_SENT": "#f59f00", "SYN_RCVD": "#ffd43b", "FIN_WAIT1": "#9c36b5", "FIN_WAIT2": "#cc5de8",
    "LAST_ACK": "#862e9c", "CLOSING": "#e64980", "CLOSED": "#495057", "DELETE_TCB": "#212529",
}


def require() -> None:
    """Raise ``ImportError`` (one line naming the ``plot`` extra) if matplotlib is not
    installed; cheap, so callers check before reading any data."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("plots need matplotlib: pip install 'tcpsnap[plot]'")


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend unless an interactive one is in use
    (``ImportError`` without matplotlib): what the plot functions draw with."""
    require()
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _interactive() -> bool:
    import sys

    return hasattr(sys, "ps1") or "ipykernel" in sys.modules


def local_zone() -> tuple[Any, str]:
    """(tzinfo, name) of this machine's zone: the IANA name from ``TZ`` or the
    ``/etc/localtime`` link where there is one (so daylight saving time is right across
    a recording), else the fixed offset in force now, named by its abbreviation."""
    from zoneinfo import ZoneInfo

    names = []
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        names.append(tz_env)
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            names.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in names:
        try:
            return ZoneInfo(name), name
        except (ValueError, KeyError):   # a bad name; ZoneInfoNotFoundError is a KeyError
            continue
    here = dt.datetime.now().astimezone().tzinfo
    return here, dt.datetime.now(here).tzname() or "local time"


def _zone(tz: str | None) -> tuple[Any, str]:
    return (tz, tz) if tz else local_zone()


def auto_freq(df: pd.DataFrame, target_points: int = 600) -> str:
    """A bin width giving about ``target_points`` points over the recording's span."""
    if len(df) == 0:
        return "1s"
    return auto_freq_ns(int((df["timestamp"].max() - df["timestamp"].min()).value), target_points)


def auto_freq_ns(span_ns: int, target_points: int = 600) -> str:
    """:func:`auto_freq` of a span given in ns."""
    span = span_ns / 1e9
    for f, secs in (("100ms", 0.1), ("1s", 1), ("10s", 10), ("1min", 60), ("10min", 600), ("1h", 3600)):
        if span / secs <= target_points:
            return f
    return "1D"


_UNIT_NS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "min": 60 * 10**9, "h": 3600 * 10**9,
            "D": 86_400 * 10**9}


def freq_ns(freq: str) -> int:
    """A pandas frequency of fixed length (``100ms``, ``15min``, ``1D``: what
    ``tcpsnap plot --freq`` and :func:`auto_freq` give) in ns; other spellings through
    ``pandas.Timedelta`` (``ValueError`` where it cannot tell)."""
    m = re.fullmatch(r"(\d+)(ns|us|ms|s|min|h|D)", freq)
    if m:
        return int(m.group(1)) * _UNIT_NS[m.group(2)]
    import pandas as pd

    return int(pd.Timedelta(freq).value)


def check_bins(span: pd.Timedelta, freq: str) -> None:
    """Raise ``ValueError`` if ``freq`` cuts ``span`` into more than :data:`MAX_BINS`
    bins; the message names the smallest bin width of the usual series that would do."""
    check_bins_ns(int(span.value), freq)


def check_bins_ns(span_ns: int, freq: str) -> None:
    """:func:`check_bins` of a span given in ns."""
    width = freq_ns(freq)
    if width <= 0:
        raise ValueError(f"bin width must be more than 0, not {freq}")
    if span_ns / width + 1 <= MAX_BINS:
        return
    from ._units import format_duration

    ok = next((s for s in (1e-3, 1e-2, 0.1, 1, 10, 60, 600, 3600, 86400, 7 * 86400)
               if span_ns / 1e9 / s + 1 <= MAX_BINS), None)
    hint = f"; try --freq {format_duration(ok)} or more" if ok else ""
    raise ValueError(f"--freq {_freq_text(freq)} cuts {span_ns / 1e9:g} s into "
                     f"{span_ns / width:,.0f} bins, over the {MAX_BINS:,} a plot draws{hint}")


def _freq_text(freq: str) -> str:
    from ._units import format_duration

    return format_duration(freq_ns(freq) / 1e9)


def _axes(ax):
    if ax is None:
        fig = new_figure()
        ax = fig.add_subplot()
    return ax.figure, ax


def new_figure():
    """An 11 x 5 in figure at 100 dpi: through ``pyplot`` where it is in use (imported, or
    an interactive session: the figure shows there), else a plain ``Figure`` on the Agg
    canvas, which ``savefig`` writes (importing pyplot and its backend machinery is time
    a command that only writes a file does not need). ``ImportError`` without matplotlib."""
    import sys

    if "matplotlib.pyplot" in sys.modules or _interactive():
        return pyplot().figure(figsize=(11, 5), dpi=100)
    require()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _tight(fig) -> None:
    """``fig.tight_layout()``'s margins, set once by its engine (``TightLayoutEngine``,
    the same ``subplots_adjust``) without leaving a layout engine on the figure:
    ``savefig`` draws a figure that has one twice (a dry run for the layout, then the
    picture), ~0.05 s more for the same pixels."""
    from matplotlib.layout_engine import TightLayoutEngine

    TightLayoutEngine().execute(fig)


def _time_axis(ax, zone_name: str) -> None:
    import matplotlib.dates as mdates

    ax.set_xlabel(f"time ({zone_name})")
    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _local(index: pd.DatetimeIndex, tzinfo: Any) -> pd.DatetimeIndex:
    """Wall-clock times in ``tzinfo``, zone dropped for matplotlib (which would
    otherwise draw UTC)."""
    return index.tz_convert(tzinfo).tz_localize(None)


def local_times(ns: np.ndarray, tzinfo: Any) -> np.ndarray:
    """UTC ns (int64) as wall-clock times in ``tzinfo`` (a ``tzinfo`` or an IANA name),
    ``datetime64[ns]`` without a zone, what matplotlib draws as given: the values
    ``DatetimeIndex.tz_convert(tzinfo).tz_localize(None)`` gives, from the zone's offset
    at each second (zoneinfo)."""
    ns = np.asarray(ns, np.int64)
    if isinstance(tzinfo, str):
        from zoneinfo import ZoneInfo

        tzinfo = ZoneInfo(tzinfo)
    sec = np.floor_divide(ns, 10**9)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    off: dict[int, int] = {}
    shift = np.empty(len(ns), np.int64)
    for i, s in enumerate(sec.tolist()):
        o = off.get(s)
        if o is None:
            u = (epoch + dt.timedelta(seconds=s)).astimezone(tzinfo).utcoffset()
            o = off[s] = 0 if u is None else (u // dt.timedelta(microseconds=1)) * 1000
        shift[i] = o
    return (ns + shift).view("datetime64[ns]")


def _span(df: pd.DataFrame, snapshots: pd.DataFrame | None) -> pd.DataFrame:
    return snapshots if snapshots is not None and len(snapshots) else df


def _title(ax, what: str, df: pd.DataFrame, snapshots: pd.DataFrame | None, source: Any,
           tzinfo: Any, zone_name: str) -> None:
    """``what``, then a line naming the host(s), the recording and the range drawn: a
    shared PNG says what it shows."""
    src = _span(df, snapshots)
    hosts = sorted({str(h) for h in src["host"].dropna().unique()}) if "host" in src.columns else []
    rng = None
    if len(src):
        from ._timeline import ns_values

        t = ns_values(src["timestamp"])
        rng = (int(t.min()), int(t.max()))
    _title_ns(ax, what, hosts, source, rng, tzinfo, zone_name)


def _title_ns(ax, what: str, hosts: list[str], source: Any, rng: tuple[int, int] | None, tzinfo: Any,
              zone_name: str) -> None:
    """:func:`_title` from the hosts and the (first, last) snapshot times in UTC ns."""
    parts = []
    if hosts:
        parts.append("host " + ", ".join(hosts[:3]) + (" ..." if len(hosts) > 3 else ""))
    if source is not None:
        parts.append(str(Path(source)))
    if rng is not None:
        a, b = (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(x) // 10**9)
                for x in local_times(np.array(rng, np.int64), tzinfo).view(np.int64))
        b_text = b.strftime("%H:%M:%S") if a.date() == b.date() else str(b)
        parts.append(f"{a} .. {b_text} {zone_name}")
    ax.set_title(what + ("\n" + " · ".join(parts) if parts else ""))


def _centres(index: pd.DatetimeIndex, freq: str, tzinfo: Any) -> pd.DatetimeIndex:
    import pandas as pd

    return _local(index + pd.Timedelta(freq) / 2, tzinfo)


def _shade_gaps(ax, index: pd.DatetimeIndex, nan: np.ndarray, freq: str, tzinfo: Any) -> int:
    """Grey spans over each run of bins with no snapshot; the number of spans."""
    from ._timeline import ns_values

    return _shade_gaps_ns(ax, ns_values(index), nan, freq_ns(freq), tzinfo)


def _shade_gaps_ns(ax, start: np.ndarray, nan: np.ndarray, width: int, tzinfo: Any) -> int:
    """:func:`_shade_gaps` of bins starting at ``start`` (UTC ns), ``width`` ns wide."""
    starts = local_times(start, tzinfo)
    w = np.timedelta64(width, "ns")
    n, i = 0, 0
    while i < len(nan):
        if not nan[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(nan) and nan[j + 1] and start[j + 1] - start[j] == width:
            j += 1
        ax.axvspan(starts[i], starts[j] + w, color=GAP_COLOR, alpha=0.25, linewidth=0,
                   label="no snapshot taken" if n == 0 else None)
        n += 1
        i = j + 1
    return n


def plot_states(df: pd.DataFrame, freq: str | None = None, tz: str | None = None, ax: Any = None,
                snapshots: pd.DataFrame | None = None, source: Any = None):
    """Stacked connections per state over time: one line per state at the top of its
    band, the mean per ``freq`` bin (a pandas frequency; default from the span) drawn
    flat across its bin (two points, at the bin's edges). ``tz``: the zone of the time axis (an IANA name; default this
    machine's zone). With ``snapshots`` (``tcpsnap.snapshots``), empty snapshots count
    0; bins with no snapshot at all (NaN in ``analysis.state_counts``) break every line
    and are shaded. ``source``: the recording, named in the title. Raises ``ValueError``
    if ``freq`` would make over :data:`MAX_BINS` bins, ``ImportError`` without
    matplotlib."""
    from . import analysis
    from ._timeline import ns_values

    freq = freq or auto_freq(_span(df, snapshots))
    span_df = _span(df, snapshots)
    if len(span_df):
        check_bins(span_df["timestamp"].max() - span_df["timestamp"].min(), freq)
    fig, ax = _axes(ax)
    counts = analysis.state_counts(df, freq=freq, snapshots=snapshots)
    if counts.empty or not len(counts.columns):
        start, states, mean = np.zeros(0, np.int64), [], np.zeros((0, 0))
    else:
        start, states, mean = ns_values(counts.index), list(counts.columns), counts.to_numpy(np.float64)
    _draw_states(ax, start, freq, states, mean, tz)
    _title(ax, "TCP connections by state", df, snapshots, source, *_zone(tz))
    _tight(fig)
    return fig


def draw_state_bins(bins: StateBins, freq: str, host: str, rng: tuple[int, int], tz: str | None = None,
                    ax: Any = None, source: Any = None):
    """:func:`plot_states` from a ``reading.tally.StateBins`` (``freq``: its width as a
    pandas frequency; ``host``, ``rng``: the recording's host and its first and last
    snapshot, UTC ns, for the title): the same figure, drawn from numpy arrays without
    pandas (``tcpsnap plot --kind states``). ``ImportError`` without matplotlib."""
    fig, ax = _axes(ax)
    _draw_states(ax, bins.start, freq, bins.states, bins.mean, tz)
    _title_ns(ax, "TCP connections by state", [host], source, rng, *_zone(tz))
    _tight(fig)
    return fig


def _draw_states(ax, start: np.ndarray, freq: str, states: list[str], mean: np.ndarray, tz: str | None) -> None:
    """The states plot on ``ax``: bins starting at ``start`` (UTC ns), ``mean`` (bins x
    ``states``, a NaN row where no snapshot was taken)."""
    tzinfo, zone_name = _zone(tz)
    if not len(states) or not len(start):
        ax.text(0.5, 0.5, "no connections recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        # the largest mean first (pandas' Series.mean: NaN skipped, each column summed
        # contiguous), ties in STATE_NAMES order
        nan = np.isnan(mean).all(axis=1)
        ok = max(1, int((~nan).sum()))
        avg = [np.ascontiguousarray(np.where(np.isnan(mean[:, i]), 0.0, mean[:, i])).sum() / ok
               for i in range(len(states))]
        order = sorted(range(len(states)), key=lambda i: -avg[i])
        vals = mean[:, order]
        # a gap row is all NaN, and stays NaN in the running sum: a break, never a fall to 0
        tops = np.cumsum(vals, axis=1)
        # each bin's mean holds for the whole bin: two points per bin, at its edges
        starts = local_times(start, tzinfo)
        width = freq_ns(freq)
        x = np.column_stack([starts, starts + np.timedelta64(width, "ns")]).ravel()
        lower = np.zeros(len(x))
        lower[np.repeat(nan, 2)] = np.nan
        for k, i in enumerate(order):
            color = _COLORS.get(states[i])
            top = np.repeat(tops[:, k], 2)
            ax.fill_between(x, lower, top, color=color, alpha=0.6, linewidth=0)
            ax.plot(x, top, color=color, linewidth=1.2, label=states[i])
            lower = top
        _shade_gaps_ns(ax, start, nan, width, tzinfo)
        ax.legend(loc="upper left", fontsize="small", ncol=2, frameon=False)
        _time_axis(ax, zone_name)
    ax.set_ylabel(f"connections (mean per {_freq_text(freq)})")
    ax.grid(alpha=0.3)


def plot_churn(df: pd.DataFrame, freq: str | None = None, tz: str | None = None, ax: Any = None,
               snapshots: pd.DataFrame | None = None, source: Any = None):
    """Connections opened (up) and closed (down) per ``freq`` bin, each bar centred on
    its bin; bins with no snapshot (NaN in ``analysis.churn``) have no bar and are
    shaded. Arguments and errors as :func:`plot_states`."""
    import pandas as pd

    from . import analysis

    freq = freq or auto_freq(_span(df, snapshots), target_points=200)
    span_df = _span(df, snapshots)
    if len(span_df):
        check_bins(span_df["timestamp"].max() - span_df["timestamp"].min(), freq)
    fig, ax = _axes(ax)
    tzinfo, zone_name = _zone(tz)
    ch = analysis.churn(df, freq=freq, snapshots=snapshots)
    if ch.empty:
        ax.text(0.5, 0.5, "no connections recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        nan = ch["opened"].isna().to_numpy() & ch["closed"].isna().to_numpy()
        x = _centres(ch.index, freq, tzinfo)[~nan]
        width = pd.Timedelta(freq) * 0.9
        ax.bar(x, ch["opened"].to_numpy()[~nan], width=width, align="center", color="#2b8a3e",
               label="opened")
        ax.bar(x, -ch["closed"].to_numpy()[~nan], width=width, align="center", color="#e03131",
               label="closed")
        ax.axhline(0, color="black", linewidth=0.8)
        _shade_gaps(ax, ch.index, nan, freq, tzinfo)
        ax.legend(loc="upper left", frameon=False)
        _time_axis(ax, zone_name)
    ax.set_ylabel(f"connections per {_freq_text(freq)} (closed below zero)")
    _title(ax, "Connection churn: opened and closed", df, snapshots, source, tzinfo, zone_name)
    ax.grid(alpha=0.3)
    _tight(fig)
    return fig


def plot_remotes(df: pd.DataFrame, n: int = 15, ax: Any = None, source: Any = None,
                 snapshots: pd.DataFrame | None = None, tz: str | None = None, **_: Any):
    """Horizontal bars: the ``n`` remote addresses with the most distinct connections,
    each labelled with its connection-seconds (the connections' lifetimes summed: 3
    connections open 10 s each are 30 conn-s)."""
    from . import analysis

    top = analysis.top_remotes(df, n=n)
    fig, ax = _axes(ax)
    if top.empty:
        ax.text(0.5, 0.5, "no remote peers recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        top = top.iloc[::-1]
        ax.barh(top.index.astype(str), top["connections"], color="#1c7ed6")
        for y, (c, s) in enumerate(zip(top["connections"], top["connection_seconds"], strict=True)):
            ax.text(c, y, f"  {s:,.0f} conn-s", va="center", fontsize="small")
    ax.set_xlabel("connections (distinct; conn-s: their lifetimes summed)")
    ax.set_ylabel("remote address")
    tzinfo, zone_name = _zone(tz)
    _title(ax, f"Top {n} remote addresses by connections", df, snapshots, source, tzinfo, zone_name)
    ax.grid(alpha=0.3, axis="x")
    _tight(fig)
    return fig


#: ``plot_internals``' kinds: (title, y label, the analysis function, its columns and labels).
INTERNALS: dict[str, tuple[str, str, str, tuple[tuple[str, str], ...]]] = {
    "throughput": ("Throughput (from tcp_info byte counters)", "bytes per second", "throughput",
                   (("bytes_out", "out (bytes_acked)"), ("bytes_in", "in (bytes_received)"))),
    "rtt": ("Round-trip time (tcp_info)", "milliseconds", "rtt",
            (("rtt_mean_ms", "rtt, mean"), ("rtt_max_ms", "rtt, max"), ("min_rtt_ms", "min_rtt, least"))),
    "retrans": ("Retransmitted segments (tcp_info total_retrans)", "segments per bin", "retransmits",
                (("retransmits", "retransmitted"),)),
}


def plot_internals(df: Any, kind: str = "throughput", freq: str | None = None, tz: str | None = None,
                   ax: Any = None, snapshots: pd.DataFrame | None = None, source: Any = None):
    """``kind`` ``"throughput"`` (``analysis.throughput``: bytes out and in per second),
    ``"rtt"`` (``analysis.rtt``: mean and max smoothed rtt, least min_rtt, ms) or
    ``"retrans"`` (``analysis.retransmits``) per ``freq`` bin, each bin's value drawn flat
    across its bin; bins with no snapshot break every line and are shaded, as
    :func:`plot_states`. ``df``: rows, or a recording (``analysis.Selection``: read piece
    by piece). Arguments and errors as :func:`plot_states`; ``ValueError`` for another
    ``kind``."""
    import pandas as pd

    from . import analysis

    if kind not in INTERNALS:
        raise ValueError(f"kind must be one of {', '.join(INTERNALS)}, not {kind!r}")
    title, ylabel, fn, series = INTERNALS[kind]
    if snapshots is None and hasattr(df, "snapshots"):
        snapshots = df.snapshots()          # a recording: every snapshot of its range
    span_df = _span(df if isinstance(df, pd.DataFrame) else pd.DataFrame(), snapshots)
    freq = freq or auto_freq(span_df, target_points=300)
    if len(span_df):
        check_bins(span_df["timestamp"].max() - span_df["timestamp"].min(), freq)
    fig, ax = _axes(ax)
    tzinfo, zone_name = _zone(tz)
    kw = {"snapshots": snapshots} if isinstance(df, pd.DataFrame) else {}
    got = getattr(analysis, fn)(df, freq=freq, **kw)
    cols = [c for c, _ in series if c in got]
    if got.empty or not cols or got[cols].isna().all().all():
        ax.text(0.5, 0.5, "no tcp_info recorded (record with --tcp-info)", ha="center", va="center",
                transform=ax.transAxes)
    else:
        starts = _local(got.index, tzinfo)
        x = np.column_stack([starts, starts + pd.Timedelta(freq)]).ravel()
        for col, label in series:
            ax.plot(x, np.repeat(got[col].to_numpy(np.float64), 2), linewidth=1.4, label=label)
        gap = got[cols].isna().all(axis=1).to_numpy()
        if "connections" in got:       # rtt: a bin with snapshots but no rtt is not a gap
            gap = got["connections"].isna().to_numpy()
        _shade_gaps(ax, got.index, gap, freq, tzinfo)
        ax.legend(loc="upper left", frameon=False)
        _time_axis(ax, zone_name)
    ax.set_ylabel(f"{ylabel} (per {_freq_text(freq)} bin)")
    _title(ax, title, span_df, snapshots, source, tzinfo, zone_name)
    ax.grid(alpha=0.3)
    _tight(fig)
    return fig
