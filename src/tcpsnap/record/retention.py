"""Retention: the recorder deletes its own oldest files, by age (``keep``) and by size
(``max_bytes``), so a recorder left running on a host never fills its disk.

What may be deleted, and nothing else:

- a regular file (never a link: every name is looked at with ``lstat`` and removed with
  ``unlinkat``, which removes a link itself, never its target) owned by root or us,
- named as the writer names finished files (``tcpsnap-YYYYMMDDTHHMMSS.mmmZ[-N].parquet``:
  never a hidden ``.``-name, so never the file in progress or its journal),
- in a real ``date=YYYY-MM-DD`` partition folder of the recording (never a link to one,
  never ``_tcpsnap_unrecovered/``: what recovery kept aside is evidence, and is left
  alone and not counted).

Order: oldest first, by the wall-clock time of a file's first snapshot (its name).

``keep``: a file goes once its *newest* snapshot is older than ``keep`` (the maximum of
its ``timestamp`` column, from the footer's statistics; if the footer cannot be read,
the file's mtime, which is later): at least ``keep`` of history stays. Times are the
recorder's wall clock (``Clock.time_ns``).

``max_bytes``: the finished files plus the file in progress (its ``.tmp``, row-group
log and journals) are kept at or under ``max_bytes`` by deleting finished files, oldest
first. The newest data is never deleted for space: neither the file in progress nor the
newest finished file, even when they alone are over the limit (a warning says so).
The folder may therefore hold up to ``max_bytes`` plus about two files: pick
``--rotate`` so that many files fit in ``max_bytes``.

Unshipped files: ``Retention.unshipped`` is a predicate ``(Path) -> bool`` a shipper
(which uploads files elsewhere; none exists yet) sets to say which files it has not
uploaded. Age never deletes those; the byte limit does, last and with a warning (a full
disk would stop the recording). Until a shipper sets it, every file counts as shipped.

A pass runs when the recorder opens (before the first snapshot) and after each file is
finished (on the writer thread). Each deletion is logged (INFO; WARNING for an
unshipped file) and counted in :attr:`Retention.stats`. Partition folders left empty
are removed, except the one the writer is using. A failure (permissions...) is logged
and never stops the recording.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._units import format_duration, human_bytes, parse_duration, parse_size
from .footprint import give_back
from .layout import JOURNAL_RE, TMP_RE
from .safedir import SafeDir, UnsafePath

__all__ = ["Retention", "FILE_RE", "PART_RE"]

log = logging.getLogger("tcpsnap.recorder")

#: A finished file's name, as ``layout.file_names`` and ``layout.free_name`` make it.
FILE_RE = re.compile(r"^tcpsnap-(?P<t>\d{8}T\d{6})\.(?P<ms>\d{3})Z(?:-(?P<n>\d+))?\.parquet$")
#: A partition folder's name, as ``layout.file_names`` makes it.
PART_RE = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")


def _name_time_ns(m: re.Match) -> int:
    t = time.strptime(m.group("t"), "%Y%m%dT%H%M%S")
    return (calendar.timegm(t) * 1000 + int(m.group("ms"))) * 1_000_000


@dataclass(frozen=True)
class _File:
    part: str
    name: str
    first_ns: int  # wall-clock time of its first snapshot (from the name)
    suffix: int  # the -N of a name that was taken
    size: int
    key: tuple[int, int, int]  # (inode, size, mtime ns): the footer cache's key

    @property
    def rel(self) -> str:
        return f"{self.part}/{self.name}"


class Retention:
    """Deletes a recording's oldest finished files; see the module's text for the rules.

    ``keep`` is a duration (seconds or ``"14d"``), ``max_bytes`` a size (bytes or
    ``"5GiB"``, see :func:`tcpsnap._units.parse_size`); either may be None, not both.
    ``now_ns`` gives the wall clock (UTC ns). Raises ``ValueError`` for a bad value.
    """

    def __init__(self, keep: Any = None, max_bytes: Any = None, *,
                 now_ns: Callable[[], int] = time.time_ns,
                 unshipped: Callable[[Path], bool] | None = None) -> None:
        self.keep_s = None if keep is None else parse_duration(keep)
        self.max_bytes = None if max_bytes is None else parse_size(max_bytes)
        if self.keep_s is None and self.max_bytes is None:
            raise ValueError("retention needs keep or max_bytes")
        if self.keep_s is not None and self.keep_s <= 0:
            raise ValueError(f"keep must be more than 0, got {keep!r}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be more than 0, got {max_bytes!r}")
        self.now_ns = now_ns
        #: set by a shipper: True for a file it has not uploaded yet (see the module)
        self.unshipped = unshipped
        self._newest: dict[tuple[str, str], tuple[tuple[int, int, int], int]] = {}
        self._warned_over = False
        self.deleted_files = 0
        self.deleted_bytes = 0
        self.deleted_unshipped = 0
        self.errors = 0
        self.runs = 0
        self.bytes = 0  # the recording's bytes after the last pass (finished + in progress)
        self.files = 0  # finished files after the last pass

    @classmethod
    def make(cls, keep: Any, max_bytes: Any, now_ns: Callable[[], int]) -> Retention | None:
        """A Retention, or None when neither limit is set."""
        if keep is None and max_bytes is None:
            return None
        return cls(keep, max_bytes, now_ns=now_ns)

    def describe(self) -> str:
        parts = []
        if self.keep_s is not None:
            parts.append(f"keep {_duration(self.keep_s)}")
        if self.max_bytes is not None:
            parts.append(f"at most {human_bytes(self.max_bytes)}")
        return ", ".join(parts)

    @property
    def stats(self) -> dict[str, int]:
        return {"retention_deleted_files": self.deleted_files,
                "retention_deleted_bytes": self.deleted_bytes,
                "retention_deleted_unshipped": self.deleted_unshipped,
                "retention_errors": self.errors,
                "retention_files": self.files,
                "retention_bytes": self.bytes}

    # ------------------------------------------------------------ a pass

    def run(self, root: SafeDir, busy_part: str | None = None) -> list[str]:
        """One pass over ``root`` (the recording folder). ``busy_part``: the partition
        the writer is using (never removed, even when empty). Returns the deleted files
        (``part/name``). Never raises: a failure is logged and counted."""
        try:
            return self._run(root, busy_part)
        except Exception as e:  # retention must never stop a recording (logged with its trace)
            self.errors += 1
            log.error("retention pass failed: %s: %s", type(e).__name__, e, exc_info=True)
            return []

    def _run(self, root: SafeDir, busy_part: str | None) -> list[str]:
        self.runs += 1
        files, in_progress = self._scan(root)
        files.sort(key=lambda f: (f.first_ns, f.suffix, f.part, f.name))
        unshipped = self.unshipped
        held = (set() if unshipped is None
                else {f for f in files if unshipped(root.path / f.part / f.name)})
        doomed: dict[_File, str] = {}
        if self.keep_s is not None:
            cutoff = self.now_ns() - int(round(self.keep_s * 1e9))
            why = f"its newest snapshot is older than {_duration(self.keep_s)}"
            for f in files:
                if f.first_ns >= cutoff:
                    break  # sorted: every later file started after the cutoff
                if f not in held and self._newest_ns(root, f) < cutoff:
                    doomed[f] = why
        total = in_progress + sum(f.size for f in files if f not in doomed)
        if self.max_bytes is not None and total > self.max_bytes:
            why = f"the recording is over {human_bytes(self.max_bytes)}"
            older = files[:-1]  # the newest finished file stays, as the one in progress
            for group in ([f for f in older if f not in held], [f for f in older if f in held]):
                for f in group:
                    if total <= self.max_bytes:
                        break
                    if f not in doomed:
                        doomed[f] = why
                        total -= f.size
        deleted = []
        parts: dict[str, SafeDir] = {}
        try:
            for f in files:
                if f not in doomed:
                    continue
                d = parts.get(f.part)
                if d is None:
                    d = parts[f.part] = root.subdir(f.part)
                if not self._delete(d, f, doomed[f], f in held):
                    total += f.size
                    continue
                deleted.append(f.rel)
        finally:
            for d in parts.values():
                d.close()
        self._remove_empty_parts(root, busy_part)
        self.files = len(files) - len(deleted)
        self.bytes = total
        over = self.max_bytes is not None and total > self.max_bytes
        if over and not self._warned_over:
            log.warning("retention: the recording stays at %s, over the byte limit %s: the "
                        "newest finished file and the file in progress are never deleted for "
                        "space%s", human_bytes(total), human_bytes(self.max_bytes or 0),
                        f" ({self.errors} deletion(s) failed)" if self.errors else
                        " (a shorter --rotate makes smaller files)")
        self._warned_over = over
        if deleted:
            log.info("retention: deleted %d file(s); %d left (%s)", len(deleted), self.files,
                     human_bytes(total))
        return deleted

    def _scan(self, root: SafeDir) -> tuple[list[_File], int]:
        """The finished files that may be deleted, and the bytes of files in progress."""
        files: list[_File] = []
        in_progress = 0
        seen: set[tuple[str, str]] = set()
        for part in sorted(root.listdir()):
            if not PART_RE.match(part) or not root.is_dir(part):
                continue  # a link named like a partition, _tcpsnap_unrecovered, ...
            try:
                d = root.subdir(part)
            except (UnsafePath, OSError) as e:
                log.debug("retention: %s left alone: %s", part, e)
                continue
            with d:
                for name in d.listdir():
                    try:
                        st = d.lstat(name)
                    except FileNotFoundError:
                        continue
                    if not stat.S_ISREG(st.st_mode) or not _ours(st):
                        continue
                    m = FILE_RE.match(name)
                    if m:
                        files.append(_File(part, name, _name_time_ns(m), int(m.group("n") or 0),
                                           st.st_size, (st.st_ino, st.st_size, st.st_mtime_ns)))
                        seen.add((part, name))
                    elif TMP_RE.match(name) or JOURNAL_RE.match(name):
                        in_progress += st.st_size
        for k in [k for k in self._newest if k not in seen]:
            del self._newest[k]
        return files, in_progress

    def _newest_ns(self, root: SafeDir, f: _File) -> int:
        """Wall-clock ns of a file's newest snapshot (cached per inode, size, mtime)."""
        hit = self._newest.get((f.part, f.name))
        if hit is not None and hit[0] == f.key:
            return hit[1]
        newest = None
        try:
            with root.subdir(f.part) as d:
                newest = _footer_newest_ns(d, f.name)
        except (OSError, UnsafePath):
            pass
        if newest is None:
            newest = f.key[2]  # mtime: when it was finished, after its newest snapshot
            log.info("retention: %s has no readable timestamp statistics: aged by its mtime",
                     f.rel)
        self._newest[(f.part, f.name)] = (f.key, newest)
        return newest

    def _delete(self, d: SafeDir, f: _File, why: str, unshipped: bool) -> bool:
        try:
            st = d.lstat(f.name)
            if not stat.S_ISREG(st.st_mode) or st.st_ino != f.key[0]:
                return False  # replaced since the scan: look again next pass
            os.unlink(f.name, dir_fd=d.fd)  # unlinkat: never through a link
        except FileNotFoundError:
            return False
        except OSError as e:
            self.errors += 1
            log.warning("retention: cannot delete %s: %s", d.path / f.name, e.strerror or e)
            return False
        self.deleted_files += 1
        self.deleted_bytes += f.size
        if unshipped:
            self.deleted_unshipped += 1
            log.warning("retention: deleted %s (%s), not shipped yet: %s", f.rel,
                        human_bytes(f.size), why)
        else:
            log.info("retention: deleted %s (%s): %s", f.rel, human_bytes(f.size), why)
        return True

    def _remove_empty_parts(self, root: SafeDir, busy_part: str | None) -> None:
        for part in root.listdir():
            if part == busy_part or not PART_RE.match(part) or not root.is_dir(part):
                continue
            try:
                with root.subdir(part) as d:
                    if d.listdir():
                        continue
                os.rmdir(part, dir_fd=root.fd)  # fails (ENOTEMPTY) if a file just appeared
            except (UnsafePath, OSError) as e:
                if getattr(e, "errno", None) not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    log.debug("retention: %s not removed: %s", part, e)
                continue
            log.info("retention: removed the empty folder %s", part)


def _duration(seconds: float) -> str:
    """``14d`` rather than ``336h``."""
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    return format_duration(seconds)


def _ours(st: os.stat_result) -> bool:
    return not hasattr(os, "geteuid") or st.st_uid in (0, os.geteuid())


def _footer_newest_ns(d: SafeDir, name: str) -> int | None:
    """The maximum of the ``timestamp`` column from the footer's statistics (never
    through a link); None if any row group lacks them or the file cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fd = d.open_file(name)
    try:
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            md = pq.read_metadata(fh)
    except (OSError, pa.ArrowException, ValueError):
        return None
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    try:
        return _newest_in(md)
    finally:
        del md
        give_back()  # the whole footer was parsed (7 MiB for a 15-minute file at 1k)


def _newest_in(md: Any) -> int | None:
    if md.num_row_groups == 0:
        return None
    # the column found by its path in a row group, not through ``md.schema``: that one is
    # cached and refers back to ``md``, a cycle keeping the whole parse until a full gc
    rg = md.row_group(0)
    col = next((j for j in range(rg.num_columns) if rg.column(j).path_in_schema == "timestamp"), -1)
    if col < 0:
        return None
    newest = None
    for i in range(md.num_row_groups):
        s = md.row_group(i).column(col).statistics
        if s is None or not s.has_min_max:
            return None
        v = s.max_raw
        if not isinstance(v, int):
            return None
        newest = v if newest is None else max(newest, v)
    return newest
