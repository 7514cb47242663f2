from typing import Any

import numpy as np

class PidResolver:
    """Socket inode -> owning pid, cached between snapshots (Linux; see tcpsnap.pids).

    ``begin()`` before the netlink dump, ``resolve(rows, n)`` after it (``abort()`` if
    the dump failed), ``process_names(pids)`` for names. One thread at a time.

    Bad arguments, to the constructor, the methods or the knobs' setters, raise exactly
    TypeError (not an integer, not a number) or ValueError (out of range; any wrong kind of
    ``rows``), naming the argument.
    """

    threads: int
    background: bool
    """Walks on background threads only, merged by a later take (see tcpsnap.pids)."""
    block: int
    """Descriptors per block when walk threads share a large fd directory; 0: never."""
    walk_interval: float
    walk_share: float
    retry_interval: float
    verify_interval: float
    name_ttl: float
    backstop_min_links: int
    """Background: the backstop looks at an owner's run fingerprint instead of reading
    its links when a round has at least this many of them (default 4)."""
    pending: int
    retry: int
    walks: int
    walk_seconds: float
    last_walk_seconds: float
    verified: int
    moved: int
    owner_exits: int
    evicted: int
    skipped_procs: int
    takes: int
    denied: int
    last_walk_procs: int
    last_walk_fds: int
    name_jobs: int
    names_refreshed: int
    check_jobs: int
    backstop_quiet: int
    claimed: int
    _name_block: int
    """Tests: a descriptor each later name round reads a byte from before each lookup."""
    def __init__(
        self,
        *,
        threads: int = 2,
        walk_interval: float = 0.25,
        walk_share: float = 0.25,
        retry_interval: float = 1.0,
        verify_interval: float = 10.0,
        name_ttl: float = 1.0,
        max_pidfds: int = -1,
        background: bool = False,
    ) -> None: ...
    def begin(self) -> None:
        """Before the dump: start a walk that is already due on background threads."""
    def abort(self) -> None:
        """The dump failed after begin(): finish and drop the background walk."""
    def resolve(self, rows: np.ndarray, n: int) -> None:
        """Fill ``pid`` of ``rows[:n]`` (ROW_DTYPE, fresh from a dump). OSError naming
        the call if /proc cannot be listed; MemoryError if the map cannot grow; ValueError
        for any wrong kind of rows or an n outside 0..len(rows), TypeError for a
        non-integer n (each of them aborts a walk begun)."""
    def claim(self, fd: int) -> bool:
        """This process holds the socket on ``fd``: its row gets our pid at the next
        resolve() without a walk (proven by its /proc link first). Thread-safe. False
        when not queued (not a socket, no proof, too many waiting)."""
    def process_names(self, pids: np.ndarray, recheck: bool = False) -> tuple[np.ndarray, list[str]]:
        """``(codes, names)``: int32 codes into names, -1 where unknown (pid 0, unreadable)."""
    def names_into(self, pids: np.ndarray, out: np.ndarray, index: dict[str, int], names: list[str],
                   merge: bool = True) -> None:
        """``process_names(pids)`` folded into a running dictionary: ``out[i]`` the code in
        ``names`` (``index``: name -> code; both grow) of row i's name, -1 unknown."""
    def begin_rows(self) -> tuple[np.ndarray, np.ndarray] | None:
        """A take whose caller carries unchanged rows' owners over: ``(pids, inodes)``
        whose rows must be looked up again, or None (look up every row)."""
    def end_rows(self, rows: np.ndarray, need: np.ndarray | None = None,
                 carried: np.ndarray | None = None) -> None:
        """Look up ``rows[need]`` (all rows: None); ``carried`` the carried rows' pids."""
    def forget(self, inodes: np.ndarray, cookies: np.ndarray) -> None:
        """Drop the entries of these closed sockets; ends a begin_rows take."""
    def recheck_inodes(self, inodes: np.ndarray) -> None:
        """Look these sockets' rows up again at the next begin_rows take."""
    rows_carried: int
    rows_looked: int
    def owner(self, inode: int) -> tuple[int, int] | None:
        """``(pid, fd)`` cached for a socket inode, or None."""
    def _forge_start(self, pid: int, start: int) -> None: ...
    @property
    def stats(self) -> dict[str, Any]:
        """takes, walks, walk_seconds, last_walk_seconds, last_walk_procs, last_walk_fds,
        denied, pending, retry, entries, map_slots, processes, pidfds, verified, moved,
        owner_exits, evicted, skipped_procs, name_jobs, names_refreshed, check_jobs
        (numbers), walking, naming, checking (a background walk, name round, re-check
        round is going on), and phase_seconds ({phase: seconds})."""
    def close(self) -> None: ...
