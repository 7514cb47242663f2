"""The shipper: upload every finished file of a recording folder, once, provably.

What is shipped: the folder's finished files (``tcpsnap.record.folder.finished_files`` in
each ``date=`` partition: never the file in progress, its journal or row-group log, never
a link, never ``_tcpsnap_unrecovered/``). Each goes to
``s3://bucket/prefix/date=YYYY-MM-DD/host=NAME/<file name>``: the date is the file's own
partition (the UTC day of its first snapshot), the host the ``tcpsnap.host`` of its
footer, never this machine's clock or name.

A file counts as shipped when its *receipt* exists: ``DIR/_tcpsnap_shipped/<part>__<name>.json``
(written to a hidden temporary name, fsynced, then published by a hard link: a crash
leaves either no receipt or a whole one). A receipt is written only after a HEAD of the
object returned the file's size and SHA-256. An object already there with the same size
and SHA-256 is not uploaded again (shipping twice leaves one object); one with other
bytes is an error (``ShipError``), never overwritten.

One shipper per folder: a shipper holds the flock ``DIR/.tcpsnap-ship.lock`` (the
recorder's lock mechanism, ``tcpsnap.record.folder.lock``, on its own file: a recorder
and a shipper work side by side) while it ships; a second one (``tcpsnap ship`` beside
``record --ship``, or two ``tcpsnap ship``) stops with ``ShipError`` naming the pid that
holds it, before it reads or writes any receipt.

``delete_after``: a shipped file is deleted once a HEAD confirms its object again,
except the folder's newest finished file (the recorder numbers its next snapshots from
it), which goes once a newer file is shipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import RecorderError, RecorderLocked, ShipError, UnsafePath
from ..record.folder import finished_files, footer_kv, lock, unlock
from ..record.layout import NAME_RE, PARTITION_RE
from ..record.safedir import SafeDir
from .target import Target, Transient, sha256_file

__all__ = ["Shipper", "Pending", "RECEIPTS", "LOCK", "read_receipts", "scan", "pending", "unshipped"]

log = logging.getLogger("tcpsnap.ship")

#: The folder of receipts, below the recording folder (``_``: readers skip it).
RECEIPTS = "_tcpsnap_shipped"
#: A receipt's object URL below the target's ``s3://bucket/prefix/``.
_BELOW = re.compile(r"date=[^/]+/host=[^/]+/[^/]+")
#: The shipper's lock file in the recording folder (``.``: readers skip it).
LOCK = ".tcpsnap-ship.lock"


@dataclass(frozen=True)
class Pending:
    """A finished file: ``part`` (``date=...`` or ''), ``name``, ``size`` in bytes."""

    part: str
    name: str
    size: int

    @property
    def rel(self) -> str:
        return f"{self.part}/{self.name}" if self.part else self.name

    @property
    def receipt(self) -> str:
        return f"{self.part}__{self.name}.json"


def read_receipts(root: SafeDir) -> dict[str, dict]:
    """Receipt name -> receipt (dict) of every whole receipt in ``root``; {} if none."""
    out: dict[str, dict] = {}
    if not root.is_dir(RECEIPTS):
        return out
    with root.subdir(RECEIPTS) as d:
        for n in d.listdir():
            if n.startswith(".") or not n.endswith(".json"):
                continue
            try:
                out[n] = json.loads(d.read_bytes(n, 1 << 16))
            except (OSError, ValueError, UnsafePath) as e:
                log.warning("ship: receipt %s unreadable (%s): the file counts as unshipped",
                            d.path / n, e)
    return out


def _files(root: SafeDir) -> list[Pending]:
    out: list[Pending] = []
    for part in sorted(root.listdir()):
        if not PARTITION_RE.match(part) or not root.is_dir(part):
            continue  # is_dir: lstat, so a link named like a partition is not followed
        with root.subdir(part) as d:
            out.extend(Pending(part, n, d.lstat(n).st_size) for n in finished_files(d))
    out.extend(Pending("", n, root.lstat(n).st_size) for n in finished_files(root))
    return sorted(out, key=lambda p: (p.name, p.part))


def scan(root: SafeDir, base: str | None = None, endpoint: str | None = None) -> tuple[list[Pending], list[Pending]]:
    """(finished files of the recording folder ``root`` without a receipt, files with
    one), in name order; with ``base`` (``s3://bucket/prefix/``) only a receipt of an
    object below it on ``endpoint`` (None: AWS) counts (a folder shipped to another place
    first is shipped again). Reads only the folder: no network."""
    receipts = read_receipts(root)
    todo: list[Pending] = []
    done: list[Pending] = []
    for f in _files(root):
        r = receipts.get(f.receipt) or {}
        url = str(r.get("url", ""))
        ok = r.get("size") == f.size and (base is None or (url.startswith(base) and r.get("endpoint") == endpoint
                                                           and _BELOW.fullmatch(url[len(base):]) is not None))
        (done if ok else todo).append(f)
    return todo, done


def pending(path: str | os.PathLike) -> tuple[list[Pending], list[Pending]]:
    """``scan`` of the recording folder at ``path``."""
    with SafeDir.open(path) as root:
        return scan(root)


def unshipped(path: str | os.PathLike) -> bool:
    """True unless the finished file at ``path`` (``DIR/date=.../name.parquet``) has a
    receipt: the predicate ``Retention.unshipped`` takes. Reads the disk (no network, no
    state), so it is right before, during and after a shipper runs; any doubt (a folder
    that cannot be read) answers True."""
    p = Path(path)
    part = p.parent.name if PARTITION_RE.match(p.parent.name) else ""
    root = p.parent.parent if part else p.parent
    try:
        with SafeDir.open(root) as r:
            if not r.is_dir(RECEIPTS):
                return True
            with r.subdir(RECEIPTS) as d:
                return not d.is_file(f"{part}__{p.name}.json")
    except (OSError, UnsafePath):
        return True


@dataclass
class Stats:
    shipped_files: int = 0
    shipped_bytes: int = 0
    already_there: int = 0
    deleted: int = 0
    failures: int = 0
    aborted_uploads: int = 0
    pending_files: int = 0
    pending_bytes: int = 0
    last_success: float | None = None   # wall clock (s) of the last confirmed upload
    #: CPU seconds the shipping took in the thread that ran it (``run`` and ``finish``:
    #: ``time.thread_time``), what ``record --ship`` costs beside the recording
    cpu_s: float = 0.0
    last_error: str | None = None
    extra: dict = field(default_factory=dict)


class Shipper:
    """Ships the finished files of the recording folder ``root`` to ``target``.

    ``host``: the host name for files whose footer has none (recordings of 0.1.0).
    ``delete_after``: delete a local file once its object is confirmed (see the module).
    ``backoff``: (first, longest) wait in seconds between failed passes, doubled each time.
    Counters in :attr:`stats`. Raises ``ShipError`` (a failure no retry fixes) from
    :meth:`ship_once`, :meth:`ship_all` and :meth:`run`.
    """

    def __init__(self, root: str | os.PathLike, target: Target, *, host: str | None = None,
                 delete_after: bool = False, backoff: tuple[float, float] = (1.0, 60.0),
                 sleep: Callable[[float], object] | None = None) -> None:
        self.path = Path(root)
        self.target = target
        self.host = host
        self.delete_after = delete_after
        self.backoff = backoff
        self.stats = Stats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._checked = False
        self._held: tuple[int, int] | None = None   # (lock fd, depth) while this shipper holds it

    # -- one shipper per folder ---------------------------------------------------------

    def acquire(self) -> None:
        """Take the folder's shipper lock (``LOCK``), or ``ShipError`` (another shipper
        holds it: one line with its pid). Re-entrant; :meth:`release` as many times."""
        with self._lock:
            self._acquire()

    def _acquire(self) -> None:
        if self._held is not None:
            self._held = (self._held[0], self._held[1] + 1)
            return
        try:
            with SafeDir.open(self.path) as root:
                fd = lock(root, LOCK, busy="being shipped", one="one shipper per folder")
        except RecorderLocked as e:
            raise ShipError(str(e)) from None
        except (RecorderError, OSError) as e:
            raise ShipError(f"cannot lock {self.path / LOCK}: {e}") from None
        self._held = (fd, 1)

    def release(self) -> None:
        """Give the lock back (once :meth:`acquire`'s count is down to 0)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._held is None:
            return
        fd, depth = self._held
        if depth > 1:
            self._held = (fd, depth - 1)
            return
        self._held = None
        try:
            with SafeDir.open(self.path) as root:
                unlock(fd, root, LOCK)
        except (OSError, UnsafePath):
            unlock(fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """``with shipper.locked():`` :meth:`acquire` ... :meth:`release`."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    # -- what is there ------------------------------------------------------------------

    def pending(self) -> tuple[list[Pending], list[Pending]]:
        """(finished files without a receipt, files with one), in name order."""
        with SafeDir.open(self.path) as root:
            return self._split(root)

    def _split(self, root: SafeDir) -> tuple[list[Pending], list[Pending]]:
        todo, done = scan(root, f"s3://{self.target.bucket}/{self.target.prefix}", self.target.endpoint_url)
        with self._lock:
            self.stats.pending_files = len(todo)
            self.stats.pending_bytes = sum(f.size for f in todo)
        return todo, done

    @staticmethod
    def unshipped(path: str | os.PathLike) -> bool:
        """For ``Retention.unshipped``: see :func:`unshipped`."""
        return unshipped(path)

    # -- one file -----------------------------------------------------------------------

    def _where(self, d: SafeDir, f: Pending) -> tuple[str, str]:
        m = PARTITION_RE.match(f.part)
        n = NAME_RE.match(f.name)
        date = m.group(1) if m else (f"{n.group(2)}-{n.group(3)}-{n.group(4)}" if n else None)
        host = footer_kv(d, f.name).get(b"tcpsnap.host", b"").decode(errors="replace") or self.host
        if date is None:
            raise ShipError(f"{self.path / f.rel}: no date (not in a date= partition, not named "
                            f"as tcpsnap names files): not shipped")
        if not host:
            raise ShipError(f"{self.path / f.rel}: its footer names no host (an old recording): "
                            f"give --host NAME")
        if "/" in host or host in (".", "..") or not host.isprintable():
            raise ShipError(f"{self.path / f.rel}: host {host!r} cannot be a key part")
        return date, host

    def _ship_file(self, root: SafeDir, f: Pending) -> None:
        with _folder(root, f.part) as d:
            fd = d.open_file(f.name)
            try:
                size = os.fstat(fd).st_size
                date, host = self._where(d, f)
                key = self.target.key(date, host, f.name)
                sha = sha256_file(fd, size)
                head = self.target.head(key)
                if head is not None and (head.size, head.sha256_hex) != (size, sha):
                    raise ShipError(f"{self.target.where(key)} exists with other bytes ({head.size} "
                                    f"bytes) than {self.path / f.rel} ({size} bytes): not "
                                    f"overwritten (two recordings of one host into one prefix?)")
                if head is None:
                    if size > self.target.part_size:  # a killed run's parts, if any
                        self.stats.aborted_uploads += self.target.abort_stale(key)
                    self.target.upload(key, fd, size, sha)
                    head = self.target.head(key)
                    if head is None or (head.size, head.sha256_hex) != (size, sha):
                        raise Transient(f"{self.target.where(key)}: not confirmed after upload")
                    self.stats.shipped_files += 1
                    self.stats.shipped_bytes += size
                    log.info("ship: %s -> %s (%d bytes, sha256 %s)", f.rel, self.target.where(key),
                             size, sha[:12])
                else:
                    self.stats.already_there += 1
            finally:
                os.close(fd)
        self._write_receipt(root, f, {"file": f.rel, "url": self.target.where(key), "size": size,
                                      "sha256": sha, "shipped_at": time.time(),
                                      "endpoint": self.target.endpoint_url})
        self.stats.last_success = time.time()

    def _write_receipt(self, root: SafeDir, f: Pending, receipt: dict) -> None:
        with root.subdir(RECEIPTS, create=True) as d:
            tmp = f".{f.receipt}.{os.getpid()}.{threading.get_ident()}.tmp"
            d.unlink(tmp)
            fd = d.create(tmp)
            try:
                os.write(fd, json.dumps(receipt, sort_keys=True).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                d.publish(tmp, f.receipt)
            except FileExistsError:
                # a receipt of another place (the folder was shipped elsewhere before):
                # this one replaces it (under the shipper lock: no other writer; a crash
                # between the two leaves no receipt, so the file is checked again by HEAD)
                d.unlink(f.receipt)
                d.publish(tmp, f.receipt)
            d.fsync()

    def _delete_shipped(self, root: SafeDir, done: list[Pending], newest: Pending | None) -> None:
        receipts = read_receipts(root)
        for f in done:
            if f == newest:
                continue
            r = receipts.get(f.receipt) or {}
            key = str(r.get("url", "")).removeprefix(f"s3://{self.target.bucket}/")
            head = self.target.head(key) if key else None
            if head is None or (head.size, head.sha256_hex) != (f.size, r.get("sha256")):
                log.warning("ship: %s: its object %s is not confirmed: kept, and shipped again",
                            f.rel, r.get("url"))
                with root.subdir(RECEIPTS) as rd:
                    rd.unlink(f.receipt)
                continue
            with _folder(root, f.part) as d:
                d.unlink(f.name)
            self.stats.deleted += 1
            log.info("ship: deleted %s (its object is confirmed)", f.rel)

    # -- passes -------------------------------------------------------------------------

    def ship_once(self) -> int:
        """Ship every pending file once. Returns how many are still pending. Raises
        ``Transient`` (retry later) or ``ShipError`` (also when another shipper holds
        the folder: see the module)."""
        with self.locked(), SafeDir.open(self.path) as root:
            if not self._checked:
                self.target.check_bucket()
                self._checked = True
            todo, done = self._split(root)
            files = todo + done
            newest = max(files, key=lambda p: (p.name, p.part)) if files else None
            for f in todo:
                if self._stop.is_set():
                    break
                self._ship_file(root, f)
            todo, done = self._split(root)
            if self.delete_after:
                self._delete_shipped(root, done, newest)
                todo, done = self._split(root)
            self._prune_receipts(root, done)
            return len(todo)

    def _prune_receipts(self, root: SafeDir, done: list[Pending]) -> None:
        """Drop the receipts of files no longer in the folder (deleted after shipping or
        by retention), so that receipts do not pile up over months. A name is never
        finished twice, so a receipt without its file can never be needed again."""
        keep = {f.receipt for f in done}
        if not root.is_dir(RECEIPTS):
            return
        with root.subdir(RECEIPTS) as d:
            for n in d.listdir():
                if n.endswith(".json") and not n.startswith(".") and n not in keep:
                    d.unlink(n)

    def _pass(self, attempt: int) -> tuple[int | None, int]:
        """One pass with error handling: (pending or None on failure, next attempt)."""
        try:
            left = self.ship_once()
            self.stats.last_error = None
            return left, 0
        except Transient as e:
            self.stats.failures += 1
            self.stats.last_error = str(e)
            lo, hi = self.backoff
            wait = min(hi, lo * 2 ** attempt) * (1 + random.random() / 10)
            log.warning("ship: %s; retrying in %.1f s", e, wait)
            self._sleep(wait)
            return None, attempt + 1

    def ship_all(self, give_up: float | None = None) -> int:
        """Ship until nothing is pending, retrying with exponential backoff; stop after
        ``give_up`` seconds of failures (None: never). Returns how many are still pending."""
        attempt, t0 = 0, time.monotonic()
        with self.locked():   # for the whole run: no other shipper between two passes
            while not self._stop.is_set():
                left, attempt = self._pass(attempt)
                if left == 0:
                    return 0
                if left is None and give_up is not None and time.monotonic() - t0 > give_up:
                    break
            todo, _ = self.pending()
            return len(todo)

    def run(self, poll: float = 5.0) -> None:
        """Ship, then look for newly finished files every ``poll`` seconds, until
        :meth:`stop`; failures are retried with backoff (for ``record --ship``, which
        takes the lock (:meth:`acquire`) before it records, so that a second shipper is said
        at once, not found by this thread)."""
        # below the capture thread: shipping may wait, snapshots may not (Linux: a
        # thread's nice value is its own)
        tid = threading.get_native_id()
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, tid, 10)
        with contextlib.suppress(OSError):  # named in top -H, ps -L, /proc/PID/task/TID/comm
            with open(f"/proc/self/task/{tid}/comm", "w") as f:
                f.write("tcpsnap-ship")
        attempt = 0
        while not self._stop.is_set():
            c0 = time.thread_time()
            try:
                left, attempt = self._pass(attempt)
            except ShipError as e:  # the recording goes on; say it, wait long, try again
                self.stats.failures += 1
                self.stats.last_error = str(e)
                log.error("ship: %s; retrying in %.0f s", e, self.backoff[1])
                self.stats.cpu_s += time.thread_time() - c0
                self._stop.wait(self.backoff[1])
                continue
            self.stats.cpu_s += time.thread_time() - c0
            if left is not None:
                self._stop.wait(poll)

    def finish(self, give_up: float) -> int:
        """After :meth:`run` stopped (the recording closed): ship what is left, the last
        file included, for at most ``give_up`` seconds of failures. Returns how many
        are still pending (shipped by the next run)."""
        self._stop.clear()
        c0 = time.thread_time()
        try:
            return self.ship_all(give_up=give_up)
        finally:
            self.stats.cpu_s += time.thread_time() - c0

    def stop(self) -> None:
        self._stop.set()

    def status_text(self) -> str:
        s = self.stats
        text = f"shipped {s.shipped_files}, {s.pending_files} pending"
        if s.last_error:
            text += f" (retrying: {s.last_error})"
        return text


@contextlib.contextmanager
def _folder(root: SafeDir, part: str) -> Iterator[SafeDir]:
    if not part:
        yield root
        return
    with root.subdir(part) as d:
        yield d
