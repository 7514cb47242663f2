"""``tcpsnap.table_at``: the TCP table at one recorded snapshot, full or changes recording."""

from __future__ import annotations

from typing import Any

import numpy as np

from .changes import is_changes, markers
from .dataset import open_recording, to_utc
from .full import read_recording

__all__ = ["table_at"]


def table_at(path, when: Any = None, *, seq: int | None = None, columns=None, skip_bad: bool = False):
    """The TCP table at one recorded snapshot -- the last one at or before ``when``
    (any form ``tcpsnap.read``'s ``start`` takes: ``tcpsnap.reading.to_utc``), or the one
    numbered ``seq`` -- as a DataFrame, from a full or a changes recording.

    Bad files raise :class:`tcpsnap.BadRecording` naming them, as ``tcpsnap.read`` does;
    ``skip_bad=True`` looks in the other files (and logs a warning naming the skipped)."""
    import pyarrow.dataset as ds

    if (when is None) == (seq is None):
        raise ValueError("give when or seq")
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
    return df
