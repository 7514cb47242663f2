"""Directories the recorder trusts, and file operations that never follow a link.

The recorder often runs as root in a folder other users can reach. A name planted in
that folder -- a symbolic link called like the lock, the next journal or an in-progress
file -- must never make it write, truncate, rename or delete anything else. So every
operation goes through a :class:`SafeDir`: the directory is opened once
(``O_DIRECTORY | O_NOFOLLOW``) and checked, then files are opened relative to its fd
with ``O_NOFOLLOW`` (and ``O_EXCL`` when new), renamed without replacing, and removed
by name (``unlinkat`` removes a link itself, never its target).

A directory is refused (:class:`UnsafePath`) when it is owned by another user than root
or us, or is writable by others without the sticky bit: the rule OpenSSH's StrictModes
and logrotate apply.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from .._errors import RecorderError, UnsafePath

__all__ = ["SafeDir", "UnsafePath", "FILE_MODE", "DIR_MODE"]

#: New files: owner read-write, others read-only, whatever the umask allows more.
FILE_MODE = 0o644
DIR_MODE = 0o755

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_HAVE_DIR_FD = os.open in os.supports_dir_fd and _NOFOLLOW != 0


def _trusted_owner(uid: int) -> bool:
    return uid == 0 or uid == os.geteuid()


def check_dir_stat(st: os.stat_result, where: object) -> None:
    """Raise :class:`UnsafePath` unless ``st`` is a directory we may trust."""
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{where} is not a folder")
    if hasattr(os, "geteuid"):
        if not _trusted_owner(st.st_uid):
            raise UnsafePath(f"{where} is owned by uid {st.st_uid}, not by root or this user: "
                             f"refusing to record there (chown it, or pick another folder)")
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise UnsafePath(f"{where} is writable by every user and not sticky: refusing to "
                             f"record there (chmod o-w it, or pick another folder)")


class SafeDir:
    """An open, checked directory; every file operation is relative to its fd.

    ``SafeDir.open(path, create=True)`` opens (and makes, mode 0755) the folder. The last
    component may be a symbolic link only if the link is owned by root or us (as Linux's
    ``fs.protected_symlinks`` rule); the folder it names is checked like any other.
    Raises :class:`UnsafePath` for a refused folder and :class:`RecorderError` when it
    cannot be opened.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def _at(self, name: str) -> dict:
        """Keyword arguments naming ``name`` relative to this folder (its fd where the
        platform has ``*at`` calls; elsewhere -- Windows -- its path)."""
        if _HAVE_DIR_FD:
            return {"path": name, "dir_fd": self.fd}
        return {"path": str(self.path / name)}

    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = False) -> SafeDir:
        p = Path(path)
        if create:
            try:
                # every missing folder gets DIR_MODE (pathlib's parents=True gives the
                # ancestors 0777 less the umask: world-writable under umask 000)
                missing = [q for q in (p, *p.parents) if not os.path.lexists(q)]
                for q in reversed(missing):
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(q, DIR_MODE)
            except FileExistsError:
                pass  # a file or dangling link there: refused below
            except OSError as e:
                raise RecorderError(f"cannot create recording folder {p}: {e.strerror or e}") from e
        try:
            lst = os.lstat(p)
        except FileNotFoundError:
            raise RecorderError(f"no recording folder at {p}") from None
        except OSError as e:
            raise RecorderError(f"cannot use {p}: {e.strerror or e}") from e
        flags = os.O_RDONLY | _DIRECTORY | _CLOEXEC
        if stat.S_ISLNK(lst.st_mode):
            if hasattr(os, "geteuid") and not _trusted_owner(lst.st_uid):
                raise UnsafePath(f"{p} is a symbolic link owned by uid {lst.st_uid}: refusing to "
                                 f"follow it (pass the real folder)")
        else:
            flags |= _NOFOLLOW
        try:
            fd = os.open(p, flags) if _DIRECTORY else -1
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                raise UnsafePath(f"{p} is not a folder") from None
            raise RecorderError(f"cannot open {p}: {e.strerror or e}") from e
        d = cls(fd, p)
        if fd < 0:  # pragma: no cover - no directory fds (Windows)
            check_dir_stat(os.stat(p), p)
            return d
        try:
            check_dir_stat(os.fstat(fd), p)
        except BaseException:
            d.close()
            raise
        return d

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ below this folder

    def subdir(self, name: str, create: bool = False) -> SafeDir:
        """A partition folder below this one (made, mode 0755, when ``create``);
        never through a link, and checked like the top."""
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(mode=DIR_MODE, **self._at(name))
        if not _HAVE_DIR_FD:  # pragma: no cover - Windows
            st = self.lstat(name)
            check_dir_stat(st, self.path / name)
            return SafeDir(-1, self.path / name)
        try:
            fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=self.fd)
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                raise UnsafePath(f"{self.path / name} is a link or not a folder: refusing to "
                                 f"use it") from None
            raise
        d = SafeDir(fd, self.path / name)
        try:
            check_dir_stat(os.fstat(fd), d.path)
        except BaseException:
            d.close()
            raise
        return d

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(follow_symlinks=False, **self._at(name))

    def is_file(self, name: str) -> bool:
        """A regular file (not a link) by this name."""
        try:
            return stat.S_ISREG(self.lstat(name).st_mode)
        except FileNotFoundError:
            return False

    def is_dir(self, name: str) -> bool:
        try:
            return stat.S_ISDIR(self.lstat(name).st_mode)
        except FileNotFoundError:
            return False

    def exists(self, name: str) -> bool:
        try:
            self.lstat(name)
            return True
        except FileNotFoundError:
            return False

    def listdir(self) -> list[str]:
        return os.listdir(self.fd if _HAVE_DIR_FD else self.path)

    def create(self, name: str, mode: int = FILE_MODE) -> int:
        """A new file, write-only: fails (``FileExistsError``) if the name exists, as a
        link too. The mode is exact, whatever the umask."""
        fd = os.open(flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
                     | getattr(os, "O_BINARY", 0), mode=mode, **self._at(name))
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_file(self, name: str, write: bool = False) -> int:
        """An existing regular file of ours: never a link, never another user's."""
        flags = (os.O_RDWR if write else os.O_RDONLY) | _NOFOLLOW | _CLOEXEC | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(flags=flags, **self._at(name))
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath(f"{self.path / name} is a symbolic link: not tcpsnap's") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"{self.path / name} is not a regular file: not tcpsnap's")
            if hasattr(os, "geteuid") and not _trusted_owner(st.st_uid):
                raise UnsafePath(f"{self.path / name} is owned by uid {st.st_uid}: not tcpsnap's")
            if write and st.st_nlink > 1:
                raise UnsafePath(f"{self.path / name} has other hard links: not tcpsnap's")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read_bytes(self, name: str, limit: int | None = None) -> bytes:
        """A file's bytes (at most ``limit``), never through a link."""
        fd = self.open_file(name)
        try:
            size = os.fstat(fd).st_size
            want = size if limit is None else min(size, limit)
            chunks = []
            while want > 0:
                b = os.read(fd, min(want, 1 << 24))
                if not b:
                    break
                chunks.append(b)
                want -= len(b)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def unlink(self, name: str) -> None:
        """Remove a name (a link itself, never its target); gone already is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(**self._at(name))

    def publish(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` in this folder without ever replacing ``dst``
        (``FileExistsError`` if it exists): a hard link then an unlink, or -- where the
        file system has no hard links -- a checked rename."""
        if not _HAVE_DIR_FD:  # pragma: no cover - Windows: rename never replaces there
            os.rename(self.path / src, self.path / dst)
            return
        try:
            os.link(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            if self.exists(dst):
                raise FileExistsError(errno.EEXIST, "exists", str(self.path / dst)) from None
            os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            return
        os.unlink(src, dir_fd=self.fd)

    def fsync(self) -> None:
        if self.fd < 0:  # pragma: no cover - Windows
            return
        try:
            os.fsync(self.fd)
        except OSError as e:  # pragma: no cover - some file systems refuse, harmless
            if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise
