"""The tree a filter compiles from (``tcpsnap.filters`` parses text into it): predicates
combined by ``And``/``Or``/``Not``, built through ``and_``/``or_``/``not_``, which fold
constants away so that a tree is never a constant below its root."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Const", "Not", "And", "Or", "Port", "Host", "State", "Family", "Number", "Process",
           "TRUE", "FALSE", "and_", "or_", "not_", "relax"]


@dataclass(frozen=True)
class Const:
    value: bool


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Port:
    """``lo <= port <= hi`` of one side (``src``: local, ``dst``: remote)."""
    side: str
    lo: int
    hi: int


@dataclass(frozen=True)
class Host:
    """An address (network) of one side, with a port or None (any)."""
    side: str
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None   # None: any address
    port: int | None


@dataclass(frozen=True)
class State:
    states: frozenset          # MIB numbers


@dataclass(frozen=True)
class Family:
    family: int


@dataclass(frozen=True)
class Number:
    """``uid`` or ``pid`` in ``lo..hi``."""
    field: str
    lo: int
    hi: int


@dataclass(frozen=True)
class Process:
    names: frozenset


TRUE, FALSE = Const(True), Const(False)


def and_(items: Iterable) -> Any:
    out: list = []
    for i in items:
        if i == FALSE:
            return FALSE
        if i == TRUE:
            continue
        out.extend(i.items if isinstance(i, And) else (i,))
    return TRUE if not out else out[0] if len(out) == 1 else And(tuple(out))


def or_(items: Iterable) -> Any:
    out: list = []
    for i in items:
        if i == TRUE:
            return TRUE
        if i == FALSE:
            continue
        out.extend(i.items if isinstance(i, Or) else (i,))
    return FALSE if not out else out[0] if len(out) == 1 else Or(tuple(out))


def not_(item: Any) -> Any:
    if isinstance(item, Const):
        return Const(not item.value)
    if isinstance(item, Not):
        return item.item
    return Not(item)


def relax(n: Any, unknown: Any, positive: bool = True) -> Any:
    """``n`` with each predicate ``unknown(pred)`` says cannot be tested taken as true
    where that keeps more rows (false under a ``not``): a superset of ``n``."""
    if isinstance(n, Not):
        return not_(relax(n.item, unknown, not positive))
    if isinstance(n, And):
        return and_(relax(i, unknown, positive) for i in n.items)
    if isinstance(n, Or):
        return or_(relax(i, unknown, positive) for i in n.items)
    if not isinstance(n, Const) and unknown(n):
        return TRUE if positive else FALSE
    return n
