from collections.abc import Iterable
from typing import Any

import numpy as np

def split(rows: np.ndarray, fields: Iterable[tuple[str, int, Any]]) -> dict[str, np.ndarray]:
    """``{name: array}``: each ``(name, offset, dtype)`` field of every row, one contiguous
    array per field, in one pass over the rows."""
def dictionary_encode(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, codes)``: int64 index of each distinct key's first occurrence (in that
    order) and int32 code of each key; ``keys[first][codes]`` equals ``keys``."""
def put_rows(dst: np.ndarray, at: int, src: np.ndarray) -> None:
    """Copy ``src``'s rows into ``dst[at:at + len(src)]`` as one memcpy (same dtype, 1-D,
    C-contiguous); ValueError otherwise or when they do not fit."""
