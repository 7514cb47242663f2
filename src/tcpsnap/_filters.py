"""The state and port spellings every filter shares (``tcpsnap.filters`` builds on them),
and the plain state/port/family mask of a recording's ``--state/--port/--family``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._schema import TcpState

__all__ = ["parse_states", "parse_ports", "row_mask", "STATE_GROUPS"]


#: ss's state words (ss(8), iproute2 ss.c) and tcpsnap's names -> MIB state numbers.
_ALIASES = {"SYN_RECV": "SYN_RCVD", "SYN_RCV": "SYN_RCVD", "FIN_WAIT_1": "FIN_WAIT1",
            "FIN_WAIT_2": "FIN_WAIT2", "ESTAB": "ESTABLISHED", "LISTENING": "LISTEN",
            "CLOSE": "CLOSED", "UNCONNECTED": "CLOSED"}
_ALL = frozenset(int(s) for s in TcpState)
_BUCKET = frozenset((int(TcpState.SYN_RCVD), int(TcpState.TIME_WAIT)))
_CONNECTED = _ALL - {int(TcpState.LISTEN), int(TcpState.CLOSED)}
#: ss's groups, as ss(8) defines them: connected is every state but listening and closed,
#: synchronized is connected but syn-sent, bucket the kernel's mini-sockets (time-wait,
#: syn-recv), big every state but those.
STATE_GROUPS = {"ALL": _ALL, "CONNECTED": _CONNECTED,
                "SYNCHRONIZED": _CONNECTED - {int(TcpState.SYN_SENT)},
                "BUCKET": _BUCKET, "BIG": _ALL - _BUCKET}


def parse_states(spec: str | Iterable[str | int]) -> frozenset[int]:
    """``"listen,time-wait"`` or ``["ESTABLISHED", 2]`` -> the MIB state numbers.

    Names are case-insensitive and accept ``-`` for ``_``: tcpsnap's (``CLOSE_WAIT``),
    ss's (``listening``, ``syn-recv``, ``fin-wait-1``, ``unconnected``...) and ss's
    groups (``all``, ``connected``, ``synchronized``, ``bucket``, ``big``).
    ValueError for an unknown name, an empty item or an empty spec."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError("empty state list")
    out: set[int] = set()
    for item in items:
        if isinstance(item, int):
            out.add(int(TcpState(item)))
            continue
        key = item.strip().upper().replace("-", "_")
        if not key:
            raise ValueError(f"empty state in {spec!r}")
        if key in STATE_GROUPS:
            out |= STATE_GROUPS[key]
            continue
        key = _ALIASES.get(key, key)
        try:
            out.add(int(TcpState[key]))
        except KeyError:
            raise ValueError(f"unknown TCP state {item.strip()!r} (one of: established, syn-sent, "
                             "syn-recv, fin-wait-1, fin-wait-2, time-wait, closed, close-wait, "
                             "last-ack, listening, closing, delete-tcb; groups all, connected, "
                             "synchronized, bucket, big)") from None
    return frozenset(out)


def parse_ports(spec: str | Iterable[int | str]) -> frozenset[int]:
    """``"22,8000-8010"`` -> the port numbers (ranges inclusive). ValueError for an empty
    item or spec, a number outside 0..65535 or a range from high to low."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError("empty port list")
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            raise ValueError(f"empty port in {spec!r}: expected N or N-M")
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
