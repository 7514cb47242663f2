"""A recording in progress, seen from outside: the recorder's pid, the file it is writing,
what it has so far. Nothing is locked, opened for writing or changed to find it out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..record.layout import JOURNAL_RE, LOCK_NAME, NAME_RE, PARTITION_RE, TMP_RE

__all__ = ["RecorderState", "recorder_state"]




@dataclass
class RecorderState:
    """What a recorder has in a folder that readers cannot read yet, seen from outside:
    nothing is locked, opened for writing or changed to find it out."""

    #: the recorder's pid, as its lock file says (None: no lock file, or unreadable)
    pid: int | None
    #: whether a process holds the folder's lock now (a recorder is recording)
    running: bool
    #: the in-progress files (hidden names: ``.NAME.parquet.tmp``, ``.rglog``, ``.jK``),
    #: relative to the folder: a running recorder's current file, or what a crashed one
    #: left for recovery
    unfinished: list[str]
    #: their bytes on disk
    unfinished_bytes: int
    #: when the oldest unfinished file's first snapshot was taken (the time in its name:
    #: ``2026-11-26 10:15:00.123 UTC``), if known
    since: str | None

    def describe(self, path: Any) -> str:
        """One line: ``recording now (pid N) ...`` or ``stopped without finishing ...``."""
        from .._units import human_bytes

        n = len({u.split("/")[-1].rsplit(".", 1)[0] for u in self.unfinished})   # files, not pieces
        since = f" since {self.since}" if self.since else ""
        pid = f"pid {self.pid}" if self.pid is not None else "pid unknown"
        if self.running:
            if not self.unfinished:
                return f"recording now ({pid})"
            return (f"recording now ({pid}); the file in progress{since} ({human_bytes(self.unfinished_bytes)} "
                    f"so far) is read once it is finished (every --rotate, and when the recorder stops)")
        return (f"not recording: a recorder ({pid}) stopped without finishing {n} file{'s' if n != 1 else ''}"
                f"{since} ({human_bytes(self.unfinished_bytes)}), not read until 'tcpsnap recover {path}' "
                f"(or the next 'tcpsnap record {path}') finishes {'it' if n == 1 else 'them'}")


def _flock_holders(st: os.stat_result, pid: int | None) -> list[int] | None:
    """The pids holding a flock on the file ``st`` is of (Linux: ``/proc/locks``, by
    device and inode -- or by inode and the lock file's ``pid``, where a file system
    shows another device there); None where that cannot be known."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":      # "N: -> FLOCK ..." are waiters
            continue
        maj, mnr, ino = (parts[5].split(":") + ["", "", ""])[:3]
        try:
            holder = int(parts[4])
            if int(ino) == st.st_ino and (f"{maj}:{mnr}" == dev or holder == pid):
                out.append(holder)
        except ValueError:
            continue
    return out


def _held_elsewhere(lock: Path, pid: int | None) -> bool:
    """Without ``/proc/locks``: whether the lock seems held. POSIX: its pid is alive
    (``kill(pid, 0)``); Windows (where ``kill`` would end the process): its locked byte
    cannot be read."""
    if os.name == "nt":  # pragma: no cover - Windows
        try:
            with open(lock, "rb") as f:
                f.read(1)
        except PermissionError:
            return True
        except OSError:
            return False
        return False
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True           # another user's: alive
    return True


def recorder_state(path: str | os.PathLike) -> RecorderState | None:
    """A recorder's trace in a recording folder: a recorder holding its lock, or the
    in-progress files one left (killed before it could finish them); None when there is
    neither (a finished recording, or not a folder)."""

    root = Path(path)
    if not root.is_dir():
        return None
    lock = root / LOCK_NAME
    if PARTITION_RE.match(root.name) and not os.path.lexists(lock):
        lock = root.parent / LOCK_NAME          # one date= folder of a recording: its recorder's
    pid: int | None = None
    running = False
    try:
        st = os.stat(lock, follow_symlinks=False)
        has_lock = True
    except OSError:
        has_lock = False
    if has_lock:
        try:
            with open(lock, "rb") as f:
                pid = int(f.read(64).split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        holders = _flock_holders(st, pid) if os.name != "nt" else None
        if holders is None:
            running = _held_elsewhere(lock, pid)
        else:
            running = bool(holders)
            if pid is None or (holders and pid not in holders):
                pid = holders[0] if holders else pid
    unfinished: list[str] = []
    size = 0
    first: str | None = None
    try:
        parts = [""] + sorted(n for n in os.listdir(root) if PARTITION_RE.match(n) and (root / n).is_dir())
    except OSError:
        parts = [""]
    for part in parts:
        d = root / part if part else root
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            m = TMP_RE.match(n) or JOURNAL_RE.match(n)
            if not m:
                continue
            unfinished.append(f"{part}/{n}" if part else n)
            try:
                size += os.stat(d / n, follow_symlinks=False).st_size
            except OSError:
                pass
            t = NAME_RE.match(m.group("name"))
            if t and (first is None or t.group(1) < first):
                first = t.group(1)
    if not running and not unfinished:
        return None           # no recorder, nothing unfinished: a lock file alone tells nothing
    since = None
    if first is not None:
        since = f"{first[:4]}-{first[4:6]}-{first[6:8]} {first[9:11]}:{first[11:13]}:{first[13:]} UTC"
    return RecorderState(pid, running, unfinished, size, since)


