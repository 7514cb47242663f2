"""``tcpsnap.table_at``: the TCP table at one recorded snapshot, full or changes recording."""

from __future__ import annotations

from typing import Any

import numpy as np

from .changes import is_changes, markers
from .dataset import open_dataset, to_utc
from .full import read

__all__ = ["table_at"]


def table_at(path, when: Any = None, *, seq: int | None = None, columns=None):
    """The TCP table at one recorded snapshot -- the last one at or before ``when``
    (datetime, Timestamp, string, epoch ns), or the one numbered ``seq`` -- as a
    DataFrame, from a full or a changes recording."""
    import pyarrow.dataset as ds

    if (when is None) == (seq is None):
        raise ValueError("give when or seq")
    dataset = open_dataset(path)
    if seq is None:
        t = to_utc(when).value
        if is_changes(dataset):
            for back in (10**9, 60 * 10**9, 3600 * 10**9, None):
                seqs, ts, _ = markers(dataset, None if back is None else t - back, t + 1)
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
            seqs, ts, _ = markers(dataset)
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
