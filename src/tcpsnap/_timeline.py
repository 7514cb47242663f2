"""The snapshots of a recording as a timeline: which snapshots exist (also the empty ones), on
which host and boot, how far apart on the monotonic clock -- and so where the recording has
gaps and where the wall clock was stepped. Shared by ``tcpsnap.analysis`` and ``info``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .reading import to_full

__all__ = ["SNAP_COLUMNS", "Timeline", "prepare", "full_rows", "vocabulary", "codes_of", "is_constant",
           "int_values", "ns_values", "interval_of", "gaps", "clock_steps"]

SNAP_COLUMNS = ("seq", "timestamp", "monotonic_ns", "host", "boot_id")


def full_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The events of a changes recording (``tcpsnap.read(path, mode="changes")``) as the
    rows a full recording holds; any other DataFrame as it is."""
    if "event" in df.columns and "seen_in_snapshot" in df.columns:
        return to_full(df)
    return df


def _row_snapshots(df: pd.DataFrame) -> pd.DataFrame:
    """The snapshots ``df``'s rows belong to, one row each (its first)."""
    cols = [c for c in SNAP_COLUMNS if c in df.columns]
    keys = [c for c in ("host", "seq") if c in df.columns]
    return df[cols].drop_duplicates(keys).reset_index(drop=True)


def prepare(df: pd.DataFrame, snapshots: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(one row per connection per snapshot, the snapshots taken or None): the events of
    a changes recording rebuilt (their markers are the snapshots); rows of ``kind``
    "snapshot" (``pandas.read_parquet`` of a full recording) are snapshots, not
    connections."""
    if "event" in df.columns and "seen_in_snapshot" in df.columns:
        if snapshots is None:
            snapshots = _row_snapshots(df[df["family"].to_numpy() == 0])
        return to_full(df), snapshots
    if "kind" in df.columns:
        kind = df["kind"]
        conn = ((kind == "connection") | kind.isna()).to_numpy(bool)
        if not conn.all():
            if snapshots is None:
                snapshots = _row_snapshots(df)
            df = df[conn].reset_index(drop=True)
        return df, snapshots
    return df, snapshots


def vocabulary(*series: pd.Series | None) -> pd.Index:
    """The distinct strings of some columns, sorted."""
    vals: set[str] = set()
    for s in series:
        if s is None:
            continue
        if isinstance(s.dtype, pd.CategoricalDtype):
            vals.update(str(c) for c in s.cat.categories)
        else:
            vals.update(str(v) for v in pd.unique(s.dropna()))
    return pd.Index(sorted(vals), dtype=object)


def codes_of(s: pd.Series | None, vocab: pd.Index, n: int) -> np.ndarray:
    """``s`` as positions in ``vocab`` (int64), -1 where missing (or no column)."""
    if s is None:
        return np.full(n, -1, np.int64)
    if isinstance(s.dtype, pd.CategoricalDtype):
        lut = np.append(vocab.get_indexer(pd.Index([str(c) for c in s.cat.categories], dtype=object)), -1)
        return lut[s.cat.codes.to_numpy()].astype(np.int64)
    codes, uniq = pd.factorize(s.to_numpy(dtype=object))            # missing -> -1
    lut = np.append(vocab.get_indexer(pd.Index([str(v) for v in uniq], dtype=object)), -1)
    return lut[codes].astype(np.int64)


def is_constant(s: pd.Series | None) -> bool:
    """Whether a column is one value all along (or absent): cheap for a categorical."""
    if s is None or len(s) < 2:
        return True
    a = s.cat.codes.to_numpy() if isinstance(s.dtype, pd.CategoricalDtype) else s.to_numpy()
    if a.dtype == object:
        return False
    return bool((a == a[0]).all())


def int_values(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values as int64, known): a column of integers that may hold nulls; 0 or less is
    not a time either (a monotonic clock is positive)."""
    known = s.notna().to_numpy(bool)
    vals = s.to_numpy(dtype=np.float64, na_value=0) if not known.all() else s.to_numpy()
    vals = np.asarray(vals).astype(np.int64)
    return vals, known & (vals > 0)


def ns_values(s: pd.Series | pd.Index) -> np.ndarray:
    """Times as int64 ns since the epoch, UTC (naive ones are taken as UTC)."""
    v = pd.DatetimeIndex(s)
    if v.tz is None:
        v = v.tz_localize("UTC")
    return v.as_unit("ns").asi8


def _tz(*series: pd.Series | None):
    for s in series:
        if s is not None:
            tz = getattr(s.dt, "tz", None) if hasattr(s, "dt") else None
            if tz is not None:
                return tz
    return "UTC"


class Timeline:
    """Every snapshot the rows of ``df`` are in, and every one of ``snapshots``, once,
    by host then seq: ``h`` (host code), ``seq``, ``t`` (wall ns, UTC), ``mono`` /
    ``mono_ok`` (the monotonic clock, where known), ``boot`` (boot code); ``row``: each
    row's snapshot."""

    def __init__(self, df: pd.DataFrame, snapshots: pd.DataFrame | None) -> None:
        sn = snapshots if snapshots is not None and len(snapshots) else None
        n = len(df)
        hv = vocabulary(df.get("host"), None if sn is None else sn.get("host"))
        bv = vocabulary(df.get("boot_id"), None if sn is None else sn.get("boot_id"))
        self.hosts, self.boots = hv, bv
        self.tz = _tz(df.get("timestamp"), None if sn is None else sn.get("timestamp"))
        seq_row = df["seq"].to_numpy() if n else np.zeros(0, np.int64)
        if is_constant(df.get("host")):
            # one host (the common case): the seq alone orders the rows
            h_row = np.broadcast_to(codes_of(df["host"].iloc[:1] if "host" in df else None, hv, 1), (n,))
            kr = seq_row
        else:
            h_row = codes_of(df.get("host"), hv, n)
            kr = self._key(h_row, seq_row.astype(np.int64))
        parts = []
        run = np.zeros(0, np.int64)
        if n:
            if n == 1 or bool((kr[1:] >= kr[:-1]).all()):
                # in order (tcpsnap.read of one host): a snapshot is a run of rows
                new = np.empty(n, bool)
                new[0] = True
                np.not_equal(kr[1:], kr[:-1], out=new[1:])
                first = np.flatnonzero(new)
                del new
            else:
                run, uniq = pd.factorize(kr, sort=False)
                first = np.full(len(uniq), n, np.int64)
                np.minimum.at(first, run, np.arange(n, dtype=np.int64))
            parts.append(self._part(df.iloc[first], h_row[first], seq_row[first].astype(np.int64), bv))
        del kr
        if sn is not None:
            parts.append(self._part(sn, codes_of(sn.get("host"), hv, len(sn)),
                                    sn["seq"].to_numpy().astype(np.int64), bv))
        h, seq, t, mono, mono_ok, boot = (np.concatenate(a) for a in zip(*parts, strict=True))
        ukeys, at = np.unique(self._key(h, seq), return_index=True)
        self.h, self.seq, self.t, self.boot = h[at], seq[at], t[at], boot[at]
        self.mono, self.mono_ok = mono[at], mono_ok[at]
        # each row's snapshot: the place of its run's key among the sorted keys
        self.row = run
        if n:
            where = np.searchsorted(ukeys, self._key(h_row[first], seq_row[first].astype(np.int64)))
            if len(run):
                self.row = where[run]
            else:
                self.row = np.repeat(where, np.diff(np.append(first, n)))
        self.n = len(at)

    @staticmethod
    def _part(f: pd.DataFrame, h: np.ndarray, seq: np.ndarray, bv: pd.Index) -> tuple:
        if "monotonic_ns" in f:
            mono, ok = int_values(f["monotonic_ns"])
        else:
            mono, ok = np.zeros(len(f), np.int64), np.zeros(len(f), bool)
        return h, seq, ns_values(f["timestamp"]), mono, ok, codes_of(f.get("boot_id"), bv, len(f))

    @staticmethod
    def _key(h: np.ndarray, seq: np.ndarray) -> np.ndarray:
        # host in the high bits: keys sort by host, then seq (seq below 2**47)
        return ((h + 1) << 47) | (seq & ((1 << 47) - 1))

    def hosts_slices(self) -> list[slice]:
        cut = np.flatnonzero(self.h[1:] != self.h[:-1]) + 1
        edges = np.concatenate([[0], cut, [self.n]])
        return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def bins(self, freq: str) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray]:
        """(the ``freq`` bins from the first snapshot to the last, each snapshot's bin,
        which bins are a gap (NaN), which bins to keep).

        A bin no snapshot falls in is a gap if a host's recording went through it: two
        of its consecutive snapshots (by seq) on either side of it, the wall clock going
        forward (the recorder stopped or stalled, a reboot), or if no host was recording
        then. It is left out if its wall-clock time never happened while recording: the
        clock was stepped back over it."""
        idx = pd.DatetimeIndex(pd.to_datetime(self.t, unit="ns", utc=True)).tz_convert(self.tz)
        order = np.argsort(self.t, kind="stable")
        B = pd.Series(0, index=idx[order]).resample(freq).size().index
        B.name = "timestamp"
        nb = len(B)
        sbin = np.searchsorted(ns_values(B), self.t, side="right") - 1
        gap = np.zeros(nb, bool)
        covered = np.zeros(nb, bool)
        inrange = np.zeros(nb, bool)
        for sl in self.hosts_slices():
            bi, ti = sbin[sl], self.t[sl]
            has = np.zeros(nb, bool)
            has[bi] = True
            fwd = ti[1:] > ti[:-1]
            d = np.zeros(nb + 1, np.int64)
            np.add.at(d, bi[:-1][fwd], 1)
            np.add.at(d, bi[1:][fwd] + 1, -1)
            cov = (np.cumsum(d)[:nb] > 0) | has
            gap |= cov & ~has
            covered |= cov
            inrange[bi.min():bi.max() + 1] = True
        keep = covered | ~inrange
        return B, sbin, gap | ~covered, keep


def _interval_ns(interval: Any) -> int | None:
    if interval is None:
        return None
    if isinstance(interval, pd.Timedelta):
        return int(interval.value)
    from ._units import parse_duration

    return int(round(parse_duration(interval) * 1e9))


def _steps(snapshots: pd.DataFrame, interval: Any) -> tuple[Timeline, dict[str, np.ndarray], int]:
    """The snapshots' timeline; consecutive snapshots (by seq, within a host), as arrays
    over the pairs: ``i``
    (the later one), ``dseq``, ``dwall``, ``dmono`` and ``mono`` (both on one boot's
    monotonic clock), ``reboot``; and the interval (ns): ``interval``, else the median
    monotonic step between consecutive seqs (wall-clock step without monotonic times)."""
    tl = Timeline(snapshots.iloc[:0], snapshots)
    same = tl.h[1:] == tl.h[:-1]
    i = np.flatnonzero(same) + 1
    j = i - 1
    b_a, b_b = tl.boot[j], tl.boot[i]
    one_boot = b_a == b_b
    mono = one_boot & tl.mono_ok[i] & tl.mono_ok[j]
    p = {"i": i, "dseq": tl.seq[i] - tl.seq[j], "dwall": tl.t[i] - tl.t[j],
         "dmono": np.where(mono, tl.mono[i] - tl.mono[j], 0), "mono": mono,
         "reboot": ~one_boot & (b_a >= 0) & (b_b >= 0)}
    iv = _interval_ns(interval)
    if not iv:
        nxt = p["dseq"] == 1
        d = np.where(p["mono"], p["dmono"], p["dwall"])[nxt & ~p["reboot"]]
        d = d[d > 0]
        iv = int(np.median(d)) if len(d) else 0
    return tl, p, iv


def interval_of(snapshots: pd.DataFrame, interval: Any = None) -> int:
    """The interval (ns) ``gaps`` and ``clock_steps`` go by: ``interval`` if given (a
    duration), else the median step between consecutive snapshots (monotonic clock;
    0 with fewer than two)."""
    if _interval_ns(interval) or len(snapshots) < 2:
        return _interval_ns(interval) or 0
    return _steps(snapshots, None)[2]


def gaps(snapshots: pd.DataFrame, interval: Any = None) -> pd.DataFrame:
    """Where a recording has no snapshot for longer than it should: one row per gap
    between two consecutive snapshots (by seq, within a host), with ``host``, ``seq``
    and ``timestamp`` (the snapshot after the gap; wall clock), ``before_seq``,
    ``length`` (a Timedelta: from the snapshot before to the one after, on the
    monotonic clock within a boot, else the wall clock) and ``why``:

    - ``"reboot"``: the boot changed (``boot_id``);
    - ``"seq"``: ``seq`` jumped -- snapshots taken but not here (a file lost or skipped);
    - ``"late"``: more than 1.5 intervals passed on the monotonic clock (the recorder
      stopped and started again, was stopped (SIGSTOP) or starved, missed slots).

    ``snapshots``: as ``tcpsnap.snapshots`` returns them; ``interval``: the recording's
    (a duration: ``"100ms"``, seconds, a Timedelta), else the median step between
    snapshots."""
    cols = ["host", "seq", "timestamp", "before_seq", "length", "why"]
    if len(snapshots) < 2:
        return pd.DataFrame(columns=cols)
    tl, p, iv = _steps(snapshots, interval)
    length = np.where(p["mono"], p["dmono"], p["dwall"])
    late = (p["dseq"] == 1) & ~p["reboot"] & (iv > 0) & (length > 1.5 * iv)
    jump = (p["dseq"] > 1) & ~p["reboot"]
    hit = p["reboot"] | jump | late
    i = p["i"][hit]
    why = np.where(p["reboot"][hit], "reboot", np.where(jump[hit], "seq", "late"))
    return pd.DataFrame({
        "host": _names(tl.hosts, tl.h[i]), "seq": tl.seq[i],
        "timestamp": pd.to_datetime(tl.t[i], unit="ns", utc=True), "before_seq": tl.seq[i - 1],
        "length": pd.to_timedelta(length[hit], unit="ns"), "why": why})


def clock_steps(snapshots: pd.DataFrame, interval: Any = None, threshold: Any = None) -> pd.DataFrame:
    """Where the wall clock was stepped: between consecutive snapshots (by seq, within a
    host and boot), wall-clock time and monotonic time differ by more than
    ``threshold`` (default: the larger of 1 s and the interval). One row each: ``host``,
    ``seq`` and ``timestamp`` (the first snapshot after the step; wall clock),
    ``step`` (a Timedelta: wall minus monotonic; negative: the clock was set back).

    A machine suspended between two snapshots looks the same (the monotonic clock stops
    during a suspend) as a step forward."""
    cols = ["host", "seq", "timestamp", "step"]
    if len(snapshots) < 2:
        return pd.DataFrame(columns=cols)
    tl, p, iv = _steps(snapshots, interval)
    lim = _interval_ns(threshold) if threshold is not None else max(10**9, iv)
    d = p["dwall"] - p["dmono"]
    hit = p["mono"] & (np.abs(d) > lim)
    i = p["i"][hit]
    return pd.DataFrame({"host": _names(tl.hosts, tl.h[i]), "seq": tl.seq[i],
                         "timestamp": pd.to_datetime(tl.t[i], unit="ns", utc=True),
                         "step": pd.to_timedelta(d[hit], unit="ns")})


def _names(vocab: pd.Index, codes: np.ndarray) -> np.ndarray:
    lut = np.array([*vocab, None], dtype=object)
    return lut[codes]


