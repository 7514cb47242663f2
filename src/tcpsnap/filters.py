"""One filter language for every command and the API: ss's expressions, compiled once.

``parse_filter("dport = :443 or sport = :443")`` (or ``Filter.from_options(port="443")``)
gives a :class:`Filter`, which compiles to

- ``mask(rows, process=...)``: a numpy boolean mask over ``ROW_DTYPE`` rows (vectorised:
  no Python per row), for ``show``, ``record`` and ``Snapshotter(filter=...)``;
- ``expression()``: a ``pyarrow.compute.Expression`` over a recording's stored columns,
  for ``read(where=...)`` and the scans of ``info``/``plot``/``export``;
- ``kernel()``: what the kernel can skip itself (``idiag_states`` and an inet_diag bytecode
  program, ``tcpsnap._kbytecode``), a superset of the filter that the mask then narrows.

The grammar is ss(8)'s EXPRESSION plus tcpsnap's own predicates (``state``, ``pid``,
``process``, ``uid``, ``family``, ``port``); ``or`` binds loosest, then ``and`` (also
implicit between two predicates), then ``not``:

=============================== ===============================================
``sport OP PORT``, ``dport``,   local / remote / either port; OP one of ``=``
``port``                        ``==`` ``eq`` ``!=`` ``ne`` ``neq`` ``<`` ``lt``
                                ``<=`` ``le`` ``leq`` ``>`` ``gt`` ``>=`` ``ge``
                                ``geq`` (none: ``=``); PORT ``:443``, ``443``,
                                ``:https``, ``*``
``src HOST``, ``dst HOST``      local / remote address: ``10.0.0.1``,
                                ``10.0.0.0/8``, ``10.1/16``, ``[::1]``,
                                ``[2001:db8::]/32``, ``::1``, with ``:PORT``
                                after, ``*`` for any address (``!=``: not)
``state S[,S...]``,             TCP states as ss spells them (below);
``exclude S``                   ``exclude``: not in them
``family 4|6|inet|inet6``       the address family
``uid OP N``, ``pid OP N``      the socket owner's uid, the owning pid
``process NAME[,NAME]``         the owning process's name (exact)
=============================== ===============================================

States: ``established``, ``syn-sent``, ``syn-recv`` (``syn-rcvd``), ``fin-wait-1``,
``fin-wait-2``, ``time-wait``, ``closed`` (``unconnected``), ``close-wait``,
``last-ack``, ``listening`` (``listen``), ``closing``, tcpsnap's names (``CLOSE_WAIT``...)
and ss's groups: ``all``; ``connected`` (all but listening and closed);
``synchronized`` (connected but syn-sent); ``bucket`` (time-wait and syn-recv, the
kernel's mini-sockets); ``big`` (all but bucket).

IPv4-mapped IPv6 addresses: an IPv4 address or network matches IPv4 rows and the
IPv4-mapped IPv6 rows (``::ffff:10.0.0.1``, a dual-stack socket) of that address, as the
kernel's own filter does; an IPv4-mapped address written as IPv6 (``::ffff:10.0.0.0/104``)
is taken as its IPv4 form. An IPv6 network never matches an IPv4 row.

Errors: ``ValueError`` with one line naming the bad part (an empty value, a port past
65535, ``10.0.0.0/33``, an unknown state or keyword, an unbalanced parenthesis).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

import numpy as np

from ._errors import FilterError
from ._filtereval import arrow_expression, row_mask_of
from ._filters import parse_ports, parse_states
from ._filtertree import (
    FALSE,
    TRUE,
    And,
    Const,
    Family,
    Host,
    Not,
    Number,
    Or,
    Port,
    Process,
    State,
    and_,
    not_,
    or_,
    relax,
)
from ._kbytecode import compile_kernel
from ._schema import STATE_NAMES, TcpState

_U32 = 0xFFFFFFFF

__all__ = ["Filter", "parse_filter", "FilterError", "kernel_safe"]


# ------------------------------------------------------------------ parsing values

_OPS = {"=": "eq", "==": "eq", "eq": "eq", "!=": "ne", "ne": "ne", "neq": "ne",
        "<": "lt", "lt": "lt", "<=": "le", "le": "le", "leq": "le",
        ">": "gt", "gt": "gt", ">=": "ge", "ge": "ge", "geq": "ge"}


def _range(op: str, v: int, top: int) -> tuple[int, int, bool]:
    """``field OP v`` as ``lo <= field <= hi`` (and whether it is negated)."""
    if op == "eq":
        return v, v, False
    if op == "ne":
        return v, v, True
    if op == "lt":
        return 0, v - 1, False
    if op == "le":
        return 0, v, False
    if op == "gt":
        return v + 1, top, False
    return v, top, False


def port_number(text: str) -> int | None:
    """``:443``, ``443``, ``:https`` -> 443; ``*`` / ``:*`` -> None (any)."""
    t = text[1:] if text.startswith(":") else text
    if t == "*":
        return None
    if not t:
        raise FilterError(f"empty port in {text!r}")
    if t.isdigit():
        v = int(t)
        if v > 65535:
            raise FilterError(f"bad port {text!r}: ports are 0..65535")
        return v
    try:
        return socket.getservbyname(t, "tcp")
    except OSError:
        raise FilterError(f"bad port {text!r}: not a number or a known TCP service") from None


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    addr, slash, plen = text.partition("/")
    if ":" not in addr and addr.count(".") < 3 and addr.replace(".", "").isdigit():
        addr = ".".join((addr.split(".") + ["0", "0", "0"])[:4])     # ss's 193.233.7/24
    try:
        net = ipaddress.ip_network(f"{addr}/{plen}" if slash else addr, strict=False)
    except ValueError as e:
        raise FilterError(f"bad address {text!r}: {e}") from None
    if net.version == 6 and net.prefixlen >= 96:
        mapped = ipaddress.IPv6Address(int(net.network_address)).ipv4_mapped
        if mapped is not None:           # ::ffff:a.b.c.d/N: the IPv4 form, as the kernel sees it
            return ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}")
    return net


def parse_host(text: str):
    """``HOST`` of ss: ``ADDR[/LEN][:PORT]``, ``[V6][/LEN][:PORT]``, ``*:PORT``, ``:PORT``
    -> (network or None, port or None)."""
    t = text.strip()
    if not t:
        raise FilterError("empty address")
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise FilterError(f"bad address {text!r}: no closing ']'")
        inner, rest = t[1:end], t[end + 1:]
        plen = ""
        if rest.startswith("/"):
            plen, _, rest = rest[1:].partition(":")
            rest = ":" + rest if _ else ""
        if rest and not rest.startswith(":"):
            raise FilterError(f"bad address {text!r}")
        port = port_number(rest) if rest else None
        net = None if inner == "*" else _network(f"{inner}/{plen}" if plen else inner)
        return net, port
    if t.count(":") >= 2:                # a bare IPv6 address (no port: use [..]:PORT)
        return _network(t), None
    addr, colon, p = t.partition(":")
    port = port_number(p) if colon else None
    if addr in ("", "*"):
        return None, port
    return _network(addr), port


# ------------------------------------------------------------------ the expression parser

_TOKEN = re.compile(r"\s*(?:(\(|\)|&&|\|\||!=|==|<=|>=|[&|!=<>])|([^\s()!=<>&|]+))")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FilterError(f"cannot read filter at {text[pos:]!r}")
        out.append(m.group(1) or m.group(2))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


_KEYWORDS = ("sport", "dport", "port", "src", "dst", "state", "exclude", "family", "uid",
             "pid", "process")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, what: str = "a value") -> str:
        t = self.peek()
        if t is None:
            raise FilterError(f"filter {self.text!r} ends where {what} was expected")
        self.i += 1
        return t

    def parse(self) -> Any:
        if not self.toks:
            raise FilterError("empty filter")
        node = self.orexpr()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.peek()!r} in filter {self.text!r}")
        return node

    def orexpr(self) -> Any:
        items = [self.andexpr()]
        while self.peek() in ("or", "|", "||"):
            self.i += 1
            items.append(self.andexpr())
        return or_(items)

    def andexpr(self) -> Any:
        items = [self.notexpr()]
        while True:
            t = self.peek()
            if t in ("and", "&", "&&"):
                self.i += 1
            elif t is None or t in (")", "or", "|", "||"):
                break
            items.append(self.notexpr())           # no operator: an implicit 'and'
        return and_(items)

    def notexpr(self) -> Any:
        t = self.peek()
        if t in ("not", "!"):
            self.i += 1
            return not_(self.notexpr())
        if t == "(":
            self.i += 1
            node = self.orexpr()
            if self.take("')'") != ")":
                raise FilterError(f"missing ')' in filter {self.text!r}")
            return node
        return self.predicate()

    def op(self, allowed=tuple(_OPS)) -> str:
        t = self.peek()
        if t in _OPS:
            self.i += 1
            if t not in allowed:
                raise FilterError(f"operator {t!r} cannot follow this keyword in {self.text!r}")
            return _OPS[t]
        return "eq"

    def predicate(self) -> Any:
        kw = self.take("a predicate")
        if kw not in _KEYWORDS:
            raise FilterError(f"unknown filter keyword {kw!r} (one of: {', '.join(_KEYWORDS)})")
        if kw in ("sport", "dport", "port"):
            op = self.op()
            v = port_number(self.take("a port"))
            if v is None:
                return TRUE if op in ("eq", "ge", "le") else FALSE
            lo, hi, neg = _range(op, v, 65535)
            return not_(port_node(kw, lo, hi)) if neg else port_node(kw, lo, hi)
        if kw in ("src", "dst"):
            op = self.op(("=", "==", "eq", "!=", "ne", "neq"))
            net, port = parse_host(self.take("an address"))
            node = host_node(kw, net, port)
            return not_(node) if op == "ne" else node
        if kw in ("state", "exclude"):
            op = self.op(("=", "==", "eq", "!=", "ne", "neq"))
            node = State(states_of(self.take("a state")))
            return not_(node) if (op == "ne") != (kw == "exclude") else node
        if kw == "family":
            op = self.op(("=", "==", "eq", "!=", "ne", "neq"))
            node = Family(family_of(self.take("a family")))
            return not_(node) if op == "ne" else node
        if kw == "process":
            op = self.op(("=", "==", "eq", "!=", "ne", "neq"))
            node = Process(names_of(self.take("a process name")))
            return not_(node) if op == "ne" else node
        op = self.op()
        text = self.take(f"a {kw}")
        if not text.isdigit() or int(text) > _U32:
            raise FilterError(f"bad {kw} {text!r}: expected a number 0..{_U32}")
        lo, hi, neg = _range(op, int(text), _U32)
        node = Number(kw, lo, hi) if lo <= hi else FALSE
        return not_(node) if neg else node


def port_node(kw: str, lo: int, hi: int) -> Any:
    if lo > hi:
        return FALSE
    if kw == "port":
        return or_((Port("src", lo, hi), Port("dst", lo, hi)))
    return Port("src" if kw == "sport" else "dst", lo, hi)


def host_node(kw: str, net, port: int | None) -> Any:
    if net is None and port is None:
        return TRUE
    return Host("src" if kw == "src" else "dst", net, port)


def states_of(text: str) -> frozenset[int]:
    try:
        return parse_states(text)
    except ValueError as e:
        raise FilterError(str(e)) from None


def family_of(text: str) -> int:
    f = {"4": 4, "inet": 4, "ipv4": 4, "6": 6, "inet6": 6, "ipv6": 6}.get(text.strip().lower())
    if f is None:
        raise FilterError(f"bad family {text!r}: expected 4, 6, inet or inet6")
    return f


def names_of(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise FilterError(f"empty process name {text!r}")
    return names


# ------------------------------------------------------------------ spelling it back

def _port_text(p: Port) -> str:
    kw = "sport" if p.side == "src" else "dport"
    if p.lo == p.hi:
        return f"{kw} = :{p.lo}"
    if p.lo == 0:
        return f"{kw} <= :{p.hi}"
    if p.hi == 65535:
        return f"{kw} >= :{p.lo}"
    return f"({kw} >= :{p.lo} and {kw} <= :{p.hi})"


def _text(n: Any, top: bool = True) -> str:
    if isinstance(n, Const):
        return "all" if n.value else "none"
    if isinstance(n, Not):
        return f"not {_text(n.item, False)}"
    if isinstance(n, (And, Or)):
        word = " and " if isinstance(n, And) else " or "
        s = word.join(_text(i, False) for i in n.items)
        return s if top else f"({s})"
    if isinstance(n, Port):
        return _port_text(n)
    if isinstance(n, Host):
        a = "*" if n.net is None else (str(n.net.network_address) if n.net.prefixlen == n.net.max_prefixlen
                                       else str(n.net))
        a = f"[{a}]" if n.net is not None and n.net.version == 6 else a
        return f"{n.side} {a}" + ("" if n.port is None else f":{n.port}")
    if isinstance(n, State):
        return "state " + ",".join(STATE_NAMES[s - 1].lower() for s in sorted(n.states))
    if isinstance(n, Family):
        return f"family {n.family}"
    if isinstance(n, Number):
        if n.lo == n.hi:
            return f"{n.field} = {n.lo}"
        if n.lo == 0:
            return f"{n.field} <= {n.hi}"
        if n.hi == _U32:
            return f"{n.field} >= {n.lo}"
        return f"({n.field} >= {n.lo} and {n.field} <= {n.hi})"
    if isinstance(n, Process):
        return "process " + ",".join(sorted(n.names))
    raise TypeError(n)


# ------------------------------------------------------------------ the Filter

class Filter:
    """A compiled filter: build with :func:`parse_filter` or :meth:`from_options`.

    ``str(f)`` is its canonical spelling (what a recording's metadata holds), parsed back
    to the same filter. Filters combine with ``&`` (both), ``|`` and ``~``."""

    __slots__ = ("node", "_kernel")

    def __init__(self, node: Any = TRUE) -> None:
        self.node = node
        self._kernel: tuple[int, bytes | None] | None = None

    # -- building
    @classmethod
    def from_options(cls, expression: str | None = None, *, state: Any = None, sport: Any = None,
                     dport: Any = None, port: Any = None, src: Any = None, dst: Any = None,
                     pid: Any = None, process: Any = None, uid: Any = None,
                     family: Any = None) -> Filter:
        """The plain options of every command, each a comma-separated list (any of its
        values matches; ports also ``N-M``), all of them and ``expression`` together.
        None: not given. An empty or malformed value raises :class:`FilterError`."""
        parts = [] if expression is None else [parse_filter(expression).node]
        for kw, value in (("sport", sport), ("dport", dport), ("port", port)):
            if value is not None:
                ports = _ports(value, kw)
                parts.append(or_(port_node(kw, lo, hi) for lo, hi in _runs(sorted(ports))))
        for kw, value in (("src", src), ("dst", dst)):
            if value is not None:
                parts.append(or_(host_node(kw, *parse_host(v)) for v in _items(value, kw)))
        if state is not None:
            parts.append(State(_states(state)))
        for kw, value in (("pid", pid), ("uid", uid)):
            if value is not None:
                nums = []
                for v in _items(value, kw):
                    if not str(v).isdigit() or int(v) > _U32:
                        raise FilterError(f"bad --{kw} {v!r}: expected a number 0..{_U32}")
                    nums.append(int(v))
                parts.append(or_(Number(kw, v, v) for v in sorted(set(nums))))
        if process is not None:
            parts.append(Process(frozenset(_items(process, "process"))))
        if family is not None:
            parts.append(Family(family_of(str(family))))
        return cls(and_(parts))

    def __and__(self, other: Filter) -> Filter:
        return Filter(and_((self.node, other.node)))

    def __or__(self, other: Filter) -> Filter:
        return Filter(or_((self.node, other.node)))

    def __invert__(self) -> Filter:
        return Filter(not_(self.node))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and other.node == self.node

    def __hash__(self) -> int:
        return hash(self.node)

    def __str__(self) -> str:
        return _text(self.node)

    def __repr__(self) -> str:
        return f"tcpsnap.parse_filter({str(self)!r})"

    def __bool__(self) -> bool:
        """False for the filter that keeps every row."""
        return self.node != TRUE

    @property
    def needs_process(self) -> bool:
        """Whether it tests process names (``mask`` then needs them)."""
        return _has(self.node, Process)

    @property
    def needs_pids(self) -> bool:
        """Whether it tests pids or process names (the snapshot needs ``pids=True``)."""
        return _has(self.node, Process) or _has(self.node, Number, "pid")

    @property
    def needs_rebuild_filter(self) -> bool:
        """Whether it tests what a connection can change while it lives (state, pid, uid,
        process): a changes recording's rebuilt rows are then filtered again."""
        return any(_has(self.node, k) for k in (State, Number, Process))

    # -- compiled forms
    def mask(self, rows: np.ndarray, process: tuple[np.ndarray, list[str]] | None = None) -> np.ndarray:
        """A boolean array, one per row of ``rows`` (``ROW_DTYPE``): True where the row
        passes. ``process`` is ``(codes, names)`` as ``Snapshotter.process_names`` gives
        them, needed when the filter names processes (ValueError without it)."""
        return row_mask_of(self.node, rows, process)

    def dead_mask(self, rows: np.ndarray) -> np.ndarray:
        """``mask`` for rows of sockets already gone (the destroy feed's reports of sockets
        no snapshot saw), whose pid and process cannot be known and whose states in life
        are not known (the report has the last): those tests are taken as passing."""
        node = relax(self.node, lambda p: isinstance(p, (Process, State)) or
                     (isinstance(p, Number) and p.field == "pid"))
        return row_mask_of(node, rows, None)

    def expression(self):
        """The filter as a ``pyarrow.compute.Expression`` over a recording's stored
        columns (``tcpsnap._arrow``: state names, addresses as text, ``process``): for
        ``pyarrow.dataset`` scans and ``tcpsnap.read(where=...)``. It tests connection
        rows; ``kind`` is left to the caller."""
        return arrow_expression(self.node)

    def kernel(self) -> tuple[int, bytes | None]:
        """What the kernel can filter: ``(idiag_states, bytecode)`` -- a mask of Linux
        state bits and an inet_diag program (None: none) that together keep a superset
        of the filter's rows (pid, process and uid cannot be tested there; the mask
        finishes). ``NetlinkDumper.set_filter`` takes them."""
        if self._kernel is None:
            self._kernel = compile_kernel(self.node)
        return self._kernel


def _has(n: Any, kind: type, field: str | None = None) -> bool:
    if isinstance(n, (And, Or)):
        return any(_has(i, kind, field) for i in n.items)
    if isinstance(n, Not):
        return _has(n.item, kind, field)
    return isinstance(n, kind) and (field is None or getattr(n, "field", None) == field)


def _items(value: Any, kw: str) -> list[str]:
    vals = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    vals = [v.strip() for v in vals]
    if not vals or any(not v for v in vals):
        raise FilterError(f"empty value in --{kw} {value!r}")
    return vals


def _ports(value: Any, kw: str) -> frozenset[int]:
    if isinstance(value, frozenset):
        if not value:
            raise FilterError(f"empty --{kw}")
        return value
    _items(value, kw)
    try:
        return parse_ports(value)
    except ValueError as e:
        raise FilterError(f"--{kw}: {e}") from None


def _states(value: Any) -> frozenset[int]:
    if isinstance(value, frozenset):
        if not value:
            raise FilterError("empty --state")
        return value
    if isinstance(value, str):
        _items(value, "state")
    try:
        out = parse_states(value)
    except ValueError as e:
        raise FilterError(str(e)) from None
    if not out:
        raise FilterError("empty --state")
    return out


def _runs(values: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return [(a, b) for a, b in out]


def kernel_safe(f: Filter) -> Filter:
    """``f`` without what a live connection can change (state, pid, uid, process): the
    part that selects connections by their addresses, ports and family, taken as "maybe"
    elsewhere (a superset of ``f``)."""
    return Filter(relax(f.node, lambda p: isinstance(p, (State, Number, Process))))


def parse_filter(text: str | Filter | None) -> Filter:
    """An ss-style expression (module docstring) -> a :class:`Filter`. A ``Filter`` is
    returned as it is; None or ``"all"`` keep every row. FilterError (a ValueError) for
    an empty or malformed one."""
    if isinstance(text, Filter):
        return text
    if text is None or text.strip() == "all":
        return Filter(TRUE)
    if text.strip() == "none":
        return Filter(FALSE)
    return Filter(_Parser(text).parse())


def all_states() -> frozenset[int]:
    return frozenset(int(s) for s in TcpState)
