"""On-disk layout of a recording, and how it survives a crash.

A recording folder holds hive-style partitions of finished Parquet files::

    DIR/.tcpsnap.lock                        flock: one recorder per folder
    DIR/date=2026-11-25/tcpsnap-20261125T101500.123Z.parquet        finished
    DIR/date=2026-11-25/.tcpsnap-20261125T103000.456Z.parquet.tmp   in progress
    DIR/date=2026-11-25/.tcpsnap-20261125T103000.456Z.parquet.rglog
    DIR/date=2026-11-25/.tcpsnap-20261125T103000.456Z.parquet.j7

Readers never see the in-progress files: their names start with ``.`` (ignored by
pyarrow.dataset and so pandas.read_parquet(DIR)) and do not end in ``.parquet``
(ignored by ``**/*.parquet`` globs).

How a file is built (``ParquetAppender``): Parquet cannot be appended to, so each row
group is encoded by its own in-memory Parquet writer and its data bytes are appended
to the ``.tmp`` file; its footer entry (the row group's metadata, offsets moved to
where the bytes landed) is appended to the ``.rglog``. Closing writes the combined
footer after the data, checks the file, fsyncs it and renames it into place.

Rows not yet in a row group sit in the journal ``.jK`` (K = the row group they will
become): an Arrow IPC stream the writer appends a record batch to every flush.

Recovery after a crash (``recover_file``): keep the row groups the ``.rglog``
vouches for (truncating any half-written one), replay the journals' intact record
batches (a torn last message is expected after kill -9) as more row groups, and
close the file as above. A crash loses only what was not yet in a journal or row
group: at most the flush interval.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import re
from pathlib import Path

__all__ = ["LOCK_NAME", "file_names", "tmp_path", "rglog_path", "journal_path", "free_name",
           "fsync_dir", "pwrite_all", "JOURNAL_RE", "TMP_RE"]

LOCK_NAME = ".tcpsnap.lock"
JOURNAL_RE = re.compile(r"^\.(?P<name>.+\.parquet)\.j(?P<k>\d+)$")
TMP_RE = re.compile(r"^\.(?P<name>.+\.parquet)\.(?:tmp|rglog)$")


def file_names(wall_ns: int) -> tuple[str, str]:
    """``(partition folder, file name)`` for a file whose first snapshot is at wall_ns."""
    t = _dt.datetime.fromtimestamp(wall_ns // 1_000_000_000, _dt.timezone.utc)
    ms = (wall_ns // 1_000_000) % 1000
    return f"date={t:%Y-%m-%d}", f"tcpsnap-{t:%Y%m%dT%H%M%S}.{ms:03d}Z.parquet"


def tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def rglog_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.rglog")


def journal_path(final: Path, k: int) -> Path:
    return final.with_name(f".{final.name}.j{k}")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError as e:  # pragma: no cover - some filesystems refuse, harmless
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def pwrite_all(fd: int, data, pos: int) -> None:
    mv = memoryview(data).cast("B")
    while mv:
        n = os.pwrite(fd, mv, pos)
        if n <= 0:  # pragma: no cover - pwrite reports errors by raising
            raise OSError(errno.EIO, "short write")
        mv = mv[n:]
        pos += n


def free_name(final: Path) -> Path:
    stem = final.name[: -len(".parquet")]
    for i in range(1, 10_000):
        cand = final.with_name(f"{stem}-{i}.parquet")
        if not cand.exists():
            return cand
    raise FileExistsError(final)  # pragma: no cover


