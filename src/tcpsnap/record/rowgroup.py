"""The row group being formed: one preallocated array per column, reused row group after row group.

The writer copies each batch's columns (``tcpsnap._arrow.Part``: values, null mask,
dictionary) into place here, and wraps slices of these arrays as Arrow without copying:
the rows not yet durable for a journal append, all of them for the row group. Before,
every batch became Arrow arrays of its own, kept in a list and, for the row group, read
back from the journal: a row group of per-batch allocations freed in pieces, held twice
while it was assembled (benchmarks/RESULTS.md, "The writer's memory and small batches").
Here the memory a row group needs is allocated once, when first touched, and stays put.
"""

from __future__ import annotations

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


class RowGroupStore:
    """The rows of one row group, column by column (``schema``'s), ``rows`` of them so far.

    ``capacity`` rows are allocated at once (``np.empty``: pages become resident as rows
    fill them, and stay so for the next row group); a batch that does not fit grows every
    column to what it needs (a row group ends after the batch that fills it, so it holds
    up to a batch more than the writer's row-group size). ``append`` copies a batch's parts
    in; ``batch(start, stop)`` is a record batch of those rows that *shares* this memory: use
    it before the next ``append`` or ``reset``. A column's null mask is allocated the first
    time one of its rows is null; its dictionary is the latest batch's (a column's codes
    stay valid as its dictionary grows: ``BatchEncoder``)."""

    def __init__(self, schema: pa.Schema, capacity: int) -> None:
        self.schema = schema
        self.rows = 0
        self.capacity = 0
        self._types = [f.type for f in schema]
        self._dtypes = [_values_dtype(t) for t in self._types]
        self._values: list[np.ndarray] = [np.empty(0, dt) for dt in self._dtypes]
        self._null: list[np.ndarray | None] = [None] * len(schema)
        self._dict: list[pa.Array | None] = [None] * len(schema)
        self._reserve(max(1, int(capacity)))

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the columns (resident once rows touched them)."""
        return sum(v.nbytes for v in self._values) + sum(m.nbytes for m in self._null if m is not None)

    def _reserve(self, capacity: int) -> None:
        r = self.rows
        for i, old in enumerate(self._values):
            new = np.empty(capacity, self._dtypes[i])
            new[:r] = old[:r]
            self._values[i] = new
            m = self._null[i]
            if m is not None:
                grown = np.zeros(capacity, bool)
                grown[:r] = m[:r]
                self._null[i] = grown
        self.capacity = capacity

    def append(self, parts: Mapping[str, Part], n: int) -> None:
        """Copy one batch of ``n`` rows (a ``Part`` per column of the schema) after the
        rows held. KeyError for a missing column, ValueError for a part of another length."""
        r = self.rows
        if r + n > self.capacity:
            self._reserve(max(r + n, self.capacity + self.capacity // 2))
        end = r + n
        for i, f in enumerate(self.schema):
            values, null, dictionary = parts[f.name]
            if len(values) != n:
                raise ValueError(f"column {f.name!r}: {len(values)} values for {n} rows")
            self._values[i][r:end] = values
            m = self._null[i]
            if null is not None:
                if m is None:
                    m = self._null[i] = np.zeros(self.capacity, bool)
                m[r:end] = null
            elif m is not None:
                m[r:end] = False
            if dictionary is not None:
                self._dict[i] = dictionary
        self.rows = end

    def batch(self, start: int = 0, stop: int | None = None) -> pa.RecordBatch:
        """Rows ``start:stop`` (default: all held) as a record batch of the schema, sharing
        this store's memory (boolean columns and null masks are packed into new bitmaps)."""
        stop = self.rows if stop is None else stop
        arrays = []
        for i, typ in enumerate(self._types):
            m = self._null[i]
            arrays.append(wrap_part(typ, self._values[i][start:stop],
                                    None if m is None else m[start:stop], self._dict[i]))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def reset(self, capacity: int | None = None) -> None:
        """Empty, for the next row group (its dictionaries start afresh too). With
        ``capacity`` smaller than now (a memory limit), the columns are made that small."""
        self.rows = 0
        self._dict = [None] * len(self.schema)
        if capacity is not None and capacity < self.capacity:
            self._values = [np.empty(0, dt) for dt in self._dtypes]
            self._null = [None] * len(self.schema)
            self._reserve(max(1, int(capacity)))
