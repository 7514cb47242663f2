"""The analysis functions on a recording larger than memory: ``tcpsnap.analysis``'s path form.

The rows are read a piece at a time (``tcpsnap.reading.scan.Selection``: row groups of a
full recording, snapshot runs of a changes recording's keyframe segments); each piece goes
through the in-memory code (``tcpsnap._frames``) and what is kept is per connection or per
snapshot, never per row:

- ``lifetimes``: each piece's lifetimes, merged per connection (first / last part by seq,
  rows summed, state paths joined, the last owner), so results equal ``lifetimes`` of the
  whole DataFrame (the same code decides identity, paths and open ends);
- ``state_counts``: per-snapshot state counts summed over pieces (one bincount each),
  then the same binning as in memory (``_frames.counts_frame``);
- ``churn``, ``top_remotes``, ``by_process``: from those lifetimes and the snapshots.

Memory: a few pieces of ``CHUNK_ROWS`` rows, plus what grows with the connections and the
snapshots (not with the rows). Pure numpy/pandas/pyarrow: no query engine needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import _frames
from ._internals import (
    INFO_COLUMNS,
    RETRANS,
    RTT_COLUMNS,
    THROUGHPUT_COLUMNS,
    TOTALS,
    apply_closed,
    closed_totals,
    deltas,
    finish,
    nullable,
    rate_bins,
    retrans_bins,
    retrans_frame,
    rtt_frame,
    rtt_sums,
)
from ._schema import STATE_NAMES
from ._timeline import Timeline, codes_of, vocabulary
from .reading.scan import Selection

__all__ = ["lifetimes", "state_counts", "churn", "top_remotes", "by_process", "throughput", "per_bin", "Selection"]

_TUPLE = _frames.TUPLE
_ORIGIN = ("host", "boot_id")


def lifetimes(sel: Selection) -> pd.DataFrame:
    """``analysis.lifetimes(df, snapshots=snapshots)`` of the selection's rows and
    snapshots: from one DuckDB query's per-connection groups where that answers exactly
    (``reading.aggregate.connections``), else read piece by piece."""
    snaps = sel.snapshots()
    fast = _from_query(sel, snaps)
    if fast is not None:
        return fast
    parts = []
    for i, df in enumerate(sel.frames(_frames.COLUMNS + INFO_COLUMNS)):
        p = _frames.lifetimes(df, snapshots=snaps, parts=True)
        if len(p):
            p["_chunk"] = i
            parts.append(p)
        del df
    if not parts:
        return _frames.empty_lifetimes()
    return apply_closed(_merge(parts, snaps), _closed(sel))


def _closed(sel: Selection) -> pd.DataFrame | None:
    """``closed_totals`` of a changes recording's closed events in the selection's range
    (one row per closed connection: bounded by the connections, not the rows)."""
    if not sel.changes or not any(c in sel.rec.schema.names for c in INFO_COLUMNS):
        return None
    import pyarrow.dataset as ds

    from .reading.query import time_filter

    cols = [c for c in ("cookie", "host", "boot_id", "event", "seen_in_snapshot", *INFO_COLUMNS)
            if c in sel.rec.schema.names]
    expr = ds.field("event") == "closed"
    tf = time_filter(sel.rec, sel.start, sel.end)
    if tf is not None:
        expr = expr & tf
    return closed_totals(sel.rec.to_table(columns=cols, filter=expr).to_pandas())


def _from_query(sel: Selection, snaps: pd.DataFrame) -> pd.DataFrame | None:
    """The lifetimes from ``aggregate.connections`` (one row per connection), their
    times from the snapshot list, through the same merge as the pieces'; None where
    that path does not answer."""
    from .reading.aggregate import connections

    if len(snaps) == 0 or any(c in sel.rec.schema.names for c in INFO_COLUMNS):
        # a recording with internals: each connection's last counters are the rows' (in
        # order), which the query's groups do not keep
        return None
    c = connections(sel.rec, sel.start, sel.end, sel.where)
    if c is None:
        return None
    if len(c) == 0:
        return _frames.empty_lifetimes()

    def key(host, *rest) -> pd.MultiIndex:        # a missing host or boot: a value of its own
        return pd.MultiIndex.from_arrays([pd.Index(np.asarray(host, dtype=object)).fillna("\0"),
                                          *(pd.Index(np.asarray(r, dtype=object)).fillna("\0")
                                            if r.dtype == object else r for r in rest)])

    sh, sb = snaps["host"].astype(object).to_numpy(), snaps["boot_id"].astype(object).to_numpy()
    sk = key(sh, snaps["seq"].to_numpy(np.int64))
    fi, li = sk.get_indexer(key(c["host"], c["fseq"].to_numpy())), sk.get_indexer(key(c["host"], c["lseq"].to_numpy()))
    # the first and last snapshot of each (host, boot): open at start / at end
    ends = pd.DataFrame({"h": sh, "b": sb, "s": snaps["seq"].to_numpy(np.int64)}).fillna("\0") \
        .groupby(["h", "b"])["s"].agg(["min", "max"])
    gi = ends.index.get_indexer(key(c["host"].to_numpy(), c["boot_id"].to_numpy()))
    if (fi < 0).any() or (li < 0).any() or (gi < 0).any():
        return None                      # rows of a snapshot not listed: the pieces' way
    ts, mono = snaps["timestamp"], snaps["monotonic_ns"].to_numpy(np.int64)
    P = c[[*_TUPLE, "cookie", *_ORIGIN]].copy()
    P["first_seen"] = ts.iloc[fi].to_numpy()
    P["last_seen"] = ts.iloc[li].to_numpy()
    for name in ("snapshots", "states", "first_state", "last_state", "pid", "process"):
        P[name] = c[name].to_numpy()
    P["open_at_start"] = c["fseq"].to_numpy() == ends["min"].to_numpy()[gi]
    P["open_at_end"] = c["lseq"].to_numpy() == ends["max"].to_numpy()[gi]
    P["_fseq"], P["_lseq"] = c["fseq"].to_numpy(), c["lseq"].to_numpy()
    P["_fmono"], P["_lmono"] = mono[fi], mono[li]
    P["_frow"] = P["_chunk"] = 0
    for name in TOTALS:                  # no internals recorded: null, as the pieces give
        P[name] = None
    return _merge([P], snaps)


def _objects(p: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as plain objects (pieces have categories of their own)."""
    for c in p.columns:
        if isinstance(p[c].dtype, pd.CategoricalDtype):
            p[c] = p[c].astype(object)
    return p


def _merge(parts: list[pd.DataFrame], snaps: pd.DataFrame) -> pd.DataFrame:
    """One row per connection from the per-piece rows of it."""
    P = pd.concat([_objects(p) for p in parts], ignore_index=True)
    del parts
    origin = [c for c in _ORIGIN if c in P]
    cookie = P["cookie"].to_numpy(np.uint64)
    fseq = P["_fseq"].to_numpy(np.int64)
    lseq = P["_lseq"].to_numpy(np.int64)

    # a dense code per piece row: (origin, cookie), or (origin, 4-tuple) then chained
    def keycodes(cols: list[str]) -> np.ndarray:
        return P.groupby(cols, sort=False, dropna=False).ngroup().to_numpy(np.int64)

    has = cookie != 0
    key = np.full(len(P), -1, np.int64)
    if has.any():
        key[has] = keycodes(["cookie", *origin])[has]
    nk = int(key.max()) + 1
    tup = ~has
    if tup.any():
        tkey = keycodes([*_TUPLE, *origin])
        key[tup] = tkey[tup] + nk
    o = np.lexsort((fseq, key))
    k_o = key[o]
    new = np.ones(len(o), bool)
    new[1:] = k_o[1:] != k_o[:-1]
    # the 4-tuple is one connection across pieces when its seqs go on with no snapshot missed
    new[1:] |= ~has[o][1:] & (fseq[o][1:] > lseq[o][:-1] + 1)
    conn = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(o)) - 1
    fi, li = o[starts], o[ends]              # each connection's first and last piece row

    out = P.iloc[fi][[c for c in (*_TUPLE, "cookie", *origin) if c in P]].reset_index(drop=True)
    out["first_seen"] = P["first_seen"].to_numpy()[fi]
    out["last_seen"] = P["last_seen"].to_numpy()[li]
    fm, lm = P["_fmono"].to_numpy(np.int64)[fi], P["_lmono"].to_numpy(np.int64)[li]
    wall = (out["last_seen"] - out["first_seen"]).to_numpy()
    out["duration"] = pd.to_timedelta(np.where((fm >= 0) & (lm >= 0), lm - fm,
                                               wall.astype("m8[ns]").astype(np.int64)), unit="ns")
    out["snapshots"] = np.bincount(conn, weights=P["snapshots"].to_numpy(np.float64)[o]).astype(np.int64)
    out["states"] = _join_paths(P["states"].to_numpy(object)[o], new)
    out["first_state"] = pd.Categorical(P["first_state"].to_numpy(object)[fi], categories=list(STATE_NAMES))
    out["last_state"] = pd.Categorical(P["last_state"].to_numpy(object)[li], categories=list(STATE_NAMES))
    # the owner: the last piece that knew one
    pid = P["pid"].to_numpy(np.int64)[o]
    pos = np.where(pid > 0, np.arange(len(o)), -1)
    own = np.maximum.reduceat(pos, starts) if len(o) else pos
    known = own >= 0
    out["pid"] = np.where(known, pid[np.maximum(own, 0)], 0).astype(np.int64)
    if "process" in P:
        proc = P["process"].to_numpy(object)[o]
        out["process"] = pd.Categorical(np.where(known, proc[np.maximum(own, 0)], None))
    out["open_at_start"] = P["open_at_start"].to_numpy(bool)[fi]
    out["open_at_end"] = P["open_at_end"].to_numpy(bool)[li]
    # the counters: the last piece that had a value
    for name in TOTALS:
        vals = P[name].to_numpy(dtype=object)[o]
        ok = ~pd.isna(vals)
        at = np.maximum.reduceat(np.where(ok, np.arange(len(o)), -1), starts) if len(o) else np.zeros(0, np.int64)
        has = at >= 0
        got = np.zeros(len(at), np.uint64)
        if has.any():
            got[has] = vals[at[has]].astype(np.uint64)
        out[name] = nullable(got, has)

    # in-memory order: by cookie, then host and boot (codes in their sorted vocabulary);
    # then the 4-tuples by first appearance in time order (seq, then row order), and time
    vocab = {c: vocabulary(P[c], snaps.get(c)) for c in origin}
    oc = [codes_of(out[c], vocab[c], len(out)) for c in origin]
    ck = out["cookie"].to_numpy(np.uint64)
    withc = np.flatnonzero(ck != 0)
    rank_c = withc[np.lexsort((*(x[withc] for x in reversed(oc)), ck[withc]))]
    without = np.flatnonzero(ck == 0)
    if len(without):
        tk = key[fi][without]
        first_seq = P["_fseq"].to_numpy(np.int64)[fi][without]
        chunk = P["_chunk"].to_numpy(np.int64)[fi][without]
        frow = P["_frow"].to_numpy(np.int64)[fi][without]
        # a tuple's first appearance: its earliest connection's (seq, piece, row)
        g = pd.DataFrame({"k": tk, "s": first_seq, "c": chunk, "r": frow})
        firsts = g.sort_values(["s", "c", "r"]).drop_duplicates("k").reset_index(drop=True)
        appear = pd.Series(np.arange(len(firsts)), index=firsts["k"].to_numpy())
        rank_t = without[np.lexsort((first_seq, appear.loc[tk].to_numpy()))]
        rank = np.concatenate([rank_c, rank_t])
    else:
        rank = rank_c
    out = out.iloc[rank].reset_index(drop=True)
    for c in ("local_addr", "remote_addr", *origin):
        if c in out:
            out[c] = pd.Categorical(out[c].to_numpy(object))
    return out


def _join_paths(paths: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Each connection's state path from its pieces' paths (in time order): joined with
    ``>``, a state that goes on across the cut written once."""
    out = []
    cur: list[str] = []
    for p, n in zip(paths, new, strict=True):
        s = str(p).split(">")
        if n:
            if cur:
                out.append(">".join(cur))
            cur = s
        else:
            cur.extend(s[1:] if cur and cur[-1] == s[0] else s)
    if cur:
        out.append(">".join(cur))
    return np.array(out, dtype=object)


def state_counts(sel: Selection, freq: str = "1s", agg: str = "mean") -> pd.DataFrame:
    """``analysis.state_counts(df, freq, agg, snapshots=snapshots)`` of the selection,
    from per-snapshot counts summed piece by piece (Arrow columns straight to codes: no
    DataFrame per piece)."""
    snaps = sel.snapshots()
    import pyarrow as pa

    if len(snaps) == 0:
        return pd.DataFrame()
    tl = Timeline(snaps.iloc[:0], snaps)
    ns = _frames.NSTATES
    where = _SnapshotIndex(tl)
    counts = np.zeros(tl.n * ns, np.int64)
    got = sel.summary()
    if got is not None:
        # one DuckDB query's per-(host, snapshot, state) counts: no row read here
        c = got[1]
        h = _codes(pa.array(c["host"].to_numpy(object), pa.string()), list(tl.hosts))
        at = where(h, c["seq"].to_numpy(np.int64), sel.path)
        st = _codes(pa.array(c["state"].to_numpy(object), pa.string()), list(STATE_NAMES)) + 1
        np.add.at(counts, at * ns + st, c["n"].to_numpy(np.int64))
        return _frames.counts_frame(tl, counts.reshape(tl.n, ns)[:, 1:], freq, agg)
    for t in sel.tables(["seq", "host", "state"]):
        h = _codes(t.column("host"), list(tl.hosts)) if "host" in t.column_names else np.full(t.num_rows, -1)
        at = where(h, t.column("seq").to_numpy().astype(np.int64), sel.path)
        st = _codes(t.column("state"), list(STATE_NAMES)) + 1         # 0: unknown
        counts += np.bincount(at * ns + st, minlength=tl.n * ns)
        del t, h, at, st
    return _frames.counts_frame(tl, counts.reshape(tl.n, ns)[:, 1:], freq, agg)


class _SnapshotIndex:
    """Each row's snapshot (its place in ``tl``) from its host code and seq: a table
    indexed by (host, seq) when the seqs span little (they count up by one per snapshot),
    else a binary search."""

    def __init__(self, tl: Timeline) -> None:
        self.tl = tl
        self.lo = int(tl.seq.min())
        span = int(tl.seq.max()) - self.lo + 1
        nh = len(tl.hosts) + 1
        self.lut = None
        if nh * span <= 50_000_000:
            self.lut = np.full((nh, span), -1, np.int64)
            self.lut[tl.h + 1, tl.seq - self.lo] = np.arange(tl.n)
        self.keys = Timeline._key(tl.h, tl.seq)

    def __call__(self, h: np.ndarray, seq: np.ndarray, path) -> np.ndarray:
        if self.lut is not None:
            rel = seq - self.lo
            ok = (rel >= 0) & (rel < self.lut.shape[1])
            at = self.lut[h + 1, np.where(ok, rel, 0)]
            good = ok & (at >= 0)
        else:
            k = Timeline._key(h, seq)
            at = np.minimum(np.searchsorted(self.keys, k), self.tl.n - 1)
            good = self.keys[at] == k
        if not good.all():
            raise RuntimeError(f"{path}: rows of a snapshot the recording does not list")
        return at


def _codes(col, vocab: list[str]) -> np.ndarray:
    """An Arrow string or dictionary column as positions in ``vocab`` (int64; -1: missing
    or not in it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = []
    for c in (col.chunks if hasattr(col, "chunks") else [col]):
        if pa.types.is_dictionary(c.type):
            d = c.dictionary.cast(pa.string())
            lut = np.append(pc.index_in(d, value_set=pa.array(vocab, pa.string())).fill_null(-1)
                            .to_numpy().astype(np.int64), -1)
            idx = c.indices.fill_null(-1).to_numpy().astype(np.int64) if len(c) else np.zeros(0, np.int64)
            out.append(lut[idx])
        elif pa.types.is_null(c.type):
            out.append(np.full(len(c), -1, np.int64))
        else:
            out.append(pc.index_in(c.cast(pa.string()), value_set=pa.array(vocab, pa.string())).fill_null(-1)
                       .to_numpy().astype(np.int64))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def churn(sel: Selection, freq: str = "1s", life: pd.DataFrame | None = None) -> pd.DataFrame:
    """``analysis.churn`` of the selection (``life``: its ``lifetimes``, if known)."""
    snaps = sel.snapshots()
    life = lifetimes(sel) if life is None else life
    if len(snaps) == 0:
        return pd.DataFrame(columns=["opened", "closed"])
    return _frames.churn_frame(Timeline(snaps.iloc[:0], snaps), life, freq)


def top_remotes(sel: Selection, n: int = 10, life: pd.DataFrame | None = None,
                by: str = "connections") -> pd.DataFrame:
    """``analysis.top_remotes`` of the selection."""
    return _frames.top_remotes(pd.DataFrame(), n=n, life=lifetimes(sel) if life is None else life, by=by)


def by_process(sel: Selection, life: pd.DataFrame | None = None, by: str = "connections") -> pd.DataFrame:
    """``analysis.by_process`` of the selection."""
    return _frames.by_process(pd.DataFrame(), life=lifetimes(sel) if life is None else life, by=by)


def throughput(sel: Selection, freq: str = "1s", by: str = "total") -> pd.DataFrame:
    """``analysis.throughput`` of the selection: each piece's counter deltas, each
    connection's last row carried into the next piece (so a delta across a cut is
    counted once), binned per piece and summed."""
    snaps = sel.snapshots()
    if len(snaps) == 0:
        return finish([], pd.DatetimeIndex([]), np.zeros(0, bool), np.zeros(0, bool), by)
    B, _, nan, keep = Timeline(snaps.iloc[:0], snaps).bins(freq)
    parts = []
    carry = None
    for df in sel.frames(THROUGHPUT_COLUMNS):
        carried = 0
        if carry is not None and len(carry):
            carried = len(carry)
            df = pd.concat([_objects(carry), _objects(df)], ignore_index=True)
        d, carry = deltas(df, carried)
        parts.append(rate_bins(B, d, freq, by))
        del df, d
    return finish(parts, B, nan, keep, by)


def per_bin(sel: Selection, freq: str, what: str) -> pd.DataFrame:
    """``analysis.rtt`` / ``analysis.retransmits`` of the selection, piece by piece (rtt
    sums per bin merge; retransmit deltas carry each connection's last row on)."""
    snaps = sel.snapshots()
    if len(snaps) == 0:
        return pd.DataFrame()
    B, _, nan, keep = Timeline(snaps.iloc[:0], snaps).bins(freq)
    if what == "rtt":
        sums = np.zeros((len(B), 4))
        sums[:, 3] = np.inf
        for df in sel.frames(RTT_COLUMNS + ["tcp_info_len"]):
            s = rtt_sums(B, df)
            sums[:, :2] += s[:, :2]
            sums[:, 2] = np.maximum(sums[:, 2], s[:, 2])
            sums[:, 3] = np.minimum(sums[:, 3], s[:, 3])
        return rtt_frame(B, sums, nan, keep)
    counts = np.zeros(len(B))
    carry = None
    for df in sel.frames(THROUGHPUT_COLUMNS + ["total_retrans"]):
        carried = 0
        if carry is not None and len(carry):
            carried = len(carry)
            df = pd.concat([_objects(carry), _objects(df)], ignore_index=True)
        d, carry = deltas(df, carried, RETRANS)
        counts += retrans_bins(B, d)
    return retrans_frame(B, counts, nan, keep)
