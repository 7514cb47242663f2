"""Analysis of TCP internals (recordings made with ``--tcp-info``): per-connection totals for
``lifetimes`` (tcplife's columns) and byte rates from counter deltas (``throughput``).

Where the numbers come from (README, "Analysis"): the kernel's ``struct tcp_info`` of each
row (``tcpi_bytes_acked``, ``tcpi_bytes_received``, ``tcpi_total_retrans``,
``tcpi_min_rtt``), and in a changes recording the ``closed`` event's, which holds the final
``struct tcp_info`` the kernel sent in its socket-destroy report. The byte counters count
sequence space, as tcplife's do: measured on Linux 6.18, the side that opened the connection
counts its SYN and FIN in ``bytes_acked`` (bytes sent + 2), the side that accepted it its FIN
only (+ 1); ``bytes_received`` counts the peer's FIN (+ 1) when it arrived before the socket
was freed -- the side that closes first has usually gone (to TIME_WAIT or FIN_WAIT2) before
that (+ 0). ``tests/test_closetotals.py`` holds these to the exact value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["TOTALS", "INFO_COLUMNS", "TUPLE", "THROUGHPUT_COLUMNS", "RTT_COLUMNS", "BYTES", "RETRANS", "totals",
           "closed_totals", "apply_closed", "throughput", "nullable", "deltas", "rate_bins", "finish",
           "rtt_sums", "rtt_frame", "retrans_bins", "retrans_frame", "per_bin"]

#: A connection's addresses: its identity where it has no cookie (Windows).
TUPLE = ["family", "local_addr", "local_port", "remote_addr", "remote_port"]

#: lifetimes' columns -> the tcp_info column each is the connection's last value of.
TOTALS: dict[str, str] = {"bytes_out": "bytes_acked", "bytes_in": "bytes_received",
                          "retrans": "total_retrans", "min_rtt": "min_rtt"}
#: The tcp_info columns these functions read (``tcpsnap.read(path, columns=...)``).
INFO_COLUMNS: list[str] = list(dict.fromkeys(TOTALS.values()))
_ID = ("cookie", "host", "boot_id")


#: tcpi_min_rtt before the first rtt sample (the kernel's ~0U): no value.
NO_RTT = 0xFFFFFFFF


def _values(s: pd.Series | None, n: int, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(uint64 values, valid) of a counter column ``name``; nulls (pandas NA or NaN: the
    kernel did not send the field, or the row has no tcp_info) are not valid, nor a
    ``min_rtt`` of ``NO_RTT``."""
    if s is None:
        return np.zeros(n, np.uint64), np.zeros(n, bool)
    valid = s.notna().to_numpy(bool, copy=True)
    v = s.to_numpy(dtype=np.float64, na_value=0.0) if s.dtype.kind == "f" or not valid.all() \
        else s.to_numpy()
    if np.asarray(v).dtype.kind == "f":
        v = np.where(valid, v, 0).astype(np.uint64)         # exact to 2**53 bytes
    v = np.asarray(v, np.uint64)
    if name == "min_rtt":
        valid &= v != NO_RTT
    return v, valid


def nullable(values: np.ndarray, valid: np.ndarray):
    """A nullable UInt64 column (pandas ``IntegerArray``): null where not ``valid``."""
    from pandas.arrays import IntegerArray

    return IntegerArray(np.asarray(values, np.uint64), ~np.asarray(valid, bool))


def totals(df: pd.DataFrame, conn: np.ndarray, k: int, order=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per connection (codes ``conn`` 0..k-1 of the rows, in time order; ``order`` the
    time order of ``df``'s rows, None if it is one): each ``TOTALS`` column's value in the
    connection's last row that has one, and whether it has one."""
    n = len(conn)
    out = {}
    for name, src in TOTALS.items():
        v, ok = _values(df[src] if src in df else None, n, src)
        if order is not None:
            v, ok = v[order], ok[order]
        last = np.full(k, -1, np.int64)
        if ok.any():
            np.maximum.at(last, conn, np.where(ok, np.arange(n), -1))
        has = last >= 0
        val = np.zeros(k, np.uint64)
        val[has] = v[last[has]]
        out[name] = (val, has)
    return out


def closed_totals(events: pd.DataFrame) -> pd.DataFrame | None:
    """The final totals the ``closed`` events of a changes recording's events carry (the
    destroy report's tcp_info, else the last seen), of connections a snapshot held
    (``seen_in_snapshot``): ``cookie`` (``host``, ``boot_id`` where present) and the
    ``TOTALS`` columns; None where the events have no tcp_info columns."""
    if "event" not in events or not any(c in events for c in INFO_COLUMNS):
        return None
    ev = events["event"].astype(object).to_numpy()
    m = (ev == "closed") & events["seen_in_snapshot"].to_numpy(bool) & (events["cookie"].to_numpy() != 0)
    sub = events[m]
    out = sub[[c for c in _ID if c in sub]].reset_index(drop=True)
    for name, src in TOTALS.items():
        v, ok = _values(sub[src] if src in sub else None, len(sub), src)
        out[name] = nullable(v, ok)
    return out


def apply_closed(life: pd.DataFrame, finals: pd.DataFrame | None) -> pd.DataFrame:
    """``life`` (lifetimes) with each connection's ``TOTALS`` taken from its closed event
    (``closed_totals``) where that has them: the kernel's final word on the connection."""
    if finals is None or not len(finals) or not len(life):
        return life
    keys = [c for c in _ID if c in finals and c in life]
    f = finals.drop_duplicates(keys, keep="last")
    lk = life[keys].astype({c: object for c in keys if c != "cookie"})
    fk = f[keys].astype({c: object for c in keys if c != "cookie"})
    j = lk.merge(fk.assign(_at=np.arange(len(f))), how="left", on=keys)["_at"].to_numpy()
    hit = ~pd.isna(j)
    if not hit.any():
        return life
    at = j[hit].astype(np.int64)
    rows = np.flatnonzero(hit)
    for name in TOTALS:
        new = f[name].to_numpy(dtype=object)[at]
        ok = ~pd.isna(new)
        col = life[name].copy()
        col.iloc[rows[ok]] = new[ok].astype(np.uint64)
        life[name] = col.astype("UInt64")
    return life


_BY = ("total", "connection", "process")
#: What ``throughput`` reads of the rows.
THROUGHPUT_COLUMNS = ["timestamp", "seq", "host", "boot_id", "cookie", *TUPLE, "pid", "process",
                      "bytes_acked", "bytes_received"]


def _connection_codes(df: pd.DataFrame) -> np.ndarray:
    """A code per row: (host, boot, cookie), or the 4-tuple where the cookie is 0."""
    n = len(df)
    key = pd.DataFrame({c: df[c].astype(object).to_numpy() if c in df else np.zeros(n, object)
                        for c in ("host", "boot_id")})
    ck = df["cookie"].to_numpy(np.uint64) if "cookie" in df else np.zeros(n, np.uint64)
    key["cookie"] = ck
    if (ck == 0).any():
        for c in TUPLE:
            key[c] = np.where(ck == 0, df[c].astype(object).to_numpy(), None)
    return key.groupby(list(key.columns), sort=False, dropna=False).ngroup().to_numpy(np.int64)


BYTES = (("d_out", "bytes_acked"), ("d_in", "bytes_received"))
RETRANS = (("d_retrans", "total_retrans"),)


def deltas(df: pd.DataFrame, carried: int = 0, counters=BYTES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(each row's counter deltas since its connection's previous row -- ``counters``:
    (name, column) pairs, by default ``d_out`` from ``bytes_acked`` and ``d_in`` from
    ``bytes_received`` --, NaN where either row has no value or it is the connection's
    first; the last row of each connection, to carry into the next piece). A counter
    lower than before is a reset: counted from 0, never a negative delta. The first
    ``carried`` rows are the previous piece's carry: they get no delta."""
    n = len(df)
    conn = _connection_codes(df) if n else np.zeros(0, np.int64)
    seq = df["seq"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
    o = np.lexsort((seq, conn))
    same = np.zeros(n, bool)
    if n > 1:
        same[1:] = conn[o][1:] == conn[o][:-1]
    out = df.iloc[o].reset_index(drop=True)
    for name, src in counters:
        v, ok = _values(df[src] if src in df else None, n)
        v, ok = v[o], ok[o]
        pv, pok = np.roll(v, 1), np.roll(ok, 1)
        d = np.where(v >= pv, v - pv, v).astype(np.float64)
        out[name] = np.where(same & ok & pok, d, np.nan)
    is_carry = o < carried
    last = np.ones(n, bool)
    if n > 1:
        last[:-1] = ~same[1:]
    return out[~is_carry].reset_index(drop=True), df.iloc[o[last]].reset_index(drop=True)


def rate_bins(B, d: pd.DataFrame, freq: str, by: str) -> pd.DataFrame:
    """Bytes per second per ``freq`` bin (``B``, the bins' starts) of the deltas ``d``:
    summed per bin (``by="total"``), or per (bin, connection / process)."""
    from ._timeline import ns_values

    secs = pd.Timedelta(freq).total_seconds()
    at = np.searchsorted(ns_values(B), ns_values(d["timestamp"]), side="right") - 1 if len(d) else \
        np.zeros(0, np.int64)
    inside = (at >= 0) & (at < len(B))
    if by == "total":
        out = pd.DataFrame(index=B)
        for name, src in (("bytes_out", "d_out"), ("bytes_in", "d_in")):
            v = d[src].to_numpy(np.float64) if len(d) else np.zeros(0)
            use = inside & ~np.isnan(v)
            out[name] = np.bincount(at[use], weights=v[use], minlength=len(B)) / secs
        return out
    use = inside & ~(d["d_out"].isna() & d["d_in"].isna()).to_numpy(bool) if len(d) else inside
    sub = d[use]
    keys = [*(c for c in ("host", "boot_id", "cookie", *TUPLE) if c in d)] if by == "connection" else \
        [c for c in ("host", "pid", "process") if c in d]
    frame = pd.DataFrame({"timestamp": B[at[use]]})
    for c in keys + (["pid", "process"] if by == "connection" else []):
        if c in sub and c not in frame:
            frame[c] = sub[c].astype(object).to_numpy() if isinstance(sub[c].dtype, pd.CategoricalDtype) \
                else sub[c].to_numpy()
    frame["bytes_out"] = sub["d_out"].fillna(0).to_numpy() / secs
    frame["bytes_in"] = sub["d_in"].fillna(0).to_numpy() / secs
    agg: dict[str, str] = {"bytes_out": "sum", "bytes_in": "sum"}
    if by == "connection":
        agg.update({c: "last" for c in ("pid", "process") if c in frame})
    return frame.groupby(["timestamp", *keys], sort=True, dropna=False).agg(agg).reset_index()


def finish(parts: list[pd.DataFrame], B, nan: np.ndarray, keep: np.ndarray, by: str) -> pd.DataFrame:
    """``throughput``'s answer from the per-piece ``rate_bins``: summed; for ``total``,
    NaN in bins with no snapshot (a gap), as ``state_counts``."""
    if by == "total":
        out = pd.DataFrame(index=B)
        for name in ("bytes_out", "bytes_in"):
            v = np.sum([p[name].to_numpy() for p in parts], axis=0) if parts else np.zeros(len(B))
            v = np.asarray(v, np.float64)
            v[nan] = np.nan
            out[name] = v
        return out[keep]
    if not parts:
        return pd.DataFrame(columns=["timestamp", "bytes_out", "bytes_in"])
    allp = pd.concat(parts, ignore_index=True)
    keys = [c for c in allp.columns if c not in ("bytes_out", "bytes_in", "pid", "process")] \
        if by == "connection" else [c for c in allp.columns if c not in ("bytes_out", "bytes_in")]
    agg: dict[str, str] = {"bytes_out": "sum", "bytes_in": "sum"}
    if by == "connection":
        agg.update({c: "last" for c in ("pid", "process") if c in allp})
    return allp.groupby(keys, sort=True, dropna=False).agg(agg).reset_index()


def throughput(df: pd.DataFrame, freq: str = "1s", by: str = "total",
               snapshots: pd.DataFrame | None = None) -> pd.DataFrame:
    """Byte rates (bytes per second) from counter deltas: the in-memory form of
    ``tcpsnap.analysis.throughput`` (documented there)."""
    from ._timeline import Timeline, prepare

    if by not in _BY:
        raise ValueError(f"by must be one of {', '.join(_BY)}, not {by!r}")
    df, snapshots = prepare(df, snapshots)
    if len(df) == 0 and (snapshots is None or len(snapshots) == 0):
        return pd.DataFrame(columns=["bytes_out", "bytes_in"])
    B, _, nan, keep = Timeline(df, snapshots).bins(freq)
    d, _ = deltas(df)
    return finish([rate_bins(B, d, freq, by)], B, nan, keep, by)


#: What ``rtt_bins`` and ``retrans_bins`` read of the rows.
RTT_COLUMNS = ["timestamp", "seq", "host", "rtt", "min_rtt"]


def rtt_sums(B, df: pd.DataFrame) -> np.ndarray:
    """Per bin of ``B``: (rows with an rtt, sum of their rtt, max rtt, min of min_rtt) in
    µs, from ``df``'s rows (a piece: sums merge)."""
    from ._timeline import ns_values

    out = np.zeros((len(B), 4))
    out[:, 3] = np.inf
    if not len(df) or "rtt" not in df:
        return out
    at = np.searchsorted(ns_values(B), ns_values(df["timestamp"]), side="right") - 1
    v, ok = _values(df["rtt"], len(df), "rtt")
    mv, mok = _values(df["min_rtt"] if "min_rtt" in df else None, len(df), "min_rtt")
    use = ok & (at >= 0) & (at < len(B)) & (df["tcp_info_len"].fillna(0).to_numpy() > 0
                                            if "tcp_info_len" in df else True)
    np.add.at(out[:, 0], at[use], 1)
    np.add.at(out[:, 1], at[use], v[use].astype(np.float64))
    np.maximum.at(out[:, 2], at[use], v[use].astype(np.float64))
    m = use & mok
    np.minimum.at(out[:, 3], at[m], mv[m].astype(np.float64))
    return out


def rtt_frame(B, sums: np.ndarray, nan: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """``rtt``'s answer from the summed ``rtt_sums``: milliseconds per bin."""
    n = sums[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, sums[:, 1] / np.maximum(n, 1), np.nan) / 1000
    out = pd.DataFrame({"rtt_mean_ms": mean,
                        "rtt_max_ms": np.where(n > 0, sums[:, 2], np.nan) / 1000,
                        "min_rtt_ms": np.where(np.isfinite(sums[:, 3]), sums[:, 3], np.nan) / 1000,
                        "connections": n}, index=B)
    out.loc[nan, :] = np.nan
    return out[keep]


def retrans_bins(B, d: pd.DataFrame) -> np.ndarray:
    """Retransmitted segments per bin of ``B`` from ``deltas(..., counters=RETRANS)``."""
    from ._timeline import ns_values

    if not len(d):
        return np.zeros(len(B))
    at = np.searchsorted(ns_values(B), ns_values(d["timestamp"]), side="right") - 1
    v = d["d_retrans"].to_numpy(np.float64)
    use = (at >= 0) & (at < len(B)) & ~np.isnan(v)
    return np.bincount(at[use], weights=v[use], minlength=len(B))


def per_bin(df: pd.DataFrame, freq: str, what: str, snapshots: pd.DataFrame | None = None) -> pd.DataFrame:
    """The in-memory form of ``analysis.rtt`` (``what="rtt"``) and ``analysis.retransmits``."""
    from ._timeline import Timeline, prepare

    df, snapshots = prepare(df, snapshots)
    if len(df) == 0 and (snapshots is None or len(snapshots) == 0):
        return pd.DataFrame()
    B, _, nan, keep = Timeline(df, snapshots).bins(freq)
    if what == "rtt":
        return rtt_frame(B, rtt_sums(B, df), nan, keep)
    d, _ = deltas(df, 0, RETRANS)
    return retrans_frame(B, retrans_bins(B, d), nan, keep)


def retrans_frame(B, counts: np.ndarray, nan: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame({"retransmits": np.asarray(counts, np.float64)}, index=B)
    out.loc[nan, "retransmits"] = np.nan
    return out[keep]
