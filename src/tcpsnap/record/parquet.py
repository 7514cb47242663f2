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
import io
import mmap
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .._schema import TCP_INFO_DTYPE, TCP_INFO_TIMERS
from . import thrift as th
from .footprint import give_back
from .layout import free_name, pwrite_all, rglog_path, tmp_path
from .safedir import SafeDir

__all__ = ["ParquetAppender", "writer_kwargs", "read_rglog", "RglogScan", "rg_seq_ranges", "split_parquet", "rg_rows",
           "kv_of", "schema_from_header", "verify_row_groups", "MAGIC", "LOG_MAGIC"]

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
PER_SNAPSHOT_COLUMNS = ("timestamp", "seq", "capture_ns", "monotonic_ns")
#: Columns with a value per connection (thousands of distinct values): a dictionary
#: page per row group plus bit-packed indices, whose bytes do not repeat from snapshot
#: to snapshot, costs several times more per row than BYTE_STREAM_SPLIT, which keeps
#: each snapshot's bytes as they were, so zstd finds the previous snapshot's (measured
#: in benchmarks/RESULTS.md, recorder section).
PER_CONNECTION_COLUMNS = ("local_port", "remote_port", "inode", "cookie")
#: Internals (``--tcp-info``) that move on every snapshot of a live connection: the kernel's
#: "ms since the last ..." timers. Between two snapshots all of them grow by the same
#: amount, so the deltas from row to row repeat from one snapshot to the next:
#: DELTA_BINARY_PACKED keeps them at a third of their dictionary size. The other numeric
#: internals are per-connection values that rarely change: BYTE_STREAM_SPLIT is as small
#: as a dictionary there and a fifth cheaper to write (benchmarks/RESULTS.md, "TCP internals");
#: the rates (a few distinct values per connection that come back) stay in a dictionary.
TIMER_COLUMNS = TCP_INFO_TIMERS
INFO_SPLIT_COLUMNS = tuple(n for n in TCP_INFO_DTYPE.names or ()
                           if n not in TCP_INFO_TIMERS + ("congestion", "estats", "pacing_rate", "delivery_rate"))
#: Changes mode (a schema with ``event``): its rows are events, mostly of connections whose
#: counters just moved, so the columns above that assume a steady table do not hold there:
#: a moving connection's rates and queues take a new value at almost every event (a
#: dictionary page of values used once, plus the indices: 1.7x their BYTE_STREAM_SPLIT
#: size), and neighbouring rows are other connections, whose timers do not grow together
#: (DELTA_BINARY_PACKED finds no common step). BYTE_STREAM_SPLIT keeps each value's high
#: bytes, which repeat for a connection from one event to its next, where zstd finds them
#: (benchmarks/RESULTS.md, "TCP internals in changes mode": 16% fewer bytes).
CHANGES_SPLIT_COLUMNS = ("rx_queue", "tx_queue", "pacing_rate", "delivery_rate") + TCP_INFO_TIMERS
#: The columns with row-group statistics (min, max, nulls): the ones readers skip row
#: groups by. The time range (``tcpsnap.read(start=, end=)``, ``export``, retention, and
#: DuckDB / pyarrow / polars filters on ``timestamp``), ``seq`` (recovery, the files'
#: ranges), the per-snapshot clocks, ``kind``, and ``host`` / ``boot_id`` (one value per
#: file: fleet reads and aggregation by host). A row group holds whole snapshots of the
#: table, so every other column's min and max span nearly its whole range (all ports,
#: addresses, states, pids of the table) and rule no row group out; computing them was
#: about a third of ``ParquetWriter.write_table``'s time (benchmarks/RESULTS.md, "Rate at
#: ``--interval 0``"). A ``where=`` on such a column still filters rows, as before.
STATS_COLUMNS = PER_SNAPSHOT_COLUMNS + ("kind", "host", "boot_id")


def _pyarrow_major() -> int:
    try:
        return int(pa.__version__.split(".")[0])
    except ValueError:  # pragma: no cover
        return 0


def writer_kwargs(compression: str | None, level: int | None, row_group_rows: int,
                  schema: pa.Schema | None = None, compat: bool = False) -> dict:
    """Parquet writer options. One data page holds many snapshots (max_rows_per_page)
    so that zstd sees the repeats between them. Statistics only for ``STATS_COLUMNS`` (all
    columns without a ``schema``). A changes-mode ``schema`` (with ``event``)
    also splits ``CHANGES_SPLIT_COLUMNS``. ``compat``: dictionary/plain encodings only, for
    readers older than pyarrow 16 / parquet-java 1.14 (larger files)."""
    kw: dict = dict(compression=compression or "none", use_dictionary=True, write_statistics=True,
                    data_page_size=8 << 20, dictionary_pagesize_limit=4 << 20)
    if schema is not None:
        kw["write_statistics"] = [c for c in STATS_COLUMNS if c in schema.names]
    if level is not None:
        kw["compression_level"] = level
    if _HAS_MAX_ROWS_PER_PAGE:
        kw["max_rows_per_page"] = max(row_group_rows, 1 << 16)
    if _HAS_PAGE_CHECKSUM:
        # a CRC32 in every page header: bit rot is an error naming the file, not
        # different values (readers verify: tcpsnap.read does)
        kw["write_page_checksum"] = True
    if not compat and schema is not None:
        names = set(schema.names)
        enc = {c: "DELTA_BINARY_PACKED" for c in PER_SNAPSHOT_COLUMNS + TIMER_COLUMNS if c in names}
        if _pyarrow_major() >= 16:  # BYTE_STREAM_SPLIT for integers: Parquet 2.11, Arrow 16
            split = PER_CONNECTION_COLUMNS + INFO_SPLIT_COLUMNS
            if "event" in names:
                split += CHANGES_SPLIT_COLUMNS
            enc.update({c: "BYTE_STREAM_SPLIT" for c in split if c in names})
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
_HAS_PAGE_CHECKSUM = _has_kw("write_page_checksum")


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
    """One Parquet file written a row group at a time, recoverable after a crash.

    Its files are made in ``folder`` (a :class:`SafeDir`; by default ``final``'s parent),
    never over an existing name or through a link.
    """

    def __init__(self, final: Path, schema: pa.Schema, *, compression: str | None = "zstd",
                 compression_level: int | None = None, row_group_rows: int = 1 << 20,
                 compat: bool = False, fsync: bool = False, folder: SafeDir | None = None,
                 _resume: tuple | None = None) -> None:
        self.final = Path(final)
        self._own_dir = folder is None
        self.dir = folder or SafeDir.open(self.final.parent)
        self.tmp = tmp_path(self.final)
        self.rglog = rglog_path(self.final)
        self.schema = schema
        self.fsync = fsync
        self.kw = writer_kwargs(compression, compression_level, row_group_rows, schema, compat)  # writer options
        # the file's row groups, thrift-encoded (as the footer will hold them; decoded,
        # each one's metadata is ~60 KiB of Python objects), and each one's rows and seq
        # range (min, max) or None
        self._rgs: list[bytes] = []
        self._rg_info: list[tuple[int, tuple[int, int] | None]] = []
        self._seq_col = schema.get_field_index("seq")
        self.rows = 0
        self._fd = self._lfd = -1
        try:
            if _resume is None:
                self._fd = self.dir.create(self.tmp.name)
                self._lfd = self.dir.create(self.rglog.name)
                pwrite_all(self._fd, MAGIC, 0)
                self._pos = len(MAGIC)
                pwrite_all(self._lfd, LOG_MAGIC, 0)
                self._lpos = len(LOG_MAGIC)
                self._meta = self._header()
                self._log_entry(b"H", th.encode_struct(self._meta))
                self._sync(dirs=True)
            else:
                self._meta, rgs, self._pos, self._lpos = _resume
                for rg in rgs:
                    self._keep(rg, th.encode_struct(rg))
                self._fd = self.dir.open_file(self.tmp.name, write=True)
                os.ftruncate(self._fd, self._pos)
                self._lfd = self.dir.open_file(self.rglog.name, write=True)
                os.ftruncate(self._lfd, self._lpos)
        except BaseException:
            self.close_files()
            raise

    bytes_written = property(lambda self: self._pos)

    row_groups = property(lambda self: len(self._rgs))

    def _header(self) -> dict:
        sink = pa.BufferOutputStream()
        w = pq.ParquetWriter(sink, self.schema, **self.kw)
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
                self.dir.fsync()

    def write_row_group(self, table: pa.Table) -> None:
        """Append ``table`` as one row group (durable once this returns)."""
        if table.num_rows == 0:
            return
        sink = pa.BufferOutputStream()
        w = pq.ParquetWriter(sink, self.schema, **self.kw)
        try:
            w.write_table(table, row_group_size=table.num_rows)
        finally:
            w.close()
        data, footer = split_parquet(sink.getvalue())
        self.append_encoded(data, th.decode_struct(footer)[_FMD_ROW_GROUPS][1][1])

    def append_encoded(self, data: bytes | bytearray | memoryview, rgs: list[dict]) -> None:
        """Append encoded row groups: their data bytes and RowGroup structs (offsets as if
        ``data`` followed a file's leading magic), durable once this returns."""
        delta = self._pos - len(MAGIC)
        for i, rg in enumerate(rgs):
            shift_row_group(rg, delta, len(self._rgs) + i)
        payload = bytearray()
        encoded = []
        for rg in rgs:
            enc = th.encode_struct(rg)
            encoded.append(enc)
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
        for rg, enc in zip(rgs, encoded, strict=True):
            self._keep(rg, enc)

    def _keep(self, rg: dict, enc: bytes) -> None:
        """One more row group of the file: its encoded metadata, rows and seq range."""
        self._rgs.append(enc)
        rng = _rg_int_range(rg, self._seq_col) if self._seq_col >= 0 else None
        self._rg_info.append((rg_rows(rg), rng))
        self.rows += rg_rows(rg)

    def seq_ranges(self) -> list[tuple[int, int]]:
        """(first, last) ``seq`` of each row group so far, from its statistics."""
        return [r for _, r in self._rg_info if r is not None]

    def seq_range(self) -> tuple[int, int] | None:
        """(first, last) ``seq`` in the file so far, from row-group statistics."""
        rs = self.seq_ranges()
        return (min(r[0] for r in rs), max(r[1] for r in rs)) if rs else None

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
        os.fsync(self._fd)  # always: publishing below makes the file visible
        # the file must read back before it is published; a failure here is a bug and
        # leaves the .tmp/.rglog in place for recovery
        self.close_files()
        rfd = self.dir.open_file(self.tmp.name)
        with os.fdopen(rfd, "rb") as f:
            md = pq.read_metadata(f)
        rows, groups, md = md.num_rows, md.num_row_groups, None
        give_back()  # Arrow's parse of the whole footer (7 MiB at 15 min, 1k): else holes
        if rows != self.rows or groups != len(self._rgs):
            raise RuntimeError(f"{self.tmp}: footer check failed")
        while True:  # never replace a finished file (or anything else by that name)
            name = free_name(self.dir, self.final.name, leftovers=False)
            try:
                self.dir.publish(self.tmp.name, name)
                break
            except FileExistsError:
                continue
        self.dir.fsync()
        self.dir.unlink(self.rglog.name)
        self.final = final = self.dir.path / name
        self._close_dir()
        return final

    def _close_dir(self) -> None:
        if self._own_dir:
            self.dir.close()

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
            self.dir.unlink(p.name)
        self._close_dir()


@dataclass
class RglogScan:
    """What an ``.rglog`` vouches for (see :func:`read_rglog`)."""

    header: dict | None = None  # the file's FileMetaData without row groups
    rgs: list[dict] = field(default_factory=list)  # verified row groups, in file order
    end: int = len(MAGIC)  # data bytes the last verified row group ends at
    log_end: int = 0  # log bytes up to the end of the last verified entry
    torn: bool = False  # an incomplete last entry (a crash mid-write: expected)
    problems: list[str] = field(default_factory=list)  # what could not be verified
    #: row groups an entry vouches for whose data is not in the file (power loss without
    #: fsync, or a crash test's torn state); the caller decides if their rows are elsewhere
    missing: list[dict] = field(default_factory=list)


#: A log entry's payload is one row group's metadata: never near this.
_MAX_ENTRY = 64 << 20


def _entry_at(data: bytes, i: int) -> tuple[bytes, bytes, int, int] | None:
    """(kind, body, data end, next offset) of a complete entry whose CRC checks."""
    if i + _ENTRY.size > len(data):
        return None
    kind, n, crc, data_end = _ENTRY.unpack_from(data, i)
    if n > _MAX_ENTRY or i + _ENTRY.size + n > len(data):
        return None
    body = data[i + _ENTRY.size:i + _ENTRY.size + n]
    head = data[i:i + _ENTRY.size]
    if zlib.crc32(head[:5] + head[9:] + body) != crc:
        return None
    return kind, body, data_end, i + _ENTRY.size + n


def _row_groups(body: bytes) -> list[dict]:
    new = []
    j = 0
    while j < len(body):
        m = int.from_bytes(body[j:j + 4], "little")
        if m > len(body) - j - 4:
            raise th.ThriftError("row group runs past its entry")
        new.append(th.decode_struct(body[j + 4:j + 4 + m]))
        j += 4 + m
    return new


def read_rglog(data: bytes, data_size: int) -> RglogScan:
    """Scan an ``.rglog``'s bytes against its data file's size.

    Keeps every entry whose CRC checks and whose row group lies within the data, in
    order. An incomplete last entry is a torn write (``torn``). A complete entry that
    does not check is bit rot: it is skipped, the scan finds the next entry that
    checks, and ``problems`` says so; so does an entry whose data is missing.
    """
    scan = RglogScan()
    if not data.startswith(LOG_MAGIC):
        if data:
            scan.problems.append("row-group log has no tcpsnap header")
        return scan
    i = len(LOG_MAGIC)
    scan.log_end = i
    while i + _ENTRY.size <= len(data):
        got = _entry_at(data, i)
        if got is None:
            kind, n, _, _ = _ENTRY.unpack_from(data, i)
            if n <= _MAX_ENTRY and i + _ENTRY.size + n > len(data) and kind in (b"H", b"R"):
                scan.torn = True  # the last write, cut short
                return scan
            nxt = _resync(data, i + 1, scan.end, data_size)
            scan.problems.append(f"row-group log entry at byte {i} is corrupt"
                                 + ("" if nxt < len(data) else " (and all after it)"))
            i = nxt
            continue
        kind, body, data_end, nxt = got
        try:
            if kind == b"H" and scan.header is None:
                scan.header = th.decode_struct(body)
            elif kind == b"R" and scan.header is not None:
                if data_end > data_size or data_end < scan.end:
                    scan.missing.extend(_row_groups(body))
                    return scan
                scan.rgs.extend(_row_groups(body))
                scan.end = data_end
            else:
                scan.problems.append(f"unexpected row-group log entry at byte {i}")
                return scan
        except th.ThriftError:
            scan.problems.append(f"row-group log entry at byte {i} does not decode")
            i = _resync(data, i + 1, scan.end, data_size)
            continue
        i = scan.log_end = nxt
    if i < len(data):
        scan.torn = True
    return scan


def _resync(data: bytes, i: int, end: int, data_size: int) -> int:
    """The offset of the next row-group entry that checks, or ``len(data)``."""
    while True:
        i = data.find(b"R", i)
        if i < 0:
            return len(data)
        if i + _ENTRY.size <= len(data):
            _, n, _, data_end = _ENTRY.unpack_from(data, i)
            if end < data_end <= data_size and n <= len(data) - i and _entry_at(data, i):
                return i
        i += 1


def rg_seq_ranges(schema: pa.Schema, rgs: list[dict]) -> list[tuple[int, int]]:
    """(first, last) ``seq`` of each row group with statistics for it."""
    col = schema.get_field_index("seq")
    if col < 0:
        return []
    return [r for r in (_rg_int_range(rg, col) for rg in rgs) if r is not None]


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
    meta[_FMD_ROW_GROUPS] = (th.T_LIST, (th.T_STRUCT, rgs))
    meta[_FMD_NUM_ROWS] = (th.T_I64, sum(rg_rows(rg) for rg in rgs))
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
