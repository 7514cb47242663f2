"""The capture thread (m-lab/tcp-info calls it the collector): the schedule, the
snapshots, and filling batches for the writer.

Snapshots are scheduled on the monotonic clock at ``start + k * interval``; a slot that
passes before its snapshot could start is skipped and counted as an overrun (the
schedule never shifts). Each snapshot's rows are copied into the current
:class:`~tcpsnap.record.batch.Batch` with its wall-clock time, ``seq`` and capture
time; :class:`~tcpsnap.record.writer.Rules` says when the batch goes to the writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import numpy as np

from .._encode import put_rows
from .._filters import row_mask
from .._schema import ROW_DTYPE
from ..frame import merge_names
from ..netns import Rate
from .batch import Batch, BatchPool
from .carry import Carry
from .metrics import CAPTURE_BUCKETS_NS
from .protocols import Clock, SnapshotSource, SystemClock
from .writer import Rules, Writer

__all__ = ["Capture", "Waker"]

#: select() takes descriptors below this only (glibc's fd_set); poll() any
FD_SETSIZE = 1024

log = logging.getLogger("tcpsnap.recorder")

#: The row standing for an empty snapshot: family 0, state CLOSED, inode 0 (its size).
_EMPTY_SNAPSHOT = np.zeros(1, dtype=ROW_DTYPE)
_EMPTY_SNAPSHOT["state"] = 1


class Waker:
    """Sleep until a deadline or until ``wake()``, which is safe in a signal handler
    (POSIX: a self-pipe; an Event elsewhere)."""

    def __init__(self) -> None:
        self._event: threading.Event | None = None
        self._r = self._w = -1
        if os.name == "posix":
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)
        else:  # pragma: no cover
            self._event = threading.Event()

    def fileno(self) -> int:
        return self._r

    @staticmethod
    def selectable(*fds: int) -> bool:
        """Whether ``select()`` can wait on all of ``fds`` (each below FD_SETSIZE)."""
        return all(0 <= fd < FD_SETSIZE for fd in fds)

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._event is not None:  # pragma: no cover
            if self._event.wait(seconds):
                self._event.clear()
            return
        if 0 <= self._r < FD_SETSIZE:
            # select waits to the microsecond: one wake-up (poll's whole milliseconds
            # need a second one for the rest; ~30 µs of CPU a sleep in isolation)
            if select.select([self._r], [], [], seconds)[0]:
                with contextlib.suppress(OSError):
                    os.read(self._r, 4096)
            return
        # poll, not select: select() fails for fds above 1023 (a busy process has them).
        # poll counts whole milliseconds: wait the whole ones there (a wake-up ends the
        # wait) and the sub-millisecond rest in time.sleep, so the schedule stays exact.
        end = time.monotonic() + seconds
        p = select.poll()
        p.register(self._r, select.POLLIN)
        if p.poll(int(seconds * 1000)):
            with contextlib.suppress(OSError):
                os.read(self._r, 4096)
            return
        rest = end - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def wake(self) -> None:
        if self._event is not None:  # pragma: no cover
            self._event.set()
        elif self._w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._w, b"x")

    def close(self) -> None:
        for fd in (self._r, self._w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._r = self._w = -1


class Capture:
    """Takes snapshots on schedule and fills batches; runs on the thread that calls
    ``Recorder.run``. Counters are written by this thread and read by any."""

    def __init__(self, snap: SnapshotSource, pids: bool, rules: Rules, pool: BatchPool,
                 writer: Writer, clock: Clock, waker: Waker, *, seq: int, states: Any = None,
                 ports: Any = None, family: int | None = None, where: Any = None, tracker: Any = None,
                 failed: Callable[[], BaseException | None], tcp_info: bool = False) -> None:
        self._snap = snap
        self._tcp_info = tcp_info  # the snapshotter's internals go with its rows
        self._names = snap.process_names if pids else None
        # the resolver's one-call form of names + the batch's dictionary (tcpsnap.pids),
        # where the source has one: no array made per snapshot (full mode)
        self._names_into = getattr(getattr(snap, "resolver", None), "names_into", None) if pids else None
        self.rules = rules
        self._pool = pool
        self._writer = writer
        self._clock = clock
        self.waker = waker
        self._filter = (states, ports, family) if (states or ports or family) else None
        self._where = where        # a tcpsnap.Filter (the snapshotter's own applies it too)
        self.tracker = tracker  # record.changes.ChangeTracker in changes mode
        if tracker is not None and self._names_into is not None:
            tracker.names_into = self._names_into
            tracker.defer_pids(snap)  # owners looked up in step, only for rows that need it
        # other namespaces at their own rate (tcpsnap.netns.Rate): a pass may leave some
        # out; their rows are carried from their last dump (Carry)
        rate = getattr(getattr(snap, "namespaces", None), "rate", None)
        self._carry: Carry | None = None
        if isinstance(rate, Rate):
            if rate.budget_ns is None and rules.interval_ns:
                rate.budget_ns = rules.interval_ns // 2
            self._carry = Carry(rate)
        # full mode with nothing between the dump and the batch: the dump is written straight
        # into the current batch (Snapshotter.take_into), not copied there
        self._take_into = (getattr(snap, "take_into", None) if tracker is None and self._filter is None
                           and where is None and self._carry is None and not tcp_info else None)
        # changes mode with nothing between the dump and step (no filter, no namespaces at
        # their own rate, no internals): run() adds its snapshots with add_changes, add's
        # path for that case with none of the branches it cannot take
        self._lean = (tracker is not None and self._filter is None and where is None
                      and self._carry is None and not tcp_info)
        self._last_n = 0  # rows of the last snapshot dumped into a batch (take_into)
        self.copied = 0   # snapshots copied into their batch (the others were dumped there)
        self._failed = failed
        self.stopping = False
        self._cur: Batch | None = None
        self.seq = seq
        self.first_seq: int | None = None
        self.snapshots = 0
        self.rows = 0
        self.overruns = 0
        self.late_max_ns = 0
        self.late_hist = [0] * 64  # snapshots by bit length of their lateness in ns
        self.cap_hist = [0] * (len(CAPTURE_BUCKETS_NS) + 1)  # by capture time (metrics)
        self.cap_sum_ns = 0
        self._pending_overruns = 0
        self._last_overrun_log = 0.0
        self._overruns_logged = 0

    @property
    def netns_stats(self) -> dict[str, int]:
        """Other namespaces at their own rate: ``netns_partial`` snapshots that left some
        out, ``netns_rows_carried`` rows carried for them; empty without namespaces."""
        c = self._carry
        if c is None:
            return {}
        return {"netns_partial": c.rate.passes, "netns_rows_carried": c.rows_carried}

    def stop(self) -> None:
        """Make ``run`` return after the snapshot in progress; signal-handler safe."""
        self.stopping = True
        self.waker.wake()

    def run(self, duration_ns: int | None) -> int:
        """The schedule loop, until ``duration_ns`` passed, ``stop()`` or a writer error.
        Returns the nanoseconds it ran."""
        take = self._snap.take
        into = self._take_into
        lean = self._lean
        ch = self.tracker
        # changes mode with a destroy feed: its wait reads the feed (bound once, not looked
        # up through _sleep at every snapshot)
        feed_sleep = ch.sleep if ch is not None and ch.feed is not None else None
        waker = self.waker
        file_key = self.rules.file_key
        names = self._names
        mono = self._clock.monotonic_ns
        wall = self._clock.time_ns
        if type(self._clock) is SystemClock:
            # its methods call these: five Python calls a snapshot fewer
            mono, wall = time.monotonic_ns, time.time_ns
        interval = self.rules.interval_ns
        hist = self.late_hist
        cap_hist, cap_bounds = self.cap_hist, CAPTURE_BUCKETS_NS
        start = mono()
        end = None if duration_ns is None else start + duration_ns
        k = 0
        try:
            while not self.stopping and self._failed() is None:
                late = 0
                if interval:
                    t_sched = start + k * interval
                    if end is not None and t_sched >= end:
                        break
                    now = mono()
                    if now < t_sched:
                        if feed_sleep is not None:
                            feed_sleep(waker, t_sched - now)
                        else:
                            waker.sleep((t_sched - now) / 1e9)
                        if self.stopping:
                            break
                        now = mono()
                        if now < t_sched:  # woken early (a stray wake-up byte)
                            continue
                    late = now - t_sched
                    if late >= interval:
                        missed = late // interval
                        if end is not None:  # count no slot past the end of the run
                            missed = min(missed, -(-(end - t_sched) // interval))
                        self._overrun(missed, late)
                        k += missed
                        t_sched += missed * interval
                        if end is not None and t_sched >= end:
                            break
                        late = now - t_sched
                elif end is not None and mono() >= end:
                    break
                b = self._cur
                if into is not None:
                    # a batch with room for this snapshot (as large as the last one, and an
                    # eighth), ready before the clock is read: a full one goes to the writer now
                    need = self._last_n + (self._last_n >> 3) + 64
                    if b is not None and b.s and (len(b.rows) - b.n < need or b.s >= len(b.ts)):
                        self.handoff()
                        b = None
                    if b is None:
                        b = self._cur = self._pool.get()
                    if not b.s and len(b.rows) < need:
                        b.grow(need)
                w = wall()
                t0 = mono()
                if b is not None and into is not None and (not b.s or b.file_key == file_key(t0, w)):
                    rows, placed = into(b.rows, b.n)
                    self._last_n = len(rows)
                else:
                    rows, placed = take(), False
                t1 = mono()
                if self._carry is not None:
                    rows = self._carry.complete(rows, t1 - t0)
                if lean:
                    add_changes(self, rows, names, w, t0, t1 - t0)
                else:
                    self.add(rows, names, w, t0, t1 - t0, placed)
                cap_hist[bisect_left(cap_bounds, t1 - t0)] += 1
                self.cap_sum_ns += t1 - t0
                k += 1
                hist[late.bit_length()] += 1
                if late > self.late_max_ns:
                    self.late_max_ns = late
        finally:
            ran = mono() - start
            self.handoff()
            self.stopping = False  # a stop() asked before run() started still counts
        return ran

    def _overrun(self, missed: int, late: int) -> None:
        self.overruns += missed
        if self._cur is not None:
            self._cur.overruns += missed
        else:
            self._pending_overruns += missed
        now = time.monotonic()
        if now - self._last_overrun_log >= 10.0:
            n = self.overruns - self._overruns_logged
            log.warning("overrun: %d snapshot %s missed (%.1f ms late; %d in all)",
                        n, "slot" if n == 1 else "slots", late / 1e6, self.overruns)
            self._overruns_logged = self.overruns
            self._last_overrun_log = now

    def add(self, rows: np.ndarray, names: Any, w: int, t0: int, cap: int, placed: bool = False) -> None:
        """One snapshot (taken at wall ``w``, monotonic ``t0``, in ``cap`` ns) into the
        current batch; ``placed``: the rows are already where they go in it (``take_into``
        into the current batch at its end, which fits them)."""
        # row i's internals (None: this snapshot sampled none); every mask applies to both
        info = getattr(self._snap, "tcp_info", None) if self._tcp_info else None
        if info is not None and self._carry is not None:
            info = self._carry.align(info)
        if self._filter is not None:
            m = row_mask(rows, *self._filter)
            if m is not None:
                rows = rows[m]
                info = None if info is None else info[m]
        flt = self._where
        if flt is not None and len(rows):
            m = flt.mask(rows, process=self._names(rows["pid"]) if flt.needs_process and self._names
                         else None)
            if self.tracker is not None:
                # changes mode follows a connection the filter selected until it closes
                # (tcpsnap.filters: its later states are events, its close a real one)
                m |= self.tracker.holds(rows["cookie"])
            rows = rows[m]
            info = None if info is None else info[m]
        key = self.rules.file_key(t0, w)
        extra = None
        sampled = False
        if self.tracker is not None:
            if self._carry is not None:
                # its destroy reports wait for the namespace's next dump (reports.py)
                self.tracker.carried_netns = self._carry.carried
            sampled = info is not None
            rows, names, extra = self.tracker.step(rows, names, w, t0, key, info=info)
            if self._tcp_info and extra is not None:
                info, extra = extra[3], extra[:3]    # the event rows' internals
        empty = False
        marks = 0
        if self.tracker is None and self._carry is not None and self._carry.carried:
            # full mode: which namespaces this snapshot did not dump (their rows carried)
            m = self._carry.markers()
            marks = len(m)
            rows = np.concatenate([rows, m])
            if info is not None:
                info = np.concatenate([info, np.zeros(marks, info.dtype)])
        if self.tracker is None and len(rows) == 0:
            # an empty snapshot still leaves a row: a quiet moment reads as 0, not as a gap
            rows, names, empty, info, placed = _EMPTY_SNAPSHOT, None, True, None, False
        n = len(rows)
        b = batch_for(self, key, n, t0, placed)
        i, s = b.n, b.s
        if n and not placed:
            self.copied += 1
            # one memcpy (numpy copies a structured array field by field), GIL kept
            if not rows.flags.c_contiguous:
                rows = np.ascontiguousarray(rows)
            put_rows(b.rows, i, rows)
        if b.info is not None and b.sampled is not None:
            dst = b.info[i:i + n].view(np.uint8)
            if info is not None and n:
                np.copyto(dst, np.ascontiguousarray(info).view(np.uint8))
            else:
                dst.fill(0)  # null when written: zero, so no stale name reaches a dictionary
            # changes mode: whether the snapshot sampled (its events always carry their
            # internals; ChangesEncoder nulls the marker's tcp_info_len where it did not)
            b.sampled[s] = info is not None if self.tracker is None else sampled
        if extra is not None and b.extra is not None:
            for dst, src in zip(b.extra, extra, strict=True):
                dst[i:i + n] = src
        if names is not None and n and self._names_into is not None and self.tracker is None:
            self._names_into(rows["pid"], b.proc[i:i + n], b.name_codes, b.names)
            b.has_proc = True
        elif names is not None and n:
            _put_names(b, i, n, rows, names)
        else:
            b.proc[i:i + n] = -1
        close_snapshot(self, b, i, s, n, w, t0, cap, empty, 0 if empty else n - marks)

    def handoff(self) -> None:
        """The current batch (if it holds a snapshot) to the writer."""
        b = self._cur
        if b is not None:
            self._cur = None
            if b.s:
                self._writer.put(b)
            else:
                self._pool.put(b)


def batch_for(c: Capture, key: Any, n: int, t0: int, placed: bool = False) -> Batch:
    """The batch this snapshot of ``n`` rows (file ``key``, monotonic ``t0``) goes into:
    the current one if it is of the same file and has room, else a new one from the
    pool (the current one handed off)."""
    b = c._cur
    if b is not None and b.s and (b.file_key != key or not b.fits(n)):
        # never for placed rows: run() placed them only in a batch of this key with room
        assert not placed, "rows placed in a batch that is handed off"
        c.handoff()
        b = None
    if b is None:
        b = c._cur = c._pool.get()
    if not b.s:            # its first snapshot (run() may have taken it from the pool)
        b.file_key = key
        b.t_first = t0
        b.overruns += c._pending_overruns
        c._pending_overruns = 0
        if not b.fits(n):
            b.grow(n)
    return b


def close_snapshot(c: Capture, b: Batch, i: int, s: int, n: int, w: int, t0: int, cap: int,
                   empty: bool, counted: int) -> None:
    """A snapshot's per-snapshot values into ``b`` (its rows at ``i``, ``n`` of them, are
    there), the counters moved (``counted``: its connection rows), and the batch handed
    off when the rules say so."""
    b.ts[s] = w
    b.seq[s] = c.seq
    b.cap[s] = cap
    b.mono[s] = t0
    b.empty[s] = empty
    b.counts[s] = n
    b.n = i + n
    b.s = s + 1
    if c.first_seq is None:
        c.first_seq = c.seq
    c.seq += 1
    c.snapshots += 1
    c.rows += counted
    if c.rules.hand_off(t0 - b.t_first):
        c.handoff()


def add_changes(c: Capture, rows: np.ndarray, names: Any, w: int, t0: int, cap: int) -> None:
    """``Capture.add`` in changes mode without filters, namespaces at their own rate or
    internals (``Capture._lean``): the same batch contents, through only the branches that
    case takes; a quiet snapshot's lone marker (one row) is copied by items."""
    key = c.rules.file_key(t0, w)
    rows, names, extra = c.tracker.step(rows, names, w, t0, key)
    n = len(rows)
    b = batch_for(c, key, n, t0)
    i, s = b.n, b.s
    if n:
        c.copied += 1
        if not rows.flags.c_contiguous:
            rows = np.ascontiguousarray(rows)
        put_rows(b.rows, i, rows)
    if b.info is not None and b.sampled is not None:
        b.info[i:i + n].view(np.uint8).fill(0)   # (a pool made with internals)
        b.sampled[s] = False
    bx = b.extra
    if n == 1:
        # the marker alone (step's rows always start with it): item by item, no views;
        # its process is unknown (-1) whatever ``names`` says of it
        if extra is not None and bx is not None:
            e0, e1, e2 = extra
            bx[0][i] = e0[0]
            bx[1][i] = e1[0]
            bx[2][i] = e2[0]
        b.proc[i] = -1
        if names is not None:
            b.has_proc = True
    else:
        if extra is not None and bx is not None:
            for dst, src in zip(bx, extra, strict=True):
                dst[i:i + n] = src
        if names is not None and n:
            _put_names(b, i, n, rows, names)
        else:
            b.proc[i:i + n] = -1
    close_snapshot(c, b, i, s, n, w, t0, cap, False, n)


def _put_names(b: Batch, i: int, n: int, rows: np.ndarray, names: Any) -> None:
    """The processes of ``rows`` (``names(pids) -> (codes, names)``) into ``b.proc[i:i + n]``,
    as codes of the batch's own dictionary (-1: unknown)."""
    codes, pnames = names(rows["pid"])
    if pnames:
        np.take(merge_names(pnames, b.name_codes, b.names), codes, out=b.proc[i:i + n], mode="wrap")
    else:
        b.proc[i:i + n] = -1
    b.has_proc = True


def boost(nice: int | None) -> Callable[[], None] | None:
    """Set the calling thread's nice value (Linux: per thread) to ``nice`` if that
    raises its priority; returns the undo, or None (no change, or not permitted)."""
    if nice is None or not sys.platform.startswith("linux"):
        return None
    try:
        tid = threading.get_native_id()
        old = os.getpriority(os.PRIO_PROCESS, tid)
        if nice >= old:
            return None
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, AttributeError) as e:
        log.debug("capture thread keeps its priority (%s)", e)
        return None
    log.debug("capture thread nice %d -> %d", old, nice)

    def undo() -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, old)

    return undo
