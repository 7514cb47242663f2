"""Namespaces at their own rate (``tcpsnap.netns.Rate``): the rows of those a snapshot did
not dump, carried from their last dump (``Carry``, for ``record.capture``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._schema import ROW_DTYPE

__all__ = ["Carry"]


class Carry:
    """The rows of namespaces a snapshot did not dump (``tcpsnap.netns.Rate``: many
    namespaces, each at its own rate), carried from their last dump, so that a snapshot
    holds every namespace and nothing looks closed that was not looked at: a connection
    ends in a recording only at a dump of its namespace that no longer finds it. In
    changes mode the carried rows are unchanged, so they make no event.

    ``complete(rows, cost_ns)`` (after each ``take()``): ``rows`` plus the carried ones;
    ``carried``: the namespaces whose rows were carried in the last one; ``rows_carried``
    counts them all. ``markers()``: full mode's record of it, one row per carried
    namespace: family 0 (kind "snapshot", as an empty snapshot's row), ``inode`` 0 (it
    counts no connection), state CLOSED, ``netns`` the namespace's inode, all else 0."""

    def __init__(self, rate: Any) -> None:
        self.rate = rate
        self.last: dict[int, np.ndarray] = {}        # inode -> its rows at its last dump
        self.carried: frozenset[int] = frozenset()
        self.rows_carried = 0
        self._marks = np.zeros(0, ROW_DTYPE)
        self._order: np.ndarray | None = None   # the last complete()'s reordering of the dump
        self._n = 0                              # rows of that dump
        self._carried_rows = 0                   # rows it carried

    def align(self, info: np.ndarray) -> np.ndarray:
        """The dump's ``tcp_info`` array (row i's internals, ``Snapshotter.tcp_info``) put
        in the order of the last ``complete()``'s rows; the carried rows' internals are
        null (``tcp_info_len`` 0): they were not looked at in this snapshot, and a stale
        sample must not read as a fresh one."""
        if len(info) != self._n:
            raise AssertionError("tcp_info not aligned with the dump's rows")
        if self._order is not None:
            info = info[self._order]
        if self._carried_rows:
            info = np.concatenate([info, np.zeros(self._carried_rows, info.dtype)])
        return info

    def markers(self) -> np.ndarray:
        m = self._marks
        if set(m["netns"].tolist()) != self.carried:
            m = self._marks = np.zeros(len(self.carried), ROW_DTYPE)
            m["state"] = 1
            m["netns"] = sorted(self.carried)
        return m

    def complete(self, rows: np.ndarray, cost_ns: int) -> np.ndarray:
        rate = self.rate
        rate.observe(cost_ns)
        b = rate.budget_ns
        present = rate.present
        # keep each namespace's last rows once a pass costs half the budget: the rate
        # leaves namespaces out only after a pass whose rows are kept (``warm``)
        keep = b is not None and (rate.partial or rate.cost_ns * len(present) > b / 2)
        rate.warm = keep
        self._order, self._n, self._carried_rows = None, len(rows), 0
        if not keep:
            self.last.clear()
            self.carried = frozenset()
            return rows
        dumped = set(rate.dumped)
        ns = rows["netns"]
        if len(ns) and (np.diff(ns.astype(np.int64)) != 0).sum() >= len(dumped):
            # a dump appends namespace after namespace, one run each; else sort first
            self._order = np.argsort(ns, kind="stable")
            rows = rows[self._order]
            ns = rows["netns"]
        cuts = np.flatnonzero(ns[1:] != ns[:-1]) + 1 if len(ns) else np.zeros(0, np.int64)
        # dumped: now as this dump found it
        before = {ino: self.last.pop(ino) for ino in dumped if ino in self.last}
        for i, j in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(rows)].tolist(), strict=True):
            ino = int(ns[i])
            if j > i and ino != rate.own:      # our own is dumped every time
                if ino in before:
                    _inherit_cgroups(rows[i:j], before[ino])
                self.last[ino] = rows[i:j].copy()
        live = set(present)
        for ino in [i for i in self.last if i not in live]:
            del self.last[ino]               # a namespace gone: so are its connections
        carried = [ino for ino in present if ino not in dumped and ino in self.last]
        self.carried = frozenset(carried)
        self._carried_rows = 0
        if not carried:
            return rows
        extra = [self.last[i] for i in carried]
        self._carried_rows = sum(len(e) for e in extra)
        self.rows_carried += self._carried_rows
        return np.concatenate([rows, *extra])


def _inherit_cgroups(rows: np.ndarray, last: np.ndarray) -> None:
    """A TIME_WAIT (or orphaned FIN_WAIT2) row has no cgroup of its own: the dumper gives it
    its connection's from the dump before, which for a namespace at its own rate may not
    have held that namespace; take it (same cookie) from the namespace's last dump."""
    need = np.flatnonzero((rows["cgroup_id"] == 0) & (rows["cookie"] != 0))
    if not len(need) or not len(last):
        return
    order = np.argsort(last["cookie"])
    lc = last["cookie"][order]
    ck = rows["cookie"][need]
    k = np.minimum(np.searchsorted(lc, ck), len(lc) - 1)
    hit = lc[k] == ck
    rows["cgroup_id"][need[hit]] = last["cgroup_id"][order][k[hit]]
