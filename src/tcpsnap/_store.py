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

import contextlib
import datetime as _dt
import errno
import logging
import os
import re
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import _thrift as th

log = logging.getLogger("tcpsnap.recorder")

__all__ = ["ParquetAppender", "Journal", "read_journal", "recover_file", "find_leftovers",
           "file_names", "last_seq", "LOCK_NAME", "RecoveryResult"]

LOCK_NAME = ".tcpsnap.lock"
MAGIC = b"PAR1"
LOG_MAGIC = b"TSNPRGL1"
_ENTRY = struct.Struct("<cIIQ")  # kind, payload length, crc32, data end
_JOURNAL_RE = re.compile(r"^\.(?P<name>.+\.parquet)\.j(?P<k>\d+)$")
_TMP_RE = re.compile(r"^\.(?P<name>.+\.parquet)\.(?:tmp|rglog)$")

# FileMetaData / RowGroup / ColumnChunk / ColumnMetaData field ids (parquet.thrift)
_FMD_NUM_ROWS, _FMD_ROW_GROUPS, _FMD_KV = 3, 4, 5
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
_CC_FILE_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX = 2, 3, 4, 6
_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE, _CMD_STATS, _CMD_BLOOM = 9, 10, 11, 12, 14
_STATS_MAX, _STATS_MIN = 5, 6


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


#: Columns that repeat one value for all rows of a snapshot: DELTA_BINARY_PACKED
#: stores a run of equal values in a few bits.
PER_SNAPSHOT_COLUMNS = ("timestamp", "seq", "capture_ns")
#: Columns with a value per connection (thousands of distinct values): a dictionary
#: page per row group plus bit-packed indices, whose bytes do not repeat from snapshot
#: to snapshot, costs ~1.4 B/row at 10k connections; BYTE_STREAM_SPLIT keeps each
#: snapshot's bytes as they were, so zstd finds the previous snapshot's: 0.2 B/row.
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

def _split_parquet(buf: pa.Buffer) -> tuple[memoryview, bytes]:
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


def _rg_rows(rg: dict) -> int:
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
                _pwrite_all(self._fd, MAGIC, 0)
                self._pos = len(MAGIC)
                _pwrite_all(self._lfd, LOG_MAGIC, 0)
                self._lpos = len(LOG_MAGIC)
                self._meta = self._header()
                self._log_entry(b"H", th.encode_struct(self._meta))
                self._sync(dirs=True)
            else:
                self._meta, self._rgs, self._pos, self._lpos = _resume
                self.rows = sum(_rg_rows(rg) for rg in self._rgs)
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
        _, footer = _split_parquet(sink.getvalue())
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
        _pwrite_all(self._lfd, entry, self._lpos)
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
        data, footer = _split_parquet(sink.getvalue())
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
        _pwrite_all(self._fd, data, self._pos)
        if self.fsync:
            os.fsync(self._fd)
        end = self._pos + len(data)
        head = _ENTRY.pack(b"R", len(payload), 0, end)
        crc = zlib.crc32(head[:5] + head[9:] + payload)
        entry = _ENTRY.pack(b"R", len(payload), crc, end) + bytes(payload)
        _pwrite_all(self._lfd, entry, self._lpos)
        if self.fsync:
            os.fsync(self._lfd)
        self._lpos += len(entry)
        self._pos = end
        for rg in rgs:
            self._rgs.append(rg)
            self.rows += _rg_rows(rg)

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
        _pwrite_all(self._fd, tail, self._pos)
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
            final = _free_name(final)
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


def _pwrite_all(fd: int, data, pos: int) -> None:
    mv = memoryview(data).cast("B")
    while mv:
        n = os.pwrite(fd, mv, pos)
        if n <= 0:  # pragma: no cover - pwrite reports errors by raising
            raise OSError(errno.EIO, "short write")
        mv = mv[n:]
        pos += n


def _free_name(final: Path) -> Path:
    stem = final.name[: -len(".parquet")]
    for i in range(1, 10_000):
        cand = final.with_name(f"{stem}-{i}.parquet")
        if not cand.exists():
            return cand
    raise FileExistsError(final)  # pragma: no cover


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


# ---------------------------------------------------------------- the journal

class Journal:
    """Rows not yet in a row group: an Arrow IPC stream, appended a batch at a time."""

    def __init__(self, path: Path, schema: pa.Schema, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.rows = 0
        self.batches = 0
        self._file = pa.OSFile(str(self.path), "wb")
        try:
            self._writer = pa.ipc.new_stream(
                self._file, schema, options=pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True))
        except BaseException:
            self._file.close()
            raise
        self.nbytes = self._file.tell()

    def append(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)  # straight to the fd: survives kill -9 at once
        self.rows += batch.num_rows
        self.batches += 1
        self.nbytes = self._file.tell()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._file.close()

    def abandon(self) -> None:
        """Close the fd without writing the end-of-stream marker (after an error)."""
        with contextlib.suppress(Exception):
            self._file.close()


def read_journal(path: Path) -> tuple[pa.Schema | None, list[pa.RecordBatch], bool]:
    """The intact record batches of a journal: (schema, batches, complete). A torn
    last message (a crash mid-append) is dropped and ``complete`` is False."""
    try:
        mm = pa.memory_map(str(path), "r")
    except (FileNotFoundError, pa.ArrowInvalid, OSError):
        return None, [], False
    try:
        if mm.size() == 0:
            return None, [], False
        reader = pa.ipc.open_stream(mm)
    except (pa.ArrowInvalid, OSError):
        return None, [], False
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            return reader.schema, batches, True
        except (pa.ArrowInvalid, OSError, pa.ArrowException):
            return reader.schema, batches, False


def unify_table(schema: pa.Schema, batches: list[pa.RecordBatch]) -> pa.Table:
    """Batches of one journal -> one table whose dictionary columns share a single
    dictionary (each batch's dictionary is a prefix of the last one's: indices stay
    valid), so the Parquet writer writes indices straight through."""
    table = pa.Table.from_batches(batches, schema=schema)
    cols = []
    changed = False
    for i, field in enumerate(schema):
        col = table.column(i)
        if pa.types.is_dictionary(field.type) and col.num_chunks > 1:
            last = col.chunk(col.num_chunks - 1).dictionary
            ok = True
            for ch in col.chunks:
                d = ch.dictionary
                if d is not last and (len(d) > len(last) or not d.equals(last.slice(0, len(d)))):
                    ok = False
                    break
            if ok:
                col = pa.chunked_array(
                    [pa.DictionaryArray.from_arrays(ch.indices, last) for ch in col.chunks],
                    type=field.type)
                changed = True
            else:  # pragma: no cover - the encoder never does this
                col = col.unify_dictionaries() if hasattr(col, "unify_dictionaries") else col
                changed = True
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema) if changed else table


# ---------------------------------------------------------------- recovery

class RecoveryResult:
    """What recovery did for one interrupted file."""

    def __init__(self, path: Path | None, rows: int, from_journal: int, torn: bool) -> None:
        self.path = path
        self.rows = rows
        self.from_journal = from_journal
        self.torn = torn

    def __repr__(self) -> str:
        return (f"RecoveryResult(path={str(self.path)!r}, rows={self.rows}, "
                f"from_journal={self.from_journal}, torn={self.torn})")


def find_leftovers(root: Path) -> list[Path]:
    """Final paths of the files left in progress under ``root`` (one level of
    partition folders, plus root itself)."""
    root = Path(root)
    out: set[Path] = set()
    dirs = [root]
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        dirs += [d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))]
    for d in dirs:
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for n in names:
            m = _TMP_RE.match(n) or _JOURNAL_RE.match(n)
            if m:
                out.add(d / m.group("name"))
    return sorted(out)


def _journals(final: Path) -> list[tuple[int, Path]]:
    out = []
    try:
        names = os.listdir(final.parent)
    except FileNotFoundError:
        return []
    for n in names:
        m = _JOURNAL_RE.match(n)
        if m and m.group("name") == final.name:
            out.append((int(m.group("k")), final.parent / n))
    return sorted(out)


def _kv_of(meta: dict) -> dict[str, str]:
    out = {}
    for kv in _kv_list(meta):
        k = kv.get(1, (0, b""))[1]
        v = kv.get(2, (0, b""))[1]
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return out


def recover_file(final: Path, row_group_rows: int = 1 << 20) -> RecoveryResult:
    """Turn one interrupted file (``.tmp`` + ``.rglog`` + journals) into a finished
    Parquet file, keeping every row the log or a journal vouches for."""
    final = Path(final)
    tmp = tmp_path(final)
    size = tmp.stat().st_size if tmp.exists() else 0
    header, rgs, end, log_end = read_rglog(rglog_path(final), size)
    journals = _journals(final)
    k0 = len(rgs)
    replay = [(k, p) for k, p in journals if k >= k0]
    stale = [p for k, p in journals if k < k0]

    app: ParquetAppender | None = None
    torn = False
    from_journal = 0
    kv = {}
    try:
        if header is not None and tmp.exists():
            schema = _schema_from_header(header)
            kv = _kv_of(header)
            app = ParquetAppender(final, schema, **_options_from_kv(kv, row_group_rows),
                                  _resume=(header, rgs, end, log_end))
        for _, jp in replay:
            schema, batches, complete = read_journal(jp)
            torn |= not complete
            if not batches:
                continue
            if app is None:
                for p in (tmp, rglog_path(final)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p)
                kv = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
                app = ParquetAppender(final, schema, **_options_from_kv(kv, row_group_rows))
            table = unify_table(app.schema, batches)
            from_journal += table.num_rows
            for off in range(0, table.num_rows, row_group_rows):
                app.write_row_group(table.slice(off, row_group_rows))
            del table, batches
        path = None
        rows = 0
        if app is not None:
            rows = app.rows
            path = app.finish({"tcpsnap.closed": "recovered"})
        else:
            for p in (tmp, rglog_path(final)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
    except BaseException:
        if app is not None:
            app.close_files()
        raise
    for _, jp in replay:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(jp)
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    return RecoveryResult(path, rows, from_journal, torn)


def _schema_from_header(header: dict) -> pa.Schema:
    footer = th.encode_struct(header)
    buf = MAGIC + footer + len(footer).to_bytes(4, "little") + MAGIC
    return pq.read_schema(pa.BufferReader(buf))


def _options_from_kv(kv: dict[str, str], row_group_rows: int) -> dict:
    comp = kv.get("tcpsnap.compression") or "zstd"
    level = kv.get("tcpsnap.compression_level")
    return dict(compression=None if comp == "none" else comp,
                compression_level=int(level) if level not in (None, "", "default") else None,
                row_group_rows=row_group_rows, compat=kv.get("tcpsnap.encoding") == "compat")


def last_seq(root: Path) -> int | None:
    """The last ``seq`` recorded in the newest finished file under ``root``."""
    root = Path(root)
    try:
        parts = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("date="))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for d in reversed(parts):
        files = sorted(p for p in d.iterdir() if p.name.endswith(".parquet") and not p.name.startswith((".", "_")))
        for f in reversed(files):
            try:
                md = pq.read_metadata(f).metadata or {}
            except (OSError, pa.ArrowInvalid):
                continue
            v = md.get(b"tcpsnap.last_seq")
            if v is not None:
                try:
                    return int(v)
                except ValueError:
                    continue
    return None
