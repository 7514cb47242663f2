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
- **Destroy feeds** (changes mode, ``want_feeds``): a socket-destroy feed per namespace
  too, its two sockets made on the same thread inside the namespace (the kernel delivers
  the destroy groups, and answers lookups, only in the socket's namespace); a gone
  namespace's feed goes to ``retired``, where ``record.nsfeed`` drains it one last time
  and closes it.
- **Cost**: a dump walks its namespace's whole hash table, not just its sockets. Namespaces
  share the global TCP hash by default, so an *empty* namespace costs as much to dump as the
  host's table (milliseconds); set ``sysctl net.ipv4.tcp_child_ehash_entries=1024`` (Linux
  >= 6.1) before containers start and each new namespace gets a private table, tens of
  microseconds to dump. ``benchmarks/RESULTS.md`` has the numbers. When a pass over all
  of them costs more than its budget (the recorder's: half its interval), :class:`Rate`
  walks the others at their own rate.
- **Capabilities**: entering a namespace needs CAP_SYS_ADMIN; opening another process's
  ``/proc/PID/ns/net`` needs CAP_SYS_PTRACE (both: root). Without them
  :class:`~tcpsnap.NamespaceError` says which, in one line.

Socket inodes are global, so ``pids=True`` finds owners in every namespace (``tcpsnap.pids``
walks ``/proc/*/fd`` of all processes).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ._errors import NamespaceError

__all__ = ["discover", "namespace_path", "has_capability", "check_capabilities", "Namespaces", "Rate", "BIND_DIRS"]

#: Folders of namespace bind mounts, searched by ``discover`` and by ``--netns NAME``.
BIND_DIRS = ("/run/netns", "/var/run/docker/netns")

log = logging.getLogger("tcpsnap.netns")

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
        self._applied: Any = None
        self._sel: list[tuple[int, int]] = []
        #: which namespaces each dump walks: see :class:`Rate`
        self.rate = Rate(os.fstat(self._home).st_ino)
        self._last = 0.0
        # changes mode (``want_feeds``): a destroy feed per namespace (its sockets made on
        # the namespace thread too); feeds of gone namespaces wait in ``retired`` for the
        # multiplexer's last drain (the deaths that came with the namespace's end)
        self._feeds_on = False
        self._rcvbuf: int | None = None
        self.feeds: dict[int, Any] = {}
        self.retired: list[Any] = []
        #: ``opened`` and ``closed`` sockets, ``scans`` done, ``errors`` (namespaces that
        #: could not be entered: gone meanwhile), ``feed_errors`` (destroy feeds refused)
        self.stats = {"opened": 0, "closed": 0, "scans": 0, "errors": 0, "feed_errors": 0}
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

    def _scan(self, have: dict[int, str]) -> tuple[dict[int, str], dict[int, int], dict[int, Any]]:
        """On the namespace thread: (present namespaces, sockets opened for new ones, their
        destroy feeds if ``want_feeds``)."""
        present = self._discover() if self._discover is not None else None
        if present is None:
            present = dict(have) if have else {-i - 1: p for i, p in enumerate(self._fixed or ())}
        opened: dict[int, int] = {}
        feeds: dict[int, Any] = {}
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
            if self._feeds_on:
                feed = self._open_feed(path, got)
                if feed is not None:
                    feeds[got] = feed
        if first is not None and not have and not opened:
            raise first       # none at all: a capability is missing, or no such namespace
        if self._fixed is not None:
            present = {**have, **{ino: self._paths[ino] for ino in opened}}
        self.stats["scans"] += 1
        return present, opened, feeds

    def _open_feed(self, path: str, ino: int) -> Any:
        """On the namespace thread: a ``DestroyFeed`` over two sockets made inside the
        namespace at path (subscription, lookups), or None (logged, counted) if the
        kernel refuses it."""
        from ._destroy import DestroyFeed
        from ._netns import sock_diag_in

        socks: list[int] = []
        try:
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if os.fstat(nsfd).st_ino != ino:
                    raise OSError(errno.ESTALE, "another namespace under this path now")
                socks.append(sock_diag_in(nsfd, self._home))
                socks.append(sock_diag_in(nsfd, self._home))
            finally:
                os.close(nsfd)
            sock, query = socks
            socks.clear()                 # owned by the feed from the call on
            kw = {} if self._rcvbuf is None else {"rcvbuf": self._rcvbuf}
            return DestroyFeed(sock=sock, query=query, netns=ino, **kw)
        except OSError as e:
            for fd in socks:
                os.close(fd)
            self.stats["feed_errors"] += 1
            log.warning("no socket-destroy feed in network namespace %d (%s): there, connections "
                        "that live between two snapshots are not recorded", ino, e)
            return None

    def want_feeds(self, rcvbuf: int | None = None) -> dict[int, Any]:
        """Changes mode: from now on keep a socket-destroy feed (``tcpsnap._destroy``) in
        every namespace dumped, made like the dump sockets (on the namespace thread,
        inside the namespace), one for each namespace found later, and retire a gone
        namespace's feed with its dump socket. Blocks while the feeds of the current
        namespaces are made; returns ``feeds`` (``{inode: DestroyFeed}``; a namespace
        whose feed the kernel refused has none, with a warning). ``rcvbuf``: each feed's
        receive buffer (bytes; default DestroyFeed's)."""
        if self._feeds_on:
            return self.feeds
        self._rcvbuf = rcvbuf
        p = self._pending
        if p is not None:
            # a re-discovery under way opened no feed: fold it in first (the dumper takes the
            # new set at its next apply(), before any dump), so its namespaces get theirs below
            self._pending = None
            try:
                drop = self._merge(*p.result())
            except Exception:          # noqa: BLE001 - a failed re-discovery keeps the last set
                drop = []
            self._applied = None
            for fd in drop:
                os.close(fd)
        self._feeds_on = True

        def open_all(paths: dict[int, str]) -> dict[int, Any]:
            got = {}
            for ino, path in paths.items():
                feed = self._open_feed(path, ino)
                if feed is not None:
                    got[ino] = feed
            return got

        made = self._pool.submit(open_all, dict(self._paths)).result()
        for ino, feed in made.items():
            if ino in self._socks and ino not in self.feeds:
                self.feeds[ino] = feed
            else:
                feed.close()
        return self.feeds

    def _merge(self, present: dict[int, str], opened: dict[int, int],
               feeds: dict[int, Any] | None = None) -> list[int]:
        """Fold a scan in; return the fds to close once the dumper no longer has them."""
        drop = []
        for ino, fd in opened.items():
            if ino in self._socks:
                drop.append(fd)
            else:
                self._socks[ino] = fd
                self.stats["opened"] += 1
        for ino, feed in (feeds or {}).items():
            if ino in self.feeds or not self._feeds_on:
                feed.close()
            else:
                self.feeds[ino] = feed
        for ino in [i for i in self._socks if i not in present]:
            drop.append(self._socks.pop(ino))
            self._paths.pop(ino, None)
            self.stats["closed"] += 1
            feed = self.feeds.pop(ino, None)
            if feed is not None:
                self.retired.append(feed)     # closed by the multiplexer after a last drain
        self._last = time.monotonic()
        return drop

    def targets(self) -> list[tuple[int, int]]:
        """``(inode, fd)`` of every namespace dumped now, in inode order."""
        return sorted(self._socks.items())

    def apply(self, dumper) -> None:
        """Before a dump, on the capture thread: fold in a finished re-discovery (lending
        the dumper the new sockets, closing the ones of gone namespaces), pick the
        namespaces this dump walks (``rate``: all of them unless a pass would overrun its
        budget) and start the next re-discovery when due. Costs nothing when neither is due
        and every namespace is dumped."""
        p = self._pending
        drop: list[int] = []
        if p is not None and p.done():
            self._pending = None
            try:
                drop = self._merge(*p.result())
            except Exception:          # noqa: BLE001 - a failed re-discovery keeps the last set
                self._last = time.monotonic()
            self._applied = None
        sel = self.rate.pick(self.targets())
        if self._applied is not dumper or sel != self._sel:
            dumper.set_targets(sel, self.reopen)
            self._applied, self._sel = dumper, sel
        for fd in drop:
            os.close(fd)
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
            for feed in p.result()[2].values():
                feed.close()
        self._pending = None
        for fd in self._socks.values():
            os.close(fd)
        self._socks.clear()
        for feed in [*self.feeds.values(), *self.retired]:
            feed.close()
        self.feeds.clear()
        self.retired.clear()
        if self._home >= 0:
            os.close(self._home)
            self._home = -1


class Rate:
    """Namespaces at their own rate when a pass over all of them costs more than a budget.

    A dump walks its namespace's whole hash table: with many namespaces on the shared hash
    a pass costs more than a snapshot interval (100 namespaces: about 18 ms). With
    ``budget_ns`` set (the recorder sets half its interval; None: every namespace every
    dump), ``pick`` dumps, per snapshot, this process's own namespace and as many others
    as the budget pays for at the measured cost per namespace (``observe``), in turn
    (round robin), so each is dumped at least once every ``ceil(others / per_pass)``
    snapshots. ``dumped``: the inodes the last ``pick`` chose; ``partial``: whether
    that was not all. What a reader sees of the others (their rows carried, never
    closed) is ``record.capture.Carry``'s part, which sets ``warm`` once it keeps each
    namespace's last rows: never a namespace left out before that."""

    def __init__(self, own: int) -> None:
        self.own = own
        self.budget_ns: int | None = None
        self.cost_ns = 0.0           # per namespace dumped, moving average of observe()
        self.dumped: list[int] = []
        self.present: list[int] = []
        self.partial = False
        self.warm = False            # the last dump's rows are kept: namespaces may be left out
        self.passes = 0              # picks that left a namespace out
        self._next = 0
        self._k = 0

    def pick(self, targets: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The ``(inode, fd)`` of ``targets`` to dump now (see the class)."""
        self.present = [ino for ino, _ in targets]
        b = self.budget_ns
        if (b is None or not self.warm or self.cost_ns <= 0 or len(targets) <= 2
                or self.cost_ns * len(targets) <= b):
            if self.partial:
                log.info("network namespaces: all %d dumped every snapshot again", len(targets))
            self.dumped, self.partial, self._k = self.present, False, 0
            return targets
        own = [t for t in targets if t[0] == self.own]
        others = [t for t in targets if t[0] != self.own]
        k = min(len(others), max(1, int(b // self.cost_ns) - len(own)))
        if k != self._k:
            log.info("network namespaces at their own rate: a pass over %d costs %.1f ms, over the "
                     "budget of %.1f ms: %d of %d others per snapshot (each every %d snapshots at least)",
                     len(targets), self.cost_ns * len(targets) / 1e6, b / 1e6, k, len(others),
                     -(-len(others) // k))
            self._k = k
        i = self._next % len(others)
        pick = (others + others)[i:i + k]
        self._next = (i + k) % len(others)
        sel = sorted(own + pick)
        self.dumped, self.partial = [ino for ino, _ in sel], len(sel) < len(targets)
        self.passes += self.partial
        return sel

    def observe(self, cost_ns: int) -> None:
        """What the last dump (of ``dumped``) cost, in ns."""
        n = len(self.dumped)
        if n:
            c = cost_ns / n
            self.cost_ns = c if self.cost_ns <= 0 else 0.8 * self.cost_ns + 0.2 * c
