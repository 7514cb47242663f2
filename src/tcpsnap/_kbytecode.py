"""A filter tree as the kernel can run it: ``idiag_states`` and an inet_diag bytecode
program (``INET_DIAG_REQ_BYTECODE``), as ``ss`` sends them.

Facts from linux ``include/uapi/linux/inet_diag.h`` and ``net/ipv4/inet_diag.c``
(``inet_diag_bc_run``, ``inet_diag_bc_audit``): a program is a list of 4-byte instructions
``{code u8, yes u8, no u16}`` (native byte order), some followed by their operand; the
kernel runs it from the start for each socket, moving ``yes`` bytes on when the test holds
and ``no`` bytes when not, and keeps the socket iff it lands exactly on the end. The audit
walks the ``yes`` chain: every ``yes`` is the instruction's own size, and every ``no``
lands on an instruction of that chain, the end, or 4 bytes past it (the reject exit).

Each compiled block keeps one shape: true falls off its end, false jumps 4 bytes past it.
``a and b`` is ``a b`` with a's false exits moved past ``b``; ``a or b`` is
``a JMP(past b) b``; ``not a`` is ``a JMP(4 past the end)`` (ss.c ``ssfilter_bytecompile``
builds the same shapes).

What runs where: ports (``sport``/``dport``/``port``), addresses and networks with their
ports (``src``/``dst``) and ``family`` run in the kernel; ``state`` becomes the
``idiag_states`` mask (every state the filter can keep); ``pid``, ``process`` and ``uid``
cannot run there: the kernel is given the filter with them taken as "maybe" (a superset),
and the numpy mask finishes.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from ._filtertree import FALSE, TRUE, And, Const, Family, Host, Not, Number, Or, Port, Process, State, relax

__all__ = ["compile_kernel", "compile_bytecode", "linux_states", "MAX_BYTECODE", "DUMP_STATES"]

# include/uapi/linux/inet_diag.h, enum of INET_DIAG_BC_*
NOP, JMP, S_GE, S_LE, D_GE, D_LE, AUTO, S_COND, D_COND, DEV_COND, MARK_COND, S_EQ, D_EQ = range(13)
#: The largest program a request carries (its attribute's length is 16 bits).
MAX_BYTECODE = 65528
#: Every Linux state bit the dumps ask for (TCP_ESTABLISHED 1 .. TCP_NEW_SYN_RECV 12).
DUMP_STATES = 0x1FFE

# MIB state -> Linux state bits (include/net/tcp_states.h); SYN_RCVD is both a full socket
# in TCP_SYN_RECV and a listener's request socket (TCP_NEW_SYN_RECV), as ss shows them.
_LINUX_BITS = {5: 1 << 1, 3: 1 << 2, 4: (1 << 3) | (1 << 12), 6: 1 << 4, 7: 1 << 5, 11: 1 << 6,
               1: 1 << 7, 8: 1 << 8, 10: 1 << 9, 2: 1 << 10, 9: 1 << 11, 12: 0}


def _op(code: int, yes: int, no: int) -> bytes:
    return struct.pack("=BBH", code, yes, no)


def _atom(code: int, operand: bytes) -> bytes:
    size = 4 + len(operand)
    return _op(code, size, size + 4) + operand


def _port_cmp(code: int, port: int) -> bytes:
    return _atom(code, _op(0, 0, port))          # the port rides in the next op's `no`


def _cond(code: int, family: int, prefix: int, port: int | None, addr: bytes) -> bytes:
    return _atom(code, struct.pack("=BBxxi", family, prefix, -1 if port is None else port) + addr)


def _ops(prog: bytes):
    """(offset, code, yes, no) of each instruction on the yes chain."""
    off = 0
    while off < len(prog):
        code, yes, no = struct.unpack_from("=BBH", prog, off)
        yield off, code, yes, no
        off += yes


def _and2(a: bytes, b: bytes) -> bytes:
    out = bytearray(a)
    for off, code, yes, no in _ops(a):
        if code != NOP and off + no == len(a) + 4:    # a's false exit: now past b
            struct.pack_into("=BBH", out, off, code, yes, no + len(b))
    return bytes(out) + b


def _or2(a: bytes, b: bytes) -> bytes:
    # a's false exits land 4 past a: on b, after the JMP that takes a's true past b
    return a + _op(JMP, 4, len(b) + 4) + b


def _compile(n: Any) -> bytes:
    if isinstance(n, Not):
        return _compile(n.item) + _op(JMP, 4, 8)
    if isinstance(n, And):
        out = _compile(n.items[0])
        for i in n.items[1:]:
            out = _and2(out, _compile(i))
        return out
    if isinstance(n, Or):
        out = _compile(n.items[-1])
        for i in reversed(n.items[:-1]):
            out = _or2(_compile(i), out)
        return out
    if isinstance(n, Port):
        ge, le, eq = (S_GE, S_LE, S_EQ) if n.side == "src" else (D_GE, D_LE, D_EQ)
        if n.lo == n.hi:
            return _port_cmp(eq, n.lo)
        if n.lo == 0:
            return _port_cmp(le, n.hi)
        if n.hi == 65535:
            return _port_cmp(ge, n.lo)
        return _and2(_port_cmp(ge, n.lo), _port_cmp(le, n.hi))
    if isinstance(n, Host):
        code = S_COND if n.side == "src" else D_COND
        if n.net is None:
            return _cond(code, socket.AF_UNSPEC, 0, n.port, b"")
        fam = socket.AF_INET if n.net.version == 4 else socket.AF_INET6
        return _cond(code, fam, n.net.prefixlen, n.port, n.net.network_address.packed)
    if isinstance(n, Family):
        # an AF_INET6 condition of prefix 0: every IPv6 socket, no IPv4 one (an AF_INET
        # one would also take IPv4-mapped IPv6 sockets)
        six = _cond(S_COND, socket.AF_INET6, 0, None, bytes(16))
        return six if n.family == 6 else six + _op(JMP, 4, 8)
    raise TypeError(f"not a kernel filter node: {n!r}")


def _maybe(n: Any, state: int) -> bool | None:
    """Whether ``n`` holds for a socket in MIB ``state``: True, False, or None (depends on
    more than the state)."""
    if isinstance(n, Const):
        return n.value
    if isinstance(n, State):
        return state in n.states
    if isinstance(n, Not):
        v = _maybe(n.item, state)
        return None if v is None else not v
    if isinstance(n, (And, Or)):
        vals = [_maybe(i, state) for i in n.items]
        if isinstance(n, And):
            return False if False in vals else True if all(v is True for v in vals) else None
        return True if True in vals else False if all(v is False for v in vals) else None
    return None


def linux_states(mib_states) -> int:
    """MIB state numbers -> the ``idiag_states`` bits that dump them."""
    bits = 0
    for s in mib_states:
        bits |= _LINUX_BITS[int(s)]
    return bits


def compile_bytecode(node: Any) -> bytes | None:
    """The program keeping a superset of ``node``'s rows, None when it would keep every
    row or be too long to send (then the mask alone filters)."""
    relaxed = relax(node, lambda p: isinstance(p, (State, Number, Process)))
    if relaxed == TRUE:
        return None
    if relaxed == FALSE:
        return _op(JMP, 4, 8)                      # jumps past the end: rejects everything
    try:
        prog = _compile(relaxed)
    except struct.error:                           # a jump past 65535 bytes: too long anyway
        return None
    return prog if len(prog) <= MAX_BYTECODE else None


def compile_kernel(node: Any) -> tuple[int, bytes | None]:
    """``(idiag_states, bytecode)`` for ``node`` (``Filter.kernel``)."""
    keep = [s for s in _LINUX_BITS if _maybe(node, s) is not False]
    states = linux_states(keep) & DUMP_STATES
    if not states:                                 # no state can match: ask for nothing
        return DUMP_STATES, _op(JMP, 4, 8)
    return states, compile_bytecode(node)
