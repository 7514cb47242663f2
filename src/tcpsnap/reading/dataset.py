"""Finding a recording's files and the rows a time range needs: what every reader shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["IGNORE_PREFIXES", "to_utc", "open_dataset", "time_filter", "filter_expression",
           "in_seq_order"]

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


def time_filter(dataset, start, end):
    """The ``pyarrow.dataset`` expression for ``start <= timestamp < end`` (either may be
    None; both None: None), with the ``date=`` partitions it needs."""
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


def filter_expression(filters):
    """``read``'s ``filters`` (an expression, or ``(column, op, value)`` tuples as
    ``pandas.read_parquet`` takes them) as a ``pyarrow.dataset`` expression."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    return filters if isinstance(filters, ds.Expression) else pq.filters_to_expression(filters)


def in_seq_order(df):
    """``df`` in snapshot order: files can come back out of order."""
    if "seq" in df and len(df) > 1:
        seq = df["seq"].to_numpy()
        if (seq[1:] < seq[:-1]).any():
            df = df.iloc[seq.argsort(kind="stable")].reset_index(drop=True)
    return df
