"""Answers from recordings: connection lifetimes, state counts, churn, gaps, clock steps,
who talks to whom.

Every function takes a DataFrame as ``tcpsnap.read`` returns it (the events of a changes
recording, ``read(path, mode="changes")``, and ``pandas.read_parquet`` of a full recording,
``kind`` column and all, are taken too): one row per connection per snapshot, with the
columns ``COLUMNS``. Or, for recordings larger than memory, a recording itself -- a path,
an open ``tcpsnap.reading.Recording`` or a ``Selection`` -- with ``start`` / ``end`` (as
``tcpsnap.read`` takes them) and ``where`` (a ``pyarrow.compute.Expression`` on the rows,
applied at the scan): the rows are then read piece by piece and never held all at once
(``tcpsnap._bounded``), every snapshot of the range is used (``snapshots`` is implied), and
the answer is the one the DataFrame form gives for ``read(path, start, end)`` with
``snapshots=tcpsnap.snapshots(path, start, end)`` (equal values; categoricals list only the
values they hold). Work is vectorized (hashes, scatters and bincounts over the rows, no
sort of the whole table), so time grows with the rows, linearly (measurements:
``benchmarks/RESULTS.md``).

What the rows mean (README, "What a recording means"):

- **identity**: a connection is (``host``, ``boot_id``, ``cookie``) -- socket cookies are a
  per-boot counter, so two hosts, or one host before and after a reboot, reuse them.
  Without a cookie (Windows, cookie 0) it is the 4-tuple (on that host and boot) plus
  first-seen time. Recordings without ``host`` / ``boot_id`` columns (schema version 1)
  fall back to the cookie (and the ``host=`` folder, if any).
- **time**: ``timestamp`` is the wall clock, which can be stepped (NTP, an operator);
  durations and gaps are measured on ``monotonic_ns`` within one ``boot_id`` (wall-clock
  differences only where there is no monotonic time: version 1, or across boots). Times
  shown stay the wall clock.
- **empty vs missing**: ``tcpsnap.read`` has no row for a snapshot with no (matching)
  connection. Pass ``snapshots=tcpsnap.snapshots(path)`` (same ``start`` / ``end``) to
  ``lifetimes``, ``state_counts`` and ``churn``: a snapshot with nothing then counts 0,
  and only time in which no snapshot was taken at all (the recorder stopped or stalled,
  overruns, a reboot) is NaN. Without it, the snapshots are those the rows show. (The
  events of a changes recording and a ``pandas.read_parquet`` DataFrame with ``kind``
  carry their snapshots themselves.)

>>> df = tcpsnap.read("recording")
>>> snaps = tcpsnap.snapshots("recording")
>>> life = analysis.lifetimes(df, snapshots=snaps)
>>> life = analysis.lifetimes("recording")                 # the same, in bounded memory
>>> life.sort_values("duration").tail()                    # the longest-lived connections
>>> analysis.state_counts("recording", freq="1s", start="now-1h")["CLOSE_WAIT"].max()
>>> analysis.churn(df, freq="10s", snapshots=snaps)        # opened / closed per 10 s
>>> analysis.gaps(snaps), analysis.clock_steps(snaps)      # where the recording has holes
>>> analysis.top_remotes(df, n=5)                           # busiest peers
>>> analysis.by_process("recording")                        # per program
"""

from __future__ import annotations

import os
from typing import Any, TypeAlias

import pandas as pd

from . import _bounded, _frames, _internals
from ._containers import by_container
from ._frames import COLUMNS, canonical_address
from ._timeline import clock_steps, gaps, interval_of
from .reading.dataset import Recording
from .reading.scan import Selection

__all__ = ["lifetimes", "state_counts", "churn", "gaps", "clock_steps", "interval_of", "top_remotes", "by_process",
           "canonical_address", "COLUMNS", "Selection", "throughput", "rtt", "retransmits", "INFO_COLUMNS",
           "by_container"]

#: The tcp_info columns ``lifetimes`` reads besides ``COLUMNS`` (recordings made with ``--tcp-info``).
INFO_COLUMNS = _internals.INFO_COLUMNS

#: What the analysis functions take: rows in memory, or a recording read piece by piece.
Rows: TypeAlias = "pd.DataFrame | str | os.PathLike | Recording | Selection"


def _selection(src: Any, start: Any, end: Any, where: Any, skip_bad: bool) -> Selection | None:
    """None for a DataFrame (the in-memory form); else the recording as a Selection."""
    if isinstance(src, pd.DataFrame):
        if start is not None or end is not None or where is not None:
            raise TypeError("start, end and where are for a recording (a path): filter a DataFrame first")
        return None
    if isinstance(src, Selection):
        if start is not None or end is not None or where is not None:
            raise TypeError("start, end and where: give them to the Selection")
        return src
    if not isinstance(src, (str, os.PathLike, Recording)):
        raise TypeError(f"expected a DataFrame, a recording path or a Selection, got {type(src).__name__}")
    return Selection(src, start, end, where, skip_bad)


def lifetimes(df: Rows, snapshots: pd.DataFrame | None = None, *, start: Any = None, end: Any = None,
              where: Any = None, skip_bad: bool = False) -> pd.DataFrame:
    """One row per connection seen in the recording.

    Identity is (``host``, ``boot_id``, socket cookie) where the backend has a cookie
    (Linux): cookies count per boot, so two hosts, or one host before and after a reboot,
    can reuse one. Otherwise (cookie 0, e.g. Windows) the 4-tuple (on that host and boot)
    plus first-seen time: a 4-tuple absent from a snapshot (a ``seq`` it is not in) and
    seen again later is two connections. A TIME_WAIT socket keeps its connection's
    cookie, so TIME_WAIT belongs to the connection it ends. Without ``host`` /
    ``boot_id`` columns (schema version 1), the cookie alone.

    Columns: ``family``, ``local_addr``, ``local_port``, ``remote_addr``, ``remote_port``,
    ``cookie`` (then ``host`` and ``boot_id`` if the rows have them), ``first_seen``,
    ``last_seen`` (wall clock), ``duration`` (from the first to the last snapshot it was
    in, on the monotonic clock -- right even if the wall clock was stepped meanwhile; the
    wall-clock difference where there is no ``monotonic_ns``; the true lifetime is longer
    by less than two snapshot intervals), ``snapshots`` (how many it was in), ``states``
    (the states it went through, in order, ``>``-separated), ``first_state``,
    ``last_state``, ``pid`` / ``process`` (its last known owner, 0 / None if never known),
    ``open_at_start`` / ``open_at_end`` (already there in the first snapshot of its host
    and boot / still there in the last, so its true start / end is outside the recording);
    from a recording made with ``--tcp-info``, as bcc's tcplife: ``bytes_out`` /
    ``bytes_in`` (the kernel's ``tcpi_bytes_acked`` / ``tcpi_bytes_received``, which count
    the SYN and FIN: ``tcpsnap._internals``), ``retrans`` (``tcpi_total_retrans``) and
    ``min_rtt`` (µs): nullable UInt64, the connection's last known values -- in a changes
    recording its ``closed`` event's, the kernel's final ``struct tcp_info`` from the
    socket-destroy report --, null where none was recorded.
    ``snapshots``: as ``tcpsnap.snapshots`` returns them, so that the first and last
    snapshots are known even when they held no connection.

    Connections come out ordered by cookie, then those without one by 4-tuple and time.
    Only the listed columns are used; ``tcpsnap.read(path, columns=analysis.COLUMNS)``
    reads just those.

    ``df`` a recording (path, ``Recording``, ``Selection``): read piece by piece, in
    bounded memory, ``start`` / ``end`` / ``where`` selecting the rows (module docstring).
    """
    sel = _selection(df, start, end, where, skip_bad)
    if sel is None:
        return _frames.lifetimes(df, snapshots)
    return _bounded.lifetimes(sel)


def state_counts(df: Rows, freq: str = "1s", agg: str = "mean", snapshots: pd.DataFrame | None = None, *,
                 start: Any = None, end: Any = None, where: Any = None, skip_bad: bool = False) -> pd.DataFrame:
    """Connections per state over time: one column per state seen, one row per ``freq``
    bin (wall clock); within a bin, the ``agg`` (``"mean"``, ``"max"``, ``"min"``,
    ``"last"``) of the per-snapshot counts, summed over hosts when the rows are of
    several.

    A snapshot counts 0 for the states it has no row of. Pass ``snapshots`` (as
    ``tcpsnap.snapshots`` returns them) so that snapshots with no row at all (empty, or
    none matching what ``df`` was filtered to) count 0 too; without it, the snapshots
    are those the rows show. A bin in which no snapshot was taken -- the recorder stopped
    or stalled, a reboot, a missed slot -- is NaN (a gap); a bin whose wall-clock time
    never happened while recording (the clock was stepped back over it) is left out. ``df`` a recording: in bounded
    memory (module docstring)."""
    sel = _selection(df, start, end, where, skip_bad)
    if sel is None:
        return _frames.state_counts(df, freq, agg, snapshots)
    return _bounded.state_counts(sel, freq, agg)


def churn(df: Rows, freq: str = "1s", life: pd.DataFrame | None = None, snapshots: pd.DataFrame | None = None, *,
          start: Any = None, end: Any = None, where: Any = None, skip_bad: bool = False) -> pd.DataFrame:
    """Connections opened and closed per ``freq`` bin (wall clock), as floats.

    ``opened``: first seen in that bin (connections already in the first snapshot of
    their host and boot are not counted); ``closed``: last seen in that bin and gone from
    the next snapshot (still there at the end: not counted). 0 in bins with snapshots
    and no such connection; NaN in bins with no snapshot (a gap), as ``state_counts``;
    ``snapshots`` as there. Pass ``life=lifetimes(df, snapshots=...)`` if you already
    have it. ``df`` a recording: in bounded memory
    (module docstring)."""
    sel = _selection(df, start, end, where, skip_bad)
    if sel is None:
        return _frames.churn(df, freq, life, snapshots)
    return _bounded.churn(sel, freq, life)


def top_remotes(df: Rows, n: int = 10, life: pd.DataFrame | None = None, *, by: str = "connections",
                start: Any = None, end: Any = None, where: Any = None, skip_bad: bool = False) -> pd.DataFrame:
    """The ``n`` remote addresses with the most connections (``by="bytes"``: the most
    bytes, out plus in): ``connections``,
    ``connection_seconds`` (sum of observed durations), ``ports`` (distinct remote ports),
    ``processes`` (the local programs that talked to it), ``bytes_out`` / ``bytes_in``
    (sums of ``lifetimes``' totals; null where not recorded). Listeners are left out. A peer
    is its canonical address: ``::ffff:192.0.2.1`` (IPv4 through a dual-stack socket) is
    192.0.2.1 (``canonical_address``; the rows keep what the kernel reported). ``df`` a
    recording: in bounded memory. ValueError for another ``by``."""
    sel = _selection(df, start, end, where, skip_bad)
    if sel is None:
        return _frames.top_remotes(df, n, life, by=by)
    return _bounded.top_remotes(sel, n, life, by=by)


def by_process(df: Rows, life: pd.DataFrame | None = None, *, by: str = "connections", start: Any = None,
               end: Any = None, where: Any = None, skip_bad: bool = False) -> pd.DataFrame:
    """Per owning process: ``connections`` (excluding listeners), ``listening`` (ports it
    listens on), ``remotes`` (distinct remote addresses, canonical: see
    ``top_remotes``), ``connection_seconds``, ``longest`` (its longest connection),
    ``bytes_out`` / ``bytes_in`` (as ``top_remotes``). Sorted by connections, or with
    ``by="bytes"`` by bytes moved. Connections with no known owner group under pid 0.
    ``df`` a recording: in bounded memory."""
    sel = _selection(df, start, end, where, skip_bad)
    if sel is None:
        return _frames.by_process(df, life, by=by)
    return _bounded.by_process(sel, life, by=by)


def throughput(df: Rows, freq: str = "1s", by: str = "total", snapshots: pd.DataFrame | None = None, *,
               start: Any = None, end: Any = None, where: Any = None, skip_bad: bool = False) -> pd.DataFrame:
    """Bytes per second from the tcp_info counters (a recording made with ``--tcp-info``):
    ``bytes_out`` from ``bytes_acked``, ``bytes_in`` from ``bytes_received``.

    Each row's delta is its counter minus the connection's previous row's (identity as
    ``lifetimes``); a counter lower than before is a reset, counted from 0, never a
    negative rate; a row or its predecessor without the value (no tcp_info) gives no
    delta. A delta falls in the ``freq`` bin (wall clock) of its later row and is divided
    by the bin's length. ``by="total"``: one row per bin, NaN where no snapshot was taken
    (a gap, as ``state_counts``; ``snapshots`` as there); ``"connection"``: one row per
    (bin, connection) that moved bytes, with its identity, pid and process;
    ``"process"``: per (bin, host, pid, process). ``df`` a recording: in bounded memory
    (each piece's last row per connection carried into the next). ValueError for another
    ``by``."""
    sel = _selection(df, start, end, where, skip_bad)
    if sel is None:
        return _internals.throughput(df, freq, by, snapshots)
    if by not in ("total", "connection", "process"):
        raise ValueError(f"by must be one of total, connection, process, not {by!r}")
    return _bounded.throughput(sel, freq, by)


def rtt(df: Rows, freq: str = "1s", snapshots: pd.DataFrame | None = None, *, start: Any = None,
        end: Any = None, where: Any = None, skip_bad: bool = False) -> pd.DataFrame:
    """Round-trip times per ``freq`` bin from the rows' tcp_info (``--tcp-info``), in
    milliseconds: ``rtt_mean_ms`` / ``rtt_max_ms`` (the kernel's smoothed ``tcpi_rtt``
    over the rows of the bin that have one), ``min_rtt_ms`` (the least ``tcpi_min_rtt``),
    ``connections`` (rows counted). NaN where no row had one, and in every column where
    no snapshot was taken (a gap, as ``state_counts``). ``df`` a recording: in bounded memory."""
    sel = _selection(df, start, end, where, skip_bad)
    if sel is None:
        return _internals.per_bin(df, freq, "rtt", snapshots)
    return _bounded.per_bin(sel, freq, "rtt")


def retransmits(df: Rows, freq: str = "1s", snapshots: pd.DataFrame | None = None, *, start: Any = None,
                end: Any = None, where: Any = None, skip_bad: bool = False) -> pd.DataFrame:
    """Segments retransmitted per ``freq`` bin: the deltas of each connection's
    ``tcpi_total_retrans`` (as ``throughput`` takes deltas: a counter going back is a
    reset), in column ``retransmits``; NaN where no snapshot was taken. ``df`` a
    recording: in bounded memory."""
    sel = _selection(df, start, end, where, skip_bad)
    if sel is None:
        return _internals.per_bin(df, freq, "retrans", snapshots)
    return _bounded.per_bin(sel, freq, "retrans")
