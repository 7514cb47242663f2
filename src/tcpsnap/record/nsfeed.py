"""Changes mode across network namespaces: one socket-destroy feed per namespace, behind
the one-feed interface ``record.changes.ChangeTracker`` uses (Linux).

The kernel delivers the SOCK_DESTROY groups only inside the subscriber's namespace, so
``record --all-netns`` / ``--netns`` in changes mode keeps a ``tcpsnap._destroy.DestroyFeed``
in each namespace it dumps, made by ``tcpsnap.netns.Namespaces`` on its namespace thread
(``want_feeds``): created when a namespace is found, retired with its dump socket when the
namespace is gone. :class:`NamespaceFeeds` multiplexes them:

- ``fileno()``: one epoll fd, readable when any namespace's feed has reports queued, so the
  recorder's wait between snapshots polls one fd whatever the number of namespaces.
- ``drain()`` / ``take()``: every feed's reports, each tagged (by its feed) with its
  namespace's inode in ``netns``; identity in the tracker is the cookie (global) and, for
  the 4-tuple matches, the 4-tuple *and* ``netns``.
- ``probe(rows)``: each row asked of the namespace its ``netns`` names (lookups answer in
  the socket's namespace only); a row of a namespace without a feed is not found.
- ``drops``: the sum of every feed's overflows (``ENOBUFS``); ``drops_by_netns`` per
  namespace. One namespace's overflow costs that namespace's reports only: each feed has
  its own socket and receive buffer.

A retired feed is drained once more (the deaths that came with the namespace's end) at the
next ``drain()``, then closed: a kept socket would keep the namespace alive.
"""

from __future__ import annotations

import logging
import select
from typing import Any

import numpy as np

from .._destroy import INFO_RAW_BYTES
from .._schema import ROW_DTYPE

__all__ = ["NamespaceFeeds", "open_namespace_feeds"]

log = logging.getLogger("tcpsnap.changes")


def open_namespace_feeds(namespaces: Any, required: bool = False) -> NamespaceFeeds | None:
    """Changes mode's destroy feed for a ``tcpsnap.netns.Namespaces`` (``--all-netns``,
    ``--netns``): one in each of its namespaces, multiplexed; None (with a one-line warning)
    where no namespace's kernel accepts the subscription, PermissionError if ``required``."""
    if namespaces.want_feeds():
        return NamespaceFeeds(namespaces)
    if required:
        raise PermissionError("no network namespace accepted a socket-destroy subscription")
    log.warning("no socket-destroy feed in any network namespace: polling only, connections "
                "that live between two snapshots are not recorded")
    return None


class NamespaceFeeds:
    """The destroy feeds of a ``tcpsnap.netns.Namespaces`` as one feed (see the module
    docstring). ``ns`` must have had ``want_feeds()`` called; it owns the feeds (and
    closes them in its ``close``); this closes retired ones and its epoll fd.
    ``netns``: the namespaces with a feed now (inodes)."""

    def __init__(self, ns: Any) -> None:
        self._ns = ns
        self._ep = select.epoll()
        self._reg: dict[int, Any] = {}          # ino -> feed registered in the epoll set
        self._rows: list[np.ndarray] = []
        self._ts: list[np.ndarray] = []
        self._raw: list[np.ndarray] = []        # each report's final tcp_info (take(info=True))
        self._ilen: list[np.ndarray] = []
        self._gone_drops = 0                     # drops of feeds closed since
        self._gone_received = 0
        self._gone_malformed = 0
        self.drops_by_netns: dict[int, int] = {}
        self._sync()

    @property
    def netns(self) -> list[int]:
        return sorted(self._reg)

    def fileno(self) -> int:
        """An epoll fd: readable when any namespace's feed has reports queued."""
        return self._ep.fileno()

    def _sync(self) -> None:
        """Follow the namespaces' feeds: register new ones, drain and close retired ones."""
        feeds = self._ns.feeds
        for ino in [i for i in self._reg if feeds.get(i) is not self._reg[i]]:
            feed = self._reg.pop(ino)
            self._ep.unregister(feed.fileno())
        for ino, feed in feeds.items():
            if ino not in self._reg:
                self._ep.register(feed.fileno(), select.EPOLLIN)
                self._reg[ino] = feed
                self.drops_by_netns[ino] = 0
        retired = self._ns.retired
        while retired:
            feed = retired.pop()
            self._collect(feed)              # what the namespace's end reported
            self.drops_by_netns[feed.netns] = int(feed.drops)
            self._gone_drops += feed.drops
            self._gone_received += feed.received
            self._gone_malformed += feed.malformed
            feed.close()

    def _collect(self, feed: Any) -> None:
        if feed.drain():
            r, t, raw, ilen = feed.take(info=True)
            self._rows.append(r)
            self._ts.append(t)
            self._raw.append(raw)
            self._ilen.append(ilen)

    def drain(self) -> int:
        """Read every namespace's queued reports; return how many rows are held now."""
        self._sync()
        # only the feeds with reports queued (the set is level-triggered): with a hundred
        # namespaces, a hundred recv() calls that would find nothing are left out
        ready = {fd for fd, _ in self._ep.poll(0)}
        for ino, feed in self._reg.items():
            if feed.fileno() in ready:
                self._collect(feed)
                self.drops_by_netns[ino] = int(feed.drops)
        return sum(len(r) for r in self._rows)

    def take(self, info: bool = False) -> tuple[np.ndarray, ...]:
        """``(rows, wall_ns)`` drained since the last take, every namespace's, in the order
        they were received per namespace; with ``info`` also ``(raw, length)``, each
        report's final tcp_info as ``DestroyFeed.take(info=True)`` gives it."""
        if not self._rows:
            rows, ts = np.zeros(0, ROW_DTYPE), np.zeros(0, np.int64)
            raw, ilen = np.zeros((0, INFO_RAW_BYTES), np.uint8), np.zeros(0, np.uint16)
        else:
            rows, ts = np.concatenate(self._rows), np.concatenate(self._ts)
            raw, ilen = np.concatenate(self._raw), np.concatenate(self._ilen)
        for held in (self._rows, self._ts, self._raw, self._ilen):
            held.clear()
        return (rows, ts, raw, ilen) if info else (rows, ts)

    def probe(self, rows: np.ndarray, by_cookie: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``DestroyFeed.probe`` of each row in the namespace its ``netns`` names: ``(found,
        now)``; a row of a namespace without a feed (gone) is not found."""
        found = np.zeros(len(rows), bool)
        now = np.zeros(len(rows), ROW_DTYPE)
        if not len(rows):
            return found, now
        ns = rows["netns"]
        for ino in np.unique(ns).tolist():
            feed = self._reg.get(ino)
            if feed is None:
                continue
            idx = np.flatnonzero(ns == ino)
            f, n = feed.probe(np.ascontiguousarray(rows[idx]), by_cookie=by_cookie)
            found[idx] = f
            now[idx] = n
        return found, now

    @property
    def drops(self) -> int:
        return self._gone_drops + sum(int(f.drops) for f in self._reg.values())

    @property
    def received(self) -> int:
        return self._gone_received + sum(int(f.received) for f in self._reg.values())

    @property
    def malformed(self) -> int:
        return self._gone_malformed + sum(int(f.malformed) for f in self._reg.values())

    def close(self) -> None:
        """Close the epoll fd and the retired feeds; the live ones are the namespaces'."""
        for feed in self._ns.retired:
            feed.close()
        self._ns.retired.clear()
        self._reg.clear()
        self._ep.close()
