"""The recording folder: its lock, what a crash left in it, and where suspect files go.

Every operation goes through a :class:`~tcpsnap.record.safedir.SafeDir`: nothing here
follows a link. See ``tcpsnap.record.layout`` for the files and the crash model, and
``tcpsnap.record.recovery`` for what is done with leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .._errors import RecorderError, RecorderLocked
from .footprint import give_back
from .layout import JOURNAL_RE, LOCK_NAME, TMP_RE
from .safedir import FILE_MODE, SafeDir, UnsafePath

__all__ = ["lock", "unlock", "find_leftovers", "finished_files", "last_seq", "keep_aside",
           "Leftover", "UNRECOVERED", "Footer", "footers", "meaning_problem"]

log = logging.getLogger("tcpsnap.recorder")

#: Where files recovery could not vouch for are kept, below the recording folder: the
#: leading ``_`` hides it from pyarrow/pandas, and the files keep their hidden names
#: (``.name.parquet.tmp`` ...), so no ``*.parquet`` glob reads them as a recording.
UNRECOVERED = "_tcpsnap_unrecovered"


def lock(root: SafeDir, name: str = LOCK_NAME, busy: str = "being recorded",
         one: str = "one recorder per folder") -> int:
    """flock ``name`` (``.tcpsnap.lock``) in ``root`` (created if missing, never through a
    link), or ``RecorderLocked`` saying ``{root} is already {busy} (pid N); {one}``. The
    file is removed again by ``unlock``, so a finished recording folder holds nothing but
    Parquet files; hence the inode check: a lock taken on a file that was unlinked
    meanwhile is no lock, so try again. (``tcpsnap ship`` takes ``.tcpsnap-ship.lock``.)"""
    path = root.path
    for _ in range(100):
        try:
            fd = os.open(flags=os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), mode=FILE_MODE, **root._at(name))
        except OSError as e:
            # ELOOP from O_NOFOLLOW; EACCES when the kernel's fs.protected_symlinks or
            # protected_regular stops root first: either way, a name we must not use
            with contextlib.suppress(OSError):
                if e.errno == errno.EACCES and stat.S_ISLNK(root.lstat(name).st_mode):
                    e.errno = errno.ELOOP
            if e.errno == errno.ELOOP:
                raise UnsafePath(f"{path / name} is a symbolic link: refusing to use it "
                                 f"(remove it)") from None
            raise RecorderError(f"cannot write to {path}: {e.strerror or e}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or (
                    hasattr(os, "geteuid") and st.st_uid not in (0, os.geteuid())):
                raise UnsafePath(f"{path / name} is not a lock file of ours (another "
                                 f"owner, a link or not a file): refusing to use it (remove it)")
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                import msvcrt

                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                except OSError:
                    raise BlockingIOError from None
        except BlockingIOError:
            try:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            except (OSError, AttributeError):
                owner = "?"
            os.close(fd)
            raise RecorderLocked(f"{path} is already {busy} (pid {owner}); {one}") from None
        except UnsafePath:
            os.close(fd)
            raise
        except OSError as e:
            os.close(fd)
            raise RecorderError(f"cannot lock {path / name}: {e.strerror or e}") from e
        try:
            same = os.fstat(fd).st_ino == root.lstat(name).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed it between our open and flock
            os.close(fd)
            continue
        try:
            if fcntl is not None:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise RecorderError(f"cannot write to {path}: {e.strerror or e}") from e
        return fd
    raise RecorderLocked(f"{path}: could not take the lock")  # pragma: no cover


def unlock(fd: int, root: SafeDir | None = None, name: str = LOCK_NAME) -> None:
    if root is not None and fcntl is not None:
        root.unlink(name)  # while still holding it: see lock
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def _partitions(root: SafeDir) -> list[str]:
    """Names of the partition folders in ``root`` (real folders only: a link named like
    one is reported and left alone)."""
    out = []
    for n in sorted(root.listdir()):
        if n.startswith((".", "_")):
            continue
        try:
            st = root.lstat(n)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            out.append(n)
        elif stat.S_ISLNK(st.st_mode) and "=" in n:
            log.warning("%s is a symbolic link, not a partition folder: left alone", root.path / n)
    return out


@dataclass(frozen=True)
class Leftover:
    """The files of one interrupted Parquet file: ``part`` ('' for the top folder) and
    the file's final ``name``; ``.name.tmp``, ``.name.rglog`` and ``.name.jK`` beside it."""

    part: str
    name: str


def find_leftovers(root: SafeDir) -> list[Leftover]:
    """What a crash left in ``root`` and its partition folders (one level)."""
    out: set[Leftover] = set()
    for part in ["", *_partitions(root)]:
        try:
            d = root.subdir(part) if part else root
        except (UnsafePath, OSError) as e:
            log.warning("%s", e)
            continue
        try:
            for n in d.listdir():
                m = TMP_RE.match(n) or JOURNAL_RE.match(n)
                if m:
                    out.add(Leftover(part, m.group("name")))
        finally:
            if part:
                d.close()
    return sorted(out, key=lambda x: (x.part, x.name))


def finished_files(d: SafeDir) -> list[str]:
    """Names of the finished Parquet files in folder ``d``."""
    return sorted(n for n in d.listdir()
                  if n.endswith(".parquet") and not n.startswith((".", "_")) and d.is_file(n))


def footer_kv(d: SafeDir, name: str) -> dict[bytes, bytes]:
    """The key-value metadata of a finished file (never through a link); {} if it
    cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        fd = d.open_file(name)
    except (OSError, RecorderError):
        return {}
    try:
        with os.fdopen(fd, "rb") as f:
            return dict(pq.read_metadata(f).metadata or {})
    except (OSError, pa.ArrowException, ValueError):
        return {}
    finally:
        give_back()  # the whole footer was parsed for its key-value pairs


@dataclass(frozen=True)
class Footer:
    """A finished file of a recording folder: its path relative to the folder
    (``date=.../name.parquet``) and its footer's key-value metadata ({} if unreadable)."""

    name: str
    kv: dict


def footers(root: SafeDir) -> list[Footer]:
    """The footer of every finished file in ``root`` and its partition folders, read once
    (never through a link), in name order."""
    out: list[Footer] = []
    for part in ["", *_partitions(root)]:
        try:
            d = root.subdir(part) if part else root
        except (UnsafePath, OSError):
            continue
        try:
            out.extend(Footer(f"{part}/{n}" if part else n, footer_kv(d, n)) for n in finished_files(d))
        finally:
            if part:
                d.close()
    return out


def last_seq(root: SafeDir, found: list[Footer] | None = None) -> int | None:
    """The highest ``last_seq`` in the footer of any finished file of the recording
    (``found``: ``footers(root)``, if already read).

    Not the newest file by name: names follow the wall clock, which can be set back
    between two runs; the sequence must never repeat.
    """
    best: int | None = None
    for f in footers(root) if found is None else found:
        v = f.kv.get(b"tcpsnap.last_seq")
        try:
            seq = int(v) if v is not None else None
        except ValueError:
            seq = None
        if seq is not None and (best is None or seq > best):
            best = seq
    return best


def _named(where: Path, files: list[Footer]) -> str:
    more = len(files) - 1
    return f"{where / files[0].name}{f' and {more} more file' + ('s' if more > 1 else '') if more else ''}"


def meaning_problem(found: list[Footer], where: Path, mode: str, filters: str) -> tuple[str, str] | None:
    """What makes the recording in a folder (its files' footers, ``found``) another one
    than a recording of ``mode`` with ``filters`` (``tcpsnap.filters`` JSON) would be,
    as one line naming the files, and what to do about it; None if it is the same (or the
    folder holds none).

    One folder holds one recording: one mode, one filter set, and a schema this tcpsnap
    writes or an older one (files of schema version 1 before files of version 2 are an
    upgrade, not another recording). Compression, encoding, interval, pids... are how a
    run was recorded, not what the recording is: they may differ. Files that are not
    tcpsnap's, or whose footer cannot be read, are left to the readers (which name them).
    """
    from .._arrow import SCHEMA_VERSION
    from .config import canonical_filters, describe_filters

    ours = canonical_filters(filters)
    newer: dict[int, list[Footer]] = {}
    modes: dict[str, list[Footer]] = {}
    other: dict[str, list[Footer]] = {}
    for f in found:
        kv = f.kv
        if b"tcpsnap.version" not in kv:
            continue
        try:
            version = int(kv.get(b"tcpsnap.schema_version", b"1"))
        except ValueError:
            continue
        m = kv.get(b"tcpsnap.mode", b"full").decode(errors="replace")
        fl = canonical_filters(kv.get(b"tcpsnap.filters"))
        if version > SCHEMA_VERSION:
            newer.setdefault(version, []).append(f)
        elif m != mode:
            modes.setdefault(m, []).append(f)
        elif fl != ours:
            other.setdefault(fl, []).append(f)
    same = "record with the options it was made with, into another folder"
    if newer:
        v, fs = max(newer.items())
        return (f"{where} holds files of schema version {v} ({_named(where, fs)}), written by a newer "
                f"tcpsnap than this one (it writes version {SCHEMA_VERSION})",
                "upgrade tcpsnap, record into another folder")
    if modes:
        m, fs = next(iter(modes.items()))
        return (f"{where} holds a {m}-mode recording ({_named(where, fs)}); this one would be {mode}-mode",
                same)
    if other:
        fl, fs = next(iter(other.items()))
        return (f"{where} holds a recording made with {describe_filters(fl)} ({_named(where, fs)}); "
                f"this one would have {describe_filters(ours)}", same)
    return None


@contextlib.contextmanager
def _unrecovered(root: SafeDir, part: str) -> Iterator[SafeDir]:
    """``root/_tcpsnap_unrecovered/part/``, made if missing (checked like every folder)."""
    q = root.subdir(UNRECOVERED, create=True)
    try:
        qd = q.subdir(part, create=True) if part else q
        try:
            yield qd
        finally:
            if part:
                qd.close()
    finally:
        q.close()


def _aside_names(name: str) -> Iterator[str]:
    """``name``, then ``name.1``, ``name.2``...: a file kept aside never replaces another."""
    yield name
    for i in range(1, 10_000):
        yield f"{name}.{i}"


def keep_aside(root: SafeDir, part: str, d: SafeDir, names: list[str]) -> list[str]:
    """Move ``names`` of folder ``d`` (partition ``part`` of ``root``) to
    ``root/_tcpsnap_unrecovered/part/``, never replacing anything there. Returns the
    paths they now have (a name that could not be placed stays where it is)."""
    out = []
    with _unrecovered(root, part) as qd:
        for n in names:
            if not d.exists(n):
                continue
            for dst in _aside_names(n):
                try:
                    os.link(n, dst, src_dir_fd=d.fd, dst_dir_fd=qd.fd, follow_symlinks=False)
                except FileExistsError:
                    continue
                d.unlink(n)  # only once the bytes have their other name
                out.append(str(qd.path / dst))
                break
        qd.fsync()
        d.fsync()
    return out


def copy_aside(root: SafeDir, part: str, d: SafeDir, name: str) -> str | None:
    """Keep a copy of file ``name`` of ``d`` in ``_tcpsnap_unrecovered`` (for small
    files recovery goes on to change, such as a row-group log with a bad entry)."""
    from .layout import pwrite_all

    try:
        data = d.read_bytes(name)
    except FileNotFoundError:
        return None
    with _unrecovered(root, part) as qd:
        for dst in _aside_names(name):
            try:
                fd = qd.create(dst)
            except FileExistsError:
                continue
            try:
                pwrite_all(fd, data, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            qd.fsync()
            return str(qd.path / dst)
    return None  # pragma: no cover
