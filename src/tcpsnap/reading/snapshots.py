"""``tcpsnap.reading.snapshots``: every snapshot a recording holds, one row each -- also
those that held no connection (which ``tcpsnap.read``, one row per connection, cannot show).

What tells an empty snapshot from a missing one:

- full recordings (schema version 2): a snapshot with no connection leaves one row of
  ``kind`` "snapshot" (``tcpsnap._arrow``); the others are counted from their rows;
- changes recordings: every snapshot has its marker row (``tcpsnap._events``), which holds
  the number of connections of its table;
- full recordings made before ``kind`` existed (schema version 1) have connection rows
  only: an empty snapshot left nothing, so their snapshots are those with a connection.

A folder may hold several recordings side by side under ``key=value`` folders other than
``date=`` (``host=web-1/``, ``host=web-2/``): each is read on its own (their ``seq`` are
each their own), and its keys are columns of what is returned.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

from .dataset import Recording, open_recording, time_filter
from .rowgroups import row_groups

__all__ = ["snapshots", "snapshots_of", "groups", "SNAPSHOT_COLUMNS"]

#: The columns of ``snapshots``' DataFrame, in order (then the partition keys, if any).
SNAPSHOT_COLUMNS = ("seq", "timestamp", "monotonic_ns", "capture_ns", "connections", "host", "boot_id")


def snapshots(path: str | os.PathLike, start: Any = None, end: Any = None, skip_bad: bool = False):
    """One row per snapshot a recording holds, in ``[start, end)`` (as ``tcpsnap.read``
    takes them): ``seq``, ``timestamp`` (wall clock, UTC), ``monotonic_ns`` (the
    monotonic clock at its start: compare only within one ``boot_id``), ``capture_ns``,
    ``connections`` (how many rows ``tcpsnap.read`` has for it: 0 for an empty
    snapshot), ``host``, ``boot_id``, then the folder's other hive partitions
    (``host=web-1/``...; such a ``host`` folder names the host of every file under it).
    Ordered by host (and partitions), then ``seq``.

    This is what tells an empty snapshot (0 connections) from a gap (no snapshot at
    all): pass it to ``analysis.state_counts`` / ``churn`` / ``lifetimes``
    (``snapshots=``).

    Recordings of schema version 1 (before empty snapshots left a row) hold only the
    snapshots that had a connection: there an empty snapshot cannot be told from a
    missing one, and is not listed. Their ``monotonic_ns`` is missing (``<NA>``),
    ``host`` and ``boot_id`` too unless a ``host=`` folder names the host.

    Bad files: as ``tcpsnap.read`` (``BadRecording``, or ``skip_bad=True`` and a
    warning)."""
    rec = open_recording(path, skip_bad=skip_bad, start=start, end=end)
    out = snapshots_of(rec, start, end)
    rec.report()
    return out


def groups(rec: Recording) -> list[tuple[dict[str, str], Recording]]:
    """The recordings a folder holds side by side, one per set of non-date hive
    partitions (``host=web-1/``): (their keys, a view of ``rec`` with their files only).
    One (``{}``, rec) for a plain recording."""
    by: dict[tuple, list] = {}
    for f in rec.files:
        by.setdefault(f.keys, []).append(f)
    if len(by) <= 1:
        return [(dict(next(iter(by), ())), rec)]
    out = []
    for keys, files in by.items():
        sub = copy.copy(rec)           # shares skipped, schema and path; its own files
        sub.files = files
        sub._all = None
        out.append((dict(keys), sub))
    return out


def _take(col, idx):
    import pyarrow as pa

    col = col.take(pa.array(idx))
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def snapshots_of(rec: Recording, start: Any = None, end: Any = None):
    """``snapshots`` of an open :class:`~tcpsnap.reading.dataset.Recording` (no report)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    from .changes import is_changes

    names = rec.schema.names
    changes = is_changes(rec)
    keys = [n for n in names if n not in ("date", "host", "boot_id") and
            any(k == n for f in rec.files for k, _ in f.keys)]
    want = ["seq", "timestamp", "monotonic_ns", "capture_ns", "family", "inode", "host", "boot_id", *keys]
    cols = [c for c in want if c in names]
    expr = time_filter(rec, start, end)
    if changes:
        # only the markers: one per snapshot, its connection count in ``inode``
        m = ds.field("family") == 0
        expr = m if expr is None else expr & m
    parts: dict[str, list] = {c: [] for c in (*SNAPSHOT_COLUMNS, *keys)}
    for b in row_groups(rec, cols, expr):
        n = b.num_rows
        if n == 0:
            continue
        seq = b.column("seq").to_numpy()
        # a run: consecutive rows of one snapshot (a snapshot's rows are written together)
        new = np.ones(n, bool)
        new[1:] = seq[1:] != seq[:-1]
        for c in ("host", *keys):
            if c in cols:
                col = b.column(c)
                v = col.indices if pa.types.is_dictionary(col.type) else col
                v = v.fill_null(-1) if pa.types.is_integer(v.type) else v.fill_null("")
                a = v.to_numpy(zero_copy_only=False)
                new[1:] |= a[1:] != a[:-1]
        starts = np.flatnonzero(new)
        fam = b.column("family").to_numpy()
        inode = b.column("inode").to_numpy().astype(np.int64)
        # a row of family 0 stands for its snapshot and holds its count; any other is one
        # connection (full mode; changes mode reads the markers only)
        weight = np.where(fam == 0, inode, 1)
        parts["connections"].append(np.add.reduceat(weight, starts))
        parts["seq"].append(seq[starts])
        for c in ("timestamp", "monotonic_ns", "capture_ns", "host", "boot_id", *keys):
            if c in cols:
                parts[c].append(_take(b.column(c), starts))
    if not parts["seq"]:
        return _empty(keys)
    data: dict[str, Any] = {}
    for c, v in parts.items():
        if not v:
            data[c] = None
        elif isinstance(v[0], np.ndarray):
            data[c] = np.concatenate(v)
        else:
            data[c] = pa.chunked_array(v).to_pandas()
    n = len(data["seq"])
    df = pd.DataFrame({"seq": data["seq"]})
    df["timestamp"] = data["timestamp"].to_numpy() if data["timestamp"] is not None else pd.NaT
    df["monotonic_ns"] = (pd.array(data["monotonic_ns"], dtype="Int64") if data["monotonic_ns"] is not None
                          else pd.array([pd.NA] * n, dtype="Int64"))
    df["capture_ns"] = (pd.array(data["capture_ns"], dtype="Int64") if data["capture_ns"] is not None
                        else pd.array([pd.NA] * n, dtype="Int64"))
    df["connections"] = data["connections"].astype(np.int64)
    for c in ("host", "boot_id", *keys):
        df[c] = data[c].to_numpy(dtype=object) if data[c] is not None else None
    gkeys = ["host", *keys]
    # a snapshot split across batches: its runs summed
    for c in gkeys:
        df[c] = df[c].where(df[c].notna(), None)
    if df.duplicated(["seq", *gkeys]).any():
        agg = {c: "first" for c in df.columns if c not in ("seq", "connections", *gkeys)}
        agg["connections"] = "sum"
        df = df.groupby(["seq", *gkeys], sort=False, dropna=False, as_index=False).agg(agg)
    df = df.sort_values([*keys, "host", "seq"], kind="stable", na_position="first").reset_index(drop=True)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    if not (df["monotonic_ns"].isna().any() or df["capture_ns"].isna().any()):
        df["monotonic_ns"] = df["monotonic_ns"].astype(np.int64)
        df["capture_ns"] = df["capture_ns"].astype(np.int64)
    for c in ("host", "boot_id", *keys):
        df[c] = df[c].astype("category")
    return df[[*SNAPSHOT_COLUMNS, *keys]]


def _empty(keys: list[str]):
    import pandas as pd

    df = pd.DataFrame({"seq": np.zeros(0, np.int64),
                       "timestamp": pd.to_datetime(np.zeros(0, np.int64), utc=True),
                       "monotonic_ns": np.zeros(0, np.int64), "capture_ns": np.zeros(0, np.int64),
                       "connections": np.zeros(0, np.int64)})
    for c in ("host", "boot_id", *keys):
        df[c] = pd.Categorical([])
    return df
