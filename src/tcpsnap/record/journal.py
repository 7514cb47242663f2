"""The journal: rows not yet in a row group, as an Arrow IPC stream appended a record
batch per flush. A torn last message (kill -9 mid-append) is expected and dropped on
reading; the rows before it are kept."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa

__all__ = ["Journal", "read_journal", "unify_table"]


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


