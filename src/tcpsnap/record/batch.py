"""The batch: what the capture thread hands to the writer thread, and the pool it returns to.

A :class:`Batch` is a preallocated buffer of the rows of consecutive snapshots (numpy,
``ROW_DTYPE``) with each snapshot's wall-clock time, ``seq``, capture time and row count.
Capture fills one, hands it down a queue, the writer encodes it and gives it back to the
:class:`BatchPool`. Steady capture therefore allocates nothing per row and memory is
bounded by the pool; when the pool is empty the writer is behind, and capture waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from .._schema import ROW_DTYPE, TCP_INFO_DTYPE

__all__ = ["Batch", "BatchPool", "STOP"]

log = logging.getLogger("tcpsnap.recorder")

#: Idle batches a pool keeps for reuse; more are freed as they come back (a burst -- the
#: writer slow for a moment, as at start-up while paged-out code faults back in -- would
#: otherwise leave its batches resident for good: 1.6 MiB each at 1k connections).
KEEP_IDLE = 2
#: Bytes of batches a pool makes at most (besides ``count``): a large table's batches are
#: large, and a writer that falls behind then makes capture wait instead of memory grow.
POOL_BYTES = 32 << 20

#: Put on the queue after the last batch: the writer finishes its file and exits.
STOP = object()


class Batch:
    """A preallocated buffer of rows from consecutive snapshots, all for one file.

    ``rows[:n]``/``proc[:n]`` hold the rows (``proc`` indexes ``names``, -1 unknown);
    ``ts``/``seq``/``cap``/``mono``/``counts`` ``[:s]`` hold one entry per snapshot
    (wall ns, sequence number, capture ns, monotonic ns at its start, rows); ``empty``
    marks a full-mode snapshot that held no connection (its one row is a ``snapshot``
    row). ``file_key`` says which file the batch belongs
    to (see ``writer.Rules.file_key``); ``overruns`` counts the slots missed while it
    filled. In changes mode ``extra`` holds the per-row event code, the
    seen-in-snapshot flag and the event's timestamp. With internals (``tcp_info``),
    ``info[:n]`` holds each row's (``TCP_INFO_DTYPE``) and ``sampled[:s]`` whether the
    snapshot sampled them (False: its rows' internals are null, never stale).
    """

    __slots__ = ("rows", "proc", "ts", "seq", "cap", "mono", "empty", "counts", "n", "s", "names",
                 "name_codes", "has_proc", "t_first", "file_key", "overruns", "extra", "info", "sampled")

    def __init__(self, rows: int, snaps: int, changes: bool = False, tcp_info: bool = False) -> None:
        self.rows = np.empty(rows, dtype=ROW_DTYPE)
        self.proc = np.empty(rows, dtype=np.int32)
        self.info = np.empty(rows, dtype=TCP_INFO_DTYPE) if tcp_info else None
        self.sampled = np.empty(snaps, dtype=bool) if tcp_info else None
        self.extra: tuple[np.ndarray, ...] | None = (
            (np.empty(rows, np.uint8), np.empty(rows, bool), np.empty(rows, np.int64))
            if changes else None)
        self.ts = np.empty(snaps, dtype=np.int64)
        self.seq = np.empty(snaps, dtype=np.int64)
        self.cap = np.empty(snaps, dtype=np.int64)
        self.mono = np.empty(snaps, dtype=np.int64)
        self.empty = np.empty(snaps, dtype=bool)  # full mode: its one row stands for an empty snapshot
        self.counts = np.empty(snaps, dtype=np.int64)
        self.names: list[str] = []
        self.name_codes: dict[str, int] = {}
        self.file_key: tuple[int, int] | None = None
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.s = 0
        self.names.clear()
        self.name_codes.clear()
        self.has_proc = False
        self.t_first = 0
        self.file_key = None
        self.overruns = 0

    @property
    def nbytes(self) -> int:
        """Bytes its arrays hold."""
        return (self.rows.nbytes + self.proc.nbytes + 6 * self.ts.nbytes
                + sum(a.nbytes for a in self.extra or ())
                + (0 if self.info is None or self.sampled is None else self.info.nbytes + self.sampled.nbytes))

    def fits(self, n: int) -> bool:
        return self.n + n <= len(self.rows) and self.s < len(self.ts)

    def grow(self, rows: int) -> None:
        """Only when a single snapshot is bigger than the buffer (the table grew)."""
        new = max(rows, 2 * len(self.rows))
        r = np.empty(new, dtype=ROW_DTYPE)
        r[:self.n].view(np.uint8)[:] = self.rows[:self.n].view(np.uint8)
        p = np.empty(new, dtype=np.int32)
        p[:self.n] = self.proc[:self.n]
        self.rows, self.proc = r, p
        if self.info is not None:
            info = np.empty(new, dtype=TCP_INFO_DTYPE)
            info[:self.n].view(np.uint8)[:] = self.info[:self.n].view(np.uint8)
            self.info = info
        if self.extra is not None:
            grown = tuple(np.empty(new, a.dtype) for a in self.extra)
            for a, g in zip(self.extra, grown, strict=True):
                g[:self.n] = a[:self.n]
            self.extra = grown


class BatchPool:
    """At most ``count`` batches, and no more than ``max_bytes`` of them once two exist,
    shared by the two threads.

    A batch is made when none is free and fewer than ``count`` exist, and the most
    recently returned one is handed out first: only the batches capture and writer
    really have in flight are ever touched (resident), not ``count`` of them.
    ``get`` blocks while all it may make are in use (the writer is behind) and counts
    the wait in ``waits``; ``failed()`` is polled meanwhile so that a dead writer does
    not block capture forever (its error is raised instead).
    """

    def __init__(self, count: int, rows: int, snaps: int, changes: bool,
                 failed: Callable[[], BaseException | None], max_bytes: int = POOL_BYTES,
                 tcp_info: bool = False) -> None:
        self._free: list[Batch] = []
        self._live: list[Batch] = []  # every batch made and not let go
        self.max_bytes = max_bytes
        self._shape = (rows, snaps, changes, tcp_info)
        self.count = count
        self.made = 0
        self._cv = threading.Condition()
        self._failed = failed
        self.waits = 0

    @property
    def batch_rows(self) -> int:
        """Rows a batch of this pool holds (one grows past it for a bigger snapshot)."""
        return self._shape[0]

    def get(self) -> Batch:
        free = self._free
        if free:
            # the steady case, without the condition's lock (its Python enter and exit):
            # list.pop is atomic under the GIL, and every other taker of ``_free``
            # (shrink) tolerates finding it emptied; the locked path below pops the same
            try:
                return free.pop()
            except IndexError:          # shrink took it meanwhile
                pass
        with self._cv:
            if not self._free and self.made < self.count and (
                    self.made < 2 or sum(b.nbytes for b in self._live) < self.max_bytes):
                self.made += 1
                b = Batch(*self._shape)
                self._live.append(b)
                return b
            if not self._free:
                self.waits += 1
                t0 = time.monotonic()
                while not self._free:
                    err = self._failed()
                    if err is not None:
                        raise err
                    self._cv.wait(0.1)
                log.warning("writer behind: capture waited %.0f ms for a free buffer "
                            "(%d times so far; the missed slots count as overruns)",
                            (time.monotonic() - t0) * 1e3, self.waits)
            # LIFO: the same few batches go round; the others stay untouched
            return self._free.pop()

    def put(self, b: Batch) -> None:
        b.reset()
        with self._cv:
            if self.made > self.count or len(self._free) >= KEEP_IDLE:
                # a memory limit made the pool smaller, or a burst (the writer behind for a
                # moment) made more batches than steady recording uses: let this one go
                self.made -= 1
                self._live.remove(b)
            else:
                self._free.append(b)
            self._cv.notify()

    def shrink(self, count: int) -> None:
        """At most ``count`` batches from now on (free ones are dropped at once)."""
        with self._cv:
            self.count = max(2, count)
            while self._free and self.made > self.count:
                try:
                    b = self._free.pop(0)
                except IndexError:      # get() took the last one meanwhile (it takes unlocked)
                    break
                self._live.remove(b)
                self.made -= 1

    def wake_all(self) -> None:
        with self._cv:
            self._cv.notify_all()
