"""The writer thread: everything about files (m-lab/tcp-info calls it the saver).

It takes :class:`~tcpsnap.record.batch.Batch` es off a queue and copies their columns into
the row group being formed (:class:`~tcpsnap.record.rowgroup.RowGroupStore`, one
preallocated array per column), where they wait for the flush deadline to make them
durable: as a Parquet row group when enough rows wait, else appended to the file's
journal; the row group is written from the same arrays once it holds enough rows (the
journal, which then holds its rows too, is only read by recovery). It starts a new file when a batch's file key changes
(rotation) and finishes the last one at the end. :class:`Rules` is the one place the
flush and rotation rules live; the capture thread asks it when to hand a batch off.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import RecorderError
from .batch import STOP, Batch, BatchPool
from .footprint import heap_trimmer
from .markers import LoneMarkers
from .protocols import Clock
from .rowgroup import RowGroupStore, encode_row_group
from .safedir import SafeDir

__all__ = ["Rules", "Writer", "wrap_error"]

log = logging.getLogger("tcpsnap.recorder")

_DAY_NS = 86_400_000_000_000
#: Rows a journal frame holds at most (unless one snapshot holds more): encoding a frame
#: holds its Arrow IPC bytes (~120 bytes a row) and their compressed copy, so a flush of
#: 100k rows at once (1k connections every 10 ms, a 1-s flush) raised the peak by ~20 MiB.
JOURNAL_FRAME_ROWS = 1 << 13


@dataclass(frozen=True)
class Rules:
    """When rows move on: from capture to the writer, from memory to disk, to a new file.

    A crash may lose at most ``flush``: a batch is handed to the writer when its first
    snapshot is half a flush old (or would be by the next snapshot), and the writer makes
    it durable when that half has passed again. A file holds the snapshots of one
    rotation period (counted from ``origin_ns`` on the monotonic clock) and one UTC day.
    """

    interval_ns: int
    rotate_ns: int
    flush_ns: int
    origin_ns: int
    row_group_rows: int

    @property
    def handoff_ns(self) -> int:
        return max(self.flush_ns // 2, 1)

    def file_key(self, mono_ns: int, wall_ns: int) -> tuple[int, int]:
        """The file a snapshot taken at these times belongs to."""
        return (mono_ns - self.origin_ns) // self.rotate_ns, wall_ns // _DAY_NS

    def hand_off(self, age_ns: int) -> bool:
        """Capture: hand the current batch off, its first snapshot being ``age_ns`` old."""
        h = self.handoff_ns
        return age_ns >= h or bool(self.interval_ns and age_ns + self.interval_ns > h)

    @property
    def alone(self) -> bool:
        """Every batch is alone until its deadline: the next one comes an interval after
        its last snapshot, which is past half a flush. The writer then makes a batch
        durable as it comes (sooner than the bound, and one wake-up a batch, not two)."""
        return self.interval_ns >= self.handoff_ns

    def deadline(self, oldest_ns: int) -> int:
        """Writer: when rows captured at ``oldest_ns`` must be on disk."""
        return oldest_ns + self.handoff_ns

    def row_group_full(self, rows: int) -> bool:
        return rows >= self.row_group_rows

    def row_group_on_flush(self, rows: int) -> bool:
        """At a flush deadline: write a row group rather than a journal append -- only a
        full one. Every row group of the file in progress keeps its metadata in memory
        until the file is finished (about 27 KB each, as Python objects), so row groups
        are few and full; what waits in between is in the journal, not in memory."""
        return rows >= self.row_group_rows


@dataclass(frozen=True)
class FileOptions:
    """How the writer builds files (see ``Recorder`` for each)."""

    compression: str | None
    compression_level: int | None
    row_group_rows: int
    compat: bool
    fsync: bool


def wrap_error(e: BaseException, where: Path | None, folder: Path,
               durable_seq: int | None = None) -> RecorderError:
    """Any failure of the writer as the one-line :class:`RecorderError` users see, saying
    truly what was kept: the snapshots up to ``durable_seq`` (None: none of this run)."""
    if isinstance(e, RecorderError):
        return e
    kept = ("no snapshot of this run reached the disk" if durable_seq is None else
            f"the snapshots up to seq {durable_seq} are kept")
    if isinstance(e, OSError):
        what = e.strerror or str(e)
        if e.errno == errno.ENOSPC or "No space left" in str(e):
            what = "No space left on device"
        at = getattr(e, "filename", None) or where or folder
        return RecorderError(f"writing {at}: {what}; {kept} (finish the file in progress "
                             f"with 'tcpsnap recover {folder}')")
    return RecorderError(f"writer failed: {type(e).__name__}: {e}; {kept}")


def batch_parts(enc: Any, b: Batch) -> dict:
    """A batch's rows as ``enc.parts`` (one ``tcpsnap._arrow.Part`` per column)."""
    s, n = b.s, b.n
    info = (None if b.info is None or b.sampled is None
            else (b.info[:n], np.repeat(b.sampled[:s], b.counts[:s])))
    if b.extra is None:  # full mode: rows of family 0 (an empty snapshot's, a namespace
        # left out: record.capture.Carry) are kind "snapshot"; the per-snapshot columns
        # as the store keeps them, one value a snapshot
        return enc.parts(b.rows[:n], b.counts[:s], b.ts[:s], b.seq[:s], b.cap[:s],
                         b.proc[:n] if b.has_proc else None, b.names,
                         monotonic=b.mono[:s], tcp_info=info, per_snapshot=True, family0_snapshot=True)
    return enc.parts(b.rows[:n], b.counts[:s], b.ts[:s], b.seq[:s], b.cap[:s],
                     b.proc[:n] if b.has_proc else None, b.names,
                     *[a[:n] for a in b.extra], monotonic=b.mono[:s], tcp_info=info)


def _quiet_path(markers: LoneMarkers, store: RowGroupStore, schema: Any, rules: Rules) -> Any:
    """The compiled lone-marker case (``tcpsnap._quiet.QuietMarkers``) where it applies:
    changes mode (``markers.cols``), every batch made durable as it comes (``rules.alone``),
    the store keeping the marker's seq and clocks per snapshot as 8-byte integers and its
    timestamp per row. None otherwise, and off Linux (where the module is not built)."""
    cols = markers.cols
    if not sys.platform.startswith("linux") or cols is None or not rules.alone:
        return None
    from .._quiet import QuietMarkers
    from .._schema import ROW_DTYPE
    from .journal import repeat_template

    ts, *snap = cols
    if store._snap[ts] or not all(store._snap[c] and store._svals[c].dtype == np.int64 for c in snap) \
            or store._dtypes[ts].itemsize != 8:
        return None
    return QuietMarkers(cols, repeat_template(cols), len(schema), ROW_DTYPE.itemsize)


def _durable(w: Writer, seq: int, done: bool) -> None:
    """Around each write that makes the snapshots up to ``seq`` durable (a journal frame,
    a row group): ``done`` False just before it, True after it, when ``w.durable_seq``
    becomes ``seq``. ``w.on_durable(seq, done)``, if set, is called (on the writer thread):
    a test learns what a kill -9 at any moment keeps (between the two: at most that write)."""
    if done:
        w.durable_seq = seq
    if w.on_durable is not None:
        w.on_durable(seq, done)


class Writer:
    """The writer thread. ``put(batch)`` from capture; ``STOP`` ends it (``join``)."""

    def __init__(self, folder: SafeDir, schema: Any, encoder: Any, rules: Rules, options: FileOptions,
                 pool: BatchPool, clock: Clock, on_error: Callable[[], None],
                 on_file: Callable[[Path], object] | None = None, guard: Any = None,
                 file_kv: Callable[[], dict[str, str]] | None = None) -> None:
        self.root = folder
        self.folder = folder.path
        self._part: SafeDir | None = None  # the partition folder of the file in progress
        self.schema = schema
        self.rules = rules
        self.options = options
        self._enc = encoder
        self._pool = pool
        self._clock = clock
        self._on_error = on_error
        self._on_file = on_file  # called (writer thread) after each file is finished
        self._guard = guard  # record.footprint.MemoryGuard, or None
        self._file_kv = file_kv  # more key-value metadata, asked as each file closes
        self._trim = heap_trimmer()  # after each row group: its freed rows leave RSS
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.cpu_ns = 0  # CPU time this thread spent on batches
        self.files: list[Path] = []
        self.last_file: Path | None = None
        self.closed_at: float | None = None  # UNIX time the last file was finished
        self._bytes_done = 0
        self._app: Any = None  # parquet.ParquetAppender of the file in progress
        self._journal: Any = None  # journal.Journal of its next row group
        # the row group being formed: its first _journaled rows are in the journal, the others
        # (up to _pending_seq) not yet durable; one value per snapshot: the snapshot's clocks
        # and seq (changes mode: each event has its own timestamp)
        per_snapshot = ("seq", "capture_ns", "monotonic_ns") + (() if "event" in schema.names else ("timestamp",))
        self._store_rows = rules.row_group_rows + pool.batch_rows  # what the store is sized for
        self._store = RowGroupStore(schema, self._store_rows, per_snapshot)
        self._journaled = 0
        self._pending_seq = -1  # the last seq they hold
        #: the last seq on disk (journal frame or row group): what a crash now keeps
        self.durable_seq: int | None = None
        self.on_durable: Callable[[int, bool], None] | None = None  # tests: see _durable below
        self._oldest: int | None = None  # first snapshot (monotonic ns) not yet durable
        self._file_key: tuple[int, int] | None = None
        self._file_meta: dict[str, int] = {}
        self._markers = LoneMarkers(schema)  # changes mode's lone markers (record.markers)
        self._quiet = _quiet_path(self._markers, self._store, schema, rules)
        self._thread = threading.Thread(target=self._main, name="tcpsnap-writer", daemon=True)

    # ------------------------------------------------------------ the thread

    def start(self) -> None:
        self._thread.start()

    def put(self, b: Batch | object) -> None:
        self._q.put(b)

    def join(self) -> None:
        self._thread.join()

    @property
    def current_file(self) -> Path | None:
        app = self._app
        return app.final if app is not None else None

    @property
    def bytes_written(self) -> int:
        """Parquet bytes so far: finished files and the row groups of the file in
        progress (not its journal, which is temporary)."""
        app = self._app
        return self._bytes_done + (app.bytes_written if app is not None else 0)

    @property
    def bytes_on_disk(self) -> int:
        """What the recording holds on disk so far: ``bytes_written`` plus the journal of the file in
        progress (its rows not yet in a row group), so it grows with every flush, not only with every row group."""
        j = self._journal
        return self.bytes_written + (j.nbytes if j is not None else 0)

    @property
    def queue_depth(self) -> int:
        """Batches waiting for this thread."""
        return self._q.qsize()

    def _main(self) -> None:
        cpu = time.thread_time_ns
        mono = self._clock.monotonic_ns
        while True:
            timeout = None
            if self._oldest is not None:
                timeout = max(0.0, (self.rules.deadline(self._oldest) - mono()) / 1e9)
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is STOP:
                break
            c0 = cpu()
            try:
                if self.error is None:
                    if item is not None:
                        b, item = item, None
                        try:
                            self._write(b)
                        finally:
                            # its rows are copied (or it failed): capture may reuse it now, also while
                            # the row group it may fill is written
                            self._pool.put(b)
                        self._after_write()
                    if self._oldest is not None and (self.rules.alone or mono() >= self.rules.deadline(self._oldest)):
                        self._make_durable()
            except BaseException as e:  # noqa: BLE001 - reported by run()/close()
                self._fail(e)
            finally:
                if item is not None:
                    self._pool.put(item)
                self.cpu_ns += cpu() - c0
        try:
            self._finish_file(clean=self.error is None)
        except BaseException as e:  # noqa: BLE001 - reported by close()
            if self.error is None:
                self._fail(e)
            else:
                log.debug("finishing the file after an error failed too: %s", e)
            self._abandon_file()
        self._close_part()

    def _fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
        log.debug("writer failed", exc_info=e)
        self._on_error()
        self._pool.wake_all()

    # ------------------------------------------------------------ batches to disk

    @property
    def _pending_rows(self) -> int:
        """Rows of the row group not yet durable (neither in the journal nor on disk)."""
        return self._store.rows - self._journaled

    def _write(self, b: Batch) -> None:
        """Copy a batch's columns into the row group being formed, where its rows wait for the flush
        deadline (``_after_write`` makes them a row group at once when enough rows wait: no journal
        write at high rates). A lone marker like the journal's last frame is durable here (``_quiet_path``)."""
        if self._quiet is not None and self._quiet.write(self, b):
            return
        if self._app is None or b.file_key != self._file_key:
            self._finish_file(clean=True)
            self._open_file(b)
        s = b.s
        key = LoneMarkers.key(b)
        if key is not None:
            self._markers.write(self._store, self._enc, b, key)
        elif b.n:  # copies: the batch is reused after
            self._store.append(batch_parts(self._enc, b), b.n, b.counts[:s], b.seq[:s],
                               snapshot_values=b.extra is None)
        if b.n:
            self._pending_seq = int(b.seq[s - 1])
            if self._oldest is None:
                self._oldest = b.t_first
        fm = self._file_meta
        fm["snapshots"] += s
        fm["last_seq"] = int(b.seq[s - 1])
        fm["overruns"] += b.overruns

    def _after_write(self) -> None:
        """After a batch: a row group when enough rows wait, or near a memory limit, the
        rows made durable now."""
        rows = self._store.rows
        g = self._guard
        if self.rules.row_group_full(rows) or (g is not None and rows >= g.row_group_rows):
            self._commit_row_group()
        elif g is not None and g.check():
            # near the memory limit: fewer buffers, and the rows go to the journal (or a row group) now
            self._pool.shrink(self._pool.count // 2)
            if self._pending_rows:
                self._make_durable()

    def _make_durable(self) -> None:
        if self.rules.row_group_on_flush(self._store.rows):
            self._commit_row_group()
            return
        from .journal import Journal
        from .layout import journal_path

        if self._journal is None:
            app = self._app
            self._journal = Journal(journal_path(app.final, app.row_groups), self.schema,
                                    self.options.fsync, folder=self._part)
            self._markers.jkey = None
        _durable(self, self._pending_seq, False)
        if self._markers.repeat(self._journal, self._pending_rows):
            # only markers like the journal's last frame: their clocks and seq are enough
            self._journaled = self._store.rows
            _durable(self, self._pending_seq, True)
        else:
            last = (0, 0)
            for a, b, seq in self._store.spans(self._journaled, JOURNAL_FRAME_ROWS):
                self._journal.append(self._store.batch(a, b))
                self._journaled = b
                _durable(self, seq, True)
                last = (a, b)
            self._markers.framed(last)
        self._oldest = None

    def _open_file(self, b: Batch) -> None:
        from .layout import file_names, free_name
        from .parquet import ParquetAppender

        part, name = file_names(int(b.ts[0]))
        if self._part is None or self._part.path.name != part:
            self._close_part()
            self._part = self.root.subdir(part, create=True)
        final = self._part.path / free_name(self._part, name)
        o = self.options
        self._app = ParquetAppender(final, self.schema, compression=o.compression,
                                    compression_level=o.compression_level,
                                    row_group_rows=o.row_group_rows, compat=o.compat, fsync=o.fsync,
                                    folder=self._part)
        self._enc.reset()
        self._journal = None
        self._markers.forget()
        self._file_key = b.file_key
        self.last_file = final
        self._file_meta = {"snapshots": 0, "first_seq": int(b.seq[0]), "last_seq": int(b.seq[0]),
                           "overruns": 0}
        log.info("recording to %s", final)

    def _commit_row_group(self) -> None:
        """The rows of the row group being formed (the journal's and the pending ones) ->
        one row group, written from the store's arrays; then the journal goes."""
        j = self._journal
        if j is not None:
            j.close()
        st = self._store
        if st.rows:
            # its columns encoded a table at a time: the per-snapshot ones are made rows one after
            # the other, not all four beside the rest (~4 MiB at 128Ki rows)
            data, rg = encode_row_group(self._app.kw, self.schema.names, st.tables())
            _durable(self, self._pending_seq, False)
            self._app.append_encoded(data, [rg])
            del data
            if self._pending_rows:
                _durable(self, self._pending_seq, True)
        if j is not None and self._part is not None:
            self._part.unlink(j.path.name)
        self._journal = None
        self._markers.forget()
        g = self._guard
        if g is not None and g.row_group_rows + self._pool.batch_rows < self._store_rows:
            # a memory limit made row groups smaller: so is the store, from now on
            self._store_rows = g.row_group_rows + self._pool.batch_rows
            st.reset(self._store_rows)
        else:
            st.reset()
        self._journaled = 0
        self._oldest = None
        self._enc.reset()
        if self._trim is not None:
            self._trim()

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
        if self._file_kv is not None:
            kv.update(self._file_kv())
        path = app.finish(kv)
        self._app = None
        if path is not None:
            self.files.append(path)
            with contextlib.suppress(OSError):
                self._bytes_done += path.stat().st_size
            log.info("finished %s (%d rows, %d snapshots)", path, app.rows, fm["snapshots"])
            self.closed_at = time.time()
            if self._on_file is not None:
                self._on_file(path)

    def _close_part(self) -> None:
        if self._part is not None:
            self._part.close()
            self._part = None

    def _abandon_file(self) -> None:
        if self._journal is not None:
            self._journal.abandon()
            self._journal = None
        if self._app is not None:
            self._app.close_files()
            # the error raised from run()/close() says so too
            log.info("left %s in progress: 'tcpsnap recover %s' (or the next 'tcpsnap record' "
                     "there) finishes it", self._app.final.name, self.folder)
            self._app = None
