"""Sorting integer codes in linear time, for the analyses and the changes rebuild."""

from __future__ import annotations

import numpy as np

__all__ = ["stable_order"]


def stable_order(codes: np.ndarray, k: int) -> np.ndarray:
    """A stable argsort of non-negative integer codes below k: radix sorts on 16-bit
    digits (numpy sorts uint16 stably in linear time), least significant first."""
    if k <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    order = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while (k - 1) >> shift:
        digit = ((codes[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order
