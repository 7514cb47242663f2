"""Recovery's check of row groups: do their pages read back (``verify_row_groups``)."""

from __future__ import annotations

import io
import mmap

import pyarrow as pa
import pyarrow.parquet as pq

from . import thrift as th
from .parquet import FMD_NUM_ROWS, FMD_ROW_GROUPS, MAGIC, rg_rows

__all__ = ["verify_row_groups"]


class _WithFooter(io.RawIOBase):
    """A read-only file: the first ``size`` bytes of ``data`` (an mmap), then ``tail``."""

    def __init__(self, data: mmap.mmap | bytes, size: int, tail: bytes) -> None:
        self._data, self._size, self._tail = data, size, tail
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        end = self._size + len(self._tail)
        self._pos = pos if whence == 0 else (self._pos + pos if whence == 1 else end + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b) -> int:
        mv = memoryview(b).cast("B")
        n = 0
        while n < len(mv):
            p = self._pos
            if p < self._size:
                k = min(len(mv) - n, self._size - p)
                mv[n:n + k] = self._data[p:p + k]
            elif p < self._size + len(self._tail):
                k = min(len(mv) - n, self._size + len(self._tail) - p)
                mv[n:n + k] = self._tail[p - self._size:p - self._size + k]
            else:
                break
            n += k
            self._pos += k
        return n


def verify_row_groups(fd: int, header: dict, rgs: list[dict], end: int) -> list[int]:
    """Indices of the row groups in ``rgs`` whose data (the first ``end`` bytes of the
    file open as ``fd``) does not read back: page checksums where the writer wrote them,
    else decoding. Reads one row group at a time."""
    meta = dict(header)
    meta[FMD_ROW_GROUPS] = (th.T_LIST, (th.T_STRUCT, rgs))
    meta[FMD_NUM_ROWS] = (th.T_I64, sum(rg_rows(rg) for rg in rgs))
    footer = th.encode_struct(meta)
    tail = footer + len(footer).to_bytes(4, "little") + MAGIC
    if end <= len(MAGIC):
        return []
    bad = []
    with mmap.mmap(fd, end, access=mmap.ACCESS_READ) as mm:
        try:
            f = pq.ParquetFile(pa.PythonFile(_WithFooter(mm, end, tail), mode="r"),
                               page_checksum_verification=True)
        except (OSError, ValueError, pa.ArrowException):
            return list(range(len(rgs)))
        for i in range(len(rgs)):
            try:
                f.read_row_group(i)
            except (OSError, ValueError, pa.ArrowException):
                bad.append(i)
        f.close()
    return bad
