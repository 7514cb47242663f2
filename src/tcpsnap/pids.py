"""Owning processes (Linux): which pid holds each connection, at snapshot speed.

``Snapshotter(pids=True)`` fills the ``pid`` field of every row whose owner can be
found; ``Snapshotter.process_names`` and ``tcpsnap.to_pandas`` add the ``comm`` name.
Netlink gives a socket's inode, never its process; the only way from an inode to a
process is to read the links in ``/proc/<pid>/fd/`` of every process, which costs
several times the table dump itself. So the inode -> owner map is kept between
snapshots (in ``tcpsnap._procfs.PidResolver``, all C, no GIL) and /proc is walked
only for inodes not seen before. The rules:

Who owns a socket
    The lowest pid among the processes whose ``/proc/<pid>/fd`` holds the socket
    when it is resolved, and it stays the owner while it holds it. A socket shared
    by several processes (after ``fork``, or passed over a unix socket) therefore
    gets one of them, never a process that does not hold it (within the re-check
    bound below). TIME_WAIT, orphaned and request sockets (inode 0) have no owner:
    pid 0. So do sockets no readable ``/proc/<pid>/fd`` holds: a process we may not
    inspect (see Permissions), another pid namespace, kernel sockets, a descriptor in
    flight in an ``SCM_RIGHTS`` message, io_uring fixed files, a thread that
    unshared its descriptor table.

How late a new connection gets its pid
    Every ``take()`` looks each row up in the map. When every inode is known, /proc
    is not read at all. Otherwise one walk of ``/proc/*/fd`` (``readlinkat`` on every
    descriptor, in C, on up to ``threads`` threads) resolves all unknown inodes at
    once. A walk starts no sooner than ``max(walk_interval, D / walk_share)`` after
    the previous one started, D being that walk's duration (defaults 0.25 s and
    0.25: however heavy the churn, walks take at most about a quarter of the time).
    A connection first seen without a pid therefore gets it on the first ``take()``
    that starts after that gap: **at most max(0.25 s, 4 D) plus one snapshot
    interval after it first appeared** (plus the walk itself). D grows with the
    processes and descriptors on the machine; while it stays under 62.5 ms the bound
    is 0.25 s plus a snapshot interval (benchmarks/RESULTS.md has measured walks).
    When the walk is due before the dump, it runs on a background thread while the
    kernel dumps. An inode a walk did not find (its holder passed it on mid-walk, or
    cannot be seen) is looked for again by later walks, at least ``retry_interval``
    (1 s) apart, by at most 3 walks of its own; after that it only rides along walks
    that run anyway.

Off the capture path (``background=True``; what the recorder uses)
    ``take()`` never walks /proc itself: when a walk is due it starts one on the walk
    threads (at nice 0; the capture thread runs at nice -10 and comes first) and
    returns at once with the rows it could fill from the map; a later ``take()`` that
    finds the walk ended merges what it found (the lowest pid holding each socket, as
    above) and fills those rows. Only the very first walk, with an empty map, is done in
    place (``tcpsnap show`` and the recorder's warm-up snapshot have every pid). A
    connection first seen without a pid therefore gets it **at most max(walk_interval,
    D / walk_share) + 2 D + 2 snapshot intervals after it appeared** (a walk may have
    listed /proc just before it; the next one starts when due and when the previous one
    was merged, and is merged by the first snapshot after it ends). While it is pending
    its rows say pid 0 and process null (unknown), never a guess: a walk's finding is
    keyed by the socket's inode, which no other live socket has, and the owner is pinned
    by pid + start time when merged (an owner that exited since is not taken; its
    sockets wait for the next walk). In changes mode a pid that arrives is a ``changed``
    event of that connection (the rows before it keep pid 0), so the rebuilt snapshots
    are exactly what was recorded. The recorder sets ``walk_share`` to 0.5 (walks take
    spare CPU): its bound is max(0.25 s, 2 D) + 2 D + 2 intervals, under 1 s
    while D stays under 0.25 s. With 100k descriptors on the machine D was 0.17-0.41 s
    on a quiet 2-core machine (at nice 10 instead of 0, walks starved on a busy one):
    see benchmarks/RESULTS.md, "Footprint".
    Walks run on long-lived worker threads, ``tcpsnap-walk`` (one per walk thread, made
    by the first walk that needs it; no thread is created per walk).
    The re-checks and name re-reads below run off the capture path too: on two
    long-lived worker threads, ``tcpsnap-check`` and ``tcpsnap-names`` (nice 0), one
    round at a time each, merged by the first ``take()`` / ``process_names()`` after it
    ended; a round that blocks (a /proc read stuck behind a process's mm lock) delays
    only the next round of its kind, never a snapshot, and a worker still running a
    round when the resolver closes frees that round and ends.

Staying right between walks
    * Owner exits: each ``take()`` polls the pidfds of all owners in one ``poll()``
      call; sockets of an owner that exited lose it on that very snapshot and are
      resolved again (say, to the child that inherited them). Where no pidfd can be
      held (kernel < 5.3, or more owners than ``max_pidfds``, an eighth of the
      open-file limit by default) the owner's start time in ``/proc/<pid>/stat`` is
      compared instead, once per snapshot.
    * Pid reuse: a process is pid + start time, and a pidfd cannot be fooled by reuse.
    * Owner closes its descriptor while another process keeps the socket (fork then
      close, hand-off): ``take()`` re-reads the owner's ``/proc/<pid>/fd/<fd>`` link.
      Sockets that several processes held when they were resolved -- how an owner
      usually changes -- are re-read on every snapshot (in the background: every
      round, rounds at least 50 ms apart, one every snapshot while there are such
      sockets). All others are looked at a slice per
      snapshot, each at least once every F = **max(verify_interval, 32 snapshots)**
      (10 s by default; in the background, plus 50 ms, one round R and one snapshot
      interval), but their links are read only when the owner's count of open
      descriptors (Linux >= 6.2: the ``st_size`` of ``/proc/<pid>/fd``, one ``stat``
      per owner per round, taken first for a new owner by the walk that resolved it)
      moved since the previous look at that owner; then each of its links is read
      within the next F (in the background: each when the slices next reach it, none
      in the round of the look itself). In the background a round runs at most every
      other snapshot unless such shared sockets wait or a catch-up pass (below) goes
      on -- a thread's wake-up costs more than a round at 1 s -- the slice of the
      snapshot in between going with the next round; so that F holds all the same, a
      slice there is a snapshot larger (a lap over verify_interval less one snapshot
      interval, 31 snapshots at least, rather than verify_interval and 32). A slower
      slice reads every link whatever the count says, each
      at least once every **4 F** (the backstop). So a change that moves the owner's
      count between two looks at it (one per round that reaches one of its sockets) is
      noticed within F of the look that sees it, as before; one that leaves the count
      as it was (a descriptor closed and another opened between two looks: 1 s apart
      in a 1 s recording) within 4 F. In the background the backstop spares the links
      of an owner none of whose threads ran: before its links, it looks at the owner's
      *run fingerprint* (each thread's id, CPU time in ns, run-queue wait and times
      scheduled, from ``/proc/<pid>/task/<tid>/schedstat``); a process that did not run
      changed nothing in its descriptor table, so a link known right at or after the
      round that first saw that fingerprint is still right and is not read. An owner
      first seen quiet has all its links read in the next rounds (1,024 a round at
      most; at most once per 4 F: one that keeps waking costs what the backstop did),
      and none after while it stays quiet (but for one read of each after 8,192
      rounds of quiet and every 4,096 after, as the round its fingerprint dates from
      moves up); one that
      ran is read as before, so the bounds above hold. An idle
      owner of 10k sockets thus costs a ``stat`` and a fingerprint (~7 system calls) a
      round instead of ~160 ``readlinkat`` a second at 1 s (benchmarks/RESULTS.md,
      "Background threads at 1 s (session 8)"). Not seen by the fingerprint (so found
      within 4 F only once the owner next runs): a *different process* sharing the
      owner's descriptor table (``clone(CLONE_FILES)`` without ``CLONE_THREAD``,
      created after the socket was resolved) and a seccomp supervisor's
      ``SECCOMP_IOCTL_NOTIF_ADDFD`` replacing a descriptor of a process blocked in a
      notification. Without schedstats (the file reads "0 0 0"), more than 64
      threads, or fewer than 4 of its links due in a round, the links are read as
      before. Before Linux 6.2 (no count) every link looked at is read. A link that no longer names the
      socket puts it back to unresolved (pid 0) until the next walk finds its
      holder; until the re-read, a row may still show the previous holder.
    * Inode numbers are reused only after 2**32 allocations; the socket cookie, which
      never is, is checked too.
    * Sockets of our own: ``PidResolver.claim(fd)`` (any thread) says this process holds
      the socket on ``fd``; once its /proc link proves it, the next ``take()`` gives it
      our pid without a walk. The recorder's metrics server claims each connection it
      accepts (``Recorder.claim_socket``), so a scraper that opens a connection per
      scrape sets off no walk for the server's end (its own end, on this host, is
      another process's socket and is walked for as any other). A snapshot taken
      between the accept and the claim sees the socket as any new one (pid 0; a walk
      if one is due then).

Changes mode: only the rows that need it
    A changes-mode recorder (``record.changes.ChangeTracker.defer_pids``; pids on, no
    filter on pids or processes) does not look every row up: while its diff matches each
    row with the previous snapshot's (``Differ.diff(carry=)``), a row with the same
    cookie and inode takes that row's pid and process name, unless its owner may have
    changed since -- then, as a new row, it is looked up: pid 0 with an inode
    (unresolved), an owner the resolver found exited, retired (its pid now another
    process's) or renamed since the last snapshot, a socket whose owner a re-check of its
    link or a claim changed (``PidResolver.begin_rows`` hands both lists out; an owner
    without a pidfd has its start time checked once per snapshot, as above), a socket the
    refind path put back. A looked-up row whose owner or name differs from the previous
    is a ``changed`` event, as before (``Differ.fixup``). So every rule above holds with
    the same bounds, and rows that did not change cost no lookup and no name
    (benchmarks/RESULTS.md, "Capture thread at 1 s (session 8)", its session 9 part).
    There, the map's entries are dropped by the sockets the diff found closed (or whose
    connection's inode changed), a process is kept while a carried row names it, and when
    the map holds more than twice the table (plus 1,024) the next snapshot looks every row
    up and drops what none looked at (Memory, below).

What a snapshot costs
    In steady state: one hash lookup per row (32-byte entries, prefetched; a run of
    rows of one owner confirms that owner once), one
    ``poll()`` over the owners' pidfds, a ``stat`` per owner looked at and a few
    owners' links re-read. A walk costs
    what ``ss -p`` pays (getdents64 and a ``readlinkat`` per descriptor of every
    process), spread over ``threads`` threads (a large fd directory is shared block by
    block); a walk that is due before the dump runs during it; a walk for known
    unresolved rows stops as soon as each was found once (/proc lists pids in
    ascending order, so later processes cannot be lower owners).

Memory
    Entries of sockets that left the table are dropped in the same ``take()``; the
    map shrinks when mostly empty; a process no row references is forgotten (and its
    pidfd closed) one snapshot later. Memory follows the table, not the run length.

Names
    ``process_names(pids)`` gives ``comm`` from ``/proc/<pid>/stat`` (one read gives
    comm and start time), cached per process identity: re-read after ``name_ttl``
    (1 s) to follow ``exec`` and ``prctl`` renames; a pid that now names another
    process (start time changed) gets the new process's name; a process that exited
    after the snapshot keeps its last name. Call it right after ``take()``, as
    ``tcpsnap show`` and the recorder do. In the background (the recorder)
    /proc is never read there: a pid gets the name its walk read, a name older than
    ``name_ttl`` keeps being used while a thread re-reads it, so a rename (``exec``,
    ``prctl``) is recorded **at most name_ttl + 2 R + 2 snapshot intervals after it
    happened** (R: one round of re-reads, a ``stat`` read per process named); a pid
    the resolver does not hold has no name (-1). The recorder asks
    ``names_into(pids, out, index, names)``: the same names, their codes written in C
    straight into its batch's running dictionary (no array per snapshot).

Permissions
    Reading another user's ``/proc/<pid>/fd`` needs root, or ``CAP_DAC_READ_SEARCH``
    (to list it) and ``CAP_SYS_PTRACE`` (to read the links). Without them those rows
    carry pid 0, everything else works, ``stats["denied"]`` counts the processes that
    could not be read, and ``tcpsnap show`` says so once on stderr.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ._errors import BackendUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from ._procfs import PidResolver

__all__ = ["new_resolver", "process_names", "missing_pid_note", "SUPPORTED"]

#: Whether this platform can resolve owning pids itself (Windows tables carry them).
SUPPORTED = sys.platform.startswith("linux")


def new_resolver(**options) -> PidResolver:
    """A ``PidResolver`` with this machine's defaults (two walk threads where there
    are two cores). Options: ``threads``, ``walk_interval``, ``walk_share``,
    ``retry_interval``, ``verify_interval``, ``name_ttl``, ``max_pidfds``, ``background``."""
    if not SUPPORTED:
        raise BackendUnavailable(f"owning-pid resolution is not implemented for {sys.platform!r}")
    from ._procfs import PidResolver

    options.setdefault("threads", 2 if (os.cpu_count() or 1) > 1 else 1)
    return PidResolver(**options)


_shared: PidResolver | None = None
_shared_lock = threading.Lock()


def process_names(pids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``(codes, names)`` for pids of rows captured on this machine just now: int32
    codes into ``names``, -1 where the pid is 0 or has no readable name. Uses one
    process-wide name cache checked against each process's start time."""
    global _shared
    pids = np.asarray(pids)
    if not SUPPORTED or not pids.any():
        return np.full(len(pids), -1, dtype=np.int32), []
    with _shared_lock:
        if _shared is None:
            _shared = new_resolver(threads=1)
        return _shared.process_names(pids, recheck=True)


def missing_pid_note(rows: np.ndarray, stats: Mapping[str, float]) -> str | None:
    """Why some rows that have an owner show pid 0, in one line; None if none do
    (or if nothing but permissions can explain it)."""
    unresolved = int(((rows["inode"] != 0) & (rows["pid"] == 0)).sum())
    if not unresolved:
        return None
    denied = int(stats.get("denied", 0))
    if os.geteuid() == 0:
        if denied == 0:
            return None
        return (f"{_n(unresolved, 'connection')} {'shows' if unresolved == 1 else 'show'} no pid: "
                f"/proc/<pid>/fd of {_n(denied, 'process', 'es')} could not be read even as root "
                "(processes with capabilities this one lacks, or in another user namespace)")
    who = _n(denied, "process", "es") if denied else "other users' processes"
    return (f"{_n(unresolved, 'connection')} {'shows' if unresolved == 1 else 'show'} no pid: "
            f"/proc/<pid>/fd of {who} is not readable "
            "by this user (run as root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)")


def _n(n: int, word: str, plural: str = "s") -> str:
    return f"{n:,} {word}{'' if n == 1 else plural}"
