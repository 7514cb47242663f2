"""Changes mode: record what changed between snapshots, and rebuild any snapshot exactly.

``tcpsnap record --mode changes`` (``Recorder(mode="changes")``) diffs each snapshot
against the previous one in compiled code (``tcpsnap._diff``) and writes only events.
The columns are those of a full recording plus ``event`` and ``seen_in_snapshot``:

=========== =================================================================================
event       meaning of the row
=========== =================================================================================
snapshot    one marker per ordinary snapshot: ``family`` 0, no connection; its ``timestamp``,
            ``seq`` and ``capture_ns`` are the snapshot's, ``inode`` the number of rows the
            snapshot's table holds (a check for the rebuild); state CLOSED, all else 0
keyframe    the marker of a keyframe snapshot (``family`` 0), and every row of that snapshot
            that did not change since the previous one (the rows that did carry their event)
opened      a connection not in the previous snapshot, as it is now
state       a connection whose state changed (other fields may have changed too), as it is now
changed     a connection any other field of which changed: pid, process, uid, addresses...
queues      a connection (with a cookie) of which only ``rx_queue`` / ``tx_queue`` changed: the
            event holds ``family``, ``state``, the queues and the ``cookie``; every other field
            is 0 (addresses ``0.0.0.0`` / ``::``, ``process`` null) and means "as before".
            Busy connections change their queues snapshot after snapshot; this keeps such
            events to about half the bytes of a whole row. Never in a keyframe.
closed      a connection gone since the previous snapshot, as last seen (its last snapshot
            row), at the snapshot that found it gone or, when the kernel's socket-destroy
            feed reported it, at the wall time the report was read. ``seen_in_snapshot``
            false: a socket that lived and died between two snapshots, known only from the
            destroy feed (state as the kernel reports it then, normally CLOSED; no pid, no
            inode)
=========== =================================================================================

A connection's identity is its cookie, or where the cookie is 0 (Windows) its family,
addresses, ports and scope ids. Every file starts with a keyframe, and one is written every
``keyframe`` interval (default 1 min) and whenever an identity repeats within a table, so any
file (also one that recovery cut short) rebuilds on its own.

The contract (tested by ``tests/test_changes_property.py``): for every snapshot of a
changes recording, ``read(..., mode="full")`` and ``table_at`` return the same rows, every
column, as a full recording of the same capture -- in another order within the snapshot (the
kernel's dump order carries no meaning; rows come in the order they were first recorded).

The rebuild is vectorized: each non-closed event starts a "version" of its connection's row
that lasts until the next event of that connection or the next keyframe, whichever comes
first (a ``queues`` version takes its other fields from the connection's last whole row);
versions are repeated over the snapshot markers they span (``numpy.repeat``, an int32 radix
order by snapshot) and taken from the Arrow table in one ``take``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ._schema import ROW_DTYPE, TcpState
from .frame import merge_names

__all__ = ["EVENTS", "table_at", "rebuild", "is_changes", "read_changes", "to_full"]

log = logging.getLogger("tcpsnap.changes")

#: The ``event`` column's dictionary, in code order (= ``_diff.event_code``).
EVENTS: tuple[str, ...] = ("snapshot", "keyframe", "opened", "state", "changed", "closed", "queues")
EV_SNAPSHOT, EV_KEYFRAME, EV_OPENED, EV_STATE, EV_CHANGED, EV_CLOSED, EV_QUEUES = range(7)
#: What a ``queues`` event keeps of its row; every other field is 0 (``process`` null).
QUEUES_FIELDS = ("family", "state", "rx_queue", "tx_queue", "cookie")
_INF = np.iinfo(np.int64).max
_TIME_WAIT = int(TcpState.TIME_WAIT)


# ---------------------------------------------------------------- schema and encoding

def build_schema(metadata: dict[str, str] | None = None):
    """The full-mode schema plus ``event`` (after ``seq``) and ``seen_in_snapshot`` (last)."""
    import pyarrow as pa

    from ._arrow import build_schema as full_schema

    fields = list(full_schema())
    fields.insert(2, pa.field("event", pa.dictionary(pa.int8(), pa.string()), nullable=False))
    fields.append(pa.field("seen_in_snapshot", pa.bool_(), nullable=False))
    return pa.schema(fields, metadata=metadata)


class ChangesEncoder:
    """``BatchEncoder`` for changes recordings: the full-mode columns (with per-row
    timestamps: a destroy report carries its own), ``event`` and ``seen_in_snapshot``."""

    def __init__(self, schema) -> None:
        import pyarrow as pa

        from ._arrow import TIMESTAMP, BatchEncoder, build_schema as full_schema

        self.schema = schema
        self._base = BatchEncoder(full_schema())
        self._ts_type = TIMESTAMP
        self._events = pa.array(EVENTS, pa.string())

    def reset(self) -> None:
        self._base.reset()

    def encode(self, rows, counts, timestamps, seqs, capture_ns, proc_codes=None, proc_names=None,
               events=None, seen=None, row_ts=None):
        import pyarrow as pa

        rb = self._base.encode(rows, counts, timestamps, seqs, capture_ns, proc_codes, proc_names)
        cols = rb.columns
        cols[0] = pa.array(np.ascontiguousarray(row_ts), self._ts_type)
        ev = pa.DictionaryArray.from_arrays(pa.array(np.ascontiguousarray(events).view(np.int8), pa.int8()),
                                            self._events)
        cols = cols[:2] + [ev] + cols[2:] + [pa.array(np.ascontiguousarray(seen), pa.bool_())]
        return pa.RecordBatch.from_arrays(cols, schema=self.schema)


# ---------------------------------------------------------------- capture side

class ChangeTracker:
    """The capture thread's half of changes mode: each snapshot's table (after the
    recorder's filters) -> the event rows to record, with the destroy feed's reports
    folded in. Keeps the previous table (in the compiled ``Differ``) and a global
    process-name dictionary, so a process renaming counts as a change."""

    def __init__(self, keyframe_ns: int, feed=None, ports=None, family=None) -> None:
        from ._diff import Differ

        self.keyframe_ns = int(keyframe_ns)
        self.feed = feed
        self._ports = ports
        self._family = family
        self._differ = Differ()
        self._gnames: list[str] = []
        self._gcodes: dict[str, int] = {}
        self._last_kf: int | None = None
        self._key = None
        self._pend_rows = np.zeros(0, ROW_DTYPE)      # destroy reports not yet placed
        self._pend_ts = np.zeros(0, np.int64)
        self._pend_age = np.zeros(0, np.int8)
        self._recent_closed: list[np.ndarray] = []    # cookies closed the last rounds
        # counters
        self.keyframes = 0
        self.events = 0
        self.destroyed = 0          # reports received
        self.unseen = 0             # closed events of sockets no snapshot held
        self.late = 0               # reports of sockets a snapshot had already found gone

    def sleep(self, waker, ns: int) -> None:
        """The recorder's wait between snapshots, reading the destroy feed as reports
        arrive (their time is the time they are read). After a read the feed rests 1 ms,
        so a burst of deaths costs a wake-up per millisecond, not one per socket."""
        import select
        import time

        fd = self.feed.fileno()
        end = time.monotonic_ns() + ns
        while True:
            left = end - time.monotonic_ns()
            if left <= 0:
                return
            r, _, _ = select.select([waker._r, fd], [], [], left / 1e9)
            if waker._r in r:
                waker.sleep(0.0001)         # consumes the wake-up byte(s)
                return
            if fd in r:
                self.feed.drain()
                left = end - time.monotonic_ns()
                if left > 0:
                    waker.sleep(min(left, 1_000_000) / 1e9)

    @property
    def stats(self) -> dict:
        f = self.feed
        return {"keyframes": self.keyframes, "events": self.events,
                "destroy_feed": f is not None,
                "destroyed": self.destroyed, "destroyed_unseen": self.unseen,
                "destroyed_late": self.late,
                "destroy_drops": f.drops if f is not None else 0}

    def _global_codes(self, rows: np.ndarray, names) -> np.ndarray:
        n = len(rows)
        if names is None or n == 0:
            return np.full(n, -1, np.int32)
        codes, pnames = names(rows["pid"])
        return np.take(merge_names(pnames, self._gcodes, self._gnames), codes, mode="wrap")

    def _destroyed(self, cur: np.ndarray, closed: np.ndarray, closed_ts: np.ndarray,
                   closed_seen_ts: np.ndarray):
        """Place the destroy reports: the socket is in this snapshot (TIME_WAIT: it lives
        on as one, drop; else it died after the dump: wait a round), or a snapshot found
        it gone now (stamp its closed event with the report's time), or earlier (late
        report: drop), or no snapshot ever held it (an unseen closed event)."""
        if self.feed is not None:
            r, t = self.feed.take()
            if len(r):
                self.destroyed += len(r)
                self._pend_rows = np.concatenate([self._pend_rows, r])
                self._pend_ts = np.concatenate([self._pend_ts, t])
                self._pend_age = np.concatenate([self._pend_age, np.zeros(len(r), np.int8)])
        pr = self._pend_rows
        empty = (np.zeros(0, ROW_DTYPE), np.zeros(0, np.int64))
        if not len(pr):
            return empty
        pts, age = self._pend_ts, self._pend_age
        ck = pr["cookie"]
        idx = self._differ.lookup(ck)
        in_cur = idx >= 0
        tw = np.zeros(len(pr), bool)
        if in_cur.any():
            tw[in_cur] = cur["state"][idx[in_cur]] == _TIME_WAIT
        wait = in_cur & ~tw & (age < 2)
        gone = ~in_cur
        unseen = np.zeros(len(pr), bool)
        if gone.any():
            if len(closed):
                pos = {int(c): j for j, c in enumerate(closed["cookie"]) if c}
                for i in np.flatnonzero(gone):
                    j = pos.get(int(ck[i]))
                    if j is not None:
                        closed_ts[j] = pts[i]
                        closed_seen_ts[j] = True
                        gone[i] = False
            if gone.any():
                late = np.zeros(len(pr), bool)
                for old in self._recent_closed:
                    late |= gone & np.isin(ck, old)
                self.late += int(late.sum())
                unseen = gone & ~late
        ur, ut = pr[unseen], pts[unseen]
        if len(ur) and (self._ports or self._family):
            from ._filters import row_mask

            m = row_mask(ur, None, self._ports, self._family)
            if m is not None:
                ur, ut = ur[m], ut[m]
        keep = wait
        self._pend_rows, self._pend_ts, self._pend_age = pr[keep], pts[keep], age[keep] + 1
        self.unseen += len(ur)
        return ur, ut

    def step(self, rows: np.ndarray, names, wall_ns: int, mono_ns: int, file_key):
        """One snapshot -> ``(event_rows, names, (events, seen, row_ts))``, ``names`` a
        callable as the recorder's (returning codes for event_rows) or None."""
        if self.feed is not None:
            self.feed.drain()
        kf = (self._last_kf is None or file_key != self._key
              or mono_ns - self._last_kf >= self.keyframe_ns)
        gproc = self._global_codes(rows, names)
        ev_idx, ev_code, closed, closed_proc, dup = self._differ.diff(rows, gproc, kf)
        kf = kf or dup
        if len(ev_idx) > 1:
            # in cookie order, not the kernel's: neighbouring cookies (and inodes) differ by
            # little, which the Parquet encodings and zstd turn into far fewer bytes
            o = np.argsort(rows["cookie"][ev_idx], kind="stable")
            ev_idx, ev_code = ev_idx[o], ev_code[o]
        if kf:
            self._last_kf = mono_ns
            self._key = file_key
            self.keyframes += 1
        closed_ts = np.full(len(closed), wall_ns, np.int64)
        closed_dts = np.zeros(len(closed), bool)
        ur, ut = self._destroyed(self._differ.rows, closed, closed_ts, closed_dts)
        if len(closed):
            self._recent_closed = [closed["cookie"]] + self._recent_closed[:1]
        ne, nc, nu = len(ev_idx), len(closed), len(ur)
        n = 1 + nc + nu + ne
        out = np.zeros(n, ROW_DTYPE)
        out[0]["inode"] = len(rows)              # the marker: family 0, the table's size,
        out[0]["state"] = TcpState.CLOSED        # a state (the column has no nulls)
        if nc:
            out[1:1 + nc] = closed
        if nu:
            out[1 + nc:1 + nc + nu] = ur
        if ne:
            out[1 + nc + nu:].view(np.uint8)[:] = rows[ev_idx].view(np.uint8)
            q = 1 + nc + nu + np.flatnonzero(ev_code == EV_QUEUES)
            if len(q):
                keep = out[q][list(QUEUES_FIELDS)].copy()
                out[q] = np.zeros(len(q), ROW_DTYPE)
                for f in QUEUES_FIELDS:
                    out[f][q] = keep[f]
        events = np.empty(n, np.uint8)
        events[0] = EV_KEYFRAME if kf else EV_SNAPSHOT
        events[1:1 + nc + nu] = EV_CLOSED
        events[1 + nc + nu:] = ev_code
        seen = np.ones(n, bool)
        seen[1 + nc:1 + nc + nu] = False
        row_ts = np.full(n, wall_ns, np.int64)
        row_ts[1:1 + nc] = closed_ts
        row_ts[1 + nc:1 + nc + nu] = ut
        self.events += n - 1
        if names is None:
            return out, None, (events, seen, row_ts)
        g = np.full(n, -1, np.int32)
        g[1:1 + nc] = closed_proc
        g[1 + nc + nu:] = np.where(ev_code == EV_QUEUES, -1, gproc[ev_idx])
        used = np.unique(g[g >= 0])
        local = [self._gnames[i] for i in used]
        codes = np.full(n, -1, np.int32)
        if len(used):
            m = g >= 0
            codes[m] = np.searchsorted(used, g[m]).astype(np.int32)
        return out, (lambda _pids: (codes, local)), (events, seen, row_ts)

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()


def open_destroy_feed(required: bool = False):
    """The socket-destroy feed, or None (with a one-line warning) where it cannot be had:
    not Linux, or the kernel refuses the subscription (EPERM without CAP_NET_ADMIN)."""
    try:
        from ._destroy import DestroyFeed
    except ImportError as e:
        if required:
            raise
        log.warning("no socket-destroy feed on this platform (%s): polling only", e)
        return None
    try:
        return DestroyFeed()
    except OSError as e:
        if required:
            raise
        log.warning("no socket-destroy feed (%s; needs CAP_NET_ADMIN on some kernels): polling "
                    "only, connections that live between two snapshots are not recorded", e)
        return None


# ---------------------------------------------------------------- reading back

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


def rebuild(table, snapshots: np.ndarray | None = None):
    """A changes recording's events (an Arrow table in recording order, from the first
    keyframe on) -> the full-mode table of every snapshot it has markers for (or of
    those seqs in ``snapshots``), grouped by snapshot in seq order."""
    import pyarrow as pa

    from ._arrow import build_schema as full_schema

    full = full_schema()
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
    starts = conn & (((ev >= EV_KEYFRAME) & (ev <= EV_CHANGED)) | (ev == EV_QUEUES))
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
    # a queues event takes every other field from its connection's last whole row
    whole = (starts & (ev != EV_QUEUES))[ei[o]]
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
    from ._order import stable_order

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
        for name in ("rx_queue", "tx_queue"):
            compact[name] = table.column(name).take(pa.array(vi))
    versions = pa.Table.from_arrays([compact.get(f.name, versions.column(f.name)) for f in full], schema=full)
    out = versions.take(pa.array(rep))
    mk = table.select(["timestamp", "seq", "capture_ns"]).take(pa.array(mik))
    idx = pa.array(snap)
    per_snap = {name: mk.column(name).take(idx) for name in ("timestamp", "seq", "capture_ns")}
    arrays = [per_snap[f.name] if f.name in per_snap else out.column(f.name) for f in full]
    return pa.Table.from_arrays(arrays, schema=full)


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


def _markers(dataset, start=None, end=None):
    """(seq, timestamp ns, is keyframe) of every snapshot marker, in seq order."""
    import pyarrow.dataset as ds

    from .reader import _time_filter

    expr = ds.field("family") == 0
    tf = _time_filter(dataset, start, end)
    if tf is not None:
        expr = expr & tf
    t = dataset.to_table(columns=["seq", "timestamp", "event"], filter=expr)
    seq = t.column("seq").to_numpy()
    ts = t.column("timestamp").cast("int64").to_numpy()
    kf = _event_codes(t.column("event")) == EV_KEYFRAME
    o = np.argsort(seq, kind="stable")
    return seq[o], ts[o], kf[o]


def read_changes(dataset, start=None, end=None, columns=None, filters=None, mode="full"):
    """``tcpsnap.read`` of a changes recording: ``mode="full"`` rebuilds one row per
    connection per snapshot in [start, end); ``mode="changes"`` returns the events
    (markers included) as recorded."""
    import datetime as _dt

    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from .reader import _time_filter, to_utc

    user = None
    if filters is not None:
        user = filters if isinstance(filters, ds.Expression) else pq.filters_to_expression(filters)
    if mode == "changes":
        expr = _time_filter(dataset, start, end)
        if user is not None:
            expr = user if expr is None else expr & user
        cols = columns or [c for c in dataset.schema.names if c != "date"]
        t = dataset.to_table(columns=list(cols), filter=expr)
        return _sorted(t.to_pandas())
    # the snapshots asked for, and the keyframe each needs
    seqs, ts, _ = _markers(dataset, start, end)
    if start is not None:
        allseq, allts, allkf = _markers(dataset, None, end)
    else:
        allseq, allts, allkf = seqs, ts, None
    if len(seqs) == 0:
        from ._arrow import build_schema as full_schema

        df = full_schema().empty_table().to_pandas()
        return df[list(columns)] if columns else df
    lo, hi = int(seqs[0]), int(seqs[-1])
    if allkf is not None:
        kseq = allseq[allkf & (allseq <= lo)]
        if len(kseq):
            lo = int(kseq[-1])
    expr = (ds.field("seq") >= lo) & (ds.field("seq") <= hi)
    if "date" in dataset.schema.names:
        # events of a snapshot at or after the keyframe are stamped after it (a destroy
        # report can be read just after its snapshot: a day of slack at the end)
        first = int(allts[np.searchsorted(allseq, lo)]) if allkf is not None else int(ts[0])
        d0 = to_utc(first).strftime("%Y-%m-%d")
        d1 = (to_utc(int(ts[-1])) + _dt.timedelta(days=1)).strftime("%Y-%m-%d")
        expr = expr & (ds.field("date") >= d0) & (ds.field("date") <= d1)
    names = [c for c in dataset.schema.names if c != "date"]
    t = dataset.to_table(columns=names, filter=expr)
    o = np.argsort(t.column("seq").to_numpy(), kind="stable")
    t = t.take(pa.array(o))
    full = rebuild(t, snapshots=seqs)
    if user is not None:
        full = full.filter(user)
    if columns is not None:
        full = full.select(list(columns))
    return full.to_pandas()


def _sorted(df):
    if "seq" in df and len(df) > 1:
        seq = df["seq"].to_numpy()
        if (seq[1:] < seq[:-1]).any():
            df = df.iloc[seq.argsort(kind="stable")].reset_index(drop=True)
    return df


def table_at(path, when: Any = None, *, seq: int | None = None, columns=None):
    """The TCP table at one recorded snapshot -- the last one at or before ``when``
    (datetime, Timestamp, string, epoch ns), or the one numbered ``seq`` -- as a
    DataFrame, from a full or a changes recording."""
    import pyarrow.dataset as ds

    from .reader import open_dataset, read, to_utc

    if (when is None) == (seq is None):
        raise ValueError("give when or seq")
    dataset = open_dataset(path)
    if seq is None:
        t = to_utc(when).value
        if is_changes(dataset):
            for back in (10**9, 60 * 10**9, 3600 * 10**9, None):
                seqs, ts, _ = _markers(dataset, None if back is None else t - back, t + 1)
                if len(seqs):
                    break
        else:
            # look back a second, a minute, an hour, then everything: the row groups'
            # timestamp statistics skip the rest of a long recording
            for back in (10**9, 60 * 10**9, 3600 * 10**9, None):
                expr = ds.field("timestamp") <= to_utc(when)
                if back is not None:
                    expr = expr & (ds.field("timestamp") >= to_utc(t - back))
                tt = dataset.to_table(columns=["seq", "timestamp"], filter=expr)
                if tt.num_rows:
                    break
            seqs = tt.column("seq").to_numpy()
            ts = tt.column("timestamp").cast("int64").to_numpy()
        if len(seqs) == 0:
            raise LookupError(f"no snapshot at or before {to_utc(when)} in {path}")
        i = int(np.argmax(ts))
        seq, t_snap = int(seqs[i]), int(ts[i])
    else:
        if is_changes(dataset):
            seqs, ts, _ = _markers(dataset)
        else:
            tt = dataset.to_table(columns=["seq", "timestamp"], filter=ds.field("seq") == seq)
            seqs = tt.column("seq").to_numpy()
            ts = tt.column("timestamp").cast("int64").to_numpy()
        hit = np.flatnonzero(seqs == seq)
        if not len(hit):
            raise LookupError(f"no snapshot seq {seq} in {path}")
        t_snap = int(ts[hit[0]])
    df = read(path, start=t_snap, end=t_snap + 1, columns=columns)
    if "seq" in df:
        df = df[df["seq"] == seq].reset_index(drop=True)
    return df
