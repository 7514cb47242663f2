import numpy as np

class DestroyFeed:
    """A NETLINK_SOCK_DIAG socket subscribed to TCP socket-destroy notifications."""

    drops: int
    malformed: int
    received: int
    rcvbuf: int
    def __init__(self, rcvbuf: int = ..., capacity: int = 4096) -> None:
        """TypeError for a non-integer argument; ValueError for an rcvbuf outside
        0..2**31-1 bytes or a capacity below 1 row (both before any socket is made)."""
    def fileno(self) -> int: ...
    def drain(self) -> int: ...
    def take(self) -> tuple[np.ndarray, np.ndarray]: ...
    def close(self) -> None: ...
