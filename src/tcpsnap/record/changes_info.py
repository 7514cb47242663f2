"""Changes mode with internals (``tcp_info=True``): which bytes of a tcp_info row make a
change, and a snapshot's rows where none were sampled, for ``record.changes``."""

from __future__ import annotations

import numpy as np

__all__ = ["carry_info", "counter_mask"]


def counter_mask() -> np.ndarray:
    """One uint8 per byte of a ``TCP_INFO_DTYPE`` row: 1 where a difference is a change of
    the connection's internals, 0 for the timers that move on every sample
    (``TCP_INFO_TIMERS``: ``last_data_sent``...), which would make every live connection
    an event at every snapshot."""
    from .._schema import TCP_INFO_DTYPE, TCP_INFO_TIMERS

    mask = np.ones(TCP_INFO_DTYPE.itemsize, np.uint8)
    fields = TCP_INFO_DTYPE.fields
    assert fields is not None
    for name in TCP_INFO_TIMERS:
        dt, off = fields[name][:2]
        mask[off:off + dt.itemsize] = 0
    return mask


def carry_info(differ, rows: np.ndarray, info, dtype):
    """The snapshot's tcp_info rows; where none were taken (``--tcp-info-every``
    slower than the table), each row's as the last snapshot holds it (``differ``'s; zeros
    for a row it does not hold: no tcp_info)."""
    if info is not None:
        return np.ascontiguousarray(info)
    out = np.zeros(len(rows), dtype)
    prev = differ.info
    if prev is not None and len(rows) and differ.primed:
        try:
            at = differ.lookup(rows["cookie"])
        except RuntimeError:
            return out
        hit = at >= 0
        out[hit] = prev[at[hit]]
    return out
