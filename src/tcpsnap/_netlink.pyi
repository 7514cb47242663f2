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
    def dump_into(self, out: np.ndarray, start: int) -> tuple[int, bool]:
        """``dump()`` writing the rows straight into ``out[start:]`` while they fit: ``(n,
        True)`` with the rows there, else (more rows than room, or internals asked for)
        ``(n, False)`` with them in ``rows``. ValueError for a wrong out or start."""
    def close(self) -> None: ...
    def inject_retries(self, after: int, times: int) -> None:
        """For tests: abort each of the next ``times`` attempts after ``after`` datagrams, as
        ENOBUFS does (a new socket, the namespace dumped again). ValueError if negative."""
    def set_tcp_info(self, enabled: bool) -> None:
        """Ask the next dumps for each socket's internals (the idiag_ext bits of
        INET_DIAG_INFO and INET_DIAG_CONG, in the same dump), parsed into ``tcp_info`` row
        for row; False: stop asking (``tcp_info`` is None meanwhile; the array is kept, so
        toggling per dump allocates nothing). RuntimeError during a dump."""
    @property
    def tcp_info(self) -> np.ndarray | None:
        """``TCP_INFO_DTYPE`` rows aligned with ``rows`` (row i's internals; grown, reused
        and deduplicated with them), or None without ``set_tcp_info(True)``. As ``rows``,
        the first ``dump()`` are valid. A row without internals (TIME_WAIT, request
        sockets) is all zero (``tcp_info_len`` 0)."""
    @property
    def tcp_info_seen(self) -> tuple[int, int]:
        """``(the longest INET_DIAG_INFO payload seen in bytes, how many were longer than
        tcpsnap knows)`` over every dump with internals (messages of dumps retried after
        the table changed included)."""

