"""The recorder's memory: what it is made of, how it is bounded, and ``--max-rss``.

Where a recorder's memory goes (``benchmarks/bench_footprint.py`` measures it; README
"Memory" has the budget per table size):

* the interpreter, numpy and pyarrow (with ``pyarrow.parquet``): about 60 MiB resident
  (38 MiB of it library pages, shared with other pyarrow processes but counted in RSS),
  whatever the table; with tcpsnap's modules about 68 MiB. pandas (about 50 MiB more) is
  never imported by the recorder: ``keep_pandas_out`` stops pyarrow's lazy pandas check
  from loading it; nor is ``pyarrow.compute`` (about 8 MiB: ``tcpsnap._encode``
  dictionary-encodes in C);
* the batch pool (``batch.BatchPool``): batches are made when first needed and reused
  most-recently-returned first, so only as many as capture and writer really have in
  flight are ever touched (``batch_rows`` x 100 bytes each);
* the writer's rows not yet in a row group (Arrow, about 110 bytes a row) and, when a
  row group is written, the same rows once more while Parquet encodes them. A row
  group therefore holds at most ``ROW_GROUP_CAP`` rows (whatever ``row_group_rows``
  asks), fewer under a memory limit.

``MemoryGuard`` applies a limit: ``--max-rss SIZE`` (``Recorder(max_rss=...)``) or else
the cgroup's ``memory.max`` (systemd's ``MemoryMax=``). It sizes the row groups and the
pool from what is left after start-up, and when the resident size still comes within
``HIGH`` of the limit it degrades -- smaller row groups, rows made durable early, a
smaller pool -- and logs once that ``--mode changes`` needs far less. It never stops the
recording.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["ROW_GROUP_CAP", "MIN_ROW_GROUP", "MemoryGuard", "keep_pandas_out", "lean_process",
           "cgroup_memory_max", "rss_bytes"]

log = logging.getLogger("tcpsnap.recorder")

#: Rows a row group holds at most, whatever ``row_group_rows`` asks: the writer holds
#: them (Arrow, read back from the journal) while Parquet encodes them: ~15 MiB;
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
        # the writer holds a row group twice; the pool's buffers are 84 bytes a row
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
