import numpy as np

class WindowsDumper:
    """The GetTcpTable2 / GetTcp6Table2 buffers (one tcpfetch_t) and one row array, reused."""

    dumps: int
    retries: int
    skipped: int
    grows: int
    def __init__(self, capacity: int = 1024) -> None: ...
    @property
    def rows(self) -> np.ndarray: ...
    @property
    def capacity(self) -> int: ...
    @property
    def calls(self) -> int:
        """IP Helper calls made (one per table when its buffer fits)."""
    @property
    def buffer_grows(self) -> int:
        """(Re)allocations of the fetch buffers."""
    def dump(self) -> int:
        """Fill ``rows`` with the whole TCP table (IPv4, then IPv6); return the row count.
        Raises DumpInterrupted if the table kept changing through every retry, OSError naming
        the call and the Windows error code otherwise."""
    def close(self) -> None: ...

def sdk_layouts() -> dict[str, dict[str, int]]:
    """The MIB_TCPTABLE2 / MIB_TCP6TABLE2 layouts (offsetof/sizeof from the SDK) this build parses with."""
