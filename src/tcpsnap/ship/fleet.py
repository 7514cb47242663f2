"""Read a fleet: the shipped layout ``PREFIX/date=YYYY-MM-DD/host=NAME/*.parquet``, on S3
(or a local copy of it), as one pyarrow dataset that DuckDB, polars, pandas and dask read.

The partition columns ``date`` and ``host`` come from the object keys (hive style). A file
of schema version 2 also holds ``host`` as a column: the dataset keeps the file's column
(they are equal: the key was made from the file's footer) and prunes on the key, so a
filter on ``host`` or ``date`` opens only that host's or day's objects.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import tempfile
from typing import Any

from .target import parse_url

__all__ = ["dataset", "s3_filesystem", "partition_filter", "read", "host_names", "per_host", "sum_bins"]


def s3_filesystem(endpoint_url: str | None = None) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` on AWS or ``endpoint_url`` (credentials from the
    standard AWS chain, as boto3)."""
    from pyarrow import fs

    if endpoint_url is None:
        return fs.S3FileSystem()
    scheme, _, rest = endpoint_url.partition("://")
    return fs.S3FileSystem(endpoint_override=rest.rstrip("/"), scheme=scheme or "https",
                           region="us-east-1")


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
    """``tcpsnap.read`` of a shipped fleet: the same pandas DataFrame ``tcpsnap.read`` gives
    for a local copy of the layout at ``url`` (``s3://bucket/prefix`` or a local folder),
    restricted to ``hosts`` (names, as in ``host=NAME/``) and to ``start``..``end`` (any
    form ``tcpsnap.read`` takes; ``end`` exclusive).

    Partition pruning: one LIST of the prefix, then only the objects under
    ``date=D/host=H/`` for the asked hosts and the UTC days from ``start`` to ``end`` are
    fetched (no other object is opened, not even for its schema), into a temporary folder
    removed on return (its size: those objects'); ``tcpsnap.read`` then picks files and row
    groups by time as it does locally, and verifies every footer and page checksum.
    ``kwargs`` (``columns``, ``filters``, ``where``, ``mode``, ``skip_bad``) go to
    ``tcpsnap.read``. Raises ``UsageError`` for a bad URL or when no shipped file matches,
    ``OSError``/``ArrowException`` when the store cannot be read, ``BadRecording`` as
    ``tcpsnap.read``."""
    from pyarrow import fs as pafs

    from .._errors import UsageError
    from ..reading import to_utc

    if isinstance(hosts, str):
        hosts = [hosts]
    start = None if start is None else to_utc(start)   # once: "now" is one instant
    end = None if end is None else to_utc(end)
    if url.startswith("s3://"):
        bucket, prefix = parse_url(url)
        root, fs = f"{bucket}/{prefix}".rstrip("/"), s3_filesystem(endpoint_url)
    else:
        root, fs = os.path.abspath(url), pafs.LocalFileSystem()
    first, last = (None if start is None else _day(start)), (None if end is None else _day(end))
    paths = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        m = _KEY_RE.search(info.path[len(root):])
        if (info.type == pafs.FileType.File and m and (hosts is None or m.group(2) in hosts)
                and (first is None or m.group(1) >= first) and (last is None or m.group(1) <= last)):
            paths.append(info.path)
    if not paths:
        raise UsageError(f"{url}: no shipped file for hosts {hosts or 'any'} from {start or 'the start'} "
                         f"to {end or 'the end'}")
    return _read_copy(fs, root, sorted(paths), start, end, kwargs)


#: a shipped object's key below the prefix: /date=YYYY-MM-DD/host=NAME/FILE.parquet
_KEY_RE = re.compile(r"^/date=([^/]+)/host=([^/]+)/[^/]+\.parquet$")


def _read_copy(fs: Any, root: str, paths: list[str], start: Any, end: Any, kwargs: dict):
    """Copy ``paths`` (under ``root`` on ``fs``) keeping their ``date=/host=`` folders, and
    ``tcpsnap.read`` the copy: the reader verifies files, so it wants them local."""
    from pyarrow import fs as pafs

    from ..reading.full import read as read_local

    with tempfile.TemporaryDirectory(prefix="tcpsnap-fleet-") as tmp:
        local = pafs.LocalFileSystem()
        for p in paths:
            rel = os.path.relpath(p, root)
            if rel.startswith(".."):
                raise ValueError(f"{p} is not under {root}")
            dst = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            pafs.copy_files(p, dst, source_filesystem=fs, destination_filesystem=local)
        return read_local(tmp, start, end, **kwargs)


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
