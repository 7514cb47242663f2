"""Answers from recordings: connection lifetimes, state counts, churn, who talks to whom.

Every function takes a DataFrame as ``tcpsnap.read`` (or ``pandas.read_parquet`` on a
full recording) returns it -- the events of a changes recording (``read(path,
mode="changes")``) are rebuilt into that first: one row per connection per snapshot, with
the columns ``timestamp``, ``seq``, ``family``, ``state``, ``local_addr``, ``local_port``, ``remote_addr``,
``remote_port``, ``pid``, ``process`` and ``cookie`` (``COLUMNS``). Work is vectorized (hashes,
scatters and bincounts over the rows, no sort of the whole table), so time grows with the
rows, linearly (measurements: ``benchmarks/RESULTS.md``).

>>> df = tcpsnap.read("recording")
>>> life = analysis.lifetimes(df)
>>> life.sort_values("duration").tail()                    # the longest-lived connections
>>> analysis.state_counts(df, freq="1s")["CLOSE_WAIT"].max()  # worst CLOSE_WAIT pile-up
>>> analysis.churn(df, freq="10s")                          # opened / closed per 10 s
>>> analysis.top_remotes(df, n=5)                           # busiest peers
>>> analysis.by_process(df)                                 # per program
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._order import stable_order
from ._schema import STATE_NAMES
from .reading import to_full

__all__ = ["lifetimes", "state_counts", "churn", "top_remotes", "by_process", "COLUMNS"]

TUPLE = ["family", "local_addr", "local_port", "remote_addr", "remote_port"]
#: The columns these functions use: ``tcpsnap.read(path, columns=analysis.COLUMNS)``.
COLUMNS = ["timestamp", "seq", "family", "state", "local_addr", "local_port", "remote_addr",
           "remote_port", "pid", "process", "cookie"]
_UNSPECIFIED = {"0.0.0.0", "::", ""}


def _full(df: pd.DataFrame) -> pd.DataFrame:
    """The events of a changes recording (``tcpsnap.read(path, mode="changes")``) as the
    rows a full recording holds; any other DataFrame as it is."""
    if "event" in df.columns and "seen_in_snapshot" in df.columns:
        return to_full(df)
    return df


def _state_codes(s: pd.Series) -> np.ndarray:
    """State as MIB numbers (uint8) whether the column holds names or numbers."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in s.cat.categories]
        lut = np.array([STATE_NAMES.index(c) + 1 for c in cats] + [0], dtype=np.uint8)
        return lut[s.cat.codes.to_numpy()]
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        return s.map({n: i + 1 for i, n in enumerate(STATE_NAMES)}).fillna(0).to_numpy(np.uint8)
    return s.to_numpy(np.uint8)


_NS = len(STATE_NAMES) + 1     # state codes 0 (unknown) .. 12


def _state_codes_fast(s: pd.Series) -> np.ndarray:
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


def lifetimes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per connection seen in the recording.

    Identity is the kernel's socket cookie where the backend has one (Linux); otherwise
    (cookie 0, e.g. Windows) the 4-tuple plus first-seen time: a 4-tuple absent from a
    snapshot and seen again later is two connections. A TIME_WAIT socket keeps its
    connection's cookie, so TIME_WAIT belongs to the connection it ends.

    Columns: ``family``, ``local_addr``, ``local_port``, ``remote_addr``, ``remote_port``,
    ``cookie``, ``first_seen``, ``last_seen``, ``duration`` (last - first seen: the true
    lifetime is longer by less than two snapshot intervals), ``snapshots`` (how many it was
    in), ``states`` (the states it went through, in order, ``>``-separated), ``first_state``,
    ``last_state``, ``pid`` / ``process`` (its last known owner, 0 / None if never known),
    ``open_at_start`` / ``open_at_end`` (already there in the first snapshot / still there in
    the last, so its true start / end is outside the recording).

    Connections come out ordered by cookie, then those without one by 4-tuple and time.
    Only the listed columns are used; ``tcpsnap.read(path, columns=analysis.COLUMNS)``
    reads just those.
    """
    df = _full(df)
    # How, in time linear in the rows: rows are put in time order (a no-op for
    # tcpsnap.read, which returns them so), every row gets a dense connection code
    # (a hash of the cookie; for rows without one, the 4-tuple split at gaps, which needs
    # one linear-time radix sort of those rows only), and everything per connection is a
    # scatter over the rows in time order -- first / last row (np.minimum/maximum.at),
    # row count (bincount), last row with an owner -- with no sort of the whole table.
    # The state path comes from (connection, state) pairs: when each state of a
    # connection occupies one stretch of its rows (always, for TCP), the path is its
    # states by first appearance; connections that went back to an earlier state get
    # their rows sorted and collapsed one by one.
    n = len(df)
    if n == 0:
        return _empty_lifetimes()
    seq = df["seq"].to_numpy()
    time_order = None
    if n > 1 and bool((seq[1:] < seq[:-1]).any()):
        time_order = np.argsort(seq, kind="stable")

    def col(a: np.ndarray) -> np.ndarray:      # a column in time order
        return a if time_order is None else a[time_order]

    seq = col(seq)
    cookie = col(df["cookie"].to_numpy(np.uint64)) if "cookie" in df else np.zeros(n, np.uint64)

    # ---- a connection code per row
    no_cookie = cookie == 0
    nt = int(np.count_nonzero(no_cookie))
    if nt == 0:
        conn, cookies = _dense(cookie)
        conn = _small(conn, len(cookies))
        kc = len(cookies)
        k = kc
        t_rows = None
    else:
        has = ~no_cookie
        conn = np.empty(n, dtype=np.int64)
        conn[has], cookies = _dense(cookie[has])
        kc = len(cookies)
        del has
        t_rows = np.flatnonzero(no_cookie)
        tcode = _tuple_codes(df, t_rows if time_order is None else time_order[t_rows])
        # snapshot ordinals of those rows, to split a 4-tuple where it was absent
        change = np.empty(n, dtype=bool)
        change[0] = False
        np.not_equal(seq[1:], seq[:-1], out=change[1:])
        snap_t = np.cumsum(change, dtype=np.int64)[t_rows]
        del change
        o = stable_order(tcode, int(tcode.max()) + 1)
        s_code, s_snap = tcode[o], snap_t[o]
        new = np.ones(nt, dtype=bool)
        new[1:] = (s_code[1:] != s_code[:-1]) | (s_snap[1:] - s_snap[:-1] > 1)
        seg = np.cumsum(new, dtype=np.int64) - 1 + kc
        conn[t_rows[o]] = seg
        k = int(seg[-1]) + 1
        del o, s_code, s_snap, new, seg, snap_t, tcode
        conn = _small(conn, k)
    del no_cookie

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

    # ---- states
    state = col(_state_codes_fast(df["state"]))
    paths = _paths(conn, state, k, n, first)

    # ---- the table, ordered by cookie, then (4-tuple, time)
    rank = np.concatenate([np.argsort(cookies, kind="stable"), np.arange(kc, k)])
    first, last, count, owner, paths = first[rank], last[rank], count[rank], owner[rank], paths[rank]

    def orig(r: np.ndarray) -> np.ndarray:      # time-order positions -> df positions
        return r if time_order is None else time_order[r]

    out = df.iloc[orig(first)][[c for c in TUPLE if c in df]].reset_index(drop=True)
    out["cookie"] = cookie[first]
    ts = df["timestamp"]
    out["first_seen"] = _utc(ts.iloc[orig(first)])
    out["last_seen"] = _utc(ts.iloc[orig(last)])
    out["duration"] = out["last_seen"] - out["first_seen"]
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
    out["open_at_start"] = seq[first] == seq[0]
    out["open_at_end"] = seq[last] == seq[-1]
    return out


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


def _empty_lifetimes() -> pd.DataFrame:
    cols = TUPLE + ["cookie", "first_seen", "last_seen", "duration", "snapshots", "states",
                    "first_state", "last_state", "pid", "process", "open_at_start", "open_at_end"]
    return pd.DataFrame({c: [] for c in cols})


def state_counts(df: pd.DataFrame, freq: str = "1s", agg: str = "mean") -> pd.DataFrame:
    """Connections per state over time: one column per state seen, one row per ``freq``
    bin; within a bin, the ``agg`` (``"mean"``, ``"max"``, ``"min"``, ``"last"``) of the
    per-snapshot counts. Bins without snapshots are NaN (a gap in the recording), not 0."""
    df = _full(df)
    if len(df) == 0:
        return pd.DataFrame()
    # per distinct timestamp, one bincount over (timestamp, state): no groupby/crosstab
    times = pd.DatetimeIndex(df["timestamp"])
    code, uniq = pd.factorize(times.asi8, sort=False)
    state = _state_codes_fast(df["state"])
    key = code.astype(np.int64)
    key *= _NS
    key += state
    counts = np.bincount(key, minlength=len(uniq) * _NS).reshape(len(uniq), _NS)[:, 1:]
    del key, code
    order = np.argsort(uniq, kind="stable")
    index = pd.DatetimeIndex(uniq[order].view(f"M8[{times.unit}]"), name="timestamp")
    index = index.tz_localize("UTC") if times.tz is None else index.tz_localize("UTC").tz_convert(times.tz)
    per_snap = pd.DataFrame(counts[order], index=index, columns=list(STATE_NAMES))
    per_snap = per_snap.loc[:, (per_snap != 0).any(axis=0)]
    return getattr(per_snap.resample(freq), agg)()


def churn(df: pd.DataFrame, freq: str = "1s", life: pd.DataFrame | None = None) -> pd.DataFrame:
    """Connections opened and closed per ``freq`` bin.

    ``opened``: first seen in that bin (connections already in the first snapshot are not
    counted); ``closed``: last seen in that bin and gone from the next snapshot (still there
    at the end: not counted). Pass ``life=lifetimes(df)`` if you already have it."""
    df = _full(df)
    life = lifetimes(df) if life is None else life
    if len(life) == 0:
        return pd.DataFrame(columns=["opened", "closed"])
    opened = life.loc[~life["open_at_start"], "first_seen"]
    closed = life.loc[~life["open_at_end"], "last_seen"]
    lo, hi = life["first_seen"].min(), life["last_seen"].max()
    idx = pd.date_range(lo.floor(freq), hi.floor(freq), freq=freq)
    o = opened.dt.floor(freq).value_counts().reindex(idx, fill_value=0)
    c = closed.dt.floor(freq).value_counts().reindex(idx, fill_value=0)
    out = pd.DataFrame({"opened": o.to_numpy(np.int64), "closed": c.to_numpy(np.int64)}, index=idx)
    out.index.name = "timestamp"
    return out


def top_remotes(df: pd.DataFrame, n: int = 10, life: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``n`` remote addresses with the most connections: ``connections``,
    ``connection_seconds`` (sum of observed durations), ``ports`` (distinct remote ports),
    ``processes`` (the local programs that talked to it). Listeners are left out."""
    df = _full(df)
    life = lifetimes(df) if life is None else life
    life = life[~life["remote_addr"].astype(str).isin(_UNSPECIFIED)]
    if len(life) == 0:
        return pd.DataFrame(columns=["connections", "connection_seconds", "ports", "processes"])
    life = life.assign(secs=life["duration"].dt.total_seconds(),
                       remote_addr=life["remote_addr"].astype(str))
    procs = life["process"].astype(object) if "process" in life else pd.Series(None, index=life.index)
    g = life.assign(_proc=procs).groupby("remote_addr", observed=True)
    out = pd.DataFrame({
        "connections": g.size(),
        "connection_seconds": g["secs"].sum(),
        "ports": g["remote_port"].nunique(),
        "processes": g["_proc"].agg(lambda s: ",".join(sorted({str(x) for x in s.dropna()}))),
    })
    return out.sort_values(["connections", "connection_seconds"], ascending=False).head(n)


def by_process(df: pd.DataFrame, life: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per owning process: ``connections`` (excluding listeners), ``listening`` (ports it
    listens on), ``remotes`` (distinct remote addresses), ``connection_seconds``,
    ``longest`` (its longest connection). Connections with no known owner group under
    pid 0."""
    df = _full(df)
    life = lifetimes(df) if life is None else life
    if len(life) == 0:
        return pd.DataFrame(columns=["process", "connections", "listening", "remotes",
                                     "connection_seconds", "longest"])
    proc = life["process"].astype(object) if "process" in life else pd.Series(None, index=life.index)
    life = life.assign(process=proc.fillna(""), secs=life["duration"].dt.total_seconds(),
                       remote_addr=life["remote_addr"].astype(str),
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
        })
    return pd.DataFrame(rows).set_index("pid").sort_values("connections", ascending=False)
