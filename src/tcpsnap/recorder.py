"""The recorder: snapshots of the TCP table at a fixed rate, into crash-safe Parquet.

>>> with tcpsnap.Recorder("rec", interval="100ms", rotate="15m") as rec:
...     rec.run(duration="1h")          # or until rec.stop() / SIGTERM in the CLI
>>> df = pandas.read_parquet("rec")

Two threads. The capture thread (the one that calls ``run``) schedules snapshots on
the monotonic clock at ``start + k * interval``; a slot that passes before its
snapshot could start is skipped and counted as an overrun (the schedule never
shifts). Each snapshot's rows are copied into a preallocated batch buffer (numpy,
``ROW_DTYPE``) with its wall-clock timestamp, ``seq`` and capture time. Full
batches -- or batches half a flush interval old -- go to the writer thread, which
encodes them to Arrow, appends them to the current file's journal and, every
``row_group_rows`` rows, turns the journal into a Parquet row group (pyarrow
encodes and writes without the GIL). Buffers come back to a fixed pool, so steady
capture allocates nothing per row and memory stays bounded; when the pool is empty
the writer is behind: the capture thread waits (its missed slots count as overruns)
and the wait is counted and logged.

The files, their crash safety and recovery: see ``tcpsnap._store``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import queue
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ._errors import RecorderError, RecorderLocked
from ._filters import parse_ports, parse_states, row_mask
from ._schema import ROW_DTYPE
from ._units import format_duration as _fmt_duration
from ._units import parse_duration
from .frame import merge_names

__all__ = ["Recorder", "recover", "parse_duration", "RecorderError", "RecorderLocked"]

if TYPE_CHECKING:  # pragma: no cover
    from . import _store

log = logging.getLogger("tcpsnap.recorder")
_LOCK_NAME = ".tcpsnap.lock"  # = _store.LOCK_NAME (pyarrow is imported only when recording)

class _Batch:
    """A preallocated buffer of rows from consecutive snapshots."""

    __slots__ = ("rows", "proc", "ts", "seq", "cap", "counts", "n", "s", "names", "name_codes",
                 "has_proc", "t_first", "file_key", "overruns", "extra")

    def __init__(self, rows: int, snaps: int, changes: bool = False) -> None:
        self.rows = np.empty(rows, dtype=ROW_DTYPE)
        self.proc = np.empty(rows, dtype=np.int32)
        # changes mode: per-row event code, seen_in_snapshot, timestamp
        self.extra = (np.empty(rows, np.uint8), np.empty(rows, bool), np.empty(rows, np.int64)) if changes else None
        self.ts = np.empty(snaps, dtype=np.int64)
        self.seq = np.empty(snaps, dtype=np.int64)
        self.cap = np.empty(snaps, dtype=np.int64)
        self.counts = np.empty(snaps, dtype=np.int64)
        self.names: list[str] = []
        self.name_codes: dict[str, int] = {}
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
        if self.extra is not None:
            grown = tuple(np.empty(new, a.dtype) for a in self.extra)
            for a, g in zip(self.extra, grown):
                g[:self.n] = a[:self.n]
            self.extra = grown


class _Stop:
    pass


class _Waker:
    """Sleep until a deadline or until ``wake()``, which is safe in a signal handler
    (POSIX: a self-pipe; an Event elsewhere)."""

    def __init__(self) -> None:
        self._event = None
        self._r = self._w = -1
        if os.name == "posix":
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)
        else:  # pragma: no cover
            self._event = threading.Event()

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._event is not None:  # pragma: no cover
            if self._event.wait(seconds):
                self._event.clear()
            return
        r, _, _ = select.select([self._r], [], [], seconds)
        if r:
            with contextlib.suppress(OSError):
                os.read(self._r, 4096)

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


_STOP = _Stop()


class Recorder:
    """Record the TCP table into a folder of Parquet files (see the module doc).

    Parameters (durations as seconds or strings like ``"10ms"``, ``"15m"``):

    path
        The recording folder (created if missing). One recorder per folder (a lock).
    interval
        Time between snapshot starts; ``0`` = as fast as possible. Default 100 ms.
    rotate
        Start a new file this often (and at UTC midnight). Default 15 min.
    flush
        A crash (``kill -9``) loses at most this much of the latest snapshots.
        Default 1 s.
    compression, compression_level
        Parquet codec (default zstd at its default level) and level.
    pids
        Fill ``pid``/``process``: True, False, or None (default) for "if this
        platform and user can" (a warning says when not).
    states, ports, family
        Keep only matching rows (as ``tcpsnap show --state/--port/--family``).
    row_group_rows
        Rows per Parquet row group (the last of a file may be smaller).
    compat
        Only dictionary/plain Parquet encodings, for old readers (pyarrow < 16,
        parquet-java < 1.14); files get several times larger for big tables. By
        default ports, inode and cookie are BYTE_STREAM_SPLIT and the per-snapshot
        columns DELTA_BINARY_PACKED (pandas/pyarrow, DuckDB, polars read both).
    fsync
        fsync the journal at every flush too (power-loss safety; a clean close and
        every row group are always flushed to the OS, and files are fsynced before
        they are renamed into place).
    recover
        Recover files a crashed recorder left in the folder before starting.
    mode
        ``"full"`` (default): every row of every snapshot. ``"changes"``: only what
        changed from one snapshot to the next, a keyframe (every row) every
        ``keyframe`` and at the start of each file, and -- on Linux with CAP_NET_ADMIN --
        every TCP socket the kernel destroys, also those that lived and died between two
        snapshots. ``tcpsnap.read`` rebuilds such a recording exactly; see
        ``tcpsnap.changes``.
    keyframe
        Changes mode: time between keyframes (default 1 min).
    destroy
        Changes mode: subscribe to the kernel's socket-destroy notifications. None
        (default): if possible (a warning says when not); True: required; False: no.
    nice
        While ``run`` keeps a schedule (interval > 0), the calling thread's nice
        value (Linux: per thread), restored when ``run`` returns: -10 (default) gives
        the capture thread -- a small share of a core -- precedence over busy
        processes, so snapshots start on time on a loaded machine. Needs root or
        CAP_SYS_NICE; silently skipped otherwise. None: leave it. The writer thread
        keeps the normal priority.
    """

    def __init__(self, path, *, interval="100ms", rotate="15m", flush="1s",
                 compression: str | None = "zstd", compression_level: int | None = None,
                 pids: bool | None = None, states=None, ports=None, family: int | None = None,
                 row_group_rows: int = 1 << 20, compat: bool = False, fsync: bool = False,
                 recover: bool = True, nice: int | None = -10, mode: str = "full",
                 keyframe="1m", destroy: bool | None = None,
                 batch_rows: int = 1 << 14, buffers: int = 24, snapshotter=None) -> None:
        self.path = Path(path)
        self.interval = parse_duration(interval)
        self.rotate = parse_duration(rotate)
        self.flush = parse_duration(flush)
        if self.rotate <= 0:
            raise ValueError("rotate must be > 0")
        if self.flush <= 0:
            raise ValueError("flush must be > 0")
        if compression not in (None, "none", "zstd", "snappy", "gzip", "lz4", "brotli"):
            raise ValueError(f"unknown compression {compression!r}")
        self.compression = None if compression == "none" else compression
        self.compression_level = compression_level
        self.pids = pids
        self.states = parse_states(states) if isinstance(states, str) else (frozenset(states) if states else None)
        self.ports = parse_ports(ports) if isinstance(ports, str) else (frozenset(ports) if ports else None)
        if family not in (None, 4, 6):
            raise ValueError(f"family must be 4 or 6, got {family!r}")
        self.family = family
        if row_group_rows < 1:
            raise ValueError("row_group_rows must be >= 1")
        self.row_group_rows = int(row_group_rows)
        self.compat = bool(compat)
        self.fsync = bool(fsync)
        self.do_recover = recover
        self.nice = nice
        if mode not in ("full", "changes"):
            raise ValueError(f"mode must be 'full' or 'changes', got {mode!r}")
        self.mode = mode
        self.keyframe = parse_duration(keyframe)
        self.destroy = destroy
        self._changes = None  # changes.ChangeTracker in changes mode
        self._batch_rows = int(batch_rows)
        self._nbuffers = max(2, int(buffers))
        self._snap = snapshotter
        self._own_snap = snapshotter is None

        self._interval_ns = int(round(self.interval * 1e9))
        self._rotate_ns = int(round(self.rotate * 1e9))
        self._handoff_ns = max(int(self.flush * 1e9) // 2, 1)
        self._filtering = bool(self.states or self.ports or self.family)

        self._opened = False
        self._closed = False
        self._lock_fd: int | None = None
        self._waker: _Waker | None = None
        self._running = threading.Event()
        self._running_done = threading.Event()
        self._run_thread = 0
        self._stopping = False
        self._error: BaseException | None = None

        # statistics (written by one thread, read by any)
        self.snapshots = 0
        self.rows = 0
        self.overruns = 0
        self.writer_waits = 0
        self.writer_cpu_ns = 0  # CPU time the writer thread spent on batches
        self.late_max_ns = 0
        self.late_hist = [0] * 64  # snapshots by bit length of their lateness in ns
        self.recovered: list[_store.RecoveryResult] = []
        self.files: list[Path] = []
        self.pids_enabled = False
        self._seq = 0
        self.first_seq: int | None = None
        self._t_open = 0
        self._run_ns = 0
        self._last_overrun_log = 0
        self._overruns_logged = 0
        self._pending_overruns = 0
        self._error_raised = False

        # writer state
        self._bytes_done = 0
        self._app: _store.ParquetAppender | None = None
        self._journal: _store.Journal | None = None
        self._pending: list = []  # encoded record batches, not yet durable
        self._pending_rows = 0
        self._oldest: int | None = None  # first snapshot (monotonic ns) not yet durable
        self._file_key = None
        self._file_meta: dict = {}
        self._last_file: Path | None = None

    # ------------------------------------------------------------ open / close

    def __enter__(self) -> "Recorder":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def open(self) -> "Recorder":
        from . import _store
        from ._arrow import BatchEncoder, build_schema

        if self._opened:
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RecorderError(f"cannot create recording folder {self.path}: {e.strerror or e}") from e
        if not self.path.is_dir():
            raise RecorderError(f"{self.path} is not a folder")
        self._lock_fd = _lock(self.path)
        try:
            if self.do_recover:
                self.recovered = _recover_all(self.path, self.row_group_rows, logging.WARNING)
            last = _store.last_seq(self.path)
            self._seq = 0 if last is None else last + 1
            if self._snap is None:
                self._snap = self._new_snapshotter()
            else:
                self.pids_enabled = bool(getattr(self._snap, "pids", False))
            # one untimed snapshot: sizes the array to the table and warms the pid
            # resolver (its first /proc walk), so the schedule does not start late
            self._snap.take()
            if self.mode == "changes":
                from .record import changes

                self._changes = self._new_tracker()
                self._schema = changes.build_schema(self._metadata())
                self._enc = changes.ChangesEncoder(self._schema)
            else:
                self._schema = build_schema(self._metadata())
                self._enc = BatchEncoder(self._schema)
            self._pool = [_Batch(self._batch_rows, 4096, self._changes is not None)
                          for _ in range(self._nbuffers)]
            self._pool_cv = threading.Condition()
            self._cur: _Batch | None = None
            self._q: queue.SimpleQueue = queue.SimpleQueue()
            self._waker = _Waker()
            self._t_open = time.monotonic_ns()
            self._rot_origin = self._t_open
            self._writer = threading.Thread(target=self._writer_main, name="tcpsnap-writer", daemon=True)
            self._writer.start()
        except BaseException:
            self._release()
            raise
        self._opened = True
        return self

    def _new_snapshotter(self):
        from ._snapshot import Snapshotter

        if self.pids is False:
            return Snapshotter(pids=False)
        try:
            s = Snapshotter(pids=True)
            self.pids_enabled = bool(getattr(s, "pids", True))
            return s
        except (NotImplementedError, PermissionError, OSError) as e:
            if self.pids:  # asked for explicitly
                raise
            log.warning("recording without pids (%s)", e)
            return Snapshotter(pids=False)

    def _new_tracker(self):
        from .record.changes import ChangeTracker, open_destroy_feed

        feed = None
        if self.destroy or (self.destroy is None and self._own_snap):
            feed = open_destroy_feed(required=bool(self.destroy))
        return ChangeTracker(int(round(self.keyframe * 1e9)), feed, self.ports, self.family)

    def _metadata(self) -> dict[str, str]:
        from . import __version__
        from ._backend import BACKEND

        filters = {}
        if self.states:
            filters["states"] = sorted(self.states)
        if self.ports:
            filters["ports"] = _ranges(sorted(self.ports))
        if self.family:
            filters["family"] = self.family
        return {
            "tcpsnap.version": __version__,
            "tcpsnap.host": socket.gethostname(),
            "tcpsnap.os": platform.system(),
            "tcpsnap.kernel": platform.release(),
            "tcpsnap.platform": platform.platform(),
            "tcpsnap.backend": BACKEND,
            "tcpsnap.interval": _fmt_duration(self.interval),
            "tcpsnap.interval_ns": str(self._interval_ns),
            "tcpsnap.rotate": _fmt_duration(self.rotate),
            "tcpsnap.flush": _fmt_duration(self.flush),
            "tcpsnap.pids": "true" if self.pids_enabled else "false",
            "tcpsnap.filters": json.dumps(filters),
            "tcpsnap.compression": self.compression or "none",
            "tcpsnap.compression_level": "default" if self.compression_level is None else str(self.compression_level),
            "tcpsnap.encoding": "compat" if self.compat else "compact",
            "tcpsnap.run": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tcpsnap.mode": self.mode,
            **({"tcpsnap.keyframe": _fmt_duration(self.keyframe),
                "tcpsnap.destroy_feed": "true" if self._changes.feed is not None else "false"}
               if self._changes is not None else {}),
        }

    def close(self) -> None:
        """Finish the current file (footer, fsync, rename) and release the folder."""
        if not self._opened or self._closed:
            return
        if self._running.is_set() and threading.get_ident() != self._run_thread:
            self.stop()  # run() is going on in another thread: let it hand its batch off
            self._running_done.wait()
        self._closed = True
        try:
            self._handoff()
        finally:
            self._q.put(_STOP)
            self._writer.join()
            self._release()
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._wrap(self._error)

    def _release(self) -> None:
        if self._changes is not None:
            with contextlib.suppress(Exception):
                self._changes.close()
        if self._own_snap and self._snap is not None:
            with contextlib.suppress(Exception):
                self._snap.close()
            self._snap = None
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        if self._lock_fd is not None:
            _unlock(self._lock_fd, self.path)
            self._lock_fd = None

    # ------------------------------------------------------------ capture

    def stop(self) -> None:
        """Make ``run`` return after the snapshot in progress. Safe to call from a
        signal handler or another thread."""
        self._stopping = True
        w = self._waker
        if w is not None:
            w.wake()

    def _sleep(self, ns: int) -> None:
        ch = self._changes
        if ch is not None and ch.feed is not None:
            ch.sleep(self._waker, ns)  # reads the destroy feed while it waits
            return
        self._waker.sleep(ns / 1e9)

    def run(self, duration=None) -> "Recorder":
        """Record until ``duration`` has passed (None: until ``stop()``). Raises
        ``RecorderError`` when the writer failed (disk full...); everything written
        until then stays readable or recoverable."""
        if not self._opened:
            self.open()
        if self._closed:
            raise RecorderError("recorder is closed")
        dur_ns = None if duration is None else int(round(parse_duration(duration) * 1e9))
        if self._running.is_set():
            raise RecorderError("run() is already going on")
        self._running.set()
        self._running_done.clear()
        self._run_thread = threading.get_ident()
        snap = self._snap
        take = snap.take
        names = snap.process_names if self.pids_enabled else None
        mono = time.monotonic_ns
        wall = time.time_ns
        interval = self._interval_ns
        hist = self.late_hist
        restore = self._boost() if interval else None
        start = mono()
        end = None if dur_ns is None else start + dur_ns
        k = 0
        try:
            while not self._stopping and self._error is None:
                late = 0
                if interval:
                    t_sched = start + k * interval
                    if end is not None and t_sched >= end:
                        break
                    now = mono()
                    if now < t_sched:
                        self._sleep(t_sched - now)
                        if self._stopping:
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
                w = wall()
                t0 = mono()
                rows = take()
                t1 = mono()
                self._add(rows, names, w, t0, t1 - t0)
                k += 1
                hist[late.bit_length()] += 1
                if late > self.late_max_ns:
                    self.late_max_ns = late
        finally:
            self._run_ns += mono() - start
            self._handoff()
            self._stopping = False  # a stop() asked before run() started still counts
            if restore is not None:
                restore()
            self._running.clear()
            self._running_done.set()
        if self._error is not None:
            self._error_raised = True
            raise self._wrap(self._error)
        return self

    def _boost(self):
        """Set this thread's nice to ``self.nice``; returns the undo, or None."""
        if self.nice is None or not sys.platform.startswith("linux"):
            return None
        try:
            tid = threading.get_native_id()
            old = os.getpriority(os.PRIO_PROCESS, tid)
            if self.nice >= old:
                return None
            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
        except (OSError, AttributeError) as e:
            log.debug("capture thread keeps its priority (%s)", e)
            return None
        log.debug("capture thread nice %d -> %d", old, self.nice)

        def undo():
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, old)

        return undo

    def _overrun(self, missed: int, late: int) -> None:
        self.overruns += missed
        if self._cur is not None:
            self._cur.overruns += missed
        else:
            self._pending_overruns += missed
        now = time.monotonic()
        if now - self._last_overrun_log >= 10.0:
            log.warning("overrun: %d snapshot slot(s) missed (%.1f ms late; %d in all)",
                        self.overruns - self._overruns_logged, late / 1e6, self.overruns)
            self._overruns_logged = self.overruns
            self._last_overrun_log = now

    def _key_for(self, t0: int, w: int) -> tuple[int, int]:
        return ((t0 - self._rot_origin) // self._rotate_ns, w // 86_400_000_000_000)

    def _add(self, rows: np.ndarray, names, w: int, t0: int, cap: int) -> None:
        if self._filtering:
            m = row_mask(rows, self.states, self.ports, self.family)
            if m is not None:
                rows = rows[m]
        key = self._key_for(t0, w)
        extra = None
        if self._changes is not None:
            rows, names, extra = self._changes.step(rows, names, w, t0, key)
        n = len(rows)
        b = self._cur
        if b is not None and (b.file_key != key or not b.fits(n)):
            self._handoff()
            b = None
        if b is None:
            b = self._cur = self._get_buffer()
            b.file_key = key
            b.t_first = t0
            b.overruns += self._pending_overruns
            self._pending_overruns = 0
            if not b.fits(n):
                b.grow(n)
        i, s = b.n, b.s
        if n:
            # as bytes: numpy copies a structured array field by field, ~20x slower
            if not rows.flags.c_contiguous:
                rows = np.ascontiguousarray(rows)
            np.copyto(b.rows[i:i + n].view(np.uint8), rows.view(np.uint8))
        if extra is not None:
            for dst, src in zip(b.extra, extra):
                dst[i:i + n] = src
        if names is not None and n:
            codes, pnames = names(rows["pid"])
            if pnames:
                np.take(merge_names(pnames, b.name_codes, b.names), codes, out=b.proc[i:i + n],
                        mode="wrap")
            else:
                b.proc[i:i + n] = -1
            b.has_proc = True
        else:
            b.proc[i:i + n] = -1
        b.ts[s] = w
        b.seq[s] = self._seq
        b.cap[s] = cap
        b.counts[s] = n
        b.n = i + n
        b.s = s + 1
        if self.first_seq is None:
            self.first_seq = self._seq
        self._seq += 1
        self.snapshots += 1
        self.rows += n
        age = t0 - b.t_first
        if age >= self._handoff_ns or (self._interval_ns and age + self._interval_ns > self._handoff_ns):
            self._handoff()

    def _handoff(self) -> None:
        b = self._cur
        if b is not None:
            self._cur = None
            if b.s:
                self._q.put(b)
            else:
                self._put_buffer(b)

    def _get_buffer(self) -> _Batch:
        with self._pool_cv:
            if not self._pool:
                self.writer_waits += 1
                t0 = time.monotonic()
                while not self._pool:
                    if self._error is not None:
                        raise self._wrap(self._error)
                    self._pool_cv.wait(0.1)
                waited = time.monotonic() - t0
                log.warning("writer behind: capture waited %.0f ms for a free buffer "
                            "(%d times so far; the missed slots count as overruns)",
                            waited * 1e3, self.writer_waits)
            # FIFO: every buffer is in use within the first seconds, so memory reaches
            # its plateau early instead of creeping up when a burst first needs more
            return self._pool.pop(0)

    def _put_buffer(self, b: _Batch) -> None:
        b.reset()
        with self._pool_cv:
            self._pool.append(b)
            self._pool_cv.notify()

    # ------------------------------------------------------------ writer

    def _writer_main(self) -> None:
        cpu = time.thread_time_ns
        mono = time.monotonic_ns
        while True:
            timeout = None
            if self._oldest is not None:
                timeout = max(0.0, (self._oldest + self._handoff_ns - mono()) / 1e9)
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            c0 = cpu()
            try:
                if self._error is None:
                    if item is not None:
                        self._write(item)
                    if self._oldest is not None and mono() - self._oldest >= self._handoff_ns:
                        self._make_durable()
            except BaseException as e:  # noqa: BLE001 - reported by run()/close()
                self._fail(e)
            finally:
                if item is not None:
                    self._put_buffer(item)
                self.writer_cpu_ns += cpu() - c0
        try:
            self._finish_file(clean=self._error is None)
        except BaseException as e:  # noqa: BLE001
            if self._error is None:
                self._fail(e)
            else:
                log.debug("finishing the file after an error failed too: %s", e)
            self._abandon_file()

    def _fail(self, e: BaseException) -> None:
        if self._error is None:
            self._error = e
        log.debug("writer failed", exc_info=e)
        self.stop()
        with self._pool_cv:
            self._pool_cv.notify_all()

    def _write(self, b: _Batch) -> None:
        """Encode a batch; it stays in memory until the flush deadline (half the flush
        interval after its first snapshot) makes it durable: as a row group when
        enough rows wait (no journal write at all at high rates), else appended to
        the journal, which becomes the next row group once it holds enough."""
        if self._app is None or b.file_key != self._file_key:
            self._finish_file(clean=True)
            self._open_file(b)
        s, n = b.s, b.n
        rb = self._enc.encode(b.rows[:n], b.counts[:s], b.ts[:s], b.seq[:s], b.cap[:s],
                              b.proc[:n] if b.has_proc else None, b.names,
                              *([] if b.extra is None else [a[:n] for a in b.extra]))
        if n:
            self._pending.append(rb)
            self._pending_rows += n
            if self._oldest is None:
                self._oldest = b.t_first
        fm = self._file_meta
        fm["snapshots"] += s
        fm["last_seq"] = int(b.seq[s - 1])
        fm["overruns"] += b.overruns
        if self._pending_rows + self._journal_rows() >= self.row_group_rows:
            self._commit_row_group()

    def _journal_rows(self) -> int:
        return self._journal.rows if self._journal is not None else 0

    def _make_durable(self) -> None:
        if self._pending_rows + self._journal_rows() >= max(1, self.row_group_rows // 4):
            self._commit_row_group()
            return
        from . import _store

        if self._journal is None:
            app = self._app
            self._journal = _store.Journal(_store.journal_path(app.final, app.row_groups),
                                           self._schema, self.fsync)
        for rb in self._pending:
            self._journal.append(rb)
        self._pending.clear()
        self._pending_rows = 0
        self._oldest = None

    def _open_file(self, b: _Batch) -> None:
        from . import _store

        part, name = _store.file_names(int(b.ts[0]))
        folder = self.path / part
        folder.mkdir(exist_ok=True)
        final = folder / name
        if final.exists() or _store.tmp_path(final).exists():
            final = _store._free_name(final)
        self._app = _store.ParquetAppender(final, self._schema, compression=self.compression,
                                           compression_level=self.compression_level,
                                           row_group_rows=self.row_group_rows, compat=self.compat,
                                           fsync=self.fsync)
        self._enc.reset()
        self._journal = None
        self._file_key = b.file_key
        self._last_file = final
        self._file_meta = {"snapshots": 0, "first_seq": int(b.seq[0]), "last_seq": int(b.seq[0]),
                           "overruns": 0}
        log.info("recording to %s", final)

    def _commit_row_group(self) -> None:
        """The journal's rows and the pending ones -> one row group."""
        from . import _store

        j = self._journal
        app = self._app
        batches: list = []
        if j is not None:
            j.close()
            if j.rows:
                _, batches, complete = _store.read_journal(j.path)
                if not complete or sum(x.num_rows for x in batches) != j.rows:
                    raise RecorderError(f"journal {j.path} did not read back")
        batches += self._pending
        if batches:
            table = _store.unify_table(self._schema, batches)
            del batches
            app.write_row_group(table)
            del table
        if j is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(j.path)
        self._journal = None
        self._pending.clear()
        self._pending_rows = 0
        self._oldest = None
        self._enc.reset()

    def _finish_file(self, clean: bool) -> None:
        app = self._app
        if app is None:
            return
        self._commit_row_group()
        fm = self._file_meta
        kv = {"tcpsnap.closed": "clean" if clean else "error",
              "tcpsnap.snapshots": str(fm["snapshots"]),
              "tcpsnap.first_seq": str(fm["first_seq"]),
              "tcpsnap.last_seq": str(fm["last_seq"]),
              "tcpsnap.overruns": str(fm["overruns"])}
        path = app.finish(kv)
        self._app = None
        if path is not None:
            self.files.append(path)
            with contextlib.suppress(OSError):
                self._bytes_done += path.stat().st_size
            log.info("finished %s (%d rows, %d snapshots)", path, app.rows, fm["snapshots"])

    def _abandon_file(self) -> None:
        if self._journal is not None:
            self._journal.abandon()
            self._journal = None
        if self._app is not None:
            self._app.close_files()
            # the error raised from run()/close() says so too
            log.info("left %s in progress: 'tcpsnap recover %s' (or the next 'tcpsnap record' "
                     "there) finishes it", self._app.final.name, self.path)
            self._app = None

    def _wrap(self, e: BaseException) -> BaseException:
        if isinstance(e, RecorderError):
            return e
        if isinstance(e, OSError):
            what = e.strerror or str(e)
            if e.errno == errno.ENOSPC or "No space left" in str(e):
                what = "No space left on device"
            where = getattr(e, "filename", None) or self._last_file or self.path
            return RecorderError(f"writing {where}: {what}; what was recorded before is kept "
                                 f"(finish it with 'tcpsnap recover {self.path}')")
        return RecorderError(f"writer failed: {type(e).__name__}: {e}")

    # ------------------------------------------------------------ status

    @property
    def current_file(self) -> Path | None:
        app = self._app
        return app.final if app is not None else None

    @property
    def bytes_written(self) -> int:
        """Bytes of Parquet written so far: finished files and the row groups of the
        file in progress (not its journal, which is temporary)."""
        total = self._bytes_done
        app = self._app
        if app is not None:
            total += app.bytes_written
        return total

    @property
    def elapsed(self) -> float:
        return (time.monotonic_ns() - self._t_open) / 1e9 if self._t_open else 0.0

    @property
    def stats(self) -> dict:
        """Counters so far: snapshots, rows, overruns (missed slots), writer_waits
        (times capture had to wait for a free buffer), late_max_ns (worst start
        delay of a snapshot that was taken), bytes, files..."""
        return {
            "elapsed": self.elapsed,
            "snapshots": self.snapshots,
            "rows": self.rows,
            "overruns": self.overruns,
            "writer_waits": self.writer_waits,
            "writer_cpu_s": self.writer_cpu_ns / 1e9,
            "late_max_ns": self.late_max_ns,
            "bytes_written": self.bytes_written,
            "files": [str(p) for p in self.files],
            "current_file": str(self.current_file) if self.current_file else None,
            "first_seq": self.first_seq,
            "last_seq": self._seq - 1 if self.snapshots else None,
            "pids": self.pids_enabled,
            "recovered": [str(r.path) for r in self.recovered if r.path],
            **(self._changes.stats if self._changes is not None else {}),
        }


# ---------------------------------------------------------------- lock & recovery

def _lock(path: Path) -> int:
    """flock ``path/.tcpsnap.lock`` (created if missing), or RecorderLocked. The file
    is removed again by ``_unlock``, so a finished recording folder holds nothing but
    Parquet files; hence the inode check: a lock taken on a file that was unlinked
    meanwhile is no lock, so try again."""
    lp = path / _LOCK_NAME
    for _ in range(100):
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise RecorderError(f"cannot write to {path}: {e.strerror or e}") from e
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                import msvcrt

                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                except OSError:
                    raise BlockingIOError from None
        except BlockingIOError:
            try:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            except (OSError, AttributeError):
                owner = "?"
            os.close(fd)
            raise RecorderLocked(f"{path} is already being recorded (pid {owner}); "
                                 f"one recorder per folder") from None
        except OSError as e:
            os.close(fd)
            raise RecorderError(f"cannot lock {lp}: {e.strerror or e}") from e
        try:
            same = os.fstat(fd).st_ino == os.stat(lp).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed it between our open and flock
            os.close(fd)
            continue
        try:
            if fcntl is not None:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise RecorderError(f"cannot write to {path}: {e.strerror or e}") from e
        return fd
    raise RecorderLocked(f"{path}: could not take the lock")  # pragma: no cover


def _recover_all(path: Path, row_group_rows: int, level: int = logging.INFO) -> list[_store.RecoveryResult]:
    from . import _store

    out = []
    for final in _store.find_leftovers(path):
        try:
            r = _store.recover_file(final, row_group_rows)
        except OSError as e:
            raise RecorderError(f"recovering {final}: {e.strerror or e}") from e
        except Exception as e:  # noqa: BLE001 - keep the files, go on
            log.error("could not recover %s (its files are kept): %s", final, e)
            continue
        if r.path is not None:
            log.log(level, "recovered %s: %d rows (%d from the journal%s)", r.path, r.rows,
                        r.from_journal, ", torn tail dropped" if r.torn else "")
        out.append(r)
    return out


def recover(path, row_group_rows: int = 1 << 20) -> list[_store.RecoveryResult]:
    """Finish the files a crashed recorder left in folder ``path``: every row the
    crash did not take. Refuses (``RecorderLocked``) while a recorder runs there."""
    path = Path(path)
    if not path.is_dir():
        raise RecorderError(f"no recording folder at {path}")
    fd = _lock(path)
    try:
        return _recover_all(path, row_group_rows)
    finally:
        _unlock(fd, path)


def _unlock(fd: int, path: Path | None = None) -> None:
    if path is not None and fcntl is not None:
        with contextlib.suppress(OSError):
            os.unlink(path / _LOCK_NAME)  # while still holding it: see _lock
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def _ranges(values: list[int]) -> list:
    out: list = []
    for v in values:
        if out and isinstance(out[-1], list) and out[-1][1] == v - 1:
            out[-1][1] = v
        elif out and isinstance(out[-1], int) and out[-1] == v - 1:
            out[-1] = [out[-1], v]
        else:
            out.append(v)
    return out
