"""Read a fleet: the shipped layout ``PREFIX/date=YYYY-MM-DD/host=NAME/*.parquet``, on S3
(or a local copy of it), as one pyarrow dataset that DuckDB, polars, pandas and dask read.

The partition columns ``date`` and ``host`` come from the object keys (hive style). A file
of schema version 2 also holds ``host`` as a column: the dataset keeps the file's column
(they are equal: the key was made from the file's footer) and prunes on the key, so a
filter on ``host`` or ``date`` opens only that host's or day's objects.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from .remote import s3_filesystem
from .target import parse_url

__all__ = ["dataset", "s3_filesystem", "partition_filter", "read", "host_names", "per_host", "sum_bins"]


def partition_filter(hosts: list[str] | None = None, start: Any = None, end: Any = None) -> Any:
    """A ``pyarrow.compute`` expression on the partition columns: ``host`` in ``hosts``,
    ``date`` from the UTC day of ``start`` to that of ``end`` (``datetime``/``date``/ISO
    string; inclusive). None if nothing is asked."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    parts = []
    if hosts is not None:
        parts.append(pc.is_in(ds.field("host"), value_set=pa.array(list(hosts), pa.string())))
    if start is not None:
        parts.append(ds.field("date") >= _day(start))
    if end is not None:
        parts.append(ds.field("date") <= _day(end))
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out & p
    return out


def _day(t: Any) -> str:
    if isinstance(t, str):
        t = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if isinstance(t, _dt.datetime):
        if t.tzinfo is not None:
            t = t.astimezone(_dt.UTC)
        return t.strftime("%Y-%m-%d")
    if isinstance(t, _dt.date):
        return t.isoformat()
    raise ValueError(f"not a date or time: {t!r}")


def dataset(url: str, *, endpoint_url: str | None = None) -> Any:
    """The shipped layout at ``url`` (``s3://bucket/prefix`` or a local folder holding
    ``date=.../host=.../``) as a ``pyarrow.dataset.Dataset`` with hive partitions
    ``date`` (string) and ``host`` (dictionary of strings, as in the files). Filter it with :func:`partition_filter`:
    ``dataset(url).to_table(filter=partition_filter(hosts=["web-1"]))`` opens only
    web-1's objects. Raises ``UsageError`` for a bad URL, ``OSError``/``ArrowException``
    when the store cannot be read."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    # host as the files hold it (dictionary-encoded strings), so that column and key merge
    part = ds.partitioning(pa.schema([("date", pa.string()),
                                      ("host", pa.dictionary(pa.int32(), pa.string()))]), flavor="hive",
                           dictionaries="infer")
    if url.startswith("s3://"):
        bucket, prefix = parse_url(url)
        return ds.dataset(f"{bucket}/{prefix}".rstrip("/"), filesystem=s3_filesystem(endpoint_url),
                          format="parquet", partitioning=part, exclude_invalid_files=False)
    return ds.dataset(url, format="parquet", partitioning=part)


def read(url: str, hosts: list[str] | None = None, start: Any = None, end: Any = None, *,
         endpoint_url: str | None = None, **kwargs: Any):
    """``tcpsnap.read(url, start, end, hosts=hosts, endpoint_url=endpoint_url, **kwargs)``:
    a shipped fleet (``s3://bucket/prefix``) or a local copy of its layout, restricted to
    ``hosts`` and ``start``..``end``, with partition pruning (see ``tcpsnap.read`` and
    ``tcpsnap.ship.remote``)."""
    from ..reading.full import read as read_any

    return read_any(url, start, end, hosts=hosts, endpoint_url=endpoint_url, **kwargs)


def host_names(url: str, *, endpoint_url: str | None = None) -> list[str]:
    """The host names of the layout at ``url`` (from its ``host=NAME/`` keys), sorted."""
    names = {m.group(1) for p in dataset(url, endpoint_url=endpoint_url).files
             if (m := re.search(r"/host=([^/]+)/", p))}
    return sorted(names)


def _one_host(url: str, host: str, func: Any, endpoint_url: str | None, kwargs: dict) -> Any:
    return func(read(url, [host], endpoint_url=endpoint_url, **kwargs))


def per_host(url: str, func: Any, hosts: list[str] | None = None, *, client: Any = None,
             endpoint_url: str | None = None, combine: Any = None, **kwargs: Any):
    """``func`` (an analysis function taking ``tcpsnap.read``'s frame and returning a
    DataFrame with a ``host`` column, e.g. ``tcpsnap.analysis.lifetimes``) applied to each
    host's :func:`read` on a Dask cluster (``client``: a ``dask.distributed.Client``; one
    task per host, so a worker holds one host's rows, never the fleet's), the results
    concatenated in host order. Without ``client``, in this process, host after host. A
    connection never spans hosts, so this is what ``func`` gives on the whole fleet's frame,
    up to row order. ``combine`` joins the per-host results (default: concatenated, for
    per-connection results such as ``lifetimes``; :func:`sum_bins` for per-bin counts
    summed over hosts such as ``state_counts``). ``kwargs`` go to :func:`read`; errors as
    :func:`read`."""
    import pandas as pd

    from .._errors import UsageError

    names = host_names(url, endpoint_url=endpoint_url) if hosts is None else list(hosts)
    if not names:
        raise UsageError(f"{url}: no host=NAME/ folder")
    if client is None:
        parts = [_one_host(url, h, func, endpoint_url, kwargs) for h in names]
    else:
        futs = [client.submit(_one_host, url, h, func, endpoint_url, kwargs, pure=False) for h in names]
        parts = client.gather(futs)
    return combine(parts) if combine is not None else pd.concat(parts, ignore_index=True)


def sum_bins(parts: list) -> Any:
    """Per-host frames indexed by time bin (``state_counts``, ``churn``) summed over hosts,
    as those functions sum over the hosts of one frame: a host adds to the bins of its own
    time span only; a bin that is a gap (all NaN) for any host in it is a gap of the sum;
    a column (state) one host never saw counts 0 for it."""
    import numpy as np
    import pandas as pd

    cols = list(dict.fromkeys(c for p in parts for c in p.columns))
    full = []
    for p in parts:
        gap = p.isna().all(axis=1)
        q = p.reindex(columns=cols, fill_value=0.0).astype(float)
        q.loc[gap] = np.nan
        full.append(q)
    both = pd.concat(full)
    gaps = both.isna().any(axis=1).groupby(level=0).any()
    out = both.groupby(level=0).sum()
    out.loc[gaps[gaps].index] = np.nan
    return out.sort_index()
