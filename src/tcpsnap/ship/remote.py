"""A shipped fleet on S3, read by ``tcpsnap.read`` and ``tcpsnap info``: which objects of
the layout ``s3://bucket/prefix/date=YYYY-MM-DD/host=NAME/<file>`` a read needs
(partition pruning), fetched into a temporary local folder for tcpsnap's readers.

Why fetch and not scan S3 in place: every reader opens a recording through
``tcpsnap.reading.dataset.Recording``, which checks each file's footer and verifies every
page's checksum on local files, and rebuilds changes recordings file by file; a fetched
copy gets exactly that, and the same frame as ``tcpsnap.read`` of a local copy (``aws s3
sync``). What is fetched is only what pruning keeps, streamed to disk (bounded memory).

Pruning (no other object is listed or opened, not even for its schema):

- one LIST of the prefix's ``date=`` folders (a delimiter listing: no object key), kept
  from the UTC day of ``start`` to that of ``end`` (the recorder starts a new file at UTC
  midnight, so a file never holds another day);
- per kept day, a LIST of ``date=D/host=H/`` for each asked host (of ``date=D/`` when no
  host is asked);
- per host, the files a time range needs, by the times in their names
  (``tcpsnap.reading.dataset.select_files``: from the last file starting at or before
  ``start`` to the last starting before ``end``), then a GET of each.

Reading needs pyarrow only (its ``S3FileSystem``; credentials from the standard AWS chain,
the endpoint from ``endpoint_url`` or ``AWS_ENDPOINT_URL``); shipping needs boto3.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._errors import BadRecording, UsageError
from ..reading.dataset import FileInfo, select_files
from ..reading.timeforms import to_utc
from ..record.layout import NAME_RE
from .target import parse_url

__all__ = ["is_url", "s3_filesystem", "Shipped", "find", "fetched", "each_host", "host_list"]

#: an object's path below the prefix: date=YYYY-MM-DD/host=NAME/FILE.parquet
_KEY_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/host=([^/]+)/([^/]+\.parquet)$")


def is_url(path: Any) -> bool:
    """True for ``scheme://...`` (what ``tcpsnap.read`` and ``info`` fetch), False for a
    local path."""
    return isinstance(path, str) and "://" in path


def s3_filesystem(endpoint_url: str | None = None) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` on AWS, or on ``endpoint_url`` (else the environment's
    ``AWS_ENDPOINT_URL``, as boto3); credentials from the standard AWS chain."""
    from pyarrow import fs

    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint_url:
        return fs.S3FileSystem()
    scheme, _, rest = endpoint_url.partition("://")
    return fs.S3FileSystem(endpoint_override=rest.rstrip("/"), scheme=scheme or "https",
                           region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
                           or "us-east-1")


def _store(url: str, endpoint_url: str | None) -> tuple[Any, str]:
    if not url.startswith("s3://"):
        raise UsageError(f"{url}: only s3:// URLs are read (a shipped fleet: s3://BUCKET/PREFIX); "
                         "for another store, copy its layout to a local folder and give that")
    bucket, prefix = parse_url(url)
    return s3_filesystem(endpoint_url), f"{bucket}/{prefix}".rstrip("/")


@dataclass(frozen=True)
class Shipped:
    """One shipped object: ``rel`` its path below the prefix (``date=D/host=H/name``),
    ``size`` in bytes."""

    rel: str
    date: str
    host: str
    name: str
    size: int


def _day(t: Any) -> str:
    return to_utc(t).strftime("%Y-%m-%d")


def _listing(fs: Any, path: str, recursive: bool) -> list:
    from pyarrow import fs as pafs

    return fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))


def find(url: str, hosts: list[str] | None = None, start: Any = None, end: Any = None, *,
         endpoint_url: str | None = None) -> list[Shipped]:
    """The objects of the shipped layout at ``url`` a read of ``hosts`` (None: all) from
    ``start`` to ``end`` (``tcpsnap.read``'s forms; None: open) needs, listed with the
    pruning of the module's doc, in (host, name) order. Raises ``UsageError`` for a URL
    that is not ``s3://BUCKET[/PREFIX]``, ``OSError`` when the store cannot be listed."""
    from pyarrow import fs as pafs

    fs, root = _store(url, endpoint_url)
    first = None if start is None else _day(start)
    last = None if end is None else _day(end)
    days = sorted(d for info in _listing(fs, root, False)
                  if info.type == pafs.FileType.Directory
                  and (m := re.fullmatch(r"date=(\d{4}-\d{2}-\d{2})", info.base_name))
                  and (first is None or m.group(1) >= first) and (last is None or m.group(1) <= last)
                  for d in [m.group(1)])
    found: list[Shipped] = []
    for d in days:
        folders = [f"{root}/date={d}/host={h}" for h in hosts] if hosts is not None else [f"{root}/date={d}"]
        for folder in folders:
            for info in _listing(fs, folder, True):
                m = _KEY_RE.match(info.path[len(root) + 1:])
                if info.type == pafs.FileType.File and m and (hosts is None or m.group(2) in hosts):
                    found.append(Shipped(info.path[len(root) + 1:], m.group(1), m.group(2), m.group(3),
                                         int(info.size or 0)))
    out: list[Shipped] = []
    for h in sorted({f.host for f in found}):
        mine = {f.rel: f for f in found if f.host == h}
        entries = sorted((FileInfo(path=f.rel, partition=f.date, at=(n.group(1) if (n := NAME_RE.match(f.name))
                                                                      else None)) for f in mine.values()),
                         key=FileInfo.key)
        out.extend(mine[e.path] for e in select_files(entries, start, end))
    return out


def _fetch(fs: Any, root: str, objects: list[Shipped], dest: str) -> None:
    """Copy ``objects`` under ``dest`` (their ``date=/host=`` folders kept), streamed: the
    memory of one buffer, never of an object. ``OSError`` (ENOSPC) before any copy when
    ``dest``'s file system has not room for them all."""
    from pyarrow import fs as pafs

    need = sum(o.size for o in objects)
    free = shutil.disk_usage(dest).free
    if need > free:
        from .._units import human_bytes

        raise OSError(errno.ENOSPC, f"{human_bytes(need)} to fetch into {dest}, {human_bytes(free)} free "
                                    f"(set TMPDIR to a larger place, or ask fewer hosts or a shorter time)")
    local = pafs.LocalFileSystem()
    for o in objects:
        dst = os.path.join(dest, o.rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        pafs.copy_files(f"{root}/{o.rel}", dst, source_filesystem=fs, destination_filesystem=local)


def _nothing(url: str, hosts: list[str] | None, start: Any, end: Any) -> UsageError:
    return UsageError(f"{url}: no shipped file for hosts {', '.join(hosts) if hosts else 'any'} from "
                      f"{start if start is not None else 'the start'} to {end if end is not None else 'the end'}")


@contextlib.contextmanager
def fetched(url: str, hosts: list[str] | None = None, start: Any = None, end: Any = None, *,
            endpoint_url: str | None = None) -> Iterator[str]:
    """``with fetched(url, ...) as folder:`` a temporary local folder holding the objects
    :func:`find` keeps, in their ``date=D/host=H/`` folders (a recording folder that
    ``tcpsnap.read`` reads); removed on exit. Raises ``UsageError`` when none matches,
    and as :func:`find` and ``_fetch``."""
    fs, root = _store(url, endpoint_url)
    objects = find(url, hosts, start, end, endpoint_url=endpoint_url)
    if not objects:
        raise _nothing(url, hosts, start, end)
    with tempfile.TemporaryDirectory(prefix="tcpsnap-fleet-") as tmp, _named(tmp, url):
        _fetch(fs, root, objects, tmp)
        yield tmp


@contextlib.contextmanager
def _named(folder: str, url: str) -> Iterator[None]:
    """A ``BadRecording`` from the fetched copy names the objects, not the copy's files."""
    try:
        yield
    except BadRecording as e:
        raise BadRecording(str(e).replace(folder + os.sep, url.rstrip("/") + "/")) from None


def host_list(hosts: Any) -> list[str] | None:
    """``hosts`` as ``tcpsnap.read`` takes it (a name, names, or None) as a list or None;
    ``UsageError`` for anything else."""
    if hosts is None:
        return None
    if isinstance(hosts, str):
        hosts = [hosts]
    hosts = list(hosts)
    if not hosts or not all(isinstance(h, str) and h and "/" not in h for h in hosts):
        raise UsageError(f"hosts must be host names (as in host=NAME/), got {hosts!r}")
    return hosts


def each_host(url: str, hosts: list[str] | None = None, start: Any = None, end: Any = None, *,
              endpoint_url: str | None = None) -> Iterator[tuple[str, str, list[Shipped]]]:
    """``(host, local folder, its objects)`` for each host of the layout at ``url`` (or of
    ``hosts``), one host at a time: a host's objects are fetched, given, and removed before
    the next host's (disk and memory: one host's). Raises as :func:`fetched`."""
    fs, root = _store(url, endpoint_url)
    objects = find(url, hosts, start, end, endpoint_url=endpoint_url)
    if not objects:
        raise _nothing(url, hosts, start, end)
    for h in dict.fromkeys(o.host for o in objects):
        mine = [o for o in objects if o.host == h]
        with tempfile.TemporaryDirectory(prefix="tcpsnap-fleet-") as tmp, _named(tmp, url):
            _fetch(fs, root, mine, tmp)
            yield h, tmp, mine
