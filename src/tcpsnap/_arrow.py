"""The Arrow schema of a recording, and batches of captured rows into Arrow.

The schema is defined here once, from ``ROW_DTYPE`` and ``frame.COLUMNS``:

=============== ============================ ==========================================
column          type                         from
=============== ============================ ==========================================
timestamp       timestamp[ns, tz=UTC]        wall clock when the snapshot started
seq             int64                        snapshot number: unique and increasing in a
                                             folder, +1 per snapshot taken (a gap in seq
                                             is never a skipped slot: overruns take none)
kind            dictionary<int8, string>     what the row is: ``connection``; ``snapshot``,
                                             a row standing for a snapshot that holds no
                                             connection (so an empty snapshot is a 0, not
                                             a gap) and, in changes mode, each snapshot's
                                             marker; ``partial``, a changes-mode ``queues``
                                             event (only some fields mean something)
family ...      as ROW_DTYPE                 every row field of ``frame.COLUMNS``
state           dictionary<int8, string>     ``TcpState`` names, always all 12, in order
local_addr,     dictionary<int32, string>    as ``inet_ntop`` writes them
remote_addr
process         dictionary<int32, string>    owning process name, null when unknown
                                             (right after ``pid``)
cgroup_id       uint64                       Linux: inode of the socket's cgroup-v2
                                             directory (``INET_DIAG_CGROUP_ID``; a
                                             TIME_WAIT row: its connection's), 0 unknown
cgroup          dictionary<int32, string>    that cgroup's path under the v2 mount
container,      dictionary<int32, string>    the container id / Kubernetes pod uid the
pod_uid                                      path names (``tcpsnap._cgroup``), else null
netns           uint64                       Linux: inode of the socket's network
                                             namespace (``/proc/PID/ns/net``)
capture_ns      int64                        how long the snapshot took (monotonic ns)
monotonic_ns    int64                        the monotonic clock when the snapshot started:
                                             durations and gaps within one ``boot_id``
                                             (the wall clock can be stepped; this cannot)
host            dictionary<int32, string>    the recording machine's host name
boot_id         dictionary<int32, string>    its boot (``tcpsnap._host.boot_id``): socket
                                             cookies and monotonic times are per boot
=============== ============================ ==========================================

With internals (``record --tcp-info``, issue 14) every ``TCP_INFO_DTYPE`` field but
``estats`` follows ``boot_id``, named as in ``struct tcp_info`` without ``tcpi_``
(``TCP_INFO_COLUMNS``; units in ``tcpsnap._schema``): unsigned integers of the field's
width, null where the kernel did not send the field (its end in ``struct tcp_info`` past
``tcp_info_len``: older kernels, TIME_WAIT and request sockets) and in rows of snapshots
that sampled no internals (``--tcp-info-every``), never 0 for "unknown"; ``tcp_info_len``
itself is null only there. ``congestion`` is ``dictionary<int32, string>``, null when absent.

A ``snapshot`` row has family 0, no addresses, state CLOSED and ``inode`` = the number of
connections its snapshot holds. Naive queries keep ``WHERE kind = 'connection'``.
Recordings made before ``kind`` existed (schema version 1) hold connections only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from ._cgroup import CgroupResolver, default_resolver
from ._encode import dictionary_encode, split
from ._schema import ESTATS_FIELDS, ROW_DTYPE, STATE_NAMES, TCP_INFO_DTYPE, TCP_INFO_KERNEL
from .frame import CGROUP_COLUMNS, COLUMNS, format_address, with_cgroup_columns

__all__ = ["SCHEMA", "SCHEMA_VERSION", "rows_schema", "KINDS", "KIND_CONNECTION", "KIND_SNAPSHOT",
           "KIND_PARTIAL", "PER_SNAPSHOT", "build_schema", "BatchEncoder", "CGROUP_COLUMNS", "TCP_INFO_COLUMNS",
           "tcp_info_fields", "tcp_info_columns", "CongestionNames", "Part", "wrap_part", "wrap_parts",
           "array_part"]

#: Written as ``tcpsnap.schema_version`` in every file. 1: before ``kind``,
#: ``monotonic_ns``, ``host``, ``boot_id`` and empty-snapshot rows; 2: before ``cgroup_id``,
#: ``cgroup``, ``container``, ``pod_uid`` and ``netns``.
SCHEMA_VERSION = 3
#: The ``kind`` column's dictionary, in code order.
KINDS: tuple[str, ...] = ("connection", "snapshot", "partial")
KIND_CONNECTION, KIND_SNAPSHOT, KIND_PARTIAL = range(3)
#: The columns with one value per snapshot in a full-mode recording (``BatchEncoder.parts``).
PER_SNAPSHOT: tuple[str, ...] = ("timestamp", "seq", "capture_ns", "monotonic_ns")

TIMESTAMP = pa.timestamp("ns", tz="UTC")
STRING_DICT = pa.dictionary(pa.int32(), pa.string())
STATE_TYPE = pa.dictionary(pa.int8(), pa.string())
KIND_TYPE = pa.dictionary(pa.int8(), pa.string())


@functools.cache
def _state_dictionary() -> pa.Array:
    # made on first use, not at import: pyarrow's first ``pa.array`` call imports pandas
    # (~0.2-0.7 s) when it is installed, which a reader (``tcpsnap plot``) wants on
    # another thread than the one opening the recording, and the recorder not at all
    return pa.array(STATE_NAMES, pa.string())


_ADDR_FIELDS = ("local_addr", "remote_addr")
# frame.COLUMNS, with ``process`` right after ``pid`` (where frame puts it too)
_COLUMNS = tuple(c for c in COLUMNS if c != "process")
_COLUMNS = _COLUMNS[:_COLUMNS.index("pid") + 1] + ("process",) + _COLUMNS[_COLUMNS.index("pid") + 1:]
_COLUMNS = with_cgroup_columns(_COLUMNS)


_FIELDS: Mapping[str, tuple] = ROW_DTYPE.fields or {}  # name -> (dtype, offset): a structured dtype has them

#: What ``_encode.split`` copies out of each row: every row column but the derived ones,
#: and each address's first 4 bytes (an IPv4 address, hashed as one uint32).
_SPLIT = (tuple((name, _FIELDS[name][1], _FIELDS[name][0]) for name in _COLUMNS if name in _FIELDS)
          + tuple((name + "4", _FIELDS[name][1], np.uint32) for name in _ADDR_FIELDS))


def _fields() -> list[pa.Field]:
    out = [pa.field("timestamp", TIMESTAMP, nullable=False),
           pa.field("seq", pa.int64(), nullable=False),
           pa.field("kind", KIND_TYPE, nullable=False)]
    for name in _COLUMNS:
        if name == "state":
            out.append(pa.field(name, STATE_TYPE, nullable=False))
        elif name in _ADDR_FIELDS:
            out.append(pa.field(name, STRING_DICT, nullable=False))
        elif name == "process" or name in CGROUP_COLUMNS:
            out.append(pa.field(name, STRING_DICT, nullable=True))
        else:
            out.append(pa.field(name, pa.from_numpy_dtype(_FIELDS[name][0]), nullable=False))
    out.append(pa.field("capture_ns", pa.int64(), nullable=False))
    out.append(pa.field("monotonic_ns", pa.int64(), nullable=False))
    out.append(pa.field("host", STRING_DICT, nullable=False))
    out.append(pa.field("boot_id", STRING_DICT, nullable=False))
    return out


#: The internals columns, in schema order: TCP_INFO_DTYPE's fields but ``estats``.
TCP_INFO_COLUMNS: tuple[str, ...] = tuple(n for n in TCP_INFO_DTYPE.names or () if n != "estats")
_INFO_FIELDS: Mapping[str, tuple] = TCP_INFO_DTYPE.fields or {}


def tcp_info_fields() -> list[pa.Field]:
    """The Arrow fields of ``TCP_INFO_COLUMNS`` (all nullable)."""
    return [pa.field(n, STRING_DICT if n == "congestion" else pa.from_numpy_dtype(_INFO_FIELDS[n][0]))
            for n in TCP_INFO_COLUMNS]


def build_schema(metadata: dict[str, str] | None = None, *, tcp_info: bool = False) -> pa.Schema:
    """The recording schema, with ``metadata`` as its key-value metadata; ``tcp_info``:
    with the internals columns after ``boot_id``."""
    return pa.schema(_fields() + (tcp_info_fields() if tcp_info else []), metadata=metadata)


SCHEMA = build_schema()


def rows_schema() -> pa.Schema:
    """What ``tcpsnap.read`` returns: the recording schema without ``kind`` (it returns
    connections only)."""
    return pa.schema([f for f in SCHEMA if f.name != "kind"])


class _Dictionary:
    """A growing string dictionary: codes stay valid as it grows, so every batch of a
    row group can share the latest one."""

    __slots__ = ("codes", "strings", "_arrow")

    def __init__(self) -> None:
        self.codes: dict = {}
        self.strings: list[str] = []
        self._arrow: pa.Array | None = None

    def add(self, key, text: str) -> int:
        c = len(self.strings)
        self.codes[key] = c
        self.strings.append(text)
        self._arrow = None
        return c

    def arrow(self) -> pa.Array:
        if self._arrow is None:
            self._arrow = pa.array(self.strings, pa.string())
        return self._arrow


class CongestionNames:
    """The ``congestion`` column's dictionary, growing: codes stay valid, so the batches
    of a row group share the latest one (``BatchEncoder`` keeps one per row group)."""

    def __init__(self) -> None:
        self._d = _Dictionary()

    def encode(self, names: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
        """``names``: the ``congestion`` field (``S16``) of n rows -> dictionary<int32,
        string> of n, null where empty or ``null`` (bool per row) says so."""
        n = len(names)
        d = self._d
        raw = np.ascontiguousarray(names, dtype="S16")
        first, codes = dictionary_encode(raw)
        lut = np.empty(len(first) + 1, dtype=np.int32)
        for i, key in enumerate(raw[first].tolist()):
            key = key.ljust(16, b"\0")  # numpy's S16 strips trailing NULs
            c = d.codes.get(key)
            if c is None:
                c = -1 if key[0] == 0 else d.add(key, key.rstrip(b"\0").decode("ascii", "replace"))
            lut[i] = c
        idx = np.take(lut, codes) if n else np.empty(0, np.int32)
        mask = idx < 0
        if null is not None:
            mask |= null
            idx[mask] = 0
        return pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32(), mask=mask if mask.any() else None),
                                              d.arrow())


# each internals column's end in struct tcp_info (Linux) and its ESTATS struct bit (Windows)
_INFO_ENDS = {n: sum(TCP_INFO_KERNEL[n]) for n in TCP_INFO_COLUMNS if n in TCP_INFO_KERNEL}
_MAX_END = max(_INFO_ENDS.values())


def _field(rows: np.ndarray, name: str) -> np.ndarray:
    """A copy of one field of C-contiguous structured ``rows`` as a plain array: read through
    a strided view of the field's own integer type, 6x faster than copying ``rows[name]``
    (numpy copies a structured field element by element)."""
    dt, off = _INFO_FIELDS[name][:2]
    return np.ndarray((len(rows),), dt, buffer=rows, offset=off, strides=(rows.itemsize,)).copy()


def _validity(null: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    # an Arrow validity bitmap (None: no null) and its null count, made once per mask
    if null is None:
        return None, 0
    nc = int(np.count_nonzero(null))
    if nc == 0:
        return None, 0
    return pa.array(~null).buffers()[1], nc


def _info_validity(info: np.ndarray, sampled: np.ndarray | None) -> dict[str, tuple[pa.Buffer | None, int]]:
    # name -> (validity bitmap, null count). A Linux row has a field when tcp_info_len covers
    # its end in struct tcp_info; a Windows row (estats != 0) when the struct that fills it
    # was read; a row of an unsampled snapshot has none. Rows are nearly always whole (the
    # kernel's length covers every field) or empty (TIME_WAIT): then one bitmap serves every
    # column; other rows cost one mask per distinct end.
    lens = np.ascontiguousarray(info["tcp_info_len"])
    est = np.ascontiguousarray(info["estats"])
    unsampled = None if sampled is None or sampled.all() else ~sampled
    windows = est != 0
    any_win = bool(windows.any())
    sent = lens[lens > 0]
    whole = len(sent) == 0 or int(sent.min()) >= _MAX_END
    base = lens == 0
    if any_win:
        base &= ~windows
    if unsampled is not None:
        base |= unsampled
    shared = _validity(base)
    made: dict[tuple[int, int], tuple[pa.Buffer | None, int]] = {}
    out: dict[str, tuple[pa.Buffer | None, int]] = {}
    for name, end in _INFO_ENDS.items():
        bit = ESTATS_FIELDS.get(name, 0) if any_win else 0
        if whole and not any_win:
            out[name] = shared
            continue
        key = (0 if whole else end, bit)
        if key not in made:
            null = (lens < end) if not whole else base.copy()
            if any_win:
                null &= ~windows
                null |= windows & ((est & bit) == 0) if bit else windows
            if unsampled is not None:
                null |= unsampled
            made[key] = _validity(null)
        out[name] = made[key]
    return out


def tcp_info_columns(info: np.ndarray, sampled: np.ndarray | None = None,
                     congestion: CongestionNames | None = None) -> dict[str, pa.Array]:
    """``TCP_INFO_DTYPE`` rows -> ``{column: Arrow array}`` for every ``TCP_INFO_COLUMNS``
    name, typed as ``tcp_info_fields()``. A field the kernel did not send (its end in
    struct tcp_info past the row's ``tcp_info_len``; on Windows, its struct not read) is
    null, never 0. ``sampled`` (bool per row, default all True): False for rows of a
    snapshot that sampled no internals, null in every column. ``congestion``: the
    dictionary to extend (a new one by default)."""
    info = np.ascontiguousarray(info)
    n = len(info)
    valid = _info_validity(info, sampled)
    unsampled = None if sampled is None or sampled.all() else ~sampled
    cols: dict[str, pa.Array] = {}
    for name in TCP_INFO_COLUMNS:
        if name == "congestion":
            cols[name] = (congestion or CongestionNames()).encode(_field(info, name), unsampled)
            continue
        bitmap, nc = valid[name] if name != "tcp_info_len" else _validity(unsampled)
        values = _field(info, name)
        cols[name] = pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), n,
                                           [bitmap, pa.py_buffer(values)], null_count=nc)
    return cols


#: One column of a batch before it is Arrow: ``(values, null, dictionary)``: the values (a
#: dictionary column's int codes, a boolean column's bytes), a bool mask True where null (None:
#: no null) and a dictionary column's dictionary (None for the others). ``wrap_part`` makes it
#: the Arrow array without copying; ``record.rowgroup`` copies it into its row group's columns.
Part = tuple


def _bits(mask: np.ndarray) -> pa.Buffer:
    # an Arrow bitmap (LSB first) of a numpy bool mask
    return pa.py_buffer(np.packbits(mask, bitorder="little"))


def wrap_part(typ: pa.DataType, values: np.ndarray, null: np.ndarray | None,
              dictionary: pa.Array | None, valid: np.ndarray | None = None) -> pa.Array:
    """A :data:`Part` as an Arrow array of ``typ`` (n = ``len(values)``): the values wrapped
    without copying (C-contiguous; a boolean column's are bit-packed), a validity bitmap
    from ``null`` (or ``valid``, its inverse) where a row is null. ValueError (from
    pyarrow) for a dictionary column's code outside its dictionary."""
    n = len(values)
    validity, nc = None, 0
    if valid is not None:
        nc = n - int(np.count_nonzero(valid))
        if nc:
            validity = _bits(valid)
    elif null is not None:
        nc = int(np.count_nonzero(null))
        if nc:
            validity = _bits(~null)
    if pa.types.is_boolean(typ):
        return pa.Array.from_buffers(typ, n, [validity, _bits(values)], null_count=nc)
    if pa.types.is_dictionary(typ):
        idx = pa.Array.from_buffers(typ.index_type, n, [validity, pa.py_buffer(values)], null_count=nc)
        return pa.DictionaryArray.from_arrays(idx, dictionary)
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(values)], null_count=nc)


def array_part(a: pa.Array) -> Part:
    """An Arrow array of a fixed-width or dictionary type (not boolean) as a :data:`Part`
    (the values are a view of its buffer, the null mask a new array)."""
    n, off = len(a), a.offset
    dictionary = None
    if pa.types.is_dictionary(a.type):
        dictionary = a.dictionary
        a = a.indices
    bufs = a.buffers()
    dt = np.dtype(a.type.to_pandas_dtype()) if not pa.types.is_timestamp(a.type) else np.dtype(np.int64)
    values = np.frombuffer(bufs[1], dt, count=n + off)[off:] if n else np.empty(0, dt)
    null = None
    if a.null_count and bufs[0] is not None:
        null = np.unpackbits(np.frombuffer(bufs[0], np.uint8), count=n + off, bitorder="little")[off:] == 0
    return values, null, dictionary


def wrap_parts(schema: pa.Schema, parts: Mapping[str, Part]) -> pa.RecordBatch:
    """A record batch of ``schema`` from one :data:`Part` per field (``wrap_part``)."""
    return pa.RecordBatch.from_arrays([wrap_part(f.type, *parts[f.name]) for f in schema], schema=schema)


class BatchEncoder:
    """Captured rows of many snapshots -> one :data:`Part` per column of ``schema``
    (``parts``), or one Arrow record batch (``encode``).

    Addresses are hashed in C (17-byte keys: family + 16 address bytes) and only keys not
    seen before in this row group are formatted. ``reset()`` starts fresh dictionaries (at
    each row group, so a dictionary page holds only what it uses); until then a column's
    codes stay valid, and its latest dictionary serves every batch of the row group.
    """

    def __init__(self, schema: pa.Schema = SCHEMA, host: str = "", boot_id: str = "",
                 cgroups: CgroupResolver | None = None) -> None:
        self.schema = schema
        self._cgroups = cgroups if cgroups is not None else default_resolver()
        self._key = np.empty((0, 17), dtype=np.uint8)
        self._kinds = pa.array(KINDS, pa.string())
        self._host = pa.array([host], pa.string())
        self._boot = pa.array([boot_id], pa.string())
        self._tcp_info = "tcp_info_len" in schema.names
        self.reset()

    def reset(self) -> None:
        self._addr = {name: _Dictionary() for name in _ADDR_FIELDS}
        self._proc = _Dictionary()
        self._cg = {name: _Dictionary() for name in CGROUP_COLUMNS}
        self._cong = CongestionNames()

    def _addresses(self, name: str, col: dict[str, np.ndarray]) -> Part:
        fam = col["family"]
        n = len(fam)
        d = self._addr[name]
        if n == 0:
            return np.empty(0, np.int32), None, d.arrow()
        if (fam == 4).all():
            # IPv4 only (the common case): hash the 4 address bytes as one uint32
            words = col[name + "4"]
            first, inv = dictionary_encode(words)
            uniq = [b"\x04" + int(v).to_bytes(4, "little") + bytes(12) for v in words[first].tolist()]
        else:
            if len(self._key) < n:
                self._key = np.empty((max(n, 2 * len(self._key)), 17), dtype=np.uint8)
            key = self._key[:n]
            key[:, 0] = fam
            key[:, 1:] = col[name]
            first, inv = dictionary_encode(key)
            uniq = [bytes(k) for k in key[first]]
        lut = np.empty(len(uniq), dtype=np.int32)
        codes = d.codes
        for i, k in enumerate(uniq):
            c = codes.get(k)
            if c is None:
                c = d.add(k, format_address(k[0], k[1:]))
            lut[i] = c
        return np.take(lut, inv), None, d.arrow()

    def _process(self, codes: np.ndarray | None, names: list[str], n: int) -> Part:
        d = self._proc
        if codes is None or n == 0 or not names:
            return np.zeros(n, np.int32), np.ones(n, bool), d.arrow()
        lut = np.empty(len(names) + 1, dtype=np.int32)
        for i, name in enumerate(names):
            c = d.codes.get(name)
            lut[i] = d.add(name, name) if c is None else c
        lut[-1] = -1
        idx = np.take(lut, codes, mode="wrap")  # -1 (unknown) -> lut[-1] = -1
        mask = idx < 0
        return idx, mask if mask.any() else None, d.arrow()

    def _cgroup_columns(self, ids: np.ndarray) -> dict[str, Part]:
        # per distinct cgroup id first (few), then one gather per column over the rows
        inv, columns = self._cgroups.resolve_distinct(ids)
        out: dict[str, Part] = {}
        for name, (lut, strings) in zip(CGROUP_COLUMNS, columns, strict=True):
            d = self._cg[name]
            codes = np.array([d.codes[t] if t in d.codes else d.add(t, t) for t in strings] + [-1],
                             dtype=np.int32)
            small = codes[lut]                      # lut -1 (unknown) -> codes[-1] = -1
            if (small < 0).all():
                out[name] = np.zeros(len(inv), np.int32), np.ones(len(inv), bool), d.arrow()
                continue
            idx = small[inv]
            out[name] = idx, (idx < 0 if (small < 0).any() else None), d.arrow()
        return out

    def parts(self, rows: np.ndarray, counts: np.ndarray, timestamps: np.ndarray,
              seqs: np.ndarray, capture_ns: np.ndarray, proc_codes: np.ndarray | None = None,
              proc_names: list[str] | None = None, monotonic: np.ndarray | None = None,
              kinds: np.ndarray | None = None,
              tcp_info: tuple[np.ndarray, np.ndarray] | None = None, *,
              per_snapshot: bool = False, family0_snapshot: bool = False) -> dict[str, Part]:
        """``{column: Part}`` for every column of ``schema`` (the arguments: ``encode``).
        The values are new arrays, not views of ``rows``. ``per_snapshot``: the columns of
        ``PER_SNAPSHOT`` hold one value per snapshot (``len(counts)``), not per row (what
        ``record.rowgroup.RowGroupStore`` keeps of them: no row-long copies made and
        dropped). ``family0_snapshot`` (with ``kinds`` None): a row of family 0 is of kind
        ``snapshot`` (full mode's empty-snapshot and left-out-namespace rows), read from
        the column copied out anyway rather than from the 96-byte rows again."""
        n = len(rows)
        cols: dict[str, Part] = {}
        spread = (lambda v: np.asarray(v, np.int64)) if per_snapshot else (
            lambda v: np.repeat(np.asarray(v, np.int64), counts))
        cols["timestamp"] = spread(timestamps), None, None
        cols["seq"] = spread(seqs), None, None
        col = split(rows, _SPLIT)  # one pass over the rows, a new array per column
        if kinds is not None:
            kind_idx = np.ascontiguousarray(kinds, dtype=np.int8)
        elif family0_snapshot:
            kind_idx = (col["family"] == 0).view(np.int8) * np.int8(KIND_SNAPSHOT)
        else:
            kind_idx = np.zeros(n, np.int8)
        cols["kind"] = kind_idx, None, self._kinds
        cg = self._cgroup_columns(col["cgroup_id"])
        for name in _COLUMNS:
            if name in cg:
                cols[name] = cg[name]
            elif name == "state":
                st = col["state"].view(np.int8)
                st -= 1
                cols[name] = st, None, _state_dictionary()
            elif name in _ADDR_FIELDS:
                cols[name] = self._addresses(name, col)
            elif name == "process":
                cols[name] = self._process(proc_codes, proc_names or [], n)
            else:
                cols[name] = col[name], None, None
        cols["capture_ns"] = spread(capture_ns), None, None
        cols["monotonic_ns"] = spread(np.zeros(len(counts), np.int64) if monotonic is None else monotonic), None, None
        zero = np.zeros(n, np.int32)
        cols["host"] = zero, None, self._host
        cols["boot_id"] = zero, None, self._boot
        if self._tcp_info:
            info, sampled = tcp_info if tcp_info is not None else (
                np.zeros(n, TCP_INFO_DTYPE), np.zeros(n, bool))
            for name, a in tcp_info_columns(info, sampled, self._cong).items():
                cols[name] = array_part(a)
        return cols

    def encode(self, rows: np.ndarray, counts: np.ndarray, timestamps: np.ndarray,
               seqs: np.ndarray, capture_ns: np.ndarray, proc_codes: np.ndarray | None = None,
               proc_names: list[str] | None = None, monotonic: np.ndarray | None = None,
               kinds: np.ndarray | None = None,
               tcp_info: tuple[np.ndarray, np.ndarray] | None = None) -> pa.RecordBatch:
        """``rows``: the rows of len(counts) snapshots back to back, counts[i] of
        snapshot i; per-snapshot ``timestamps`` (UTC ns), ``seqs``, ``capture_ns`` and
        ``monotonic`` (ns; default: all 0); ``proc_codes``: per-row index into
        ``proc_names`` or -1; ``kinds``: per-row ``KINDS`` codes (default: all
        ``connection``); ``tcp_info``: ``(TCP_INFO_DTYPE rows, bool per row: sampled)``
        for a schema with the internals columns (None there: all null)."""
        return wrap_parts(self.schema, self.parts(rows, counts, timestamps, seqs, capture_ns, proc_codes,
                                                  proc_names, monotonic, kinds, tcp_info))
