from collections.abc import Callable

import numpy as np

class Differ:
    """The previous snapshot and the diff's scratch, reused from call to call."""

    primed: bool
    in_place: bool
    closed_info: np.ndarray | None
    def __init__(self, info_mask: np.ndarray | None = None) -> None: ...
    def reset(self) -> None: ...
    def rollback(self) -> None:
        """Undo the last diff; RuntimeError when there is none to undo."""
    @property
    def rows(self) -> np.ndarray: ...
    @property
    def proc(self) -> np.ndarray: ...
    @property
    def info(self) -> np.ndarray | None: ...
    def diff(
        self, cur: np.ndarray, cproc: np.ndarray, keyframe: bool, info: np.ndarray | None = None,
        carry: tuple | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """TypeError when cur or cproc is not a numpy array; ValueError for a wrong dtype,
        other than 1-D, or lengths that differ."""
    def carried(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """After diff(carry=): (need, pids, stale_inodes, stale_cookies)."""
    def settle(
        self, end_rows: Callable[[np.ndarray, np.ndarray, np.ndarray], object],
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """After diff(carry=) with nothing to look up: end_rows(cur, need, pids) called and the
        events (ev_idx, ev_code) returned; else None (carried, fixup then)."""
    def fixup(self) -> tuple[np.ndarray, np.ndarray]:
        """After diff(carry=) and the lookups: the events (ev_idx, ev_code)."""
    def lookup(self, cookies: np.ndarray) -> np.ndarray:
        """TypeError for cookies that are not integers; ValueError for a negative one, one
        past 2**64-1, or more than one dimension; RuntimeError after rollback()."""
