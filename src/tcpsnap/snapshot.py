"""Snapshotter: the machine's TCP table into a reused numpy array."""

from __future__ import annotations

import numpy as np

from ._backend import BACKEND, backend_class

__all__ = ["Snapshotter", "snapshot"]


class Snapshotter:
    """Takes snapshots of the TCP table (IPv4 and IPv6) into one preallocated array.

    ``take()`` returns a view of ``ROW_DTYPE`` rows that stays valid until the next
    ``take()``, which overwrites it: copy what you keep (``rows.copy()``). The array
    grows (doubling) only when the table outgrows it, so a warm Snapshotter allocates
    nothing per call.

    >>> with Snapshotter() as snap:
    ...     rows = snap.take()
    """

    backend = BACKEND

    def __init__(self, capacity: int = 1024, *, pids: bool = False) -> None:
        if pids:
            raise NotImplementedError("owning-pid resolution is being added (issue 3)")
        self.pids = False
        self._impl = backend_class()(capacity)

    def take(self) -> np.ndarray:
        impl = self._impl
        n = impl.dump()
        return impl.rows[:n]

    def process_names(self, pids: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Dictionary-encode the process (``comm``) name of each pid: ``(codes, names)``
        with int32 ``codes``, -1 where the name is unknown (pid 0, or pids disabled)."""
        return np.full(len(pids), -1, dtype=np.int32), []

    @property
    def capacity(self) -> int:
        """Rows the current array holds before it must grow."""
        return self._impl.capacity

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``dumps`` done, ``retries`` after the table changed mid-dump,
        ``skipped`` kernel rows in no known state, ``grows`` of the array."""
        i = self._impl
        return {"dumps": i.dumps, "retries": i.retries, "skipped": i.skipped, "grows": i.grows}

    def close(self) -> None:
        self._impl.close()

    def __enter__(self) -> "Snapshotter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def snapshot() -> np.ndarray:
    """The whole TCP table now, as a new array you own."""
    with Snapshotter() as s:
        return s.take().copy()
