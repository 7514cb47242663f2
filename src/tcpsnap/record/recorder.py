"""The recorder: snapshots of the TCP table at a fixed rate, into crash-safe Parquet.

>>> with tcpsnap.Recorder("rec", interval="100ms", rotate="15m") as rec:
...     rec.run(duration="1h")          # or until rec.stop() / SIGTERM in the CLI
>>> df = pandas.read_parquet("rec")

Two threads joined by one type. The capture thread (the one that calls ``run``;
``capture.Capture``) takes snapshots on schedule into a ``batch.Batch``; the writer
thread (``writer.Writer``) turns batches into files. ``Recorder`` is the coordinator:
it checks the options, opens the folder (``folder``), wires the two threads and reports
their counters. The files and the crash model: ``tcpsnap.record.layout``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from .._errors import RecorderError
from .._units import parse_duration
from .config import RecorderConfig
from .protocols import Clock, SnapshotSource, SystemClock
from .retention import Retention

__all__ = ["Recorder"]

log = logging.getLogger("tcpsnap.recorder")


def _claim_socket(rec: Recorder, fd: int) -> bool:
    """A socket this process holds on descriptor ``fd`` (the metrics server's accepted
    connections): with pids, its rows get this process's pid at the next snapshot without
    a /proc walk (``PidResolver.claim``: proven by its /proc link). Thread-safe. False
    when not claimed (no pids, not open): a walk finds it then. ``Recorder.claim_socket``."""
    res = getattr(rec._snap, "resolver", None) if rec.pids_enabled else None
    claim = getattr(res, "claim", None)
    return bool(claim(fd)) if claim is not None else False


class Recorder:
    """Record the TCP table into a folder of Parquet files.

    Parameters (durations as seconds or strings like ``"10ms"``, ``"15m"``; see
    ``tcpsnap._units``); a bad value raises ``ValueError``:

    path
        The recording folder (created if missing). One recorder per folder (a lock).
    interval
        Time between snapshot starts; ``0`` = as fast as possible. Default 100 ms.
    rotate
        Start a new file this often (and at UTC midnight). Default 15 min.
    flush
        A crash (``kill -9``) loses at most this much of the latest snapshots. Default 1 s.
    compression, compression_level
        Parquet codec (default zstd at its default level) and level.
    pids
        Fill ``pid``/``process``: True, False, or None (default): if we can (else a warning).
    states, ports, family
        Keep only matching rows (as ``tcpsnap show --state/--port/--family``).
    filter
        A ``tcpsnap.Filter`` or its text (``"dport = :443"``): keep only matching rows
        too; the kernel skips what it can (``tcpsnap.filters``). Written in every file's
        ``tcpsnap.filters`` (key ``where``) so a reader knows rows are missing by design.
    row_group_rows
        Rows per Parquet row group (the last of a file may be smaller).
    compat
        Only dictionary/plain Parquet encodings, for old readers (pyarrow < 16, parquet-java
        < 1.14); larger files. Default: ports, inode, cookie BYTE_STREAM_SPLIT, per-snapshot
        columns DELTA_BINARY_PACKED.
    fsync
        fsync the journal at every flush too (power loss); row groups and a clean close are
        always flushed to the OS, and files fsynced before they are renamed into place.
    recover
        Recover files a crashed recorder left in the folder before starting.
    netns
        ``"all"``, or one namespace's name, path or pid (``tcpsnap.netns``); default: ours.
    new_dataset
        A folder holds one recording: one mode, one filter set (``states``, ``ports``,
        ``family``) and one schema (files of an older tcpsnap are an upgrade, not another
        recording). When the folder's finished files are of another recording, the
        recorder refuses (``RecorderError``, one line naming the difference) unless
        ``new_dataset``: then it records into ``DIR.2`` (or the first ``DIR.N`` that is
        new or holds this same recording; ``path`` says which) and moves nothing.
    nice
        While ``run`` keeps a schedule (interval > 0), the capture thread's nice value,
        restored when ``run`` returns: -10 (default) keeps snapshots on time on a loaded
        machine (needs CAP_SYS_NICE, else skipped). None: leave it. Writer: normal.
    mode
        ``"full"`` (default): every row of every snapshot. ``"changes"``: only what
        changed from one snapshot to the next, a keyframe (every row) every ``keyframe``
        and at the start of each file, and -- on Linux with CAP_NET_ADMIN -- every TCP
        socket the kernel destroys, also those that lived and died between two
        snapshots. ``tcpsnap.read`` rebuilds such a recording exactly.
    keyframe
        Changes mode: time between keyframes (default 1 min).
    destroy
        Changes mode: subscribe to the kernel's socket-destroy notifications. None
        (default): if possible (a warning says when not); True: required; False: no.
    batch_rows, buffers, max_rss
        Rows per batch buffer, how many buffers capture and writer share at most, and a
        memory limit such as ``"100MiB"`` (``record.footprint``).
    keep, max_bytes
        Retention (``record.retention``): delete the oldest finished files once their newest
        snapshot is older than ``keep`` (e.g. ``"14d"``) and while the recording is over
        ``max_bytes`` (e.g. ``"5GiB"``); never the open file. At open and after each file.
    snapshotter, clock
        A :class:`~tcpsnap.record.protocols.SnapshotSource` to take snapshots from instead
        of a new ``Snapshotter`` (never closed here); a ``protocols.Clock`` (default: system).

    Errors: ``RecorderLocked`` when another recorder holds the folder; ``RecorderError``
    when the folder cannot be used, holds another recording, or the writer fails (disk full).
    """

    def __init__(self, path: Any, *, snapshotter: SnapshotSource | None = None,
                 clock: Clock | None = None, keep: Any = None, max_bytes: Any = None,
                 **options: Any) -> None:
        self.config = c = RecorderConfig.make(path, **options)
        self.path, self.interval, self.mode = c.path, c.interval, c.mode
        self._snap = snapshotter
        self._own_snap = snapshotter is None
        self._clock: Clock = clock or SystemClock()
        #: tcpsnap.record.retention.Retention, or None (no keep, no max_bytes)
        self.retention = Retention.make(keep, max_bytes, self._clock.time_ns)
        self._opened = self._closed = False
        self._lock_fd: int | None = None
        self._root: Any = None  # the recording folder's SafeDir while open
        self._running = threading.Event()
        self._running_done = threading.Event()
        self._run_thread = 0
        self._stop_early = False
        self._error_raised = False
        self._run_ns = 0
        self._t_open = 0
        self._tracker: Any = None
        self._capture: Any = None
        self._writer: Any = None
        self.recovered: list = []
        self.pids_enabled = False
        self.memory: Any = None  # record.footprint.MemoryGuard once open

    def __enter__(self) -> Recorder:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Recorder:
        """Take the folder, recover leftovers, warm the snapshotter up, start the writer."""
        if self._opened:
            return self
        from .footprint import keep_pandas_out
        keep_pandas_out()  # before anything calls pyarrow.array (importing _arrow does)
        from .batch import BatchPool
        from .capture import Capture, Waker
        from .writer import FileOptions, Rules, Writer, wrap_error

        c = self.config
        root, last = _take_folder(self)
        try:
            ret = self.retention
            if ret is not None:
                log.info("retention: %s", ret.describe())
                ret.run(root)
            self._snap, self.pids_enabled = _snapshot_source(c, self._snap)
            snap = self._snap
            warm = _warm_up(snap, c)
            if self._own_snap and self.pids_enabled:
                _note_missing_pids(snap, warm)
            schema, encoder, self._tracker = _encoding(c, self.pids_enabled, self._own_snap, snap)
            self.memory = guard = _memory_guard(c)
            self._t_open = self._clock.monotonic_ns()
            rules = Rules(c.ns(c.interval), c.ns(c.rotate), c.ns(c.flush), self._t_open,
                          guard.row_group_rows)

            def failed() -> BaseException | None:
                e = self._writer.error
                w = self._writer
                return None if e is None else wrap_error(e, w.last_file, self.path, w.durable_seq)

            pool = BatchPool(guard.buffers, c.batch_rows, 4096, bool(self._tracker), failed, guard.pool_bytes,
                             tcp_info=c.tcp_info)
            files = FileOptions(c.compression, c.compression_level, guard.row_group_rows, c.compat,
                                c.fsync)
            self._writer = Writer(root, schema, encoder, rules, files, pool, self._clock,
                                  on_error=self.stop, on_file=None if ret is None else
                                  lambda p: ret.run(root, busy_part=p.parent.name), guard=guard,
                                  file_kv=_tcp_info_kv(snap) if c.tcp_info else None)
            self._capture = Capture(snap, self.pids_enabled, rules, pool, self._writer,
                                    self._clock, Waker(), seq=0 if last is None else last + 1,
                                    where=c.row_filter(), tracker=self._tracker, failed=lambda: self._writer.error,
                                    tcp_info=c.tcp_info)
            self._capture.stopping = self._stop_early
            self._writer.start()
        except BaseException:
            self._release()
            raise
        self._opened = True
        return self

    def close(self) -> None:
        """Finish the current file (footer, fsync, rename) and release the folder.
        Raises ``RecorderError`` if the writer failed and ``run`` did not say so."""
        if not self._opened or self._closed:
            return
        if self._running.is_set() and threading.get_ident() != self._run_thread:
            self.stop()  # run() is going on in another thread: let it hand its batch off
            self._running_done.wait()
        self._closed = True
        from .batch import STOP

        try:
            self._capture.handoff()
        finally:
            self._writer.put(STOP)
            self._writer.join()
            self._release()
        self._raise_writer_error()

    def _raise_writer_error(self) -> None:
        from .writer import wrap_error

        w = self._writer
        if w is not None and w.error is not None and not self._error_raised:
            self._error_raised = True
            raise wrap_error(w.error, w.last_file, self.path, w.durable_seq)

    def _release(self) -> None:
        from .folder import unlock

        if self._tracker is not None:
            with contextlib.suppress(Exception):
                self._tracker.close()
        if self._own_snap and self._snap is not None:
            with contextlib.suppress(Exception):
                self._snap.close()  # type: ignore[attr-defined]
            self._snap = None
        if self._capture is not None:
            self._capture.waker.close()
        if self._lock_fd is not None:
            unlock(self._lock_fd, self._root)
            self._lock_fd = None
        if self._root is not None:
            self._root.close()
            self._root = None

    def stop(self) -> None:
        """Make ``run`` return after the snapshot in progress. Safe to call from a
        signal handler or another thread, and before ``run``."""
        cap = self._capture
        if cap is None:
            self._stop_early = True
        else:
            cap.stop()

    def run(self, duration: Any = None) -> Recorder:
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
        from .capture import boost

        self._running.set()
        self._running_done.clear()
        self._run_thread = threading.get_ident()
        restore = boost(self.config.nice) if self.config.interval else None
        try:
            self._run_ns += self._capture.run(dur_ns)
        finally:
            if restore is not None:
                restore()
            self._running.clear()
            self._running_done.set()
        self._raise_writer_error()
        return self

    claim_socket = _claim_socket

    # ------------------------------------------------------------ status

    def _count(self, name: str, default: Any = 0) -> Any:
        cap = self._capture
        return default if cap is None else getattr(cap, name)

    snapshots = property(lambda self: self._count("snapshots"), doc="Snapshots taken.")
    rows = property(lambda self: self._count("rows"), doc="Rows recorded.")
    overruns = property(lambda self: self._count("overruns"), doc="Schedule slots missed.")
    late_max_ns = property(lambda self: self._count("late_max_ns"),
                           doc="Worst start delay of a snapshot that was taken (ns).")
    late_hist = property(lambda self: self._count("late_hist", [0] * 64),
                         doc="Snapshots by bit length of their start delay in ns.")
    first_seq = property(lambda self: self._count("first_seq", None), doc="First ``seq`` of this run.")
    writer_waits = property(lambda self: self._writer._pool.waits if self._writer else 0,
                            doc="Times capture waited for a free buffer.")
    files = property(lambda self: list(self._writer.files) if self._writer else [],
                     doc="Files finished so far.")
    current_file = property(lambda self: self._writer.current_file if self._writer else None,
                            doc="The file in progress, if any.")
    bytes_written = property(lambda self: self._writer.bytes_written if self._writer else 0,
                             doc="Parquet bytes written (finished files and row groups).")
    bytes_on_disk = property(lambda self: self._writer.bytes_on_disk if self._writer else 0,
                             doc="Bytes on disk: ``bytes_written`` and the open file's journal.")

    @property
    def elapsed(self) -> float:
        """Seconds since ``open``."""
        return (self._clock.monotonic_ns() - self._t_open) / 1e9 if self._t_open else 0.0

    @property
    def stats(self) -> dict:
        """Counters so far: snapshots, rows, overruns (missed slots), writer_waits,
        writer_cpu_s, late_max_ns, bytes_written, files, current_file, first_seq,
        last_seq, pids, recovered, and changes mode's own."""
        cur = self.current_file
        return {
            "elapsed": self.elapsed,
            "snapshots": self.snapshots,
            "rows": self.rows,
            "overruns": self.overruns,
            "writer_waits": self.writer_waits,
            "writer_cpu_s": (self._writer.cpu_ns if self._writer else 0) / 1e9,
            "late_max_ns": self.late_max_ns,
            "bytes_written": self.bytes_written,
            "files": [str(p) for p in self.files],
            "current_file": str(cur) if cur else None,
            "first_seq": self.first_seq,
            "last_seq": self._capture.seq - 1 if self.snapshots else None,
            "pids": self.pids_enabled,
            "recovered": [str(r.path) for r in self.recovered if r.path],
            **(self._tracker.stats if self._tracker is not None else {}), **getattr(self._capture, "netns_stats", {}),
            **(self.retention.stats if self.retention is not None else {}),
            **(self.memory.stats if self.memory is not None else {}),
        }


#: ``new_dataset`` tries DIR.2 .. DIR.<this>

def _take_folder(rec: Recorder) -> tuple[Any, int | None]:
    """Open, lock and recover the recording folder, and check that the recording
    in it is this one (``folder.meaning_problem``) for ``rec``; the folder's SafeDir and the
    highest ``seq`` in it. Another recording there: ``RecorderError``, or with
    ``new_dataset`` the first of ``DIR.2``, ``DIR.3``... that is new or holds this
    same recording (``rec.path`` becomes it)."""
    from .folder import footers, last_seq, lock, meaning_problem
    from .recovery import recover_all
    from .safedir import SafeDir

    c = rec.config
    filters = json.dumps(c.filters())
    refused: str | None = None
    for n in range(1, _MAX_DATASETS + 1):
        path = c.path if n == 1 else sibling(c.path, n)
        rec._root = root = SafeDir.open(path, create=True)
        try:
            rec._lock_fd = lock(root)
            if c.recover:
                rec.recovered += recover_all(root, c.row_group_rows, logging.WARNING)
            found = footers(root)
            problem = meaning_problem(found, path, c.mode, filters)
        except BaseException:
            rec._release()
            raise
        if problem is None:
            if refused is not None:
                log.warning("%s; recording into %s (new_dataset)", refused, path)
            rec.path = path
            return root, last_seq(root, found)
        rec._release()
        what, fix = problem
        if not c.new_dataset:
            raise RecorderError(f"{what}. A folder holds one recording: {fix}, or add "
                                f"--new-dataset (new_dataset=True) to record into "
                                f"{new_dataset_folder(c.path, c.mode, filters)}")
        refused = refused or what
    raise RecorderError(f"{refused}; so do {sibling(c.path, 2)} .. {sibling(c.path, _MAX_DATASETS)}: "
                        f"record into another folder")

_MAX_DATASETS = 999


def sibling(path: Path, n: int) -> Path:
    """``DIR.n``: where ``new_dataset`` records the n-th recording asked for ``DIR``."""
    base = Path(os.path.abspath(path)) if path.name in ("", ".", "..") else path
    return base.with_name(f"{base.name}.{n}")


def new_dataset_folder(path: Path, mode: str, filters: str) -> Path:
    """Where ``new_dataset`` would record (no lock taken: a hint for a message): the
    first ``DIR.n`` that does not exist, or whose files are this same recording."""
    from .folder import footers, meaning_problem
    from .safedir import SafeDir

    for n in range(2, _MAX_DATASETS + 1):
        p = sibling(path, n)
        if not os.path.lexists(p):
            return p
        try:
            d = SafeDir.open(p)
        except (OSError, RecorderError):
            continue
        try:
            if meaning_problem(footers(d), p, mode, filters) is None:
                return p
        finally:
            d.close()
    return sibling(path, 2)


def _memory_guard(c: RecorderConfig) -> Any:
    """The recorder's ``record.footprint.MemoryGuard``, its sizes planned (``row_group_rows``,
    ``buffers``) from what is resident now."""
    from .footprint import MemoryGuard

    guard = MemoryGuard.make(c.max_rss)
    guard.plan(c.row_group_rows, c.buffers, c.batch_rows)
    return guard


def _snapshot_source(c: RecorderConfig, given: SnapshotSource | None) -> tuple[SnapshotSource, bool]:
    """The recording's snapshot source (``given``, or a new Snapshotter for ``c``) and
    whether it fills pids. ValueError for a given one that lacks internals ``c`` asks for."""
    if given is None:
        return _new_snapshotter(c.pids, c.capture_filter(), c.netns, c.tcp_info, c.tcp_info_every)
    if c.tcp_info and not getattr(given, "tcp_info_enabled", False):
        raise ValueError("tcp_info=True needs a snapshotter that captures it (Snapshotter(tcp_info=True))")
    return given, bool(getattr(given, "pids", False))


def _warm_up(snap: SnapshotSource, c: RecorderConfig) -> Any:
    """One untimed snapshot: sizes the array to the table and warms the pid resolver (its
    first /proc walk), so the schedule does not start late; the first timed snapshot then
    samples internals, whatever ``tcp_info_every`` says."""
    warm = snap.take()
    if c.tcp_info and hasattr(snap, "sample_tcp_info_next"):
        snap.sample_tcp_info_next()
    return warm


def _new_snapshotter(pids: bool | None, where: Any = None, netns: str | None = None,
                     tcp_info: bool = False, tcp_info_every: float = 0.0) -> tuple[SnapshotSource, bool]:
    """A Snapshotter for ``pids`` (True, False, None: "if possible") of the namespaces
    ``netns`` names (see Snapshotter) and whether it fills pids; ``where``, the recording's
    filter, runs in the kernel where it can; ``tcp_info``: with internals, sampled at most
    every ``tcp_info_every`` seconds (0: every snapshot)."""
    from .._snapshot import Snapshotter

    kw = dict(filter=where, netns=netns, tcp_info=tcp_info, tcp_info_every=tcp_info_every or None)
    if pids is False:
        return Snapshotter(pids=False, **kw), False
    try:
        s = Snapshotter(pids=True, **kw)
        res = s.resolver
        if res is not None:
            # /proc walks never delay a snapshot: they run on their own threads and
            # a later snapshot takes up what they found (tcpsnap.pids, "Off the capture
            # path"); off the capture path a walk may take half the time, not a quarter
            res.background = True
            res.walk_share = 0.5
        return s, bool(getattr(s, "pids", True))
    except (NotImplementedError, PermissionError, OSError) as e:
        if pids:  # asked for explicitly
            raise
        log.warning("recording without pids (%s)", e)
        return Snapshotter(pids=False, **kw), False


def _tcp_info_kv(snap: Any) -> Any:
    """What a file's footer says of the internals it holds, asked when it closes: the
    longest struct tcp_info the kernel sent (``tcpsnap.tcp_info_len``, bytes) and how many
    were longer than tcpsnap knows (``tcpsnap.tcp_info_longer``), since recording began."""
    def kv() -> dict[str, str]:
        return {f"tcpsnap.{k}": str(v) for k, v in getattr(snap, "tcp_info_stats", {}).items()}
    return kv


def _encoding(c: RecorderConfig, pids: bool, own_snap: bool, snap: Any = None) -> tuple[Any, Any, Any]:
    """The Arrow schema with this recording's metadata, its batch encoder, and in
    changes mode the change tracker (else None), its destroy feed in the namespaces
    ``snap`` dumps (``snap.namespaces``: one per namespace) or else this process's."""
    from .._host import boot_id, host_name

    if c.mode == "changes":
        from .changes import ChangesEncoder, ChangeTracker, build_schema, open_destroy_feed

        feed = None
        if c.destroy or (c.destroy is None and own_snap):
            ns = getattr(snap, "namespaces", None)
            if ns is not None:       # one feed in each namespace recorded
                from .nsfeed import open_namespace_feeds

                feed = open_namespace_feeds(ns, required=bool(c.destroy))
            else:
                feed = open_destroy_feed(required=bool(c.destroy))
        tracker = ChangeTracker(c.ns(c.keyframe), feed, c.ports, c.family, c.states, where=c.row_filter(),
                                tcp_info=c.tcp_info)
        schema = build_schema(c.metadata(pids, feed is not None), tcp_info=c.tcp_info)
        return schema, ChangesEncoder(schema, host_name(), boot_id()), tracker
    from .._arrow import BatchEncoder
    from .._arrow import build_schema as full_schema

    schema = full_schema(c.metadata(pids, None), tcp_info=c.tcp_info)
    return schema, BatchEncoder(schema, host_name(), boot_id()), None


def _note_missing_pids(snap: Any, rows: Any) -> None:
    """Say once, as ``tcpsnap show`` does, why connections will have no pid (a user who
    may not read other users' /proc/<pid>/fd)."""
    from ..pids import missing_pid_note

    if getattr(snap, "resolver", None) is None:
        return
    note = missing_pid_note(rows, snap.pid_stats)
    if note:
        log.warning("%s", note)
