"""The analysis functions on a DataFrame held in memory (``tcpsnap.analysis`` is the public
face: it takes a DataFrame here, or a recording's path to ``tcpsnap._bounded``). What the rows
mean: ``tcpsnap.analysis``'s docstring; ``lifetimes(parts=True)`` and ``counts_frame`` /
``churn_frame`` are the pieces ``_bounded`` merges and shares."""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd

from ._internals import TOTALS, TUPLE, apply_closed, closed_totals, nullable, totals
from ._order import stable_order
from ._schema import STATE_NAMES
from ._timeline import (
    Timeline,
    clock_steps,
    codes_of,
    full_rows,
    gaps,
    int_values,
    interval_of,
    is_constant,
    ns_values,
    prepare,
    vocabulary,
)

__all__ = ["lifetimes", "state_counts", "churn", "gaps", "clock_steps", "interval_of", "top_remotes", "by_process",
           "canonical_address", "COLUMNS", "TUPLE", "NSTATES", "state_codes", "counts_frame", "churn_frame",
           "empty_lifetimes"]

#: The columns these functions use: ``tcpsnap.read(path, columns=analysis.COLUMNS)``.
COLUMNS = ["timestamp", "seq", "monotonic_ns", "host", "boot_id", "family", "state", "local_addr",
           "local_port", "remote_addr", "remote_port", "pid", "process", "cookie"]
_UNSPECIFIED = {"0.0.0.0", "::", ""}


def _state_codes(s: pd.Series) -> np.ndarray:
    """State as MIB numbers (uint8) whether the column holds names or numbers."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in s.cat.categories]
        lut = np.array([STATE_NAMES.index(c) + 1 for c in cats] + [0], dtype=np.uint8)
        return lut[s.cat.codes.to_numpy()]
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        return s.map({n: i + 1 for i, n in enumerate(STATE_NAMES)}).fillna(0).to_numpy(np.uint8)
    return s.to_numpy(np.uint8)


_NS = NSTATES = len(STATE_NAMES) + 1     # state codes 0 (unknown) .. 12


def state_codes(s: pd.Series) -> np.ndarray:
    """``_state_codes`` without a lookup when the categories are ``STATE_NAMES`` in order
    (as every recording has them): code + 1, with -1 (missing) -> 0, in uint8."""
    if isinstance(s.dtype, pd.CategoricalDtype) and len(s.cat.categories) == len(STATE_NAMES) \
            and [str(c) for c in s.cat.categories] == list(STATE_NAMES):
        codes = s.cat.codes.to_numpy()
        if codes.dtype.itemsize == 1:
            return codes.view(np.uint8) + np.uint8(1)          # -1 wraps to 0
    return _state_codes(s)


def _dense(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..k-1 in order of first appearance, the k distinct values); a hash
    table, not a sort."""
    codes, uniq = pd.factorize(values, sort=False, use_na_sentinel=False)
    return codes, np.asarray(uniq)


def _small(codes: np.ndarray, k: int) -> np.ndarray:
    """codes as int32 when they fit (half the memory for what follows)."""
    return codes.astype(np.int32, copy=False) if k < 2**31 else codes


def _tuple_codes(df: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Dense codes of (family, local_addr, local_port, remote_addr, remote_port) for
    ``rows`` (positions in df), in order of first appearance."""
    if not all(c in df for c in TUPLE):
        missing = [c for c in TUPLE if c not in df]
        raise KeyError(f"lifetimes: rows without a cookie need the columns {missing}")

    def addr(name: str) -> np.ndarray:
        s = df[name]
        if isinstance(s.dtype, pd.CategoricalDtype):
            return s.cat.codes.to_numpy()[rows].astype(np.int64) + 1      # missing (-1) -> 0
        return _dense(s.to_numpy()[rows])[0].astype(np.int64)

    la, ra = addr("local_addr"), addr("remote_addr")
    pair = _dense(la * (int(ra.max(initial=0)) + 1) + ra)[0].astype(np.int64)
    del la, ra
    fam, fams = _dense(df["family"].to_numpy()[rows])
    pair = pair * len(fams) + fam
    lp = df["local_port"].to_numpy()[rows].astype(np.int64) & 0xFFFF
    rp = df["remote_port"].to_numpy()[rows].astype(np.int64) & 0xFFFF
    key = (pair << 32) | (lp << 16) | rp
    return _dense(key)[0]


def lifetimes(df: pd.DataFrame, snapshots: pd.DataFrame | None = None, parts: bool = False) -> pd.DataFrame:
    """The in-memory form of ``tcpsnap.analysis.lifetimes``: one row per connection of ``df``
    (identity, columns, order and ``snapshots`` are documented there).

    ``parts=True`` (for ``_bounded``, which merges the lifetimes of pieces of a recording)
    adds ``_fseq`` / ``_lseq`` (seq of the first / last row), ``_fmono`` / ``_lmono`` (their
    monotonic times, -1 where unknown) and ``_frow`` (the first row's position in ``df``).
    """
    finals = closed_totals(df)       # a changes recording's closed events: final totals
    df, snapshots = prepare(df, snapshots)
    # How, in time linear in the rows: rows are put in time order (a no-op for
    # tcpsnap.read, which returns them so), every row gets a dense connection code
    # (a hash of (host, boot, cookie); for rows without a cookie, the 4-tuple split at
    # gaps, which needs one linear-time radix sort of those rows only), and everything
    # per connection is a scatter over the rows in time order -- first / last row
    # (np.minimum/maximum.at), row count (bincount), last row with an owner -- with no
    # sort of the whole table.
    # The state path comes from (connection, state) pairs: when each state of a
    # connection occupies one stretch of its rows (always, for TCP), the path is its
    # states by first appearance; connections that went back to an earlier state get
    # their rows sorted and collapsed one by one.
    n = len(df)
    if n == 0:
        return empty_lifetimes()
    seq = df["seq"].to_numpy()
    time_order = None
    if n > 1 and bool((seq[1:] < seq[:-1]).any()):
        time_order = np.argsort(seq, kind="stable")

    def col(a: np.ndarray) -> np.ndarray:      # a column in time order
        return a if time_order is None else a[time_order]

    seq = col(seq).astype(np.int64, copy=False)
    cookie = col(df["cookie"].to_numpy(np.uint64)) if "cookie" in df else np.zeros(n, np.uint64)

    # ---- where each row was recorded: (host, boot), a small code
    sn = snapshots if snapshots is not None and len(snapshots) else None
    hv = vocabulary(df.get("host"), None if sn is None else sn.get("host"))
    bv = vocabulary(df.get("boot_id"), None if sn is None else sn.get("boot_id"))
    nb1 = len(bv) + 1
    norigin = (len(hv) + 1) * nb1
    if is_constant(df.get("host")) and is_constant(df.get("boot_id")):
        # one host, one boot (the common case): no per-row code
        h0, b0 = (df[c].iloc[:1] if c in df else None for c in ("host", "boot_id"))
        one = (codes_of(h0, hv, 1) + 1) * nb1 + codes_of(b0, bv, 1) + 1
        origin = np.broadcast_to(one.astype(np.int64), (n,))
        one_origin = True
    else:
        origin = col((codes_of(df.get("host"), hv, n) + 1) * nb1 + codes_of(df.get("boot_id"), bv, n) + 1)
        one_origin = bool((origin == origin[0]).all())

    # ---- a connection code per row
    no_cookie = cookie == 0
    nt = int(np.count_nonzero(no_cookie))
    has = ~no_cookie
    cc, cu = _dense(cookie[has]) if nt else _dense(cookie)
    if one_origin or len(cu) == 0:
        conn_c, cookies, corigin = cc, cu, np.full(len(cu), origin[0], np.int64)
    else:
        conn_c, ukey = _dense(origin[has] * len(cu) + cc)
        cookies, corigin = cu[ukey % len(cu)], ukey // len(cu)
    kc = len(cookies)
    if nt == 0:
        conn = _small(conn_c, kc)
        k = kc
    else:
        conn = np.empty(n, dtype=np.int64)
        conn[has] = conn_c
        t_rows = np.flatnonzero(no_cookie)
        tcode = _tuple_codes(df, t_rows if time_order is None else time_order[t_rows])
        if not one_origin:
            tcode = _dense(origin[t_rows] * (int(tcode.max()) + 1) + tcode)[0]
        # split a 4-tuple where it was absent: a seq (a snapshot) it is not in
        seq_t = seq[t_rows]
        o = stable_order(tcode, int(tcode.max()) + 1)
        s_code, s_seq = tcode[o], seq_t[o]
        new = np.ones(nt, dtype=bool)
        new[1:] = (s_code[1:] != s_code[:-1]) | (s_seq[1:] - s_seq[:-1] > 1)
        seg = np.cumsum(new, dtype=np.int64) - 1 + kc
        conn[t_rows[o]] = seg
        k = int(seg[-1]) + 1
        del o, s_code, s_seq, new, seg, seq_t, tcode
        conn = _small(conn, k)
    del no_cookie, has

    # ---- per connection: rows, first / last row, last row with an owner
    pos = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    first = np.full(k, n, dtype=pos.dtype)
    np.minimum.at(first, conn, pos)
    last = np.full(k, -1, dtype=pos.dtype)
    np.maximum.at(last, conn, pos)
    count = np.bincount(conn, minlength=k).astype(np.int64)
    owner = np.full(k, -1, dtype=pos.dtype)
    if "pid" in df:
        pid = col(df["pid"].to_numpy())
        np.maximum.at(owner, conn, np.where(pid > 0, pos, -1).astype(pos.dtype, copy=False))
        del pid
    del pos
    tot = totals(df, conn, k, time_order)

    # ---- states
    state = col(state_codes(df["state"]))
    paths = _paths(conn, state, k, n, first)

    # ---- the first and last snapshot of each (host, boot): the rows', and the snapshots'
    big = np.iinfo(np.int64).max
    gmin = np.full(norigin, big, np.int64)
    gmax = np.full(norigin, -big, np.int64)
    if one_origin:
        gmin[origin[0]], gmax[origin[0]] = seq[0], seq[-1]
    else:
        np.minimum.at(gmin, origin, seq)
        np.maximum.at(gmax, origin, seq)
    if sn is not None:
        so = (codes_of(sn.get("host"), hv, len(sn)) + 1) * nb1 + codes_of(sn.get("boot_id"), bv, len(sn)) + 1
        sq = sn["seq"].to_numpy().astype(np.int64)
        np.minimum.at(gmin, so, sq)
        np.maximum.at(gmax, so, sq)

    # ---- the table, ordered by cookie (then host and boot), then (4-tuple, time)
    rank = np.concatenate([np.lexsort((corigin, cookies)), np.arange(kc, k)])
    first, last, count, owner, paths = first[rank], last[rank], count[rank], owner[rank], paths[rank]

    def orig(r: np.ndarray) -> np.ndarray:      # time-order positions -> df positions
        return r if time_order is None else time_order[r]

    out = df.iloc[orig(first)][[c for c in TUPLE if c in df]].reset_index(drop=True)
    out["cookie"] = cookie[first]
    for c in ("host", "boot_id"):
        if c in df:
            out[c] = df[c].iloc[orig(first)].to_numpy()
            if isinstance(df[c].dtype, pd.CategoricalDtype):
                out[c] = out[c].astype(df[c].dtype)
    ts = df["timestamp"]
    out["first_seen"] = _utc(ts.iloc[orig(first)])
    out["last_seen"] = _utc(ts.iloc[orig(last)])
    wall = (out["last_seen"] - out["first_seen"]).to_numpy()
    if "monotonic_ns" in df:
        m = df["monotonic_ns"]
        mf, okf = int_values(m.iloc[orig(first)])
        ml, okl = int_values(m.iloc[orig(last)])
        # one connection is one boot: its monotonic times compare
        dur = np.where(okf & okl, ml - mf, wall.astype("m8[ns]").astype(np.int64))
        out["duration"] = pd.to_timedelta(dur, unit="ns")
    else:
        out["duration"] = wall
    out["snapshots"] = count
    out["states"] = paths
    names = np.array(("",) + STATE_NAMES, dtype=object)
    out["first_state"] = pd.Categorical(names[state[first]], categories=list(STATE_NAMES))
    out["last_state"] = pd.Categorical(names[state[last]], categories=list(STATE_NAMES))
    has_owner = owner >= 0
    owner_rows = orig(owner[has_owner])
    pids = np.zeros(k, dtype=np.int64)
    pids[has_owner] = df["pid"].to_numpy()[owner_rows].astype(np.int64) if "pid" in df else 0
    out["pid"] = pids
    if "process" in df:
        proc = np.full(k, None, dtype=object)
        proc[has_owner] = df["process"].iloc[owner_rows].to_numpy(dtype=object)
        out["process"] = pd.Categorical(proc)
    out["open_at_start"] = seq[first] == gmin[origin[first]]
    out["open_at_end"] = seq[last] == gmax[origin[last]]
    for name, (val, has) in tot.items():
        out[name] = nullable(val[rank], has[rank])
    if parts:
        out["_fseq"], out["_lseq"], out["_frow"] = seq[first], seq[last], orig(first)
        if "monotonic_ns" in df:
            out["_fmono"], out["_lmono"] = np.where(okf, mf, -1), np.where(okl, ml, -1)
        else:
            out["_fmono"] = out["_lmono"] = np.full(k, -1, np.int64)
        return out
    return apply_closed(out, finals)


def _utc(s: pd.Series) -> pd.DatetimeIndex:
    """Times as UTC (naive ones are taken as UTC)."""
    v = pd.DatetimeIndex(s)
    return v.tz_localize("UTC") if v.tz is None else v.tz_convert("UTC")


def _paths(conn: np.ndarray, state: np.ndarray, k: int, n: int, first: np.ndarray) -> np.ndarray:
    """``"SYN_SENT>ESTABLISHED>..."`` per connection (rows in time order, consecutive
    repeats collapse)."""
    names = np.array(("?",) + STATE_NAMES, dtype=object)
    # (connection, state) pairs: where each first and last appears
    if k * _NS <= 4 * n:
        pk: np.ndarray = conn.astype(np.int64 if k * _NS >= 2**31 else np.int32)
        pk *= _NS
        pk += state
        npairs = k * _NS
        pair_ids = None
    else:
        pk, pair_ids = _dense(conn.astype(np.int64) * _NS + state)
        npairs = len(pair_ids)
    pos = np.arange(n, dtype=first.dtype)
    pf = np.full(npairs, n, dtype=first.dtype)
    np.minimum.at(pf, pk, pos)
    pl = np.full(npairs, -1, dtype=first.dtype)
    np.maximum.at(pl, pk, pos)
    del pk, pos
    if pair_ids is None:
        present = np.flatnonzero(pf < n)
        p_conn, p_state = present // _NS, present % _NS
        pf, pl = pf[present], pl[present]
    else:
        p_conn, p_state = pair_ids // _NS, pair_ids % _NS
    order = np.lexsort((pf, p_conn))
    p_conn, p_state, pf, pl = p_conn[order], p_state[order], pf[order], pl[order]
    per = np.bincount(p_conn, minlength=k)
    out = names[state[first]].copy()          # one state: the common case
    multi = np.flatnonzero(per > 1)
    if len(multi) == 0:
        return out
    starts = np.concatenate([[0], np.cumsum(per)[:-1]])
    # one stretch per state <=> every state's last row comes before the next state's first
    same = p_conn[1:] == p_conn[:-1]
    overlap = same & (pl[:-1] > pf[1:])
    bad = np.zeros(k, dtype=bool)
    bad[p_conn[1:][overlap]] = True
    for c in multi:
        if bad[c]:
            continue
        s = starts[c]
        out[c] = ">".join(names[p_state[s:s + per[c]]])
    badc = np.flatnonzero(bad)
    if len(badc):
        lut = np.zeros(k, dtype=bool)
        lut[badc] = True
        rows = np.flatnonzero(lut[conn])        # in time order
        sub = conn[rows]
        o = np.argsort(sub, kind="stable")
        sub, st = sub[o], state[rows[o]]
        cut = np.flatnonzero(np.diff(sub)) + 1
        for c, seg in zip(sub[np.concatenate([[0], cut])], np.split(st, cut), strict=True):
            keep = np.ones(len(seg), dtype=bool)
            keep[1:] = seg[1:] != seg[:-1]
            out[c] = ">".join(names[seg[keep]])
    return out


def empty_lifetimes() -> pd.DataFrame:
    cols = TUPLE + ["cookie", "first_seen", "last_seen", "duration", "snapshots", "states",
                    "first_state", "last_state", "pid", "process", "open_at_start", "open_at_end"]
    out = pd.DataFrame({c: [] for c in cols})
    for name in TOTALS:
        out[name] = pd.array([], dtype="UInt64")
    return out


def state_counts(df: pd.DataFrame, freq: str = "1s", agg: str = "mean",
                 snapshots: pd.DataFrame | None = None) -> pd.DataFrame:
    """The in-memory form of ``tcpsnap.analysis.state_counts`` (bins, ``agg``, gaps as
    NaN and ``snapshots`` are documented there)."""
    df, snapshots = prepare(df, snapshots)
    if len(df) == 0 and (snapshots is None or len(snapshots) == 0):
        return pd.DataFrame()
    tl = Timeline(df, snapshots)
    # per snapshot, one bincount over (snapshot, state): no groupby/crosstab of the rows
    if len(df):
        key = tl.row.astype(np.int64) * _NS
        key += state_codes(df["state"])
        counts = np.bincount(key, minlength=tl.n * _NS).reshape(tl.n, _NS)[:, 1:]
        del key
    else:
        counts = np.zeros((tl.n, _NS - 1), np.int64)
    return counts_frame(tl, counts, freq, agg)


def counts_frame(tl: Timeline, counts: np.ndarray, freq: str, agg: str) -> pd.DataFrame:
    """``state_counts``' answer from the per-snapshot counts (``tl.n`` x 12, in ``tl``'s
    snapshot order, columns ``STATE_NAMES``)."""
    per_snap = pd.DataFrame(counts, columns=list(STATE_NAMES))
    per_snap = per_snap.loc[:, (per_snap != 0).any(axis=0)]
    B, sbin, nan, keep = tl.bins(freq)
    states = list(per_snap.columns)
    per_snap["_h"] = tl.h
    per_snap["_bin"] = sbin
    per_host = per_snap.groupby(["_h", "_bin"], sort=True)[states].agg(agg)
    total = per_host.groupby(level="_bin").sum()
    out = total.reindex(np.arange(len(B)))
    if nan.any():
        out = out.astype(np.float64)
        out.iloc[np.flatnonzero(nan)] = np.nan
    out.index = B
    return out[keep]


def churn(df: pd.DataFrame, freq: str = "1s", life: pd.DataFrame | None = None,
          snapshots: pd.DataFrame | None = None) -> pd.DataFrame:
    """The in-memory form of ``tcpsnap.analysis.churn`` (documented there)."""
    df, snapshots = prepare(df, snapshots)
    life = lifetimes(df, snapshots=snapshots) if life is None else life
    if len(df) == 0 and (snapshots is None or len(snapshots) == 0):
        return pd.DataFrame(columns=["opened", "closed"])
    return churn_frame(Timeline(df, snapshots), life, freq)


def churn_frame(tl: Timeline, life: pd.DataFrame, freq: str) -> pd.DataFrame:
    """``churn``'s answer from the snapshots' timeline and the lifetimes."""
    B, _, nan, keep = tl.bins(freq)
    edges = ns_values(B)
    out = pd.DataFrame(index=B)
    for name, rows, when in (("opened", ~life["open_at_start"].to_numpy(bool), "first_seen"),
                             ("closed", ~life["open_at_end"].to_numpy(bool), "last_seen")):
        at = np.searchsorted(edges, ns_values(life.loc[rows, when]), side="right") - 1
        at = at[(at >= 0) & (at < len(B))]
        c = np.bincount(at, minlength=len(B)).astype(np.float64)
        c[nan] = np.nan
        out[name] = c
    return out[keep]


def canonical_address(addr: str) -> str:
    """One spelling per peer: an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a
    dual-stack socket shows) as its IPv4 address; any other as it is."""
    if addr.startswith("::ffff:") or addr.startswith("::FFFF:"):
        try:
            mapped = ipaddress.IPv6Address(addr).ipv4_mapped
        except ValueError:
            return addr
        if mapped is not None:
            return str(mapped)
    return addr


def _canonical(s: pd.Series) -> pd.Series:
    """Addresses in their canonical spelling (``canonical_address``), as strings."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = np.array([canonical_address(str(c)) for c in s.cat.categories] + [""], dtype=object)
        return pd.Series(cats[s.cat.codes.to_numpy()], index=s.index, dtype=object)
    return s.astype(str).map(canonical_address)


def _bytes_sums(g, life: pd.DataFrame) -> dict:
    """``bytes_out`` / ``bytes_in`` summed per group (null where none of it was recorded)."""
    return {name: g[name].sum(min_count=1) if name in life else pd.NA for name in ("bytes_out", "bytes_in")}


def _by_bytes(out: pd.DataFrame, by: str, first: list[str]) -> pd.DataFrame:
    """``out`` sorted by ``first`` (``by="connections"``) or by bytes moved (``"bytes"``)."""
    if by == "bytes":
        moved = out["bytes_out"].fillna(0).astype("float64") + out["bytes_in"].fillna(0).astype("float64")
        return out.assign(_b=moved).sort_values(["_b", *first], ascending=False).drop(columns="_b")
    if by != "connections":
        raise ValueError(f"by must be 'connections' or 'bytes', not {by!r}")
    return out.sort_values(first, ascending=False)


def top_remotes(df: pd.DataFrame, n: int = 10, life: pd.DataFrame | None = None,
                by: str = "connections") -> pd.DataFrame:
    """The in-memory form of ``tcpsnap.analysis.top_remotes`` (documented there)."""
    df = full_rows(df)
    life = lifetimes(df) if life is None else life
    remote = _canonical(life["remote_addr"]) if len(life) else life["remote_addr"]
    life = life.assign(remote_addr=remote)[~remote.isin(_UNSPECIFIED)]
    if len(life) == 0:
        return pd.DataFrame(columns=["connections", "connection_seconds", "ports", "processes",
                                     "bytes_out", "bytes_in"])
    life = life.assign(secs=life["duration"].dt.total_seconds())
    procs = life["process"].astype(object) if "process" in life else pd.Series(None, index=life.index)
    g = life.assign(_proc=procs).groupby("remote_addr", observed=True)
    out = pd.DataFrame({
        "connections": g.size(),
        "connection_seconds": g["secs"].sum(),
        "ports": g["remote_port"].nunique(),
        "processes": g["_proc"].agg(lambda s: ",".join(sorted({str(x) for x in s.dropna()}))),
        **_bytes_sums(g, life),
    })
    return _by_bytes(out, by, ["connections", "connection_seconds"]).head(n)


def by_process(df: pd.DataFrame, life: pd.DataFrame | None = None, by: str = "connections") -> pd.DataFrame:
    """The in-memory form of ``tcpsnap.analysis.by_process`` (documented there)."""
    df = full_rows(df)
    life = lifetimes(df) if life is None else life
    if len(life) == 0:
        return pd.DataFrame(columns=["process", "connections", "listening", "remotes",
                                     "connection_seconds", "longest", "bytes_out", "bytes_in"])
    proc = life["process"].astype(object) if "process" in life else pd.Series(None, index=life.index)
    life = life.assign(process=proc.fillna(""), secs=life["duration"].dt.total_seconds(),
                       remote_addr=_canonical(life["remote_addr"]),
                       is_listener=life["states"].astype(str) == "LISTEN")
    rows = []
    for (pid, name), g in life.groupby(["pid", "process"], sort=True):
        conns = g[~g["is_listener"]]
        rows.append({
            "pid": pid, "process": name or None,
            "connections": len(conns),
            "listening": ",".join(str(p) for p in sorted(set(g.loc[g["is_listener"], "local_port"].tolist()))),
            "remotes": conns.loc[~conns["remote_addr"].isin(_UNSPECIFIED), "remote_addr"].nunique(),
            "connection_seconds": float(conns["secs"].sum()),
            "longest": conns["duration"].max() if len(conns) else pd.Timedelta(0),
            **{k: (v if v is pd.NA else int(v)) for k, v in _bytes_sums(conns, life).items()},
        })
    out = pd.DataFrame(rows).set_index("pid")
    for name in ("bytes_out", "bytes_in"):
        out[name] = out[name].astype("UInt64")
    return _by_bytes(out, by, ["connections"])
