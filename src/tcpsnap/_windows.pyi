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
    def set_tcp_info(self, enabled: bool) -> None:
        """Fill ``tcp_info`` from GetPerTcpConnectionEStats (Data, Path) at the next dumps, or
        stop (the array is kept). The first True resolves the calls and checks elevation."""
    @property
    def tcp_info(self) -> np.ndarray | None:
        """``TCP_INFO_DTYPE`` rows aligned with ``rows`` (ESTABLISHED rows read this dump:
        ``estats`` != 0; every other row zero), or None without ``set_tcp_info(True)``."""
    @property
    def tcp_info_seen(self) -> tuple[int, int]:
        """``(0, 0)``: no struct tcp_info on Windows."""
    @property
    def tcp_info_unavailable(self) -> str | None:
        """Why ``tcp_info`` stays zero (export missing, not elevated...), or None."""
    @property
    def estats_cap(self) -> int:
        """Connections whose EStats one dump reads at most (default 1,000), in round-robin."""
    @estats_cap.setter
    def estats_cap(self, value: int) -> None: ...
    @property
    def estats_stats(self) -> dict[str, int]:
        """``enabled`` connections, ``reads`` (connections read), ``failures`` (failed calls)."""

def sdk_layouts() -> dict[str, dict[str, int]]:
    """The MIB_TCPTABLE2 / MIB_TCP6TABLE2 layouts (offsetof/sizeof from the SDK) this build parses with."""

def estats_unavailable() -> str | None:
    """Why this process would get no GetPerTcpConnectionEStats internals, or None."""
