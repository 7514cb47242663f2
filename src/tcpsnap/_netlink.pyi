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
    def set_filter(self, states: int = 0x1FFE, bytecode: Buffer | None = None) -> None:
        """What the kernel skips from the next dump on: ``states`` (Linux state bits 1..12,
        sent as idiag_states) and ``bytecode`` (an inet_diag program, INET_DIAG_REQ_BYTECODE;
        None: none), checked as the kernel's audit would first. ValueError naming what is
        wrong (the filter in place stays); TypeError for a non-integer or a non-buffer."""
    @property
    def states(self) -> int: ...
    @property
    def bytecode(self) -> bytes | None: ...
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

def audit_bytecode(bytecode: Buffer) -> None:
    """Check an inet_diag filter program as the kernel's inet_diag_bc_audit does: ValueError
    saying what is wrong and at which byte; TypeError for what is not a buffer."""
