"""``tcpsnap.table_at``: the TCP table at one recorded snapshot, full or changes recording."""

from __future__ import annotations

from typing import Any

import numpy as np

from .changes import is_changes, markers
from .dataset import open_recording, to_utc
from .full import read_recording

__all__ = ["table_at"]


def table_at(path, when: Any = None, *, seq: int | None = None, columns=None, skip_bad: bool = False,
             past_end: str = "raise"):
    """The TCP table at one recorded snapshot -- the last one at or before ``when``
    (any form ``tcpsnap.read``'s ``start`` takes: ``tcpsnap.reading.to_utc``), or the one
    numbered ``seq`` -- as a DataFrame, from a full or a changes recording.

    Bad files raise :class:`tcpsnap.BadRecording` naming them, as ``tcpsnap.read`` does;
    ``skip_bad=True`` looks in the other files (and logs a warning naming the skipped).

    ``when`` after the recording's last snapshot by more than two intervals (the
    footers' ``interval_ns``; at least 1 s): ``LookupError`` saying so (the table then is
    not known: the recording had ended), unless ``past_end="last"``, which returns that
    last snapshot. Within a gap inside the recording the snapshot before the gap is
    returned. The snapshot returned is in ``df.attrs``: ``seq``, ``timestamp`` (UTC)."""
    import pandas as pd
    import pyarrow.dataset as ds

    if (when is None) == (seq is None):
        raise ValueError("give when or seq")
    if past_end not in ("raise", "last"):
        raise ValueError(f"past_end must be 'raise' or 'last', not {past_end!r}")
    if when is not None:
        when = to_utc(when)          # once: "now" is one instant
    # the files up to `when` (by the times in their names); for a seq, all of them
    rec = open_recording(path, skip_bad=skip_bad, end=None if when is None else to_utc(when).value + 1)
    if seq is None:
        t = to_utc(when).value
        if is_changes(rec):
            for back in (10**9, 60 * 10**9, 3600 * 10**9, None):
                seqs, ts, _ = markers(rec, None if back is None else t - back, t + 1)
                if len(seqs):
                    break
        else:
            # look back a second, a minute, an hour, then everything: the row groups'
            # timestamp statistics skip the rest of a long recording
            for back in (10**9, 60 * 10**9, 3600 * 10**9, None):
                expr = ds.field("timestamp") <= to_utc(when)
                if back is not None:
                    expr = expr & (ds.field("timestamp") >= to_utc(t - back))
                tt = rec.to_table(columns=["seq", "timestamp"], filter=expr)
                if tt.num_rows:
                    break
            seqs = tt.column("seq").to_numpy()
            ts = tt.column("timestamp").cast("int64").to_numpy()
        if len(seqs) == 0:
            raise LookupError(f"no snapshot at or before {to_utc(when)} in {path}")
        i = int(np.argmax(ts))
        seq, t_snap = int(seqs[i]), int(ts[i])
        if past_end == "raise":
            _check_end(path, rec, seq, t_snap, t, skip_bad)
    else:
        if is_changes(rec):
            seqs, ts, _ = markers(rec)
        else:
            tt = rec.to_table(columns=["seq", "timestamp"], filter=ds.field("seq") == seq)
            seqs = tt.column("seq").to_numpy()
            ts = tt.column("timestamp").cast("int64").to_numpy()
        hit = np.flatnonzero(seqs == seq)
        if not len(hit):
            raise LookupError(f"no snapshot seq {seq} in {path}")
        t_snap = int(ts[hit[0]])
    df = read_recording(rec, start=t_snap, end=t_snap + 1, columns=columns)
    rec.report()
    if "seq" in df:
        df = df[df["seq"] == seq].reset_index(drop=True)
    df.attrs.update(seq=seq, timestamp=pd.Timestamp(t_snap, unit="ns", tz="UTC"))
    return df


def _check_end(path, rec, seq: int, t_snap: int, t: int, skip_bad: bool) -> None:
    """LookupError when ``t`` is far past the recording's last snapshot (``seq`` at
    ``t_snap``): more than two intervals, and at least 1 s."""
    ivs = [int(f.kv["interval_ns"]) for f in rec.files if f.kv.get("interval_ns", "").isdigit()]
    tol = max(2 * max(ivs, default=0), 10**9)
    if t - t_snap <= tol:
        return
    whole = open_recording(path, skip_bad=skip_bad)       # also the files after `when`
    last = max((f.seq[1] for f in whole.files if f.seq is not None), default=seq)
    if seq >= last:
        import pandas as pd

        late = pd.Timedelta(t - t_snap, unit="ns")
        raise LookupError(f"{to_utc(t)} is {late} after the recording's last snapshot (seq {seq} at "
                          f"{to_utc(t_snap)}) in {path}: the table then is not known "
                          "(past_end='last' returns that snapshot)")
