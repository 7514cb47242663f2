"""A Parquet file written one row group at a time, recoverable after a crash.

Parquet cannot be appended to, so each row group is encoded by its own in-memory
Parquet writer and its data bytes are appended to the ``.tmp`` file; its footer entry
(the row group's metadata, offsets moved to where the bytes landed) is appended to the
``.rglog`` behind a CRC. Closing writes the combined footer after the data, checks the
file, fsyncs it and renames it into place. The folder layout and crash model:
``tcpsnap.record.layout``.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import thrift as th
from .layout import free_name, fsync_dir, pwrite_all, rglog_path, tmp_path

__all__ = ["ParquetAppender", "writer_kwargs", "read_rglog", "split_parquet", "rg_rows",
           "kv_of", "schema_from_header", "MAGIC", "LOG_MAGIC"]

MAGIC = b"PAR1"
LOG_MAGIC = b"TSNPRGL1"
_ENTRY = struct.Struct("<cIIQ")  # kind, payload length, crc32, data end

# FileMetaData / RowGroup / ColumnChunk / ColumnMetaData field ids (parquet.thrift)
_FMD_NUM_ROWS, _FMD_ROW_GROUPS, _FMD_KV = 3, 4, 5
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
_CC_FILE_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX = 2, 3, 4, 6
_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE, _CMD_STATS, _CMD_BLOOM = 9, 10, 11, 12, 14
_STATS_MAX, _STATS_MIN = 5, 6


#: Columns that repeat one value for all rows of a snapshot: DELTA_BINARY_PACKED
#: stores a run of equal values in a few bits.
PER_SNAPSHOT_COLUMNS = ("timestamp", "seq", "capture_ns")
#: Columns with a value per connection (thousands of distinct values): a dictionary
#: page per row group plus bit-packed indices, whose bytes do not repeat from snapshot
#: to snapshot, costs several times more per row than BYTE_STREAM_SPLIT, which keeps
#: each snapshot's bytes as they were, so zstd finds the previous snapshot's (measured
#: in benchmarks/RESULTS.md, recorder section).
PER_CONNECTION_COLUMNS = ("local_port", "remote_port", "inode", "cookie")


def _pyarrow_major() -> int:
    try:
        return int(pa.__version__.split(".")[0])
    except ValueError:  # pragma: no cover
        return 0


def writer_kwargs(compression: str | None, level: int | None, row_group_rows: int,
                  schema: pa.Schema | None = None, compat: bool = False) -> dict:
    """Parquet writer options. One data page holds many snapshots (max_rows_per_page)
    so that zstd sees the repeats between them. ``compat``: dictionary/plain encodings
    only, for readers older than pyarrow 16 / parquet-java 1.14 (larger files)."""
    kw: dict = dict(compression=compression or "none", use_dictionary=True, write_statistics=True,
                    data_page_size=8 << 20, dictionary_pagesize_limit=4 << 20)
    if level is not None:
        kw["compression_level"] = level
    if _HAS_MAX_ROWS_PER_PAGE:
        kw["max_rows_per_page"] = max(row_group_rows, 1 << 16)
    if not compat and schema is not None:
        names = set(schema.names)
        enc = {c: "DELTA_BINARY_PACKED" for c in PER_SNAPSHOT_COLUMNS if c in names}
        if _pyarrow_major() >= 16:  # BYTE_STREAM_SPLIT for integers: Parquet 2.11, Arrow 16
            enc.update({c: "BYTE_STREAM_SPLIT" for c in PER_CONNECTION_COLUMNS if c in names})
        if enc:
            kw["use_dictionary"] = [c for c in schema.names if c not in enc]
            kw["column_encoding"] = enc
    return kw


def _has_kw(name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(pq.ParquetWriter.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


_HAS_MAX_ROWS_PER_PAGE = _has_kw("max_rows_per_page")


# ---------------------------------------------------------------- footer surgery

def split_parquet(buf: pa.Buffer) -> tuple[memoryview, bytes]:
    """A whole in-memory Parquet file -> (data bytes after the leading magic, footer)."""
    mv = memoryview(buf)
    n = len(mv)
    if n < 12 or bytes(mv[:4]) != MAGIC or bytes(mv[n - 4:]) != MAGIC:
        raise ValueError("not a Parquet file")
    flen = int.from_bytes(mv[n - 8:n - 4], "little")
    start = n - 8 - flen
    return mv[4:start], bytes(mv[start:n - 8])


def _shift(s: dict, fid: int, delta: int) -> None:
    if fid in s:
        t, v = s[fid]
        if v >= 0:  # -1 / 0 mean "absent" for some writers; only real offsets move
            s[fid] = (t, v + delta)


def shift_row_group(rg: dict, delta: int, ordinal: int) -> None:
    """Move a RowGroup struct's byte offsets by ``delta`` and set its ordinal."""
    _shift(rg, _RG_FILE_OFFSET, delta)
    rg[_RG_ORDINAL] = (th.T_I16, ordinal)
    for cc in rg[_RG_COLUMNS][1][1]:
        _shift(cc, _CC_FILE_OFFSET, delta)
        _shift(cc, _CC_OFFSET_INDEX, delta)
        _shift(cc, _CC_COLUMN_INDEX, delta)
        if _CC_META in cc:
            md = cc[_CC_META][1]
            for fid in (_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE, _CMD_BLOOM):
                _shift(md, fid, delta)


def rg_rows(rg: dict) -> int:
    return rg[_RG_NUM_ROWS][1]


def _rg_int_range(rg: dict, col: int) -> tuple[int, int] | None:
    """(min, max) of an integer column from a row group's statistics."""
    try:
        md = rg[_RG_COLUMNS][1][1][col][_CC_META][1]
        st = md[_CMD_STATS][1]
        lo, hi = st[_STATS_MIN][1], st[_STATS_MAX][1]
    except (KeyError, IndexError, TypeError):
        return None
    return int.from_bytes(lo, "little", signed=True), int.from_bytes(hi, "little", signed=True)


def _kv_list(meta: dict) -> list:
    if _FMD_KV not in meta:
        meta[_FMD_KV] = (th.T_LIST, (th.T_STRUCT, []))
    return meta[_FMD_KV][1][1]


def _set_kv(meta: dict, extra: dict[str, str]) -> None:
    items = _kv_list(meta)
    keys = {k.encode() for k in extra}
    items[:] = [kv for kv in items if kv.get(1, (0, b""))[1] not in keys]
    for k, v in extra.items():
        items.append({1: (th.T_BINARY, k.encode()), 2: (th.T_BINARY, str(v).encode())})


# ---------------------------------------------------------------- the growing file

class ParquetAppender:
    """One Parquet file written a row group at a time, recoverable after a crash."""

    def __init__(self, final: Path, schema: pa.Schema, *, compression: str | None = "zstd",
                 compression_level: int | None = None, row_group_rows: int = 1 << 20,
                 compat: bool = False, fsync: bool = False, _resume: tuple | None = None) -> None:
        self.final = Path(final)
        self.tmp = tmp_path(self.final)
        self.rglog = rglog_path(self.final)
        self.schema = schema
        self.fsync = fsync
        self._kw = writer_kwargs(compression, compression_level, row_group_rows, schema, compat)
        self._rgs: list[dict] = []
        self.rows = 0
        self._fd = self._lfd = -1
        flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        try:
            if _resume is None:
                self._fd = os.open(self.tmp, flags | os.O_CREAT | os.O_EXCL, 0o644)
                self._lfd = os.open(self.rglog, flags | os.O_CREAT | os.O_EXCL, 0o644)
                pwrite_all(self._fd, MAGIC, 0)
                self._pos = len(MAGIC)
                pwrite_all(self._lfd, LOG_MAGIC, 0)
                self._lpos = len(LOG_MAGIC)
                self._meta = self._header()
                self._log_entry(b"H", th.encode_struct(self._meta))
                self._sync(dirs=True)
            else:
                self._meta, self._rgs, self._pos, self._lpos = _resume
                self.rows = sum(rg_rows(rg) for rg in self._rgs)
                self._fd = os.open(self.tmp, flags)
                os.ftruncate(self._fd, self._pos)
                self._lfd = os.open(self.rglog, flags)
                os.ftruncate(self._lfd, self._lpos)
        except BaseException:
            self.close_files()
            raise

    @property
    def bytes_written(self) -> int:
        return self._pos

    @property
    def row_groups(self) -> int:
        return len(self._rgs)

    def _header(self) -> dict:
        sink = pa.BufferOutputStream()
        w = pq.ParquetWriter(sink, self.schema, **self._kw)
        w.close()
        _, footer = split_parquet(sink.getvalue())
        meta = th.decode_struct(footer)
        meta[_FMD_NUM_ROWS] = (th.T_I64, 0)
        meta[_FMD_ROW_GROUPS] = (th.T_LIST, (th.T_STRUCT, []))
        return meta

    def _log_entry(self, kind: bytes, payload: bytes) -> None:
        """Append an entry at the log's valid end (a torn earlier attempt is simply
        overwritten: every write goes to an explicit offset)."""
        head = _ENTRY.pack(kind, len(payload), 0, self._pos)
        crc = zlib.crc32(head[:5] + head[9:] + payload)
        entry = _ENTRY.pack(kind, len(payload), crc, self._pos) + payload
        pwrite_all(self._lfd, entry, self._lpos)
        self._lpos += len(entry)

    def _sync(self, dirs: bool = False) -> None:
        if self.fsync:
            os.fsync(self._fd)
            os.fsync(self._lfd)
            if dirs:
                fsync_dir(self.final.parent)

    def write_row_group(self, table: pa.Table) -> None:
        """Append ``table`` as one row group (durable once this returns)."""
        if table.num_rows == 0:
            return
        sink = pa.BufferOutputStream()
        w = pq.ParquetWriter(sink, self.schema, **self._kw)
        try:
            w.write_table(table, row_group_size=table.num_rows)
        finally:
            w.close()
        data, footer = split_parquet(sink.getvalue())
        meta = th.decode_struct(footer)
        rgs = meta[_FMD_ROW_GROUPS][1][1]
        delta = self._pos - len(MAGIC)
        for i, rg in enumerate(rgs):
            shift_row_group(rg, delta, len(self._rgs) + i)
        payload = bytearray()
        for rg in rgs:
            enc = th.encode_struct(rg)
            payload += len(enc).to_bytes(4, "little") + enc
        # data first, then the log entry that vouches for it; a failure in between
        # leaves _pos where it was, so the next attempt writes over the torn bytes
        pwrite_all(self._fd, data, self._pos)
        if self.fsync:
            os.fsync(self._fd)
        end = self._pos + len(data)
        head = _ENTRY.pack(b"R", len(payload), 0, end)
        crc = zlib.crc32(head[:5] + head[9:] + payload)
        entry = _ENTRY.pack(b"R", len(payload), crc, end) + bytes(payload)
        pwrite_all(self._lfd, entry, self._lpos)
        if self.fsync:
            os.fsync(self._lfd)
        self._lpos += len(entry)
        self._pos = end
        for rg in rgs:
            self._rgs.append(rg)
            self.rows += rg_rows(rg)

    def seq_range(self) -> tuple[int, int] | None:
        """(first, last) ``seq`` in the file so far, from row-group statistics."""
        col = self.schema.get_field_index("seq")
        rs = [r for r in (_rg_int_range(rg, col) for rg in self._rgs) if r is not None]
        if not rs:
            return None
        return min(r[0] for r in rs), max(r[1] for r in rs)

    def finish(self, extra_kv: dict[str, str] | None = None) -> Path | None:
        """Write the footer, check the file, rename it into place. Returns the final
        path, or None (and removes everything) when no row was written."""
        if not self._rgs:
            self.discard()
            return None
        meta = dict(self._meta)
        meta[_FMD_ROW_GROUPS] = (th.T_LIST, (th.T_STRUCT, self._rgs))
        meta[_FMD_NUM_ROWS] = (th.T_I64, self.rows)
        kv = dict(extra_kv or {})
        sr = self.seq_range()
        if sr is not None:
            kv.setdefault("tcpsnap.first_seq", str(sr[0]))
            kv.setdefault("tcpsnap.last_seq", str(sr[1]))
        kv.setdefault("tcpsnap.rows", str(self.rows))
        _set_kv(meta, kv)
        footer = th.encode_struct(meta)
        tail = footer + len(footer).to_bytes(4, "little") + MAGIC
        pwrite_all(self._fd, tail, self._pos)
        os.ftruncate(self._fd, self._pos + len(tail))
        os.fsync(self._fd)  # always: the rename below publishes the file
        self.close_files()
        # the file must read back before it is published; a failure here is a bug and
        # leaves the .tmp/.rglog in place for recovery
        md = pq.read_metadata(self.tmp)
        if md.num_rows != self.rows or md.num_row_groups != len(self._rgs):
            raise RuntimeError(f"{self.tmp}: footer check failed")
        final = self.final
        if final.exists():  # never overwrite a finished file
            final = free_name(final)
        os.rename(self.tmp, final)
        fsync_dir(final.parent)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.rglog)
        return final

    def close_files(self) -> None:
        """Close without finishing (after an error): leaves everything for recovery."""
        for name in ("_fd", "_lfd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def discard(self) -> None:
        self.close_files()
        for p in (self.tmp, self.rglog):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def read_rglog(path: Path, data_size: int | None = None) -> tuple[dict | None, list[dict], int, int]:
    """The valid prefix of an ``.rglog``: (header FileMetaData, row groups, data end,
    length of that prefix). With ``data_size``, entries whose row group is not wholly
    within that many bytes of data end the prefix too (storage that lost writes)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, [], len(MAGIC), 0
    if not data.startswith(LOG_MAGIC):
        return None, [], len(MAGIC), 0
    i = len(LOG_MAGIC)
    header = None
    rgs: list[dict] = []
    end = len(MAGIC)
    while i + _ENTRY.size <= len(data):
        kind, n, crc, data_end = _ENTRY.unpack_from(data, i)
        body = data[i + _ENTRY.size:i + _ENTRY.size + n]
        if len(body) != n:
            break
        head = data[i:i + _ENTRY.size]
        if zlib.crc32(head[:5] + head[9:] + body) != crc:
            break
        try:
            if kind == b"H" and header is None:
                header = th.decode_struct(body)
            elif kind == b"R" and header is not None:
                if data_size is not None and data_end > data_size:
                    break
                new = []
                j = 0
                while j < len(body):
                    m = int.from_bytes(body[j:j + 4], "little")
                    new.append(th.decode_struct(body[j + 4:j + 4 + m]))
                    j += 4 + m
                rgs.extend(new)
                end = data_end
            else:
                break
        except th.ThriftError:
            break
        i += _ENTRY.size + n
    return header, rgs, end, i


def kv_of(meta: dict) -> dict[str, str]:
    out = {}
    for kv in _kv_list(meta):
        k = kv.get(1, (0, b""))[1]
        v = kv.get(2, (0, b""))[1]
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return out


def schema_from_header(header: dict) -> pa.Schema:
    footer = th.encode_struct(header)
    buf = MAGIC + footer + len(footer).to_bytes(4, "little") + MAGIC
    return pq.read_schema(pa.BufferReader(buf))
