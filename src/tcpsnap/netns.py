"""Network namespaces: which exist, and a sock_diag socket inside each (Linux).

A TCP dump lists the sockets of one network namespace, the one its netlink socket was made
in. ``Snapshotter(netns="all")`` (``record --all-netns``) dumps every namespace of the
machine, ``Snapshotter(netns=NAME|PATH|PID)`` (``--netns``) one other namespace, like
``ss -N``. Every row says which in ``netns``: the namespace's inode, as ``ls -iL
/proc/PID/ns/net`` and ``lsns -t net`` show it.

- **Discovery**: ``/proc/*/ns/net`` (every process's namespace) deduplicated by inode, plus
  the bind mounts under ``/run/netns`` (``ip netns add``) and ``/var/run/docker/netns``
  (Docker), which can hold a namespace no process is in.
- **Sockets**: one per namespace, made by one dedicated thread (``setns`` into the
  namespace, ``socket``, ``setns`` back: :mod:`tcpsnap._netns`), then kept and lent to the
  dumper, so a snapshot costs one dump per namespace and no ``setns``; the capture thread
  never changes namespace, nor does the process.
- **Gone namespaces**: the thread re-discovers every ``rescan_interval`` seconds (1 s) off
  the capture thread; the socket of a namespace found gone is closed at the next snapshot.
  That matters: a kept sock_diag socket keeps its namespace (and its veth, addresses...)
  alive. A namespace created meanwhile is dumped from the snapshot after the re-discovery.
- **Cost**: a dump walks its namespace's whole hash table, not just its sockets. Namespaces
  share the global TCP hash by default, so an *empty* namespace costs as much to dump as the
  host's table (milliseconds); set ``sysctl net.ipv4.tcp_child_ehash_entries=1024`` (Linux
  >= 6.1) before containers start and each new namespace gets a private table, tens of
  microseconds to dump. ``benchmarks/RESULTS.md`` has the numbers.
- **Capabilities**: entering a namespace needs CAP_SYS_ADMIN; opening another process's
  ``/proc/PID/ns/net`` needs CAP_SYS_PTRACE (both: root). Without them
  :class:`~tcpsnap.NamespaceError` says which, in one line.

Socket inodes are global, so ``pids=True`` finds owners in every namespace (``tcpsnap.pids``
walks ``/proc/*/fd`` of all processes).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ._errors import NamespaceError

__all__ = ["discover", "namespace_path", "has_capability", "check_capabilities", "Namespaces", "BIND_DIRS"]

#: Folders of namespace bind mounts, searched by ``discover`` and by ``--netns NAME``.
BIND_DIRS = ("/run/netns", "/var/run/docker/netns")

_NEED_ADMIN = "CAP_SYS_ADMIN (setns into another network namespace; run as root)"
_NEED_PTRACE = "CAP_SYS_PTRACE (to open other processes' /proc/PID/ns/net; run as root)"


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def has_capability(bit: int) -> bool:
    """Whether this process has capability ``bit`` (``linux/capability.h``) in its effective
    set (``CapEff`` of ``/proc/self/status``); True if that cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return True


def check_capabilities(all_netns: bool = True) -> None:
    """NamespaceError (one line) unless this process may capture every namespace:
    CAP_SYS_ADMIN (``setns``) and CAP_SYS_PTRACE (other processes' ``/proc/PID/ns/net``);
    for one namespace (``all_netns=False``, ``--netns``), CAP_SYS_ADMIN."""
    need = ((21, _NEED_ADMIN), (19, _NEED_PTRACE)) if all_netns else ((21, _NEED_ADMIN),)
    missing = [text for bit, text in need if not has_capability(bit)]
    if missing:
        raise NamespaceError(f"{'--all-netns' if all_netns else '--netns'} needs " + " and ".join(missing))


def discover() -> dict[int, str]:
    """Every network namespace this process can see: ``{inode: path}``, a path that opens
    it (a bind mount if there is one, else ``/proc/PID/ns/net`` of its lowest pid).
    Processes whose namespace cannot be read (another user's, without CAP_SYS_PTRACE) are
    left out."""
    found: dict[int, str] = {}
    dev = _nsfs_dev()
    for d in BIND_DIRS:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            p = os.path.join(d, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            if st.st_dev == dev and st.st_ino not in found:   # a namespace, not a plain file
                found[st.st_ino] = p
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    for pid in pids:
        p = f"/proc/{pid}/ns/net"
        try:
            ino = os.stat(p).st_ino
        except OSError:
            continue        # gone, a kernel thread, or not ours to read
        found.setdefault(ino, p)
    return found


def namespace_path(spec: str | int) -> str:
    """The path of one namespace as ``--netns`` names it: a NAME under ``/run/netns`` (``ip
    netns``) or ``/var/run/docker/netns``, a PATH, or a PID. NamespaceError (one line) if it
    is none of them or not a network namespace."""
    s = str(spec)
    if s.isdigit():
        p = f"/proc/{s}/ns/net"
    elif "/" in s:
        p = s
    else:
        p = next((os.path.join(d, s) for d in BIND_DIRS if os.path.exists(os.path.join(d, s))),
                 os.path.join(BIND_DIRS[0], s))
    try:
        st = os.stat(p)
    except PermissionError:
        raise NamespaceError(f"network namespace {s}: {p}: permission denied: needs {_NEED_PTRACE}") from None
    except OSError as e:
        raise NamespaceError(f"no network namespace {s}: {p}: {e.strerror}") from None
    if st.st_dev != _nsfs_dev():
        raise NamespaceError(f"{s}: {p} is not a network namespace")
    return p


class Namespaces:
    """The namespaces a Snapshotter dumps, with one socket in each.

    ``which``: ``"all"`` (re-discovered every ``rescan_interval`` seconds), one
    namespace as ``namespace_path`` takes it, or a list of them (fixed: never
    re-discovered). ``apply(dumper)`` (on the capture thread, before each dump) lends
    the dumper the current sockets and closes those of namespaces found gone.
    NamespaceError at construction if a capability is missing.
    """

    def __init__(self, which: str | int | list | tuple = "all", *, rescan_interval: float = 1.0,
                 _discover: Callable[[], dict[int, str]] = discover) -> None:
        self.all = which == "all"
        self.rescan_interval = rescan_interval
        self._discover = _discover if self.all else None
        specs = which if isinstance(which, (list, tuple)) else [which]
        self._fixed = None if self.all else [namespace_path(w) for w in specs]
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tcpsnap-netns")
        self._lock = threading.Lock()
        self._socks: dict[int, int] = {}       # ino -> fd, ours
        self._paths: dict[int, str] = {}
        self._pending: Future | None = None
        self._applied: tuple | None = None
        self._last = 0.0
        #: ``opened`` and ``closed`` sockets, ``scans`` done, ``errors`` (namespaces that
        #: could not be entered: gone meanwhile)
        self.stats = {"opened": 0, "closed": 0, "scans": 0, "errors": 0}
        try:
            if self.all:
                check_capabilities()
            self._merge(*self._pool.submit(self._scan, {}).result())
            if not self._socks:
                raise NamespaceError("no network namespace could be entered")
        except BaseException:
            self.close()
            raise


    def _open(self, path: str) -> tuple[int, int]:
        """On the namespace thread: (ino, socket fd) of the namespace at path."""
        from ._netns import sock_diag_in

        try:
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            raise NamespaceError(f"{path}: permission denied: needs {_NEED_PTRACE}") from None
        try:
            ino = os.fstat(nsfd).st_ino
            try:
                return ino, sock_diag_in(nsfd, self._home)
            except PermissionError:
                raise NamespaceError(f"entering network namespace {path} needs {_NEED_ADMIN}") from None
            except OSError as e:
                if e.errno == errno.EINVAL:
                    raise NamespaceError(f"{path} is not a network namespace") from None
                raise
        finally:
            os.close(nsfd)

    def _scan(self, have: dict[int, str]) -> tuple[dict[int, str], dict[int, int]]:
        """On the namespace thread: (present namespaces, sockets opened for new ones)."""
        present = self._discover() if self._discover is not None else None
        if present is None:
            present = dict(have) if have else {-i - 1: p for i, p in enumerate(self._fixed or ())}
        opened: dict[int, int] = {}
        first: NamespaceError | None = None
        for ino, path in present.items():
            if ino in have:
                continue
            try:
                got, fd = self._open(path)
            except NamespaceError as e:
                first = first or e
                self.stats["errors"] += 1
                continue
            except OSError:
                self.stats["errors"] += 1      # the process or mount went away meanwhile
                continue
            if got in opened or got in have:
                os.close(fd)
                continue
            opened[got] = fd
            self._paths[got] = path
        if first is not None and not have and not opened:
            raise first       # none at all: a capability is missing, or no such namespace
        if self._fixed is not None:
            present = {**have, **{ino: self._paths[ino] for ino in opened}}
        self.stats["scans"] += 1
        return present, opened

    def _merge(self, present: dict[int, str], opened: dict[int, int]) -> list[int]:
        """Fold a scan in; return the fds to close once the dumper no longer has them."""
        drop = []
        for ino, fd in opened.items():
            if ino in self._socks:
                drop.append(fd)
            else:
                self._socks[ino] = fd
                self.stats["opened"] += 1
        for ino in [i for i in self._socks if i not in present]:
            drop.append(self._socks.pop(ino))
            self._paths.pop(ino, None)
            self.stats["closed"] += 1
        self._last = time.monotonic()
        return drop

    def targets(self) -> list[tuple[int, int]]:
        """``(inode, fd)`` of every namespace dumped now, in inode order."""
        return sorted(self._socks.items())

    def apply(self, dumper) -> None:
        """Before a dump, on the capture thread: fold in a finished re-discovery (lending
        the dumper the new sockets, closing the ones of gone namespaces) and start the next
        when due. Costs nothing when neither is due."""
        p = self._pending
        if p is not None and p.done():
            self._pending = None
            try:
                drop = self._merge(*p.result())
            except Exception:          # noqa: BLE001 - a failed re-discovery keeps the last set
                drop = []
                self._last = time.monotonic()
            dumper.set_targets(self.targets(), self.reopen)
            for fd in drop:
                os.close(fd)
        elif self._applied is not dumper:
            dumper.set_targets(self.targets(), self.reopen)
            self._applied = dumper
        if self.all and self._pending is None and time.monotonic() - self._last >= self.rescan_interval:
            self._pending = self._pool.submit(self._scan, dict(self._paths))

    def reopen(self, ino: int) -> int:
        """A fresh socket in namespace ``ino`` (the dumper's after a failed dump); the old
        one is closed. Blocks for the namespace thread."""
        old = self._socks.get(ino)
        got, fd = self._pool.submit(self._open, self._paths[ino]).result()
        self._socks[ino] = fd
        if old is not None:
            os.close(old)
        return fd

    def close(self) -> None:
        """Close every socket (letting the namespaces go) and stop the thread."""
        p = self._pending
        self._pool.shutdown(wait=True)
        if p is not None and p.done() and p.exception() is None:
            for fd in p.result()[1].values():
                os.close(fd)
        self._pending = None
        for fd in self._socks.values():
            os.close(fd)
        self._socks.clear()
        if self._home >= 0:
            os.close(self._home)
            self._home = -1
