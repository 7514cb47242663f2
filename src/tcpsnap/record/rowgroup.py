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
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._arrow import Part, wrap_part
from .._rowstore import Columns, put_columns, repeat_row, spread
from . import thrift as th
from .parquet import shift_row_group, split_parquet

__all__ = ["RowGroupStore", "encode_row_group"]

# FileMetaData.row_groups, RowGroup.columns / total_byte_size / total_compressed_size,
# ColumnChunk.meta_data, ColumnMetaData.statistics (parquet.thrift)
_ROW_GROUPS, _COLUMNS, _TOTAL_BYTES, _TOTAL_COMPRESSED = 4, 1, 2, 6
_CC_META, _CMD_STATS = 3, 12


def _values_dtype(typ: pa.DataType) -> np.dtype:
    # what a column's Part values are: a dictionary's codes, a boolean's bytes, int64 times
    if pa.types.is_dictionary(typ):
        typ = typ.index_type
    if pa.types.is_boolean(typ):
        return np.dtype(bool)
    if pa.types.is_timestamp(typ):
        return np.dtype(np.int64)
    return np.dtype(typ.to_pandas_dtype())


#: ``_statistics_of_codes``: (column, type, the values used) -> Statistics struct
_STATS_CACHE: dict[tuple, tuple] = {}


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

    def __init__(self, schema: pa.Schema, capacity: int, per_snapshot: tuple[str, ...] = ()) -> None:
        self.schema = schema
        self.rows = 0
        self.capacity = 0
        # columns with one value per snapshot (``per_snapshot``): kept per snapshot, made
        # rows only when wrapped (``batch``), one at a time for the row group (``tables``)
        self._snap = [f.name in per_snapshot for f in schema]
        self._snap_cols = [i for i, snap in enumerate(self._snap) if snap]
        # their names (pa.Schema.names makes a new list of every name at each call)
        self._snap_names = [schema.names[i] for i in self._snap_cols]
        self._index = {f.name: i for i, f in enumerate(schema)}
        self._svals: list[np.ndarray] = [np.zeros(64, _values_dtype(f.type)) for f in schema]
        self._ends = np.zeros(64, np.int64)  # each snapshot's end row
        self.snapshots = 0
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
        self._held: tuple[Columns, Columns] | None = None  # repeat_row's view of the columns
        self._reserve(max(1, int(capacity)))

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the columns (resident only where written)."""
        return sum(v.nbytes for v in self._values) + sum(m.nbytes for m in self._valid if m is not None)

    def _reserve(self, capacity: int) -> None:
        self._held = None  # let the old arrays go
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
    def _put(dst: np.ndarray, r: int, end: int, src: np.ndarray | None, dirty: int) -> int:
        # write src (an array, or None: all True) into dst[r:end] unless it is all 0 and
        # dst holds 0 there already; the new dirty mark
        if src is None:
            dst[r:end] = True
            return max(dirty, end)
        if src.any():
            dst[r:end] = src
            return max(dirty, end)
        if r < dirty:
            dst[r:min(end, dirty)] = 0
        return dirty

    def append(self, parts: Mapping[str, Part], n: int, counts: np.ndarray | None = None,
               seqs: np.ndarray | None = None, snapshot_values: bool = False) -> None:
        """Copy one batch of ``n`` rows (a ``Part`` per column of the schema) after the
        rows held; ``counts`` and ``seqs``: its snapshots' rows and seq (for ``spans``;
        default: one snapshot, seq -1); ``snapshot_values``: the per-snapshot columns'
        parts hold one value per snapshot (``len(counts)``), not per row. KeyError for a
        missing column, ValueError for a part of another length."""
        r = self.rows
        if r + n > self.capacity:
            self._reserve(max(r + n, self.capacity + self.capacity // 2))
        end = r + n
        idx: list[int] = []
        srcs: list[np.ndarray] = []
        for i, f in enumerate(self.schema):
            values, null, dictionary = parts[f.name]
            if self._snap[i] and snapshot_values:
                if counts is None or len(values) != len(counts):
                    raise ValueError(f"column {f.name!r}: {len(values)} values for "
                                     f"{0 if counts is None else len(counts)} snapshots")
                self._put_snapshots(i, values, None, n)
                continue
            if len(values) != n:
                raise ValueError(f"column {f.name!r}: {len(values)} values for {n} rows")
            if self._snap[i]:
                self._put_snapshots(i, values, counts, n)
                continue
            if values.dtype == self._dtypes[i] and values.ndim == 1 and values.flags.c_contiguous:
                idx.append(i)       # copied below, with the others, in one compiled call
                srcs.append(values)
            else:
                self._dirty[i] = self._put(self._values[i], r, end, values, self._dirty[i])
            m = self._valid[i]
            if null is not None and m is None and null.any():
                m = self._valid[i] = _zeros(self.capacity, np.dtype(bool))
                self._held = None
                if r:
                    m[:r] = True  # the rows before were all valid
                self._vdirty[i] = r
            if m is not None:
                self._vdirty[i] = self._put(m, r, end, None if null is None else ~null, self._vdirty[i])
            if dictionary is not None:
                self._dict[i] = dictionary
        put_columns(self._values, self._dirty, idx, srcs, r)
        self.rows = end
        ends = r + np.cumsum(counts) if counts is not None else np.array([end], np.int64)
        k = self.snapshots
        if k + len(ends) > len(self._ends):
            self._ends = np.concatenate([self._ends, np.zeros(max(len(ends), len(self._ends)), np.int64)])
        self._ends[k:k + len(ends)] = ends
        self.snapshots = k + len(ends)
        self._marks.extend(zip(ends.tolist(), (np.asarray(seqs).tolist() if seqs is not None
                                               else [-1] * len(ends)), strict=True))

    def repeat_row(self, row: int, values: Mapping[str, int], seq: int) -> None:
        """One more row, a copy of row ``row`` (held) but for the int columns in
        ``values`` (a timestamp's int64 ns): one snapshot of one row, ``seq`` its seq.
        What ``append`` of that row's parts again would do, without them (a lone marker a
        second: ~30 columns of numpy calls, 0.25 ms cold, against a few us here)."""
        if not 0 <= row < self.rows:
            raise IndexError(f"row {row} of {self.rows}")
        r = self.rows
        if r + 1 > self.capacity:
            self._reserve(self.capacity + self.capacity // 2 + 1)
        k = self.snapshots
        given: list[int | None] = [None] * len(self._snap)
        for name, v in values.items():
            i = self._index[name]
            if not self._snap[i]:
                given[i] = v
        for i, name in zip(self._snap_cols, self._snap_names, strict=True):
            got = values.get(name)
            sv = self._svals[i]
            if k + 1 > len(sv):
                sv = self._svals[i] = np.concatenate([sv, np.zeros(len(sv), sv.dtype)])
            # the snapshot holding ``row``: its value (a column kept per snapshot)
            sv[k] = got if got is not None else sv[int(np.searchsorted(self._ends[:k], row, side="right"))]
        # every other column in one compiled call: a Python loop over ~30-75 columns was
        # ~0.1 ms a marker, cold (benchmarks/RESULTS.md, "Writer cost in full mode", session 9)
        held = self.held_columns()
        repeat_row(held[0], self._dirty, held[1], self._vdirty, given, row, r)
        self.rows = r + 1
        if k + 1 > len(self._ends):
            self._ends = np.concatenate([self._ends, np.zeros(len(self._ends), np.int64)])
        self._ends[k] = r + 1
        self.snapshots = k + 1
        self._marks.append((r + 1, seq))

    def held_columns(self) -> tuple[Columns, Columns]:
        """The columns' values and validities (those not kept per snapshot) as
        ``Columns`` for ``repeat_row`` (and ``tcpsnap._quiet``), made at the first call
        and held until the store allocates again."""
        if self._held is None:
            self._held = (Columns([None if snap else v for snap, v in zip(self._snap, self._values, strict=True)]),
                          Columns([None if snap else m for snap, m in zip(self._snap, self._valid, strict=True)]))
        return self._held

    def _put_snapshots(self, i: int, values: np.ndarray, counts: np.ndarray | None, n: int) -> None:
        # a per-snapshot column: the value of each snapshot's first row (an empty
        # snapshot's is any: it has no row to show it); counts None: ``values`` are
        # those already
        if counts is None:
            v = values
        else:
            first = np.cumsum(counts) - counts
            v = values[np.minimum(first, n - 1)]
        k = self.snapshots
        sv = self._svals[i]
        if k + len(v) > len(sv):
            sv = self._svals[i] = np.concatenate([sv, np.zeros(max(len(v), len(sv)), sv.dtype)])
        sv[k:k + len(v)] = v

    def _rows_of(self, i: int, start: int, stop: int) -> np.ndarray:
        # a per-snapshot column's values for rows start:stop, filled in C without the GIL
        # (np.repeat held it, the page faults of its fresh output included; ~30 us a column
        # of 128Ki rows hot against ~22 here: benchmarks/RESULTS.md, session 9)
        sv = self._svals[i]
        if sv.dtype.itemsize != 8:   # pragma: no cover - the clocks and seq are 8 bytes wide
            ends = self._ends[:self.snapshots]
            a = int(np.searchsorted(ends, start, side="right"))
            b = int(np.searchsorted(ends, stop, side="left"))
            hi = np.minimum(ends[a:b + 1], stop)
            lo = np.maximum(np.concatenate([ends[a - 1:a] if a else np.zeros(1, np.int64), ends[a:b]]), start)
            return np.repeat(sv[a:b + 1], np.maximum(hi - lo, 0))
        out = np.empty(stop - start, sv.dtype)
        spread(sv.view(np.int64), self._ends, self.snapshots, start, stop, out.view(np.int64))
        return out

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
        arrays = [self._array(i, start, stop) for i in range(len(self._types))]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _array(self, i: int, start: int, stop: int) -> pa.Array:
        if self._snap[i]:
            return wrap_part(self._types[i], self._rows_of(i, start, stop), None, self._dict[i])
        m = self._valid[i]
        return wrap_part(self._types[i], self._values[i][start:stop], None, self._dict[i],
                         valid=None if m is None else m[start:stop])

    def tables(self) -> Iterator[pa.Table]:
        """All rows held, as tables that hold the schema's columns between them: the
        columns kept per row (sharing this memory), then each per-snapshot column alone,
        made rows as it is asked for (``encode_row_group`` encodes one at a time). Alone:
        the four together would save ~1 ms of CPU a row group (three Parquet writers fewer)
        but hold ~4.5 MiB more at once in a row group of the recorder's 128Ki rows (not
        measured apart from another change: benchmarks/RESULTS.md, "Writer cost in full
        mode (session 8)")."""
        rows = [i for i, snap in enumerate(self._snap) if not snap]
        yield pa.Table.from_arrays([self._array(i, 0, self.rows) for i in rows],
                                   schema=pa.schema([self.schema.field(i) for i in rows]))
        for i, snap in enumerate(self._snap):
            if snap:
                yield pa.Table.from_arrays([self._array(i, 0, self.rows)],
                                           schema=pa.schema([self.schema.field(i)]))

    def reset(self, capacity: int | None = None) -> None:
        """Empty, for the next row group (its dictionaries start afresh too). With
        ``capacity`` smaller than now (a memory limit), the columns are made that small."""
        self.rows = 0
        self.snapshots = 0
        self._marks.clear()
        self._dict = [None] * len(self.schema)
        if capacity is not None and capacity < self.capacity:
            self._held = None
            self._values = [np.zeros(0, dt) for dt in self._dtypes]
            self._valid = [None] * len(self.schema)
            self._reserve(max(1, int(capacity)))


def _sub_kwargs(kw: dict, names: list[str]) -> dict:
    # the file's Parquet writer options for a table of some of its columns
    out = dict(kw)
    for key in ("use_dictionary", "write_statistics"):
        if isinstance(kw.get(key), list):
            out[key] = [c for c in kw[key] if c in names]
    if "column_encoding" in kw:
        enc = {c: e for c, e in kw["column_encoding"].items() if c in names}
        if enc:
            out["column_encoding"] = enc
        else:
            del out["column_encoding"]
    return out


def _encode_one(t: pa.Table, kw: dict) -> tuple[memoryview, dict]:
    # ``t`` as one row group by a Parquet writer of its own: its data bytes and RowGroup struct
    sink = pa.BufferOutputStream()
    w = pq.ParquetWriter(sink, t.schema, **kw)
    try:
        w.write_table(t, row_group_size=max(t.num_rows, 1))
    finally:
        w.close()
    body, footer = split_parquet(sink.getvalue())
    (rg,) = th.decode_struct(footer)[_ROW_GROUPS][1][1]
    return body, rg


def _statistics_of_codes(kw: dict, t: pa.Table) -> dict[str, tuple]:
    """``{column: Statistics struct}`` for the dictionary columns of ``t`` with statistics
    in ``kw`` (``kind``, ``host``, ``boot_id``) whose codes are found cheaply: one code
    (host, boot: min = max) or int8 codes (kind: counted). The statistics are those of a
    table of the values the codes use, each once: what the writer computes from every
    row's code (a hash of each row: a quarter of the row group's encoding time for three
    small columns), as it writes them (same min, max, flags), null count 0 (only columns
    without nulls). Columns not taken here keep the writer's own."""
    want = kw.get("write_statistics")
    if not isinstance(want, list):
        return {}
    out: dict[str, tuple] = {}
    for name in want:
        typ = t.schema.field(name).type
        col = t.column(name)
        if not pa.types.is_dictionary(typ) or col.num_chunks != 1 or col.null_count or not len(col):
            continue
        a = col.chunk(0)
        codes = np.frombuffer(a.indices.buffers()[1], _values_dtype(typ), count=len(a) + a.offset)[a.offset:]
        d = a.dictionary
        if codes.dtype == np.int8 and len(d) <= 8:  # kind: a few codes, a pass each
            used = [c for c in range(len(d)) if bool((codes == c).any())]
        else:
            lo, hi = int(codes.min()), int(codes.max())
            if lo != hi or not 0 <= lo < len(d):
                continue
            used = [lo]
        if not used:
            continue
        # the dictionary's own bytes, not its values as Python objects (no pyarrow
        # scalars: code pages and objects a recorder otherwise never touches)
        key = (name, str(typ), tuple(used), d.offset, len(d),
               tuple(b"" if b is None else b.to_pybytes() for b in d.buffers()))
        stats = _STATS_CACHE.get(key)
        if stats is None:  # once per value set: a tiny writer's footer is ~0.8 ms
            tiny = pa.table({name: pa.DictionaryArray.from_arrays(pa.array(np.array(used), typ.index_type), d)})
            _, rg = _encode_one(tiny, {**_sub_kwargs(kw, [name]), "write_statistics": [name]})
            try:
                stats = rg[_COLUMNS][1][1][0][_CC_META][1][_CMD_STATS]
            except KeyError:
                continue
            if len(_STATS_CACHE) >= 256:
                _STATS_CACHE.clear()
            _STATS_CACHE[key] = stats
        out[name] = (stats[0], dict(stats[1]))  # its fields are bytes and ints: nothing shared changes
    return out


def encode_row_group(kw: dict, names: list[str], tables: Iterable[pa.Table]) -> tuple[bytearray, dict]:
    """One Parquet row group from ``tables`` that hold its columns between them (each one
    encoded on its own, so that only one table's Arrow data need exist at a time), with
    the Parquet writer options ``kw`` of the whole schema (``parquet.writer_kwargs``):
    ``(data, row group)``, the row group's offsets as if ``data`` followed the file's
    leading magic (``ParquetAppender.append_encoded`` moves them). Its columns are listed
    in ``names``' order, whatever the order of their bytes."""
    data = bytearray()
    chunks: dict[str, dict] = {}
    merged: dict | None = None
    total = compressed = 0
    for t in tables:
        sub = _sub_kwargs(kw, t.schema.names)
        own = _statistics_of_codes(sub, t)
        if own:
            sub["write_statistics"] = [c for c in sub["write_statistics"] if c not in own]
        body, rg = _encode_one(t, sub)
        shift_row_group(rg, len(data), 0)
        data += body
        del body
        chunks.update(zip(t.schema.names, rg[_COLUMNS][1][1], strict=True))
        for name, stats in own.items():
            chunks[name][_CC_META][1][_CMD_STATS] = stats
        total += rg[_TOTAL_BYTES][1]
        compressed += rg.get(_TOTAL_COMPRESSED, (th.T_I64, 0))[1]
        if merged is None:
            merged = rg
    if merged is None or set(chunks) != set(names):
        raise ValueError(f"columns {sorted(set(names) - set(chunks))} missing from the row group")
    merged[_COLUMNS] = (th.T_LIST, (th.T_STRUCT, [chunks[n] for n in names]))
    merged[_TOTAL_BYTES] = (th.T_I64, total)
    if _TOTAL_COMPRESSED in merged:
        merged[_TOTAL_COMPRESSED] = (th.T_I64, compressed)
    return data, merged
