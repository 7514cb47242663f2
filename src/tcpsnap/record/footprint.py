"""The recorder's memory: what it is made of, how it is bounded, and ``--max-rss``.

Where a recorder's memory goes (``benchmarks/bench_footprint.py`` measures it; README
"Memory" has the budget per table size):

* the interpreter, numpy and pyarrow (with ``pyarrow.parquet``): about 60 MiB resident
  (38 MiB of it library pages, shared with other pyarrow processes but counted in RSS),
  whatever the table; with tcpsnap's modules about 64 MiB, of which ``page_out`` gives
  the library pages back once the recorder is open (~29 MiB of them are resident again
  in steady state: what the recording uses, and what other processes map). pandas (about 50 MiB more) is
  never imported by the recorder: ``keep_pandas_out`` stops pyarrow's lazy pandas check
  from loading it; nor is ``pyarrow.compute`` (about 8 MiB: ``tcpsnap._encode``
  dictionary-encodes in C);
* the batch pool (``batch.BatchPool``): batches are made when first needed and reused
  most-recently-returned first, so only as many as capture and writer really have in
  flight are ever touched (``batch_rows`` x 100 bytes each); the writer gives a batch
  back as soon as its rows are copied, and the pool keeps 2 idle ones;
* the row group being formed (``rowgroup.RowGroupStore``): one array per column,
  allocated once and reused, resident only where written (a column that stays 0 or
  null never is; per-snapshot values are kept per snapshot): about 90-100 bytes a row
  of a full recording; Parquet encodes it a few columns at a time (about 3 MiB more).
  A row group therefore holds at most ``ROW_GROUP_CAP`` rows (whatever
  ``row_group_rows`` asks) and a batch, fewer under a memory limit.

``MemoryGuard`` applies a limit: ``--max-rss SIZE`` (``Recorder(max_rss=...)``) or else
the cgroup's ``memory.max`` (systemd's ``MemoryMax=``). It sizes the row groups and the
pool from what is left after start-up, and when the resident size still comes within
``HIGH`` of the limit it degrades -- smaller row groups, rows made durable early, a
smaller pool -- and logs once that ``--mode changes`` needs far less. It never stops the
recording.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["ROW_GROUP_CAP", "MIN_ROW_GROUP", "MemoryGuard", "keep_pandas_out", "lean_process",
           "cgroup_memory_max", "rss_bytes", "page_out", "NO_PAGE_OUT_ENV", "heap_trimmer",
           "give_back"]

log = logging.getLogger("tcpsnap.recorder")

#: Rows a row group holds at most, whatever ``row_group_rows`` asks: the writer holds
#: them (``rowgroup.RowGroupStore``) while Parquet encodes them: ~12 MiB at 1k connections;
#: each row group of the file in progress also keeps its metadata in memory until the
#: file is finished (~27 KB as Python objects), so smaller groups cost that instead.
ROW_GROUP_CAP = 1 << 17
#: ...and at least, however tight the memory limit.
MIN_ROW_GROUP = 4096
#: Arrow bytes per row held by the writer (measured: ~110 for a full-mode row).
ARROW_ROW_BYTES = 128
#: Degrade when the resident size passes this share of the limit.
HIGH = 0.85


class _Refuse:
    """A meta-path finder that refuses some modules (and their submodules), only while
    ``keep_pandas_out`` or ``lean_process`` import what would load them."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if any(name == n or name.startswith(n + ".") for n in self.names):
            raise ImportError(f"the recorder does without {name}")
        return None


def keep_pandas_out() -> None:
    """Make pyarrow's one-time pandas check (run by the first ``pyarrow.array`` call,
    which imports pandas, ~50 MiB, when it is installed) find none, unless pandas is
    imported already. pyarrow retries the import where pandas is really needed
    (``Table.to_pandas``), so readers in the same process keep working."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    finder = _Refuse(("pandas",))
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)


def lean_process() -> bool:
    """Make freed memory go back to the system, for a process that records for weeks
    (``tcpsnap record`` calls it first thing):

    * pyarrow allocates with the C library's allocator (``ARROW_DEFAULT_MEMORY_POOL=
      system``) instead of mimalloc or jemalloc, which keep freed memory for reuse --
      only possible before pyarrow is loaded (its C++ side reads the variable once); a
      pool the environment names already is kept;
    * glibc's mmap threshold is fixed at 256 KiB (``mallopt``): its default rises to
      the largest block ever freed, after which the writer's large buffers come from
      the heap and are not returned, so RSS ratchets up after each burst; and at most 2
      malloc arenas (one per thread by default, each keeping its own free memory);
    * pyarrow's cloud filesystems (S3, GCS, Azure, HDFS) are not loaded: the process
      has no ``pyarrow.fs.S3FileSystem`` (a recorder writes local files).

    Measured here: 20-40 MiB less at 1k connections every 10 ms, and no upward creep
    (benchmarks/RESULTS.md, "Footprint"). True if pyarrow's pool was set."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD (fixed: no dynamic rise)
            libc.mallopt(-8, 2)  # M_ARENA_MAX
        except (OSError, AttributeError):  # not glibc
            pass
    if "pyarrow" in sys.modules:
        return False
    set_pool = not os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
    if set_pool:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    # pyarrow.parquet imports pyarrow.fs, which loads the cloud filesystems it can (S3,
    # GCS, Azure, HDFS: ~10 MiB of libraries, libcrypto among them) and does without
    # those whose import fails; a recorder writes local files only
    finder = _Refuse(("pyarrow._s3fs", "pyarrow._gcsfs", "pyarrow._azurefs", "pyarrow._hdfs"))
    sys.meta_path.insert(0, finder)
    try:
        import pyarrow.fs  # noqa: F401
    finally:
        sys.meta_path.remove(finder)
    return set_pool


#: madvise(2) advice (Linux >= 5.4): reclaim these pages now.
MADV_PAGEOUT = 21
MADV_RANDOM = 1
#: Set (to anything but "" or "0") to keep ``tcpsnap record`` from paging out (as ``--no-page-out``).
NO_PAGE_OUT_ENV = "TCPSNAP_NO_PAGE_OUT"


def page_out(maps: str = "/proc/self/maps") -> dict | None:
    """Give back the library pages start-up touched: ``madvise(MADV_PAGEOUT)`` over every
    read-only file-backed mapping of this process (shared libraries, extension modules;
    the writable ones are skipped: their written pages are anonymous copies).

    Importing Python, numpy and ``pyarrow.parquet`` touches ~40 MiB of library pages
    (libarrow, libparquet, libpython, openblas...) that a recording never uses again
    (initialisers, code for other types and formats), and RSS counts them. Paging them
    out loses nothing: they are clean copies of files, and a page the recorder does use
    faults back in from the page cache or the file (a major fault, counted in
    ``/proc/PID/stat``; the mappings are marked ``MADV_RANDOM`` so that a fault reads
    its page, not the pages around it). Each file's pages that no process maps (read
    ahead when it was loaded) leave the page cache too (``posix_fadvise(DONTNEED)``).
    The kernel reclaims only pages no other process maps (another
    pyarrow process keeps the ones it shares resident), and frees them, also from the
    cgroup's ``memory.current`` when it was charged for them. ``tcpsnap record`` does it
    once, after the recorder is open (its first snapshot taken) and before the schedule
    starts; ``--no-page-out``, ``no-page-out = true`` or ``TCPSNAP_NO_PAGE_OUT=1`` turn it
    off. Measured: benchmarks/RESULTS.md, "Footprint".

    Returns ``{"mappings", "failed", "rss_before", "rss_after", "file_before",
    "file_after"}`` (bytes; ``file_*`` is ``RssFile``), or None where it does not apply:
    not Linux, the environment variable set, or a kernel (< 5.4) or a seccomp filter that
    refuses the advice (then nothing changed)."""
    if not sys.platform.startswith("linux") or os.environ.get(NO_PAGE_OUT_ENV, "") not in ("", "0"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    try:
        with open(maps) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    before, fb = rss_bytes(), _status_bytes("RssFile")
    done = failed = err = 0
    files: set[str] = set()
    for line in lines:
        parts = line.split(None, 5)
        # "start-end perms offset dev inode path": files only, never written through
        if len(parts) < 6 or not parts[5].startswith("/") or "w" in parts[1]:
            continue
        start, _, end = parts[0].partition("-")
        a, b = int(start, 16), int(end, 16)
        if madvise(a, b - a, MADV_PAGEOUT) == 0:
            done += 1
            files.add(parts[5])
            # no read-around on the faults that follow: only the pages the recorder
            # touches come back (with it, ~5 MiB more of their neighbours did)
            madvise(a, b - a, MADV_RANDOM)
        else:  # a mapping that cannot be paged out (locked...); the others still can
            failed += 1
            err = ctypes.get_errno()
    for path in files:
        # and what read-ahead brought into the page cache around them, mapped by nobody
        # (charged to this cgroup when it read them first: ~100 MiB on a cold start)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
    if done == 0:  # EINVAL on every one: a kernel before 5.4; EPERM: a seccomp filter
        if failed:
            log.debug("memory: MADV_PAGEOUT refused (%s): library pages stay resident",
                      os.strerror(err))
        return None
    out = {"mappings": done, "failed": failed, "rss_before": before, "rss_after": rss_bytes(),
           "file_before": fb, "file_after": _status_bytes("RssFile")}
    log.info("memory: paged out %d MiB of library pages (RSS %d -> %d MiB; --no-page-out keeps them)",
             (fb - out["file_after"]) >> 20, before >> 20, out["rss_after"] >> 20)
    return out


@functools.cache
def heap_trimmer() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` (None where the C library has none): gives the free
    memory inside the malloc heaps back to the system (``madvise(MADV_DONTNEED)`` of free
    pages, all arenas), not only what lies at a heap's top. The writer calls it after
    each row group: a row group's Arrow rows are freed in pieces (its record batches,
    each under the mmap threshold at 1k connections) between blocks still in use, so
    without it they stay resident as holes the next row group fills."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has none)
        return None
    trim.argtypes = [ctypes.c_size_t]
    return functools.partial(trim, 0)


def give_back() -> None:
    """``heap_trimmer()``'s trim now, where there is one. For a thread that has just freed
    a large parse made of small blocks -- Arrow's ``FileMetaData`` of a long file is
    ~50 KiB a row group, each column chunk's structs malloc'd apart: the blocks come back
    as holes between blocks still in use, resident until a trim finds them whole, which
    one made later, after other allocations, not always does (measured: a recorder's RSS
    stepped up 2.7 MiB at its first 15-minute rotation, and stayed)."""
    trim = heap_trimmer()
    if trim is not None:
        trim()


def _status_bytes(key: str) -> int:
    """A ``kB`` line of /proc/self/status in bytes (0 when absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_bytes() -> int:
    """This process's resident set size (Linux: /proc/self/statm; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def cgroup_memory_max(proc: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``) in bytes, or None when there is none (or it cannot be
    read)."""
    try:
        lines = Path(proc).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if hid == "0" and ctrls == "":
            f = Path(root) / path.lstrip("/") / "memory.max"
        elif "memory" in ctrls.split(","):
            f = Path(root) / "memory" / path.lstrip("/") / "memory.limit_in_bytes"
        else:
            continue
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= 1 << 60:
            return None
        return int(text)
    return None


class MemoryGuard:
    """Row-group and pool sizes for a memory limit, and the degradation when near it.

    ``limit``: bytes (None: no limit, only ``ROW_GROUP_CAP``); ``source`` says where it
    came from, for the log. ``plan`` is called once the recorder's modules are loaded
    and its first snapshot taken; ``check`` by the writer after each batch."""

    def __init__(self, limit: int | None, source: str = "--max-rss") -> None:
        self.limit = limit
        self.source = source
        self.row_group_rows = ROW_GROUP_CAP
        self.buffers = 24  # set by plan()
        self.pool_bytes = 32 << 20  # batch.POOL_BYTES; less under a limit
        self.degraded = 0  # times check() degraded
        self.base = 0
        self._hinted = False

    @classmethod
    def make(cls, max_rss: int | None) -> MemoryGuard:
        """``max_rss`` if given, else the cgroup's limit, else none."""
        if max_rss is not None:
            return cls(int(max_rss), "--max-rss")
        cg = cgroup_memory_max()
        return cls(cg, "the cgroup's memory.max") if cg else cls(None, "")

    def plan(self, row_group_rows: int, buffers: int, batch_rows: int) -> tuple[int, int]:
        """(row group rows, pool buffers) for this limit, given what is resident now."""
        rg = min(row_group_rows, ROW_GROUP_CAP)
        if self.limit is None:
            self.row_group_rows, self.buffers = rg, buffers
            return rg, buffers
        self.base = rss_bytes()
        room = int(self.limit * HIGH) - self.base
        # the writer's row group and Parquet's encoding of it (3 x 128 bytes a row: more
        # than measured, ~100 + ~25, kept as the margin); the pool's buffers are 84 bytes a row
        fit = max(MIN_ROW_GROUP, room // (3 * ARROW_ROW_BYTES)) if room > 0 else MIN_ROW_GROUP
        rg = max(MIN_ROW_GROUP, min(rg, 1 << (fit.bit_length() - 1)))
        pool_room = max(0, room - 3 * ARROW_ROW_BYTES * rg)
        buffers = max(2, min(buffers, pool_room // max(1, 84 * batch_rows)))
        self.pool_bytes = max(4 << 20, min(self.pool_bytes, pool_room))
        self.row_group_rows, self.buffers = rg, buffers
        if room <= 0:
            log.warning("memory: %s is %d MiB and the recorder already holds %d MiB: recording "
                        "with the smallest buffers; --mode changes needs far less",
                        self.source, self.limit >> 20, self.base >> 20)
            self._hinted = True
        else:
            log.info("memory: %s %d MiB: row groups of %d rows, %d batch buffers",
                     self.source, self.limit >> 20, rg, buffers)
        return rg, buffers

    @property
    def stats(self) -> dict:
        """``memory_limit`` (bytes or None), ``memory_degraded`` (times), ``row_group_rows``."""
        return {"memory_limit": self.limit, "memory_degraded": self.degraded,
                "row_group_rows": self.row_group_rows}

    def check(self) -> bool:
        """Near the limit: halve the row groups (down to ``MIN_ROW_GROUP``) and say once
        what would help. True when the writer should make its rows durable now."""
        if self.limit is None:
            return False
        rss = rss_bytes()
        if rss < self.limit * HIGH:
            return False
        if self.row_group_rows > MIN_ROW_GROUP:
            self.row_group_rows //= 2
            self.degraded += 1
        if not self._hinted:
            self._hinted = True
            log.warning("memory: resident %d MiB is near %s (%d MiB): smaller row groups (%d rows) "
                        "and earlier flushes from now on; --mode changes records this table in "
                        "far less", rss >> 20, self.source, self.limit >> 20, self.row_group_rows)
        return True
