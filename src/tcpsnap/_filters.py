"""Row filters shared by ``show``, ``record`` and the API: states, ports, family."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._schema import TcpState

__all__ = ["parse_states", "parse_ports", "row_mask"]


def parse_states(spec: str | Iterable[str | int]) -> frozenset[int]:
    """``"listen,time-wait"`` or ``["ESTABLISHED", 2]`` -> the MIB state numbers.

    Names are case-insensitive and accept ``-`` for ``_`` and the spellings ``ss``
    prints (``SYN-RECV``, ``FIN-WAIT-1``...)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = set()
    for item in items:
        if isinstance(item, int):
            out.add(int(TcpState(item)))
            continue
        key = item.strip().upper().replace("-", "_")
        if not key:
            continue
        key = {"SYN_RECV": "SYN_RCVD", "FIN_WAIT_1": "FIN_WAIT1", "FIN_WAIT_2": "FIN_WAIT2",
               "ESTAB": "ESTABLISHED", "CLOSE_WAIT": "CLOSE_WAIT"}.get(key, key)
        try:
            out.add(int(TcpState[key]))
        except KeyError:
            names = ", ".join(s.name for s in TcpState)
            raise ValueError(f"unknown TCP state {item.strip()!r} (one of: {names})") from None
    return frozenset(out)


def parse_ports(spec: str | Iterable[int | str]) -> frozenset[int]:
    """``"22,8000-8010"`` -> the port numbers (ranges inclusive)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            if "-" in text:
                lo, hi = (int(x) for x in text.split("-", 1))
            else:
                lo = hi = int(text)
        except ValueError:
            raise ValueError(f"bad port {text!r}: expected N or N-M") from None
        if not (0 <= lo <= hi <= 65535):
            raise ValueError(f"bad port {text!r}: ports are 0..65535, low to high")
        out.update(range(lo, hi + 1))
    return frozenset(out)


def row_mask(rows: np.ndarray, states: Iterable[int] | None = None,
             ports: Iterable[int] | None = None, family: int | None = None) -> np.ndarray | None:
    """A boolean mask of the rows that pass, or None when nothing filters."""
    mask = None
    if states:
        m = np.isin(rows["state"], np.fromiter(states, dtype=np.uint8))
        mask = m
    if ports:
        p = np.fromiter(ports, dtype=np.uint16)
        m = np.isin(rows["local_port"], p) | np.isin(rows["remote_port"], p)
        mask = m if mask is None else mask & m
    if family is not None:
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, got {family!r}")
        m = rows["family"] == family
        mask = m if mask is None else mask & m
    return mask
