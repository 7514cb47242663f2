"""The row group being formed: one preallocated array per column, reused row group after row group.

The writer copies each batch's columns (``tcpsnap._arrow.Part``: values, null mask,
dictionary) into place here, and wraps slices of these arrays as Arrow without copying:
the rows not yet durable for a journal append, all of them for the row group. Before,
every batch became Arrow arrays of its own, kept in a list and, for the row group, read
back from the journal: a row group of per-batch allocations freed in pieces, held twice
while it was assembled (benchmarks/RESULTS.md, "The writer's memory and small batches").
Here the memory a row group needs is allocated once, resident where written, and reused.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from .._arrow import Part, wrap_part

__all__ = ["RowGroupStore"]


def _values_dtype(typ: pa.DataType) -> np.dtype:
    # what a column's Part values are: a dictionary's codes, a boolean's bytes, int64 times
    if pa.types.is_dictionary(typ):
        typ = typ.index_type
    if pa.types.is_boolean(typ):
        return np.dtype(bool)
    if pa.types.is_timestamp(typ):
        return np.dtype(np.int64)
    return np.dtype(typ.to_pandas_dtype())


def _zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """``n`` zeros of ``dtype`` on fresh pages: an anonymous mapping of its own (the kernel's
    zero page until written), not the C heap, whose calloc may hand back (and clear) pages
    freed earlier, whatever the mmap threshold."""
    nbytes = n * dtype.itemsize
    if nbytes < 1 << 16:
        return np.zeros(n, dtype)
    # private: a shared anonymous mapping (mmap's default) is shmem, charged as RssShmem
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), dtype, count=n)


class RowGroupStore:
    """The rows of one row group, column by column (``schema``'s), ``rows`` of them so far.

    ``capacity`` rows are allocated at once, as zeros (anonymous mappings: fresh pages that
    become resident only when written), and reused for the next row group; a batch that
    does not fit grows every column to what it needs (a row group ends after the batch
    that fills it, so it holds up to a batch more than the writer's row-group size).
    ``append`` copies a batch's parts in; ``batch(start, stop)`` is a record batch of those
    rows that *shares* this memory: use it before the next ``append`` or ``reset``. A
    column's dictionary is the latest batch's (a column's codes stay valid as its
    dictionary grows: ``BatchEncoder``).

    Rows of 0 are not written where the column still holds 0 there (never written since
    it was allocated): a column that is always 0 or always null (host and boot codes,
    scope ids, container and pod columns on a host without containers) never becomes
    resident, whatever its type. A column's validity (False: null) is allocated the first
    time one of its rows is null, by the same rule.
    """

    def __init__(self, schema: pa.Schema, capacity: int) -> None:
        self.schema = schema
        self.rows = 0
        self.capacity = 0
        self._types = [f.type for f in schema]
        self._dtypes = [_values_dtype(t) for t in self._types]
        k = len(schema)
        self._values: list[np.ndarray] = [np.zeros(0, dt) for dt in self._dtypes]
        self._valid: list[np.ndarray | None] = [None] * k
        # rows [0, dirty) of a column's values (validity) may hold other than 0 (False)
        self._dirty = [0] * k
        self._vdirty = [0] * k
        self._dict: list[pa.Array | None] = [None] * k
        self._marks: list[tuple[int, int]] = []  # (end row, seq) of each snapshot appended
        self._reserve(max(1, int(capacity)))

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the columns (resident only where written)."""
        return sum(v.nbytes for v in self._values) + sum(m.nbytes for m in self._valid if m is not None)

    def _reserve(self, capacity: int) -> None:
        r = self.rows
        for i, old in enumerate(self._values):
            new = _zeros(capacity, self._dtypes[i])
            new[:r] = old[:r]
            self._values[i] = new
            self._dirty[i] = r
            m = self._valid[i]
            if m is not None:
                grown = _zeros(capacity, np.dtype(bool))
                grown[:r] = m[:r]
                self._valid[i] = grown
                self._vdirty[i] = r
        self.capacity = capacity

    @staticmethod
    def _put(dst: np.ndarray, r: int, end: int, src: np.ndarray | bool, dirty: int) -> int:
        # write src (an array, or True for all) into dst[r:end] unless it is all 0 and
        # dst holds 0 there already; the new dirty mark
        if src is True or src.any():
            dst[r:end] = src
            return max(dirty, end)
        if r < dirty:
            dst[r:min(end, dirty)] = 0
        return dirty

    def append(self, parts: Mapping[str, Part], n: int, counts: np.ndarray | None = None,
               seqs: np.ndarray | None = None) -> None:
        """Copy one batch of ``n`` rows (a ``Part`` per column of the schema) after the
        rows held; ``counts`` and ``seqs``: its snapshots' rows and seq (for ``spans``;
        default: one snapshot, seq -1). KeyError for a missing column, ValueError for a
        part of another length."""
        r = self.rows
        if r + n > self.capacity:
            self._reserve(max(r + n, self.capacity + self.capacity // 2))
        end = r + n
        for i, f in enumerate(self.schema):
            values, null, dictionary = parts[f.name]
            if len(values) != n:
                raise ValueError(f"column {f.name!r}: {len(values)} values for {n} rows")
            self._dirty[i] = self._put(self._values[i], r, end, values, self._dirty[i])
            m = self._valid[i]
            if null is not None and m is None and null.any():
                m = self._valid[i] = _zeros(self.capacity, np.dtype(bool))
                if r:
                    m[:r] = True  # the rows before were all valid
                self._vdirty[i] = r
            if m is not None:
                self._vdirty[i] = self._put(m, r, end, True if null is None else ~null, self._vdirty[i])
            if dictionary is not None:
                self._dict[i] = dictionary
        self.rows = end
        if counts is None or seqs is None:
            self._marks.append((end, -1))
        else:
            self._marks.extend(zip((r + np.cumsum(counts)).tolist(), np.asarray(seqs).tolist(), strict=True))

    def spans(self, start: int, rows: int) -> list[tuple[int, int, int]]:
        """``(start, stop, last seq)`` of consecutive groups of whole snapshots from row
        ``start`` (a snapshot's end) to the end, each of at most ``rows`` rows unless one
        snapshot alone holds more: a journal frame each (a frame is kept or lost whole, so
        it must hold whole snapshots), so that encoding one holds little memory."""
        out: list[tuple[int, int, int]] = []
        a = start
        prev = (start, -1)
        for end, seq in self._marks:
            if end <= start:
                continue
            if end - a > rows and prev[0] > a:
                out.append((a, prev[0], prev[1]))
                a = prev[0]
            prev = (end, seq)
        if prev[0] > a:
            out.append((a, prev[0], prev[1]))
        return out

    def batch(self, start: int = 0, stop: int | None = None) -> pa.RecordBatch:
        """Rows ``start:stop`` (default: all held) as a record batch of the schema, sharing
        this store's memory (boolean columns and validities are packed into new bitmaps)."""
        stop = self.rows if stop is None else stop
        arrays = []
        for i, typ in enumerate(self._types):
            m = self._valid[i]
            arrays.append(wrap_part(typ, self._values[i][start:stop], None, self._dict[i],
                                    valid=None if m is None else m[start:stop]))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def reset(self, capacity: int | None = None) -> None:
        """Empty, for the next row group (its dictionaries start afresh too). With
        ``capacity`` smaller than now (a memory limit), the columns are made that small."""
        self.rows = 0
        self._marks.clear()
        self._dict = [None] * len(self.schema)
        if capacity is not None and capacity < self.capacity:
            self._values = [np.zeros(0, dt) for dt in self._dtypes]
            self._valid = [None] * len(self.schema)
            self._reserve(max(1, int(capacity)))
