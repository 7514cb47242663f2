import sys
from typing import Literal

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

def parse_messages(
    data: Buffer, out: np.ndarray, seq: int
) -> tuple[int, Literal["more", "done", "full", "error", "malformed"], int, bool]:
    """Parse recorded netlink bytes into ``out``: (rows, status, errno, dump_intr).
    TypeError for data that is not a buffer or a seq that is not an integer; ValueError for
    data that is not C-contiguous, any wrong kind of out, a seq outside 0..2**32-1."""

def dedupe_rows(out: np.ndarray, n: int, info: np.ndarray | None = None) -> int:
    """Remove repeated sockets (same cookie) from ``out[:n]`` in place (and their
    internals from ``info``, moved with them); return the new count. ValueError for any
    wrong kind of out or info or an n outside 0..len(out); TypeError for a non-integer n."""

class CookieTable:
    """The dumper's per-dump dedupe and cgroup memory on rows from anywhere: ``dedupe``
    drops repeated cookies (first row kept) and gives a row without a cgroup the one its
    cookie had in the previous call or, carried, the one before; returns the rows kept."""

    def dedupe(self, out: np.ndarray, n: int, info: np.ndarray | None = None) -> int: ...
    def parse(
        self, data: Buffer, out: np.ndarray, seq: int
    ) -> tuple[int, Literal["more", "done", "full", "error", "malformed"], int]:
        """``parse_messages`` then ``dedupe`` as ``NetlinkDumper.dump()`` runs them (the
        parser takes the leading rows found where the previous call had them in order):
        (kept, status, rows taken in order). Arguments as parse_messages'."""
    @property
    def carried(self) -> int: ...

def audit_bytecode(bytecode: Buffer) -> None:
    """Check an inet_diag filter program as the kernel's inet_diag_bc_audit does: ValueError
    saying what is wrong and at which byte; TypeError for what is not a buffer."""
