"""Snapshotter: the machine's TCP table into a reused numpy array."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._backend import BACKEND, backend_class
from ._units import parse_duration
from .filters import parse_filter

__all__ = ["Snapshotter", "snapshot"]


class Snapshotter:
    """Takes snapshots of the TCP table (IPv4 and IPv6) into one preallocated array.

    ``take()`` returns a view of ``ROW_DTYPE`` rows that stays valid until the next
    ``take()``, which overwrites it: copy what you keep (``rows.copy()``). The array
    grows (doubling) only when the table outgrows it, so a warm Snapshotter allocates
    nothing per call.

    ``pids=True`` (Linux) fills each row's ``pid`` with its owning process, from an
    inode -> owner cache that /proc is walked to extend only when new sockets appear
    (in steady state, no walk at all). A new connection gets its pid at most
    ``max(walk_interval, walk duration / walk_share)`` plus one snapshot interval after
    it appears; ``tcpsnap.pids`` has the exact rules. ``process_names(rows["pid"])``
    adds the names.

    ``netns`` (Linux) says which network namespaces: None (default) the one this process
    is in, as ``ss``; ``"all"`` every namespace of the machine; one namespace, as ``ss -N``
    takes it (a name under ``/run/netns``, a path, a pid); or a list of them. Each row's
    ``netns`` is its namespace's inode. ``tcpsnap.netns`` has how (one socket kept per namespace,
    made on a thread of its own) and what it costs and needs (CAP_SYS_ADMIN and
    CAP_SYS_PTRACE; :class:`~tcpsnap.NamespaceError` otherwise).

    ``filter`` (a ``tcpsnap.Filter`` or its text, ``"dport = :443"``) keeps only the rows
    it matches: on Linux the kernel skips what it can (``Filter.kernel``: ports,
    addresses, family as inet_diag bytecode, states as ``idiag_states``) and a numpy mask
    does the rest (pid, process, uid). A filter naming pids or processes turns ``pids``
    on. ``FilterError`` (a ValueError) for a malformed filter.

    ``tcp_info=True`` (Linux) asks the same dump for each connection's internals
    (``INET_DIAG_INFO`` and ``INET_DIAG_CONG``, what ``ss -ti`` shows): after ``take()``,
    ``tcp_info`` holds one ``TCP_INFO_DTYPE`` row per row returned, row i for row i (units
    in ``tcpsnap._schema``), valid until the next ``take()`` as the rows are. A field the
    kernel did not send is 0 there with ``tcp_info_len`` short of its end (``_arrow``
    makes it null); TIME_WAIT and request sockets have none (``tcp_info_len`` 0).
    ``tcp_info_every`` (a duration, ``"1s"``) asks for them at most that often: a
    ``take()`` in between asks for none and leaves ``tcp_info`` None. ValueError for
    ``tcp_info`` on a backend without it. On Windows the internals come from
    GetPerTcpConnectionEStats where it is exported and tcpsnap is elevated (else they are
    zero, null in a recording: ``tcpsnap._backend.tcp_info_unavailable()`` says why), for at
    most 1,000 ESTABLISHED connections per ``take()`` in round-robin, counted since tcpsnap
    first saw each connection (``tcpsnap._windows``).

    >>> with Snapshotter() as snap:
    ...     rows = snap.take()
    """

    backend = BACKEND

    def __init__(self, capacity: int = 1024, *, pids: bool = False, filter: Any = None,
                 netns: str | int | list | None = None, tcp_info: bool = False,
                 tcp_info_every: Any = None) -> None:
        where = parse_filter(filter) if filter is not None else None
        every = parse_duration(tcp_info_every) if tcp_info_every is not None else 0
        if tcp_info and BACKEND not in ("netlink", "windows"):
            raise ValueError(f"tcp_info needs Linux or Windows (this backend: {BACKEND})")
        #: The ``Filter`` ``take()`` applies, or None.
        self.filter = where if where else None
        self._impl = backend_class()(capacity)
        #: Whether ``take()`` asks for each connection's internals (``tcp_info``).
        self.tcp_info_enabled = bool(tcp_info)
        self._info_every_ns = int(every * 1e9)
        self._info_next = 0            # monotonic ns from which the next take() samples
        self._info: np.ndarray | None = None
        if self.filter is not None:
            pids = pids or self.filter.needs_pids
            if hasattr(self._impl, "set_filter"):
                self._impl.set_filter(*self.filter.kernel())
        self._ns = None
        if netns is not None:
            if BACKEND != "netlink":
                self._impl.close()
                raise ValueError(f"netns is Linux-only (this backend: {BACKEND})")
            from .netns import Namespaces

            try:
                self._ns = Namespaces(netns)
            except BaseException:
                self._impl.close()
                raise
        #: What ``netns`` was asked for (None: this process's namespace).
        self.netns = netns
        #: Whether ``take()`` fills the ``pid`` field (Linux: see ``tcpsnap.pids``).
        self.pids = bool(pids)
        self._resolver = None
        self._defer = False            # take() leaves the pids to its caller (defer_pids)
        if self.pids and BACKEND == "netlink":
            from .pids import new_resolver

            self._resolver = new_resolver()

    def take(self) -> np.ndarray:
        impl = self._impl
        res = self._resolver
        if self._ns is not None:
            self._ns.apply(impl)
        if self.tcp_info_enabled:
            self._sample_info()
        if res is None or self._defer:
            n = impl.dump()
            return self._filtered(impl.rows, n)
        res.begin()                  # a walk that is due already runs during the dump
        try:
            n = impl.dump()
        except BaseException:
            res.abort()
            raise
        rows = impl.rows
        res.resolve(rows, n)
        return self._filtered(rows, n)

    def take_into(self, out: np.ndarray, start: int) -> tuple[np.ndarray, bool]:
        """``take()``, with the rows written straight into ``out[start:]`` (a C-contiguous,
        writeable ``ROW_DTYPE`` array: a recorder's batch, which saves copying them) where
        this snapshotter can: Linux, no ``filter``, no ``netns``, no ``tcp_info``, and the
        table fits in the room. Returns ``(rows, placed)``: ``placed`` True when ``rows`` is
        ``out[start:start + len(rows)]``, else ``rows`` is what ``take()`` returns (valid
        until the next take). ValueError for a wrong ``out`` or a start outside it."""
        impl = self._impl
        into = getattr(impl, "dump_into", None)
        if (into is None or self.filter is not None or self._ns is not None or self.tcp_info_enabled
                or self._defer):
            return self.take(), False
        res = self._resolver
        if res is not None:
            res.begin()
        try:
            n, placed = into(out, start)
        except BaseException:
            if res is not None:
                res.abort()
            raise
        rows = out[start:start + n] if placed else impl.rows[:n]
        if res is not None:
            res.resolve(rows, n)
        self._info = None
        return rows, placed

    def defer_pids(self):
        """Make ``take()`` leave each row's ``pid`` as the dump wrote it (0) for the caller
        to fill through the resolver this returns (``PidResolver.begin_rows`` /
        ``end_rows`` / ``forget``: changes mode looks up only rows it cannot carry over from
        its previous table, ``record.changes.ChangeTracker.defer_pids``). None, and
        ``take()`` as before, where that cannot be: no background resolver (Linux,
        ``pids=True``, ``resolver.background``), or a ``filter`` that needs pids (its mask
        runs inside ``take()``)."""
        res = self._resolver
        if (res is None or not getattr(res, "background", False) or not hasattr(res, "begin_rows")
                or (self.filter is not None and self.filter.needs_pids)):
            return None
        self._defer = True
        return res

    def _sample_info(self) -> None:
        # with tcp_info_every, ask the kernel for internals only when a sample is due
        now = time.monotonic_ns()
        # 1% early still counts: a schedule's takes jitter around the sample's instant
        due = now >= self._info_next - self._info_every_ns // 100
        if due and self._info_every_ns:
            # on a fixed grid (a sample a little late does not push the next ones back);
            # one that fell behind by a whole period starts the grid again from now
            nxt = self._info_next + self._info_every_ns
            self._info_next = nxt if nxt > now else now + self._info_every_ns
        if due != (self._impl.tcp_info is not None):
            self._impl.set_tcp_info(due)

    def sample_tcp_info_next(self) -> None:
        """Make the next ``take()`` sample internals, and the ``tcp_info_every`` period
        count from it (the recorder calls it after its untimed warm-up snapshot, so that a
        recording's first snapshot has them)."""
        self._info_next = 0

    def _filtered(self, rows: np.ndarray, n: int) -> np.ndarray:
        f = self.filter
        info = self._impl.tcp_info if self.tcp_info_enabled else None
        if f is None:
            self._info = None if info is None else info[:n]
            return rows[:n]
        view = rows[:n]
        names = self.process_names(view["pid"]) if f.needs_process else None
        m = f.mask(view, process=names)
        kept = view[m]               # the kernel's superset narrowed to the filter, in place
        rows[:len(kept)] = kept
        if info is not None:         # the internals follow their rows
            info[:len(kept)] = info[:n][m]
            info = info[:len(kept)]
        self._info = info
        return rows[:len(kept)]

    @property
    def tcp_info(self) -> np.ndarray | None:
        """The internals of the last ``take()``'s rows (``TCP_INFO_DTYPE``, row i for row
        i), or None: without ``tcp_info=True``, or a ``take()`` that sampled none
        (``tcp_info_every``). Valid until the next ``take()``: copy what you keep."""
        return self._info

    @property
    def tcp_info_stats(self) -> dict[str, int]:
        """``tcp_info_len``: the longest ``struct tcp_info`` the kernel sent (bytes; 0: none
        yet); ``tcp_info_longer``: how many were longer than tcpsnap knows (parsed up to
        what it knows). Empty without ``tcp_info=True``."""
        if not self.tcp_info_enabled:
            return {}
        length, longer = self._impl.tcp_info_seen
        return {"tcp_info_len": int(length), "tcp_info_longer": int(longer)}

    def process_names(self, pids: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Dictionary-encode the process (``comm``) name of each pid: ``(codes, names)``
        with int32 ``codes`` into ``names``, -1 where the name is unknown (pid 0, or a
        process that could not be read). Meant for the pids of the last ``take()``:
        names are cached per process (pid + start time) and stay right when a pid is
        reused; see ``tcpsnap.pids``."""
        if self._resolver is not None:
            return self._resolver.process_names(pids)
        from .pids import process_names

        return process_names(pids)

    @property
    def resolver(self):
        """The ``PidResolver`` behind ``pids=True`` (None without it): its knobs
        (``walk_interval``, ``verify_interval``...) can be set; ``stats`` counts."""
        return self._resolver

    @property
    def pid_stats(self) -> dict[str, float]:
        """Counters of the pid resolver (walks, their cost, ``denied`` processes...);
        empty without ``pids=True``."""
        return dict(self._resolver.stats) if self._resolver is not None else {}

    @property
    def namespaces(self):
        """The ``tcpsnap.netns.Namespaces`` behind ``netns=`` (None without it): which
        are dumped (``targets()``), ``stats``."""
        return self._ns

    @property
    def capacity(self) -> int:
        """Rows the current array holds before it must grow."""
        return self._impl.capacity

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``dumps`` done, ``retries`` after the table changed mid-dump,
        ``skipped`` kernel rows in no known state, ``grows`` of the array, and
        ``duplicates``: sockets a dump reported twice (Linux), dropped by cookie."""
        i = self._impl
        return {"dumps": i.dumps, "retries": i.retries, "skipped": i.skipped, "grows": i.grows,
                "duplicates": getattr(i, "duplicates", 0)}

    def close(self) -> None:
        if self._resolver is not None:
            self._resolver.close()
        self._impl.close()
        if self._ns is not None:
            self._ns.close()

    def __enter__(self) -> Snapshotter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def snapshot(*, pids: bool = False, netns: str | int | list | None = None) -> np.ndarray:
    """The whole TCP table now, as a new array you own (with owning pids if asked; of
    the namespaces ``netns`` names, as ``Snapshotter`` takes it)."""
    with Snapshotter(pids=pids, netns=netns) as s:
        return s.take().copy()
