"""``tcpsnap.read``: a recording as a pandas DataFrame, one row per connection per snapshot."""

from __future__ import annotations

import os
from typing import Any

from .changes import is_changes, read_changes
from .dataset import filter_expression, in_seq_order, open_dataset, time_filter

__all__ = ["read"]


def read(path: str | os.PathLike, start: Any = None, end: Any = None,
         columns: list[str] | None = None, filters: Any = None, mode: str = "full"):
    """A recording (folder or file) as a pandas DataFrame, one row per connection per
    snapshot.

    ``mode="full"`` (default) gives that for both kinds of recording: a changes recording
    (``tcpsnap record --mode changes``) is rebuilt from its nearest keyframe, exactly as a
    full recording of the same capture holds it (``tcpsnap.reading.changes``; ``filters``
    then apply to the rebuilt rows). ``mode="changes"`` returns a changes recording's events
    as recorded (snapshot markers included).

    ``start`` (inclusive) and ``end`` (exclusive) take datetimes, Timestamps or strings
    (``"2026-11-26 10:00"``; no zone means UTC). They prune ``date=`` partitions and
    Parquet row groups by their statistics, so reading one minute of a day reads about one
    minute. ``filters`` is a ``pyarrow.dataset`` expression or a list of
    ``(column, op, value)`` tuples as ``pandas.read_parquet`` takes them, e.g.
    ``[("state", "==", "CLOSE_WAIT"), ("remote_port", "==", 443)]``. ``state``, ``process``
    and the addresses come back as categoricals."""
    if mode not in ("full", "changes"):
        raise ValueError(f"mode must be 'full' or 'changes', got {mode!r}")
    dataset = open_dataset(path)
    if is_changes(dataset):
        return read_changes(dataset, start, end, columns, filters, mode)
    if mode == "changes":
        raise ValueError(f"{path} is a full recording; mode='changes' needs one made with "
                         "--mode changes")
    expr = time_filter(dataset, start, end)
    if filters is not None:
        f = filter_expression(filters)
        expr = f if expr is None else expr & f
    if columns is None:
        columns = [c for c in dataset.schema.names if c != "date"]
    table = dataset.to_table(columns=list(columns), filter=expr)
    return in_seq_order(table.to_pandas())
