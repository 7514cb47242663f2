"""The journal: rows not yet in a row group.

It is an Arrow IPC stream (schema, dictionary deltas, one record batch per flush) cut
into frames, one per append, each compressed with zstd and checked by a CRC::

    b"TSNPJRN1"  then per append:
    <u32 payload length> <u64 raw length> <u32 crc32 of those 12 bytes> <u32 crc32 of payload> payload

A *repeat* frame (``append_repeat``; raw length with bit 63 set, the low bits its row count
k) is not Arrow: it says "the last record batch's one row again, k times, with these int64
columns replaced" (``<u16 m> m x <u16 column index>`` then k x m ``<i64>``, uncompressed).
Changes mode at a slow interval writes one snapshot marker per flush; as a repeat frame it
costs a few hundred bytes of Python instead of a ~35-column Arrow frame.

Reading stops at the first frame that is torn (the file ends inside it: kill -9
mid-append, expected) or does not check (bit rot: reported); the frames before it are
kept. A frame may claim at most ``max_raw`` bytes once decompressed, and the
whole journal at most that too, so a crafted leftover cannot make recovery allocate
without bound. Journals of earlier releases (a bare IPC stream) are still read.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from .safedir import SafeDir

__all__ = ["Journal", "read_journal", "unify_table", "MAGIC", "max_raw_bytes", "repeat_template"]

MAGIC = b"TSNPJRN1"
_FRAME = struct.Struct("<IQII")  # payload length, raw length, header crc32, payload crc32
_CODEC = "zstd"
_LEVEL = 1  # the journal is short-lived: speed over ratio
_IPC_CONTINUATION = b"\xff\xff\xff\xff"
_REPEAT = 1 << 63  # raw length's flag: a repeat frame (see the module doc)
#: what a repeat frame's row counts for against ``max_raw`` (as an Arrow row: recovery
#: makes it one)
_REPEAT_ROW_BYTES = 512


def max_raw_bytes(row_group_rows: int) -> int:
    """What a journal may hold once decompressed: it holds fewer than
    ``row_group_rows`` rows (then it becomes a row group), each well under 512 bytes
    of Arrow data (about 120 without internals, 330 with ``--tcp-info``'s columns)."""
    return max(64 << 20, row_group_rows * 512)


class _Collect:
    """The IPC writer's sink: keeps what each write_batch produced, for one frame. An
    ``io.BytesIO`` underneath, so that the ~60 writes of a frame (one per buffer) are C
    calls, not Python frames (a Python ``write`` cost ~0.1 ms a frame)."""

    def __init__(self) -> None:
        self.io = io.BytesIO()

    def take(self) -> bytes:
        out = self.io.getvalue()
        self.io.seek(0)
        self.io.truncate()
        return out


class Journal:
    """Rows not yet in a row group, appended a record batch at a time (see the module doc).

    ``Journal(path, schema)`` creates ``path`` (never over an existing name or through a
    link, mode 0644) in ``folder`` (a :class:`SafeDir`, by default ``path``'s parent).
    """

    def __init__(self, path: Path, schema: pa.Schema, fsync: bool = False,
                 folder: SafeDir | None = None) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.rows = 0
        self.batches = 0
        self._broken = False
        self._own_dir = folder is None
        self._dir = folder or SafeDir.open(self.path.parent)
        self._fd = -1
        try:
            self._fd = self._dir.create(self.path.name)
            self._sink = _Collect()
            self._writer = pa.ipc.new_stream(
                pa.PythonFile(self._sink.io, mode="w"), schema,
                options=pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True))
            self._pos = 0
            self._write(MAGIC)
        except BaseException:
            self.abandon()
            raise
        self.nbytes = self._pos
        self._codec = pa.Codec(_CODEC, _LEVEL)
        self._full = False  # a record batch was appended: repeat frames have one to repeat

    def _write(self, data: bytes) -> None:
        from .layout import pwrite_all

        pwrite_all(self._fd, data, self._pos)  # straight to the fd: survives kill -9 at once
        self._pos += len(data)

    def append(self, batch: pa.RecordBatch) -> None:
        """Append ``batch`` as one frame, durable against kill -9 when this returns.
        A failed write (disk full) leaves the journal as it was before the call and
        unusable for more (the IPC stream already counts the batch's dictionary deltas
        as sent): the writer stops, and recovery reads every frame before it."""
        if self._broken:
            raise OSError(errno.EIO, "journal unusable after a failed write", str(self.path))
        self._writer.write_batch(batch)
        raw = self._sink.take()
        self._frame(self._codec.compress(raw, asbytes=True), len(raw))
        self.rows += batch.num_rows
        self.batches += 1
        self._full = batch.num_rows == 1

    def append_repeat(self, columns: list[int], values: np.ndarray) -> None:
        """Append a repeat frame: the last appended record batch, which must be of one
        row (ValueError otherwise), again ``len(values)`` times, each with the columns at
        indices ``columns`` set to that row of ``values`` (int64, shape ``(k, m)``: a
        timestamp column takes its int64 ns). Durable against kill -9 when this returns,
        as ``append``; ``read_journal`` gives these rows as one record batch."""
        if not self._full:
            raise ValueError("a repeat frame needs a one-row record batch before it")
        if self._broken:
            raise OSError(errno.EIO, "journal unusable after a failed write", str(self.path))
        v = np.ascontiguousarray(values, dtype="<i8")
        k, m = v.shape
        if m != len(columns) or k == 0:
            raise ValueError(f"values of shape {v.shape} for {len(columns)} columns")
        payload = struct.pack(f"<H{m}H", m, *columns) + v.tobytes()
        self._frame(payload, _REPEAT | k)
        self.rows += k

    def _frame(self, payload: bytes, raw_len: int) -> None:
        # a frame of ``payload`` at the end (``raw_len``: the raw length or a repeat
        # frame's flag and rows); ``tcpsnap._quiet`` writes a one-row repeat frame as
        # this does, its head and the payload's columns from ``repeat_template``
        head = _FRAME.pack(len(payload), raw_len, 0, 0)[:12]
        pos = self._pos
        try:
            self._write(head + struct.pack("<II", zlib.crc32(head), zlib.crc32(payload)) + payload)
        except OSError:
            self._broken = True
            self._pos = pos
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, pos)  # no torn frame left behind: it reads as clean
            raise
        self.nbytes = self._pos
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the fd; the frames written stay as they are."""
        self.abandon()

    def abandon(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._own_dir:
            self._dir.close()


def repeat_template(columns: list[int]) -> tuple[bytes, bytes]:
    """A repeat frame of one row for ``columns`` (as ``Journal.append_repeat`` writes it)
    in the two parts that do not change: ``(head, prefix)``, its first 16 bytes (payload
    length, raw length, the CRC of those 12) and its payload's first ``2 + 2 * m`` bytes
    (``m``, then the column indices); the payload's CRC and its ``m`` int64 values follow."""
    m = len(columns)
    head = _FRAME.pack(2 + 2 * m + 8 * m, _REPEAT | 1, 0, 0)[:12]
    return head + struct.pack("<I", zlib.crc32(head)), struct.pack(f"<H{m}H", m, *columns)


class _Frames(io.RawIOBase):
    """A journal's IPC stream, decompressed a frame at a time as the IPC reader asks for
    it (so reading back holds the batches once, not the whole stream beside them).
    ``status`` ends as ``"ok"``, ``"torn"`` (the file ends inside the last frame) or
    ``"corrupt"`` (a frame that does not check, or more than ``max_raw`` bytes)."""

    def __init__(self, data: bytes, max_raw: int) -> None:
        self._data = data
        self._i = len(MAGIC)
        self._max = max_raw
        self._total = 0
        self._cur = b""
        self._pos = 0
        self._codec = pa.Codec(_CODEC)
        self.status = "ok"
        self.frames = 0
        #: repeat frames read: (Arrow frames before it, column indices, int64 values (k, m))
        self.repeats: list[tuple[int, tuple[int, ...], np.ndarray]] = []

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        while True:
            got = self._frame()
            if got is not None:
                return got

    def _frame(self) -> bool | None:
        # the next frame: True (Arrow bytes to read), False (the end), None (a repeat
        # frame, kept in ``repeats``: read on)
        data, i = self._data, self._i
        if i >= len(data) or self.status != "ok":
            return False
        if i + _FRAME.size > len(data):
            self.status = "torn"
            return False
        n, raw_len, hcrc, pcrc = _FRAME.unpack_from(data, i)
        if zlib.crc32(data[i:i + 12]) != hcrc:
            self.status = "corrupt"
            return False
        payload = data[i + _FRAME.size:i + _FRAME.size + n]
        if len(payload) != n:
            self.status = "torn"
            return False
        if zlib.crc32(payload) != pcrc:
            self.status = "corrupt"
            return False
        if raw_len & _REPEAT:
            k = raw_len & ~_REPEAT
            self._total += k * _REPEAT_ROW_BYTES
            rep = self._repeat(payload, k)
            if rep is None or self._total > self._max:
                self.status = "corrupt"
                return False
            self.repeats.append((self.frames, *rep))
            self._i = i + _FRAME.size + n
            return None
        self._total += raw_len
        if self._total > self._max:
            self.status = "corrupt"
            return False
        try:
            self._cur = self._codec.decompress(payload, decompressed_size=raw_len, asbytes=True)
        except (pa.ArrowException, ValueError, OSError):
            self.status = "corrupt"
            return False
        self._pos = 0
        self._i = i + _FRAME.size + n
        self.frames += 1
        return True

    @staticmethod
    def _repeat(payload: bytes, k: int) -> tuple[tuple[int, ...], np.ndarray] | None:
        # a repeat frame's (column indices, values), or None where it does not add up
        if len(payload) < 2:
            return None
        (m,) = struct.unpack_from("<H", payload)
        if m == 0 or len(payload) != 2 + 2 * m + 8 * m * k:
            return None
        cols = struct.unpack_from(f"<{m}H", payload, 2)
        return cols, np.frombuffer(payload, "<i8", offset=2 + 2 * m).reshape(k, m)

    def readinto(self, b) -> int:
        while self._pos >= len(self._cur):
            if not self._next():
                return 0
        mv = memoryview(b).cast("B")
        k = min(len(mv), len(self._cur) - self._pos)
        mv[:k] = self._cur[self._pos:self._pos + k]
        self._pos += k
        return k


def read_journal(path: Path, folder: SafeDir | None = None, max_raw: int = 256 << 20,
                 detail: bool = False) -> tuple:
    """The intact record batches of a journal: ``(schema, batches, complete)``, never
    read through a link. A torn or corrupt tail is dropped and ``complete`` is False.
    With ``detail``, a fourth item says which: ``"ok"``, ``"empty"`` (no rows: created
    and never written, or cut inside its header), ``"torn"``, ``"corrupt"``, or
    ``"foreign"`` (not a tcpsnap journal at all)."""
    path = Path(path)

    def out(schema: pa.Schema | None, batches: list, status: str) -> tuple:
        complete = status in ("ok", "empty") and schema is not None
        return (schema, batches, complete, status) if detail else (schema, batches, complete)

    own = folder is None
    try:
        d = folder or SafeDir.open(path.parent)
    except OSError:
        return out(None, [], "foreign")
    try:
        data = d.read_bytes(path.name, limit=max_raw + (1 << 20))
    except OSError:
        return out(None, [], "foreign")
    finally:
        if own:
            d.close()
    frames: _Frames | None = None
    if data.startswith(MAGIC):
        frames = _Frames(data, max_raw)
        source = pa.PythonFile(frames, mode="r")
    elif MAGIC.startswith(data):
        return out(None, [], "empty")
    elif data.startswith(_IPC_CONTINUATION):
        source = pa.BufferReader(data)  # a journal of an earlier release: a bare IPC stream
    else:
        return out(None, [], "foreign")

    def status(failed: bool) -> str:
        if frames is not None and frames.status != "ok":
            return frames.status  # the frames' own verdict explains a short stream
        return "torn" if failed else "ok"

    try:
        reader = pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError, ValueError):
        st = status(True)
        return out(None, [], "empty" if st == "torn" and frames is not None and not frames.frames
                   and frames.status == "ok" else st)
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            failed = False
            break
        except (pa.ArrowException, OSError, ValueError):
            failed = True
            break
    if frames is not None and frames.repeats:
        batches, bad = _with_repeats(reader.schema, batches, frames.repeats)
        if bad:
            return out(reader.schema, batches, "corrupt")
    return out(reader.schema, batches, status(failed))


def _int64_like(typ: pa.DataType) -> bool:
    return typ in (pa.int64(), pa.uint64()) or (pa.types.is_timestamp(typ) or pa.types.is_duration(typ))


def _with_repeats(schema: pa.Schema, batches: list[pa.RecordBatch],
                  repeats: list[tuple[int, tuple[int, ...], np.ndarray]]) -> tuple[list, bool]:
    """``batches`` with each repeat frame's rows put in place (after the Arrow frames that
    came before it): ``(batches, bad)``, ``bad`` where a repeat frame does not fit (nothing
    of one row to repeat, a column out of range or not 8 bytes wide): the batches before it."""
    out: list[pa.RecordBatch] = []
    done = 0
    for after, cols, vals in repeats:
        if after > len(batches):
            break  # its Arrow frame before did not read: the tail is gone anyway
        out.extend(batches[done:after])
        done = after
        t = batches[after - 1] if after else None
        if t is None or t.num_rows != 1 or not all(c < t.num_columns and _int64_like(t.schema.field(c).type)
                                                  for c in cols):
            return out, True
        k = len(vals)
        arrays = [a.take(pa.array(np.zeros(k, np.int32))) for a in t.columns]
        for j, c in enumerate(cols):
            buf = pa.py_buffer(np.ascontiguousarray(vals[:, j]))
            arrays[c] = pa.Array.from_buffers(t.schema.field(c).type, k, [None, buf], null_count=0)
        out.append(pa.RecordBatch.from_arrays(arrays, schema=t.schema))
    out.extend(batches[done:])
    return out, False


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


