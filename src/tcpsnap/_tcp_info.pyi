import numpy as np

def tcp_info_layout() -> dict[str, tuple[int, int, int, int] | int]:
    """``{field: (offset here, size here, offset in struct tcp_info, size there)}`` as
    compiled (kernel offset -1 for our own fields), plus ``"itemsize"``."""

def parse_info(info: bytes | bytearray | memoryview | None = None,
               cong: bytes | bytearray | memoryview | None = None) -> np.ndarray:
    """One ``TCP_INFO_DTYPE`` row (shape (1,)) from an INET_DIAG_INFO payload (a raw
    struct tcp_info of any length; None: absent) and an INET_DIAG_CONG one. Fields the
    payload does not cover whole are 0; ``tcp_info_len`` is its length (capped at 65535)."""

def parse_attributes(attrs: bytes | bytearray | memoryview) -> tuple[np.ndarray, int, int, int]:
    """The rtattrs after an inet_diag_msg -> ``(row, cgroup_id, longest INET_DIAG_INFO,
    how many longer than known)``, as the dump parses them."""

ESTATS_SIZES: tuple[int, int]

def parse_estats(data: bytes | bytearray | memoryview | None = None,
                 path: bytes | bytearray | memoryview | None = None) -> np.ndarray:
    """One ``TCP_INFO_DTYPE`` row (shape (1,)) from Windows' TCP_ESTATS_DATA_ROD_v0 (96
    bytes) and TCP_ESTATS_PATH_ROD_v0 (160 bytes), either None or short: not read;
    ``estats`` says which were read. Counted since collection was enabled."""

ESTATS_CAP: int

def estats_keys(rows: np.ndarray) -> np.ndarray:
    """The uint64 key of each ROW_DTYPE row in EstatsPlan (its 4-tuple and scope ids)."""

class EstatsPlan:
    """Which ESTABLISHED rows a Windows snapshot enables EStats for (``fresh``: not in the
    previous snapshot) and reads (``pick``: at most ``cap``, round-robin by key)."""

    def __init__(self, cap: int = 1000) -> None: ...
    @property
    def cap(self) -> int: ...
    @property
    def cursor(self) -> int | None: ...
    def step(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
