"""Changes mode, the reading side: a changes recording's events rebuilt into the rows a
full recording holds, exactly.

The contract (tested by ``tests/test_changes_property.py``): for every snapshot of a
changes recording, ``read(..., mode="full")`` and ``table_at`` return the same rows, every
column, as a full recording of the same capture -- in another order within the snapshot (the
kernel's dump order carries no meaning; rows come in the order they were first recorded).

The rebuild is vectorized: each non-closed event starts a "version" of its connection's row
that lasts until the next event of that connection or the next keyframe, whichever comes
first (a ``queues`` version takes its other fields from the connection's last whole row, a
``counters`` version too, but for its tcp_info columns);
versions are repeated over the snapshot markers they span (``numpy.repeat``, an int32 radix
order by snapshot) and taken from the Arrow table in one ``take``. The events themselves are
described in ``tcpsnap._events``.
"""

from __future__ import annotations

import logging

import numpy as np

from .._events import EV_CHANGED, EV_CLOSED, EV_COUNTERS, EV_KEYFRAME, EV_QUEUES, EVENTS
from .._order import stable_order
from .dataset import Recording, filter_expression, in_seq_order, time_filter

__all__ = ["is_changes", "event_codes", "rebuild", "to_full", "markers", "read_changes", "info_names"]

# the logger of changes mode, capture and rebuild alike
log = logging.getLogger("tcpsnap.changes")

_INF = np.iinfo(np.int64).max


def is_changes(dataset_or_table) -> bool:
    """Whether a dataset / table / DataFrame holds a changes recording."""
    names = getattr(getattr(dataset_or_table, "schema", None), "names", None)
    if names is None:
        names = list(getattr(dataset_or_table, "columns", []))
    return "event" in names and "seen_in_snapshot" in names


def _event_codes(col) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    codes = pc.index_in(pc.cast(col, pa.string()), value_set=pa.array(EVENTS, pa.string()))
    return codes.to_numpy(zero_copy_only=False).astype(np.int8)


def _identities(table, rows: np.ndarray) -> np.ndarray:
    """Dense identity codes of ``rows`` of ``table``: the cookie, or the tuple when 0."""
    import pandas as pd

    cookie = table.column("cookie").take(rows).to_numpy()
    zero = cookie == 0
    if not zero.any():
        codes, _ = pd.factorize(cookie)
        return codes.astype(np.int64)
    cols = {"cookie": cookie}
    for name in ("family", "local_port", "remote_port", "local_scope_id", "remote_scope_id",
                 "local_addr", "remote_addr"):
        v = table.column(name).take(rows)
        if name.endswith("_addr"):
            import pyarrow as pa

            v = v.cast(pa.string())
        a = v.to_numpy(zero_copy_only=False)
        a = a.astype(object) if a.dtype == object else a.copy()
        a[~zero] = 0 if a.dtype != object else ""        # a cookie is the whole identity
        cols[name] = a
    return pd.DataFrame(cols).groupby(list(cols), sort=False, dropna=False).ngroup().to_numpy(np.int64)


def event_codes(col) -> np.ndarray:
    """The ``event`` column as codes into ``tcpsnap._events.EVENTS`` (int8; -1: none)."""
    return _event_codes(col)


def rebuild(table, snapshots: np.ndarray | None = None):
    """A changes recording's events (an Arrow table in recording order, from the first
    keyframe on) -> the full-mode table of every snapshot it has markers for (or of
    those seqs in ``snapshots``), grouped by snapshot in seq order."""
    import pyarrow as pa

    full = _rows_schema(table)
    n = table.num_rows
    if n == 0:
        return full.empty_table()
    seq = table.column("seq").to_numpy()
    ev = _event_codes(table.column("event"))
    fam = table.column("family").to_numpy()
    seen = table.column("seen_in_snapshot").to_numpy(zero_copy_only=False)
    marker = fam == 0
    mi = np.flatnonzero(marker)
    mseq = seq[mi]
    order = np.argsort(mseq, kind="stable")
    mi = mi[order]
    S, first = np.unique(seq[mi], return_index=True)
    mi = mi[first]
    is_kf = ev[mi] == EV_KEYFRAME
    K = S[is_kf]
    # versions and the events that end them
    conn = ~marker
    partial = (ev == EV_QUEUES) | (ev == EV_COUNTERS)
    starts = conn & (((ev >= EV_KEYFRAME) & (ev <= EV_CHANGED)) | partial)
    enders = conn & ((ev != EV_CLOSED) | seen)
    ei = np.flatnonzero(enders)
    if len(ei) == 0:
        return full.empty_table()
    ident = _identities(table, pa.array(ei))
    es = seq[ei]
    o = np.lexsort((es, ident))
    ks, ss = ident[o], es[o]
    newgrp = np.ones(len(o), bool)
    newgrp[1:] = (ks[1:] != ks[:-1]) | (ss[1:] != ss[:-1])
    gid = np.cumsum(newgrp) - 1
    gfirst = np.flatnonzero(newgrp)
    nxt = np.full(len(gfirst), _INF, np.int64)
    if len(gfirst) > 1:
        same = ks[gfirst[1:]] == ks[gfirst[:-1]]
        nxt[:-1] = np.where(same, ss[gfirst[1:]], _INF)
    end_ev = np.empty(len(ei), np.int64)
    end_ev[o] = nxt[gid]
    # a queues (counters) event takes every other field from its connection's last whole row
    whole = (starts & ~partial)[ei[o]]
    pos = np.arange(len(o))
    last = np.maximum.accumulate(np.where(whole, pos, -1)) if len(o) else pos
    lost = (last < 0) | (ks[np.maximum(last, 0)] != ks)
    if lost.any():                    # cannot happen from a keyframe on; keep what there is
        log.warning("changes rebuild: %d queue event(s) without an earlier whole row", int(lost.sum()))
        last = np.where(lost, pos, last)
    src = np.empty(len(ei), np.int64)
    src[o] = ei[o][last]
    is_start = starts[ei]
    vi = ei[is_start]                 # rows of `table` that start a version
    vsrc = src[is_start]              # ... and the rows their fields come from
    a = seq[vi]
    b = end_ev[is_start]
    if len(K):
        j = np.searchsorted(K, a, side="right")
        nk = np.where(j < len(K), K[np.minimum(j, len(K) - 1)], _INF)
        b = np.minimum(b, nk)
    if snapshots is not None:
        keep = np.isin(S, snapshots)
    else:
        keep = np.ones(len(S), bool)
    Sk, mik = S[keep], mi[keep]
    i0 = np.searchsorted(Sk, a, side="left")
    i1 = np.searchsorted(Sk, b, side="left")
    cnt = np.maximum(i1 - i0, 0)
    used = cnt > 0                    # versions that live in at least one wanted snapshot
    vi, vsrc, i0, cnt = vi[used], vsrc[used], i0[used], cnt[used]
    total = int(cnt.sum())
    # (version, snapshot) pairs, snapshot-major: int32 and a linear-time radix order
    itype = np.int32 if max(len(vi), len(Sk)) < 2**31 else np.int64
    rep = np.repeat(np.arange(len(vi), dtype=itype), cnt)
    snap = np.arange(total, dtype=np.int64)
    snap -= np.repeat(np.cumsum(cnt) - cnt, cnt)
    snap += np.repeat(i0, cnt)
    snap = snap.astype(itype)
    o2 = stable_order(snap, max(len(Sk), 1))
    rep, snap = rep[o2], snap[o2]
    del o2
    # the check the marker carries: each snapshot's row count
    want = table.column("inode").take(pa.array(mik)).to_numpy().astype(np.int64)
    got = np.bincount(snap, minlength=len(Sk))
    bad = np.flatnonzero(got != want)
    if len(bad):
        log.warning("changes rebuild: %d snapshot(s) do not hold the row count their marker "
                    "records (first: seq %d, %d rows instead of %d); the recording is missing "
                    "events", len(bad), Sk[bad[0]], got[bad[0]], want[bad[0]])
    # the versions first (few), their dictionaries cut to what they use, then repeated
    versions = table.select([f.name for f in full]).take(pa.array(vsrc))
    compact = {name: _used_only(versions.column(name)) for name in ("local_addr", "remote_addr", "process")}
    if (vsrc != vi).any():
        # what a partial event holds itself: the queues, and a counters event's tcp_info
        own = ["rx_queue", "tx_queue", *(f.name for f in full if f.name in info_names())]
        for name in own:
            compact[name] = table.column(name).take(pa.array(vi))
    versions = pa.Table.from_arrays([compact.get(f.name, versions.column(f.name)) for f in full], schema=full)
    out = versions.take(pa.array(rep))
    unsampled = _unsampled(table, mik)
    if unsampled is not None and unsampled[snap].any():
        # a snapshot that sampled no internals (--tcp-info-every): its rows' are null, as
        # in full mode, not the last sample's (which its events carry for later snapshots)
        names = [f.name for f in full if f.name in info_names()]
        nulled = versions.select(names).take(pa.array(rep, mask=unsampled[snap]))
        out = pa.Table.from_arrays([nulled.column(f.name) if f.name in names else out.column(f.name)
                                    for f in full], schema=full)
    snap_cols = [c for c in ("timestamp", "seq", "capture_ns", "monotonic_ns") if c in table.column_names]
    mk = table.select(snap_cols).take(pa.array(mik))
    idx = pa.array(snap)
    per_snap = {name: mk.column(name).take(idx) for name in snap_cols}
    arrays = [per_snap[f.name] if f.name in per_snap else out.column(f.name) for f in full]
    return pa.Table.from_arrays(arrays, schema=full)


def _unsampled(table, mik: np.ndarray) -> np.ndarray | None:
    """Per marker row ``mik`` of ``table``: whether its snapshot sampled no internals
    (the marker's ``tcp_info_len`` null; a marker without the flag sampled). None: no
    internals recorded."""
    import pyarrow as pa

    if "tcp_info_len" not in table.column_names:
        return None
    col = table.column("tcp_info_len").take(pa.array(mik))
    return np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)


def info_names() -> frozenset[str]:
    """The tcp_info columns' names (``_arrow.TCP_INFO_COLUMNS``)."""
    from .._arrow import TCP_INFO_COLUMNS

    return frozenset(TCP_INFO_COLUMNS)


def _rows_schema(table):
    """The rows ``read`` returns of ``table``: ``rows_schema()``, plus the tcp_info
    columns the recording has (``--tcp-info``)."""
    import pyarrow as pa

    from .._arrow import rows_schema

    full = rows_schema()
    extra = [f for f in table.schema if f.name in info_names() and f.name not in full.names]
    return pa.schema(list(full) + extra) if extra else full


def _used_only(col):
    """A dictionary column with only the strings its rows use (``take`` keeps them all:
    markers' and closed sockets' addresses would become categories nothing has)."""
    import pyarrow as pa

    if col.num_chunks == 0:
        return col
    d = pa.chunked_array(col.chunks, col.type).unify_dictionaries() if col.num_chunks > 1 else col
    d = d.combine_chunks() if d.num_chunks > 1 else d.chunk(0)
    idx = d.indices.to_numpy(zero_copy_only=False)
    valid = ~np.asarray(d.is_null().to_numpy(zero_copy_only=False), bool)
    iv = idx[valid].astype(np.int64) if valid.any() else np.zeros(0, np.int64)
    used = np.unique(iv)
    if len(used) == len(d.dictionary):
        return d
    new = np.zeros(len(idx), np.int32)
    new[valid] = np.searchsorted(used, iv)
    indices = pa.array(new, pa.int32(), mask=None if valid.all() else ~valid)
    return pa.DictionaryArray.from_arrays(indices, d.dictionary.take(pa.array(used)))


def to_full(df):
    """A DataFrame of a changes recording (``read(mode="changes")``) -> one row per
    connection per snapshot, as a full recording holds."""
    import pyarrow as pa

    if not is_changes(df):
        return df
    table = pa.Table.from_pandas(df, preserve_index=False)
    return rebuild(table).to_pandas()


def markers(dataset, start=None, end=None):
    """(seq, timestamp ns, is keyframe) of every snapshot marker, in seq order
    (``dataset``: a ``Recording`` or a ``pyarrow`` dataset)."""
    import pyarrow.dataset as ds

    expr = ds.field("family") == 0
    tf = time_filter(dataset, start, end)
    if tf is not None:
        expr = expr & tf
    t = dataset.to_table(columns=["seq", "timestamp", "event"], filter=expr)
    seq = t.column("seq").to_numpy()
    ts = t.column("timestamp").cast("int64").to_numpy()
    kf = _event_codes(t.column("event")) == EV_KEYFRAME
    o = np.argsort(seq, kind="stable")
    return seq[o], ts[o], kf[o]


def read_changes(dataset, start=None, end=None, columns=None, filters=None, mode="full"):
    """``tcpsnap.read`` of a changes recording (``dataset``: a ``Recording``, or a
    ``pyarrow`` dataset): ``mode="full"`` rebuilds one row per connection per snapshot in
    [start, end); ``mode="changes"`` returns the events (markers included) as recorded."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    user = None if filters is None else filter_expression(filters)
    if mode == "changes":
        expr = time_filter(dataset, start, end)
        if user is not None:
            expr = user if expr is None else expr & user
        cols = columns or [c for c in dataset.schema.names if c != "date"]
        t = dataset.to_table(columns=list(cols), filter=expr)
        return in_seq_order(t.to_pandas())
    # the snapshots asked for, and the keyframe each needs
    seqs, ts, _ = markers(dataset, start, end)
    if start is not None:
        allseq, _, allkf = markers(dataset, None, end)
    else:
        allseq, allkf = seqs, None
    if len(seqs) == 0:
        from .._arrow import rows_schema

        df = rows_schema().empty_table().to_pandas()
        return df[list(columns)] if columns else df
    lo, hi = int(seqs[0]), int(seqs[-1])
    if allkf is not None:
        kseq = allseq[allkf & (allseq <= lo)]
        if len(kseq):
            lo = int(kseq[-1])
    expr = (ds.field("seq") >= lo) & (ds.field("seq") <= hi)
    names = [c for c in dataset.schema.names if c != "date"]
    if isinstance(dataset, Recording):
        # the files by their seq ranges (footers), not their date= folders: a file moved
        # to another folder is still read
        t = dataset.to_table(columns=names, filter=expr, seq=(lo, hi))
    else:
        t = dataset.to_table(columns=names, filter=expr)
    o = np.argsort(t.column("seq").to_numpy(), kind="stable")
    t = t.take(pa.array(o))
    full = rebuild(t, snapshots=seqs)
    if user is not None:
        full = full.filter(user)
    if columns is not None:
        full = full.select(list(columns))
    return full.to_pandas()
