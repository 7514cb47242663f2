"""Figures a person can read at a glance: states over time, churn, busiest remotes.

Needs matplotlib (``pip install 'tcpsnap[plot]'``). Each function draws on an Axes
(a new figure if none is given) and returns the Figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import analysis

__all__ = ["plot_states", "plot_churn", "plot_remotes", "auto_freq"]

# Close states first, so the eye finds trouble (CLOSE_WAIT, TIME_WAIT) at a glance.
_COLORS = {
    "ESTABLISHED": "#2b8a3e", "LISTEN": "#1c7ed6", "TIME_WAIT": "#adb5bd", "CLOSE_WAIT": "#e03131",
    "SYN_SENT": "#f59f00", "SYN_RCVD": "#ffd43b", "FIN_WAIT1": "#9c36b5", "FIN_WAIT2": "#cc5de8",
    "LAST_ACK": "#862e9c", "CLOSING": "#e64980", "CLOSED": "#495057", "DELETE_TCB": "#212529",
}


def _pyplot():
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("plots need matplotlib: pip install 'tcpsnap[plot]'") from e
    return plt


def _interactive() -> bool:
    import sys

    return hasattr(sys, "ps1") or "ipykernel" in sys.modules


def auto_freq(df: pd.DataFrame, target_points: int = 600) -> str:
    """A bin width giving about ``target_points`` points over the recording's span."""
    if len(df) == 0:
        return "1s"
    span = (df["timestamp"].max() - df["timestamp"].min()).total_seconds()
    for f, secs in (("100ms", 0.1), ("1s", 1), ("10s", 10), ("1min", 60), ("10min", 600), ("1h", 3600)):
        if span / secs <= target_points:
            return f
    return "1D"


def _axes(ax):
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 5), dpi=100)
    return ax.figure, ax


def _time_axis(ax, tz: str | None) -> None:
    import matplotlib.dates as mdates

    ax.set_xlabel(f"time ({tz or 'local time'})")
    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _local(index: pd.DatetimeIndex, tz: str | None) -> pd.DatetimeIndex:
    """Wall-clock times in ``tz`` (None: this machine's local zone), zone dropped for
    matplotlib, which would otherwise draw UTC."""
    if tz:
        return index.tz_convert(tz).tz_localize(None)
    import datetime as dt

    local = dt.datetime.now().astimezone().tzinfo
    return index.tz_convert(local).tz_localize(None)


def _span(df: pd.DataFrame, snapshots: pd.DataFrame | None) -> pd.DataFrame:
    return snapshots if snapshots is not None and len(snapshots) else df


def plot_states(df: pd.DataFrame, freq: str | None = None, tz: str | None = None, ax: Any = None,
                snapshots: pd.DataFrame | None = None):
    """Stacked area of connections per state over time (mean per ``freq`` bin). With
    ``snapshots`` (``tcpsnap.snapshots``), empty snapshots count 0; time with no
    snapshot at all is left blank (``analysis.state_counts``)."""
    freq = freq or auto_freq(_span(df, snapshots))
    counts = analysis.state_counts(df, freq=freq, snapshots=snapshots)
    fig, ax = _axes(ax)
    if counts.empty:
        ax.text(0.5, 0.5, "no connections recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        order = sorted(counts.columns, key=lambda c: -counts[c].mean())
        x = _local(counts.index, tz)
        # NaN (no snapshot taken) stays NaN: a gap in the area, not a fall to 0
        ax.stackplot(x, [counts[c].to_numpy(np.float64) for c in order], labels=order,
                     colors=[_COLORS.get(c) for c in order], alpha=0.9)
        ax.legend(loc="upper left", fontsize="small", ncol=2, frameon=False)
        _time_axis(ax, tz)
    ax.set_ylabel(f"connections (mean per {freq})")
    ax.set_title("TCP connections by state")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_churn(df: pd.DataFrame, freq: str | None = None, tz: str | None = None, ax: Any = None,
               snapshots: pd.DataFrame | None = None):
    """Connections opened (up) and closed (down) per ``freq`` bin (``snapshots``: as
    for ``plot_states``)."""
    freq = freq or auto_freq(_span(df, snapshots), target_points=200)
    ch = analysis.churn(df, freq=freq, snapshots=snapshots)
    fig, ax = _axes(ax)
    if ch.empty:
        ax.text(0.5, 0.5, "no connections recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        x = _local(ch.index, tz)
        width = pd.Timedelta(freq) * 0.9
        ax.bar(x, ch["opened"].fillna(0), width=width, color="#2b8a3e", label="opened")
        ax.bar(x, -ch["closed"].fillna(0), width=width, color="#e03131", label="closed")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.legend(loc="upper left", frameon=False)
        _time_axis(ax, tz)
    ax.set_ylabel(f"connections per {freq} (closed below zero)")
    ax.set_title("Connection churn: opened and closed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_remotes(df: pd.DataFrame, n: int = 15, ax: Any = None, **_: Any):
    """Horizontal bars: the ``n`` remote addresses with the most connections."""
    top = analysis.top_remotes(df, n=n)
    fig, ax = _axes(ax)
    if top.empty:
        ax.text(0.5, 0.5, "no remote peers recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        top = top.iloc[::-1]
        ax.barh(top.index.astype(str), top["connections"], color="#1c7ed6")
        for y, (c, s) in enumerate(zip(top["connections"], top["connection_seconds"], strict=True)):
            ax.text(c, y, f"  {s:,.0f} conn-s", va="center", fontsize="small")
    ax.set_xlabel("connections (distinct)")
    ax.set_ylabel("remote address")
    ax.set_title(f"Top {n} remote addresses by connections")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
