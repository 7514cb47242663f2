"""``tcpsnap.read``: a recording as a pandas DataFrame, one row per connection per snapshot."""

from __future__ import annotations

import os
from typing import Any

from .changes import is_changes, read_changes
from .dataset import Recording, filter_expression, in_seq_order, open_recording, time_filter, utc_range
from .query import where_expression

__all__ = ["read", "read_recording"]


def read(path: str | os.PathLike, start: Any = None, end: Any = None,
         columns: list[str] | None = None, filters: Any = None, mode: str = "full", *,
         skip_bad: bool = False, where: Any = None, hosts: Any = None, endpoint_url: str | None = None):
    """A recording (folder or file), a fleet's layout (a local folder of ``host=NAME/``
    folders, as ``tcpsnap ship`` lays them out or side by side), or a shipped fleet's URL
    (``s3://bucket/prefix``) as a pandas DataFrame, one row per connection per snapshot.

    ``mode="full"`` (default) gives that for both kinds of recording: a changes recording
    (``tcpsnap record --mode changes``) is rebuilt from its nearest keyframe, exactly as a
    full recording of the same capture holds it (``tcpsnap.reading.changes``; ``filters``
    then apply to the rebuilt rows). ``mode="changes"`` returns a changes recording's events
    as recorded (snapshot markers included).

    ``start`` (inclusive) and ``end`` (exclusive) take datetimes, Timestamps, epoch ns
    integers or strings (``"2026-11-26 10:00"``, ``"now-5m"``, ``"@1795000000"``; no zone
    means UTC): ``tcpsnap.reading.to_utc``, also for ``filters`` on ``timestamp``. Files
    are picked by the times in their names and row groups by their statistics, so reading
    one minute of a day reads about one minute. ``filters`` is a ``pyarrow.dataset`` expression or a list of
    ``(column, op, value)`` tuples as ``pandas.read_parquet`` takes them, e.g.
    ``[("state", "==", "CLOSE_WAIT"), ("remote_port", "==", 443)]``. ``state``, ``process``
    and the addresses come back as categoricals. ``where`` is a filter in the language of
    every command (``tcpsnap.filters``): ``"dport = :443 or sport = :443"``,
    ``"state established and not dst 10.0.0.0/8"``, a ``tcpsnap.Filter``, or a ``pyarrow``
    expression; it is pushed into the scan with ``filters`` (both must hold).
    ``FilterError`` (a ValueError) for one that does not parse.

    Every file's footer is checked and every page's checksum verified: a file that is
    corrupt, not a tcpsnap file, a copy of another (a duplicate ``seq`` range) or of the
    other mode raises :class:`tcpsnap.BadRecording` naming it. ``skip_bad=True`` reads the
    other files instead, and logs (logger ``tcpsnap.reading``) a warning listing the ones
    it skipped.

    ``hosts`` (a name or names): only those hosts' rows; in a fleet's layout the other
    hosts' ``host=NAME/`` folders are not opened. A URL (``s3://bucket/prefix``; the
    endpoint ``endpoint_url`` or ``AWS_ENDPOINT_URL``, credentials from the standard AWS
    chain) is read with partition pruning: only the objects of the asked hosts, UTC days
    and files (by the times in their names) are listed and fetched, into a temporary
    folder removed on return (``tcpsnap.ship.remote``); the frame is the one a local copy
    of the layout gives. ``UsageError`` for a URL that is not ``s3://`` or when no shipped
    file matches; ``OSError`` when the store cannot be read."""
    if mode not in ("full", "changes"):
        raise ValueError(f"mode must be 'full' or 'changes', got {mode!r}")
    start, end = utc_range(start, end)        # once: "now" is one instant, here and remote
    filters = where_expression(where, filters)  # a filter that does not parse: before any fetch
    if isinstance(path, str) and "://" in path:
        from ..ship.remote import fetched, host_list

        with fetched(path, host_list(hosts), start, end, endpoint_url=endpoint_url) as local:
            return read(local, start, end, columns, filters, mode, skip_bad=skip_bad, hosts=hosts)
    if hosts is not None:
        from ..ship.remote import host_list

        hosts = host_list(hosts)
        filters = where_expression(_host_in(hosts), filters)
    rec = open_recording(path, skip_bad=skip_bad, start=start, end=end, hosts=hosts)
    df = read_recording(rec, start, end, columns, filters, mode)
    rec.report()
    return df


def _host_in(hosts: list[str]):
    import pyarrow as pa
    import pyarrow.dataset as ds

    return ds.field("host").isin(pa.array(hosts, pa.string()))


def read_recording(rec: Recording, start: Any = None, end: Any = None,
                   columns: list[str] | None = None, filters: Any = None, mode: str = "full"):
    """``read`` of an open :class:`~tcpsnap.reading.dataset.Recording` (no report)."""
    if is_changes(rec):
        if mode == "full" and rec.files:
            # changes mode follows a connection its filter selected until it closes: the
            # rebuilt snapshots keep only the rows a full recording would (tcpsnap.filters)
            from ..record.config import recording_filter

            rf = recording_filter(rec.files[0].filters)
            if rf is not None and rf.needs_rebuild_filter:
                filters = where_expression(rf, filters)
        return _read_changes(rec, start, end, columns, filters, mode)
    if mode == "changes":
        raise ValueError(f"{rec.path} is a full recording; mode='changes' needs one made with "
                         "--mode changes")
    expr = time_filter(rec, start, end)
    if filters is not None:
        f = filter_expression(filters)
        expr = f if expr is None else expr & f
    if "kind" in rec.schema.names:
        # rows of kind "snapshot" stand for empty snapshots, not connections
        import pyarrow.dataset as ds

        # (a file of schema version 1 read with the version 2 columns has no kind: all
        # its rows are connections)
        conn = (ds.field("kind") == "connection") | ds.field("kind").is_null()
        expr = conn if expr is None else expr & conn
    if columns is None:
        columns = [c for c in rec.schema.names if c not in ("date", "kind")]
    table = rec.to_table(columns=list(columns), filter=expr)
    if table.num_rows == 0 and "kind" in rec.schema.names:
        from .._arrow import rows_schema  # no connection: the same empty frame as a rebuild

        empty = rows_schema().empty_table()
        return empty.select([c for c in columns if c in empty.column_names]).to_pandas()
    df = in_seq_order(table.to_pandas())
    if "kind" in rec.schema.names:
        # the snapshot rows left out, their strings (an empty address, the host of a
        # recording with no connection) are no category of what is returned
        for c in ("local_addr", "remote_addr", "process", "host", "boot_id"):
            if c in df and hasattr(df[c], "cat"):
                df[c] = df[c].cat.remove_unused_categories()
    return df


def _read_changes(rec: Recording, start, end, columns, filters, mode):
    """``read_changes``, recording by recording when the folder holds several side by side
    (``host=web-1/``, ``host=web-2/``: each its own ``seq``), their partition keys as
    columns."""
    from .snapshots import groups

    parts = groups(rec)
    if len(parts) == 1 and not parts[0][0]:
        return read_changes(rec, start, end, columns, filters, mode)
    import pandas as pd

    frames = []
    for keys, sub in parts:
        df = read_changes(sub, start, end, columns, filters, mode)
        for k, v in keys.items():
            if columns is None or k in columns:
                df[k] = pd.Categorical([v] * len(df))
        frames.append(df)
    return in_seq_order(_concat(frames))


def _concat(frames: list):
    """DataFrames of the same columns, one after the other, categoricals kept (their
    categories united)."""
    import pandas as pd
    from pandas.api.types import union_categoricals

    frames = [f for f in frames if len(f)] or frames[:1]
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    out = pd.concat(frames, ignore_index=True)
    for c in frames[0].columns:
        if all(isinstance(f[c].dtype, pd.CategoricalDtype) for f in frames):
            out[c] = union_categoricals([f[c] for f in frames])
    return out
