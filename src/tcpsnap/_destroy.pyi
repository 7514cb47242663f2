import numpy as np

INFO_RAW_BYTES: int

def tcp_info_rows(raw: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Raw INET_DIAG_INFO payloads (n, 320) and their lengths -> TCP_INFO_DTYPE rows."""

class DestroyFeed:
    """A NETLINK_SOCK_DIAG socket subscribed to TCP socket-destroy notifications."""

    drops: int
    malformed: int
    received: int
    rcvbuf: int
    netns: int
    def __init__(self, rcvbuf: int = ..., capacity: int = 4096, sock: int = -1, query: int = -1,
                 netns: int | None = None) -> None:
        """TypeError for a non-integer argument; ValueError for an rcvbuf outside
        0..2**31-1 bytes or a capacity below 1 row (both before any socket is made).
        sock/query: sockets made inside another namespace (owned from the call on), netns
        its inode (tags every report)."""
    def fileno(self) -> int: ...
    def drain(self) -> int: ...
    def take(self, info: bool = False) -> tuple[np.ndarray, ...]:
        """(rows, wall_ns), or with info (rows, wall_ns, raw INET_DIAG_INFO bytes (n, 320), their lengths)."""
    def probe(self, rows: np.ndarray, by_cookie: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(found, now): whether the kernel still holds each socket of rows (by its
        addresses, ports, bound interface and cookie; by_cookie false: any socket those
        lead to), and its row now (pid 0). TypeError for rows that are not a 1-D ROW_DTYPE
        array; OSError naming the failed call."""
    def close(self) -> None: ...
