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
import tempfile
from typing import Any

from .target import parse_url

__all__ = ["dataset", "s3_filesystem", "partition_filter", "read"]


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
    restricted to ``hosts`` (names, as in ``host=NAME/``) and to ``start``..``end`` (as
    ``tcpsnap.read`` takes them; ``end`` exclusive).

    Partition pruning: only the objects under ``date=D/host=H/`` for the asked hosts and
    the UTC days from ``start`` to ``end`` are fetched (into a temporary folder, removed on
    return: its size is that of those objects); then ``tcpsnap.read`` picks files and row
    groups by time as it does locally, so every footer and page checksum is verified.
    ``kwargs`` (``columns``, ``filters``, ``where``, ``mode``, ``skip_bad``) go to
    ``tcpsnap.read``. Raises ``UsageError`` for a bad URL or when no shipped file matches,
    ``OSError``/``ArrowException`` when the store cannot be read, ``BadRecording`` as
    ``tcpsnap.read``."""
    from .._errors import UsageError
    from ..reading.full import read as read_local

    if hosts is not None and isinstance(hosts, str):
        hosts = [hosts]
    d = dataset(url, endpoint_url=endpoint_url)
    paths = [fr.path for fr in d.get_fragments(filter=partition_filter(hosts, start, end))]
    if not paths:
        raise UsageError(f"{url}: no shipped file for hosts {hosts or 'any'} from {start or 'the start'} "
                         f"to {end or 'the end'}")
    root = url.removeprefix("s3://").rstrip("/") if url.startswith("s3://") else str(url).rstrip("/")
    if not url.startswith("s3://"):
        return read_local(root, start, end, **kwargs) if hosts is None and start is None \
            and end is None else _read_copy(d.filesystem, root, paths, start, end, kwargs)
    return _read_copy(d.filesystem, root, paths, start, end, kwargs)


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
