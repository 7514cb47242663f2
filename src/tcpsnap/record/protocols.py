"""The two things a :class:`~tcpsnap.Recorder` is given rather than builds: a clock and a
source of snapshots. Tests and benchmarks pass their own (simulated time, scripted tables)."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Clock", "SystemClock", "SnapshotSource"]


class Clock(Protocol):
    """Time as the recorder reads it, in integer nanoseconds.

    ``monotonic_ns`` schedules snapshots, measures their capture and ages batches for
    the flush deadline; ``time_ns`` (UTC since the epoch) stamps each snapshot and picks
    its date partition.
    """

    def monotonic_ns(self) -> int: ...

    def time_ns(self) -> int: ...


class SystemClock:
    """The real clocks: ``time.monotonic_ns`` and ``time.time_ns``."""

    __slots__ = ()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def time_ns(self) -> int:
        return time.time_ns()


@runtime_checkable
class SnapshotSource(Protocol):
    """What ``Recorder(snapshotter=...)`` accepts; :class:`tcpsnap.Snapshotter` is one.

    ``take()`` returns the table now: a 1-D ``ROW_DTYPE`` array, valid until the next
    call (the recorder copies it at once). When the source's optional ``pids``
    attribute is true, ``process_names(pids)`` maps an ``int`` array of pids to
    ``(codes, names)``: ``codes[i]`` indexes ``names`` or is -1 for "unknown". A source
    the recorder did not build is never closed by it.
    """

    def take(self) -> np.ndarray: ...

    def process_names(self, pids: np.ndarray) -> tuple[np.ndarray, list[str]]: ...
