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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .safedir import SafeDir

__all__ = ["LOCK_NAME", "file_names", "tmp_path", "rglog_path", "journal_path", "free_name",
           "pwrite_all", "JOURNAL_RE", "TMP_RE", "NAME_RE", "PARTITION_RE"]

LOCK_NAME = ".tcpsnap.lock"
JOURNAL_RE = re.compile(r"^\.(?P<name>.+\.parquet)\.j(?P<k>\d+)$")
TMP_RE = re.compile(r"^\.(?P<name>.+\.parquet)\.(?:tmp|rglog)$")
#: A finished file's name as the recorder gives it (its first snapshot, to the ms).
NAME_RE = re.compile(r"^tcpsnap-((\d{4})(\d{2})(\d{2})T\d{6}\.\d{3})Z(?:-\d+)?\.parquet$")
#: A partition folder.
PARTITION_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def file_names(wall_ns: int) -> tuple[str, str]:
    """``(partition folder, file name)`` for a file whose first snapshot is at wall_ns."""
    t = _dt.datetime.fromtimestamp(wall_ns // 1_000_000_000, _dt.UTC)
    ms = (wall_ns // 1_000_000) % 1000
    return f"date={t:%Y-%m-%d}", f"tcpsnap-{t:%Y%m%dT%H%M%S}.{ms:03d}Z.parquet"


def tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def rglog_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.rglog")


def journal_path(final: Path, k: int) -> Path:
    return final.with_name(f".{final.name}.j{k}")


def pwrite_all(fd: int, data, pos: int) -> None:
    mv = memoryview(data).cast("B")
    while mv:
        n = os.pwrite(fd, mv, pos)
        if n <= 0:  # pragma: no cover - pwrite reports errors by raising
            raise OSError(errno.EIO, "short write")
        mv = mv[n:]
        pos += n


def free_name(folder: SafeDir, name: str, leftovers: bool = True) -> str:
    """``name``, or the first ``<stem>-N.parquet`` that no entry of ``folder`` has (a
    link counts as taken; with ``leftovers``, so does an in-progress file's name)."""
    stem = name[: -len(".parquet")]
    for cand in (name, *(f"{stem}-{i}.parquet" for i in range(1, 10_000))):
        if folder.exists(cand):
            continue
        # any name of the file's leftovers (.cand.tmp, .rglog, .jK) taken, even by a link
        # planted there, makes the writer pick another name rather than fail later
        if leftovers and any(n.startswith(f".{cand}.") for n in folder.listdir()):
            continue
        return cand
    raise FileExistsError(folder.path / name)  # pragma: no cover
