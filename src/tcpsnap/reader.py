"""Reading recordings back: ``tcpsnap.read``, with time ranges and filters pushed down."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

__all__ = ["read", "open_dataset", "to_utc"]

#: File names a recording's readers skip: in-progress journals, temporaries, the lock.
IGNORE_PREFIXES = [".", "_"]


def to_utc(when: Any):
    """A datetime, ``pandas.Timestamp``, epoch ns integer or string as a UTC Timestamp.
    Naive datetimes and strings without a zone are taken as UTC."""
    import pandas as pd

    if isinstance(when, int) and not isinstance(when, bool):
        return pd.Timestamp(when, unit="ns", tz="UTC")
    ts = pd.Timestamp(when)
    if ts is pd.NaT:
        raise ValueError(f"not a time: {when!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def open_dataset(path: str | os.PathLike):
    """A ``pyarrow.dataset.Dataset`` over a recording folder (hive ``date=`` partitions)
    or a single Parquet file."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no recording at {p}")
    if p.is_file():
        return ds.dataset(str(p), format="parquet")
    part = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
    dataset = ds.dataset(str(p), format="parquet", partitioning=part, ignore_prefixes=IGNORE_PREFIXES)
    if not dataset.files:
        raise FileNotFoundError(f"no Parquet files in {p}")
    return dataset


def _time_filter(dataset, start, end):
    import pyarrow as pa
    import pyarrow.dataset as ds

    expr = None
    ts_type = pa.timestamp("ns", tz="UTC")
    names = set(dataset.schema.names)

    def both(a, b):
        return b if a is None else a & b

    if start is not None:
        s = to_utc(start)
        expr = both(expr, ds.field("timestamp") >= pa.scalar(s.value, type=ts_type))
        if "date" in names:     # prune whole day partitions before any file is opened
            expr = both(expr, ds.field("date") >= s.strftime("%Y-%m-%d"))
    if end is not None:
        e = to_utc(end)
        expr = both(expr, ds.field("timestamp") < pa.scalar(e.value, type=ts_type))
        if "date" in names:
            expr = both(expr, ds.field("date") <= e.strftime("%Y-%m-%d"))
    return expr


def read(path: str | os.PathLike, start: Any = None, end: Any = None,
         columns: list[str] | None = None, filters: Any = None, mode: str = "full"):
    """A recording (folder or file) as a pandas DataFrame, one row per connection per
    snapshot.

    ``mode="full"`` (default) gives that for both kinds of recording: a changes recording
    (``tcpsnap record --mode changes``) is rebuilt from its nearest keyframe, exactly as a
    full recording of the same capture holds it (``tcpsnap.changes``; ``filters`` then
    apply to the rebuilt rows). ``mode="changes"`` returns a changes recording's events
    as recorded (snapshot markers included).

    ``start`` (inclusive) and ``end`` (exclusive) take datetimes, Timestamps or strings
    (``"2026-11-26 10:00"``; no zone means UTC). They prune ``date=`` partitions and
    Parquet row groups by their statistics, so reading one minute of a day reads about one
    minute. ``filters`` is a ``pyarrow.dataset`` expression or a list of
    ``(column, op, value)`` tuples as ``pandas.read_parquet`` takes them, e.g.
    ``[("state", "==", "CLOSE_WAIT"), ("remote_port", "==", 443)]``. ``state``, ``process``
    and the addresses come back as categoricals."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if mode not in ("full", "changes"):
        raise ValueError(f"mode must be 'full' or 'changes', got {mode!r}")
    dataset = open_dataset(path)
    from .changes import is_changes, read_changes

    if is_changes(dataset):
        return read_changes(dataset, start, end, columns, filters, mode)
    if mode == "changes":
        raise ValueError(f"{path} is a full recording; mode='changes' needs one made with "
                         "--mode changes")
    expr = _time_filter(dataset, start, end)
    if filters is not None:
        f = filters if isinstance(filters, ds.Expression) else pq.filters_to_expression(filters)
        expr = f if expr is None else expr & f
    if columns is None:
        columns = [c for c in dataset.schema.names if c != "date"]
    table = dataset.to_table(columns=list(columns), filter=expr)
    df = table.to_pandas()
    if "seq" in df and len(df) > 1:
        seq = df["seq"].to_numpy()
        if (seq[1:] < seq[:-1]).any():     # files came back out of order: restore time order
            df = df.iloc[seq.argsort(kind="stable")].reset_index(drop=True)
    return df
