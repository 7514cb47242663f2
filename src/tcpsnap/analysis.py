"""Answers from recordings: connection lifetimes, state counts, churn, who talks to whom.

Every function takes a DataFrame as ``tcpsnap.read`` (or ``pandas.read_parquet`` on a
recording) returns it: one row per connection per snapshot, with the columns ``timestamp``,
``seq``, ``family``, ``state``, ``local_addr``, ``local_port``, ``remote_addr``,
``remote_port``, ``pid``, ``process`` and ``cookie``. Work is vectorized (numpy sorts and
``reduceat``), so an hour of snapshots of a thousand connections (tens of millions of rows)
takes seconds, not minutes.

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

from ._schema import STATE_NAMES

__all__ = ["lifetimes", "state_counts", "churn", "top_remotes", "by_process"]

TUPLE = ["family", "local_addr", "local_port", "remote_addr", "remote_port"]
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


def _codes(s: pd.Series) -> np.ndarray:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.codes.to_numpy(np.int64)
    return pd.factorize(s, use_na_sentinel=True)[0].astype(np.int64)


def _snapshots(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(snapshot index of each row, timestamp of each snapshot), snapshots ordered by seq."""
    seq = df["seq"].to_numpy()
    useq, idx = np.unique(seq, return_inverse=True)
    ts = df["timestamp"].to_numpy()
    first = np.zeros(len(useq), dtype=ts.dtype)
    first[idx[::-1]] = ts[::-1]                # any row's time of that snapshot (all equal)
    return idx.ravel(), first


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
    """
    n = len(df)
    if n == 0:
        return _empty_lifetimes()
    snap, snap_ts = _snapshots(df)
    cookie = df["cookie"].to_numpy(np.uint64) if "cookie" in df else np.zeros(n, np.uint64)
    by_tuple = cookie == 0
    tkey = np.zeros(n, dtype=np.int64)
    if by_tuple.any():
        sub = df.loc[by_tuple, TUPLE]
        tkey[by_tuple] = sub.groupby(TUPLE, observed=True, sort=False).ngroup().to_numpy(np.int64)
    # sort by (kind, key, snapshot): rows of one connection become one run
    order = np.lexsort((snap, tkey, cookie, by_tuple))
    s_snap, s_cookie, s_tkey, s_bt = snap[order], cookie[order], tkey[order], by_tuple[order]
    newkey = np.ones(n, dtype=bool)
    newkey[1:] = (s_cookie[1:] != s_cookie[:-1]) | (s_tkey[1:] != s_tkey[:-1]) | (s_bt[1:] != s_bt[:-1])
    # without a cookie, a gap of one or more snapshots starts a new connection
    gap = np.zeros(n, dtype=bool)
    gap[1:] = s_bt[1:] & (s_snap[1:] - s_snap[:-1] > 1)
    starts = np.flatnonzero(newkey | gap)
    ends = np.append(starts[1:], n)
    first_rows = order[starts]
    last_rows = order[ends - 1]

    state = _state_codes(df["state"])[order]
    pid = df["pid"].to_numpy(np.int64)[order] if "pid" in df else np.zeros(n, np.int64)
    pos = np.where(pid > 0, np.arange(n), -1)
    last_known = np.maximum.reduceat(pos, starts)
    owner_rows = np.where(last_known >= 0, order[np.maximum(last_known, 0)], -1)

    out = df.iloc[first_rows][[c for c in TUPLE if c in df]].reset_index(drop=True)
    out["cookie"] = cookie[first_rows]
    out["first_seen"] = snap_ts[s_snap[starts]]
    out["last_seen"] = snap_ts[s_snap[ends - 1]]
    out["first_seen"] = pd.to_datetime(out["first_seen"], utc=True) if out["first_seen"].dt.tz is None else out["first_seen"]
    out["last_seen"] = pd.to_datetime(out["last_seen"], utc=True) if out["last_seen"].dt.tz is None else out["last_seen"]
    out["duration"] = out["last_seen"] - out["first_seen"]
    out["snapshots"] = (ends - starts).astype(np.int64)
    out["states"] = _state_paths(state, starts, ends)
    names = np.array(("",) + STATE_NAMES, dtype=object)
    out["first_state"] = pd.Categorical(names[state[starts]], categories=list(STATE_NAMES))
    out["last_state"] = pd.Categorical(names[state[ends - 1]], categories=list(STATE_NAMES))
    has_owner = owner_rows >= 0
    pids = np.zeros(len(starts), dtype=np.int64)
    pids[has_owner] = df["pid"].to_numpy(np.int64)[owner_rows[has_owner]]
    out["pid"] = pids
    if "process" in df:
        proc = np.full(len(starts), None, dtype=object)
        proc[has_owner] = df["process"].to_numpy(dtype=object)[owner_rows[has_owner]]
        out["process"] = pd.Categorical(proc)
    out["open_at_start"] = s_snap[starts] == 0
    out["open_at_end"] = s_snap[ends - 1] == len(snap_ts) - 1
    del last_rows
    return out


def _state_paths(state: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``"SYN_SENT>ESTABLISHED>..."`` per run: consecutive repeats collapse."""
    n = len(state)
    change = np.zeros(n, dtype=bool)
    change[1:] = state[1:] != state[:-1]
    change[starts] = False
    nchanges = np.add.reduceat(change.astype(np.int64), starts) if n else np.zeros(0, np.int64)
    names = np.array(("?",) + STATE_NAMES, dtype=object)
    out = names[state[starts]].copy()
    for g in np.flatnonzero(nchanges):
        s, e = starts[g], ends[g]
        seg = state[s:e]
        keep = np.ones(len(seg), dtype=bool)
        keep[1:] = seg[1:] != seg[:-1]
        out[g] = ">".join(names[seg[keep]])
    return out


def _empty_lifetimes() -> pd.DataFrame:
    cols = TUPLE + ["cookie", "first_seen", "last_seen", "duration", "snapshots", "states",
                    "first_state", "last_state", "pid", "process", "open_at_start", "open_at_end"]
    return pd.DataFrame({c: [] for c in cols})


def state_counts(df: pd.DataFrame, freq: str = "1s", agg: str = "mean") -> pd.DataFrame:
    """Connections per state over time: one column per state seen, one row per ``freq``
    bin; within a bin, the ``agg`` (``"mean"``, ``"max"``, ``"min"``, ``"last"``) of the
    per-snapshot counts. Bins without snapshots are NaN (a gap in the recording), not 0."""
    if len(df) == 0:
        return pd.DataFrame()
    state = pd.Categorical.from_codes(_state_codes(df["state"]).astype(np.int64) - 1,
                                      categories=list(STATE_NAMES))
    per_snap = pd.crosstab(df["timestamp"].to_numpy(), state, dropna=False)
    per_snap.index = pd.DatetimeIndex(per_snap.index, name="timestamp")
    if per_snap.index.tz is None:
        per_snap.index = per_snap.index.tz_localize("UTC")
    per_snap = per_snap.loc[:, (per_snap != 0).any(axis=0)]
    per_snap.columns = [str(c) for c in per_snap.columns]
    return getattr(per_snap.resample(freq), agg)()


def churn(df: pd.DataFrame, freq: str = "1s", life: pd.DataFrame | None = None) -> pd.DataFrame:
    """Connections opened and closed per ``freq`` bin.

    ``opened``: first seen in that bin (connections already in the first snapshot are not
    counted); ``closed``: last seen in that bin and gone from the next snapshot (still there
    at the end: not counted). Pass ``life=lifetimes(df)`` if you already have it."""
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
