import sys
from collections.abc import Callable, Sequence

import numpy as np

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    # collections.abc.Buffer (PEP 688) is new in 3.12: the same protocol, spelled out. numpy's
    # stubs give ndarray __buffer__ on 3.12+ only, so it is named here.
    from typing import Protocol, TypeAlias

    class _SupportsBuffer(Protocol):
        def __buffer__(self, flags: int, /) -> memoryview: ...

    Buffer: TypeAlias = _SupportsBuffer | np.ndarray

class NetlinkDumper:
    """One NETLINK_SOCK_DIAG socket, one receive buffer, one row array, reused."""

    dumps: int
    retries: int
    skipped: int
    grows: int
    duplicates: int
    def __init__(self, capacity: int = 1024, recv_size: int = 65536, *, single_walk: bool = True) -> None:
        """TypeError for a non-integer capacity or recv_size; ValueError for a capacity below
        1 row or a recv_size outside 8192..2**30."""
    @property
    def single_walk(self) -> bool:
        """True while dumps use one TCPDIAG_GETSOCK walk for both families (False: two
        SOCK_DIAG_BY_FAMILY dumps, chosen or fallen back to)."""
    @property
    def rows(self) -> np.ndarray: ...
    @property
    def capacity(self) -> int: ...
    def set_targets(self, targets: Sequence[tuple[int, int]], opener: Callable[[int], int] | None) -> None:
        """Dump these namespaces (``(ino, fd)``: sockets lent by tcpsnap.netns) instead of our
        own; RuntimeError during a dump."""
    def dump(self) -> int:
        """Fill ``rows`` with the whole TCP table (IPv4 and IPv6); return the row count.
        Raises DumpInterrupted if the table changed during every retry, OSError naming
        the syscall otherwise."""
    def close(self) -> None: ...
