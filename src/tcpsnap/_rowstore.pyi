import numpy as np

def put_columns(dst: list[np.ndarray], dirty: list[int], index: list[int], src: list[np.ndarray],
                r: int) -> None:
    """Each ``src[k]`` into ``dst[index[k]][r:]`` (zeros only where the column is dirty);
    ``dirty`` updated; the copies without the GIL."""
class Columns:
    """A store's columns (arrays or None) as C pointers, their buffers held."""

    n: int

    def __init__(self, arrays: list[np.ndarray | None]) -> None: ...

def repeat_row(values: Columns, dirty: list[int], valid: Columns, vdirty: list[int],
               given: list[int | None], row: int, r: int) -> None:
    """Row ``row`` of every column (or ``given[i]``, 8 bytes) to row ``r``."""
def spread(values: np.ndarray, ends: np.ndarray, snapshots: int, start: int, stop: int,
           out: np.ndarray) -> None:
    """``out`` = rows ``start:stop`` of a per-snapshot column (8-byte values)."""
