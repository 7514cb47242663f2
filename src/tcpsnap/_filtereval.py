"""A filter tree (``tcpsnap.filters``) evaluated two ways: a numpy mask over captured rows,
and a pyarrow expression over stored rows. Both follow the same rules (the module
docstring of ``tcpsnap.filters``), so ``show`` and ``read(where=...)`` agree."""

from __future__ import annotations

import ipaddress
from functools import reduce
from typing import Any

import numpy as np

from ._errors import FilterError
from ._filtertree import And, Const, Family, Host, Not, Number, Or, Port, Process, State
from ._schema import STATE_NAMES

__all__ = ["row_mask_of", "arrow_expression", "ADDR_IN_UDF"]

_SIDE_PORT = {"src": "local_port", "dst": "remote_port"}
_SIDE_ADDR = {"src": "local_addr", "dst": "remote_addr"}


def _byte_mask(prefix: int, nbytes: int) -> np.ndarray:
    m = np.zeros(nbytes, np.uint8)
    m[:prefix // 8] = 0xFF
    if prefix % 8:
        m[prefix // 8] = (0xFF << (8 - prefix % 8)) & 0xFF
    return m


def _host_mask(n: Host, rows: np.ndarray) -> np.ndarray:
    fam = rows["family"]
    out = np.ones(len(rows), bool)
    if n.net is not None:
        addr = rows[_SIDE_ADDR[n.side]]                 # (rows, 16) uint8, network order
        key = np.frombuffer(n.net.network_address.packed, np.uint8)
        if n.net.version == 4:
            m = _byte_mask(n.net.prefixlen, 4)
            v4 = (fam == 4) & ((addr[:, :4] & m) == key).all(axis=1)
            # IPv4-mapped IPv6 (::ffff:a.b.c.d) rows match too, as in the kernel's filter
            mapped = ((fam == 6) & (addr[:, :10] == 0).all(axis=1) & (addr[:, 10] == 0xFF)
                      & (addr[:, 11] == 0xFF) & ((addr[:, 12:] & m) == key).all(axis=1))
            out = v4 | mapped
        else:
            m = _byte_mask(n.net.prefixlen, 16)
            out = (fam == 6) & ((addr & m) == key).all(axis=1)
    if n.port is not None:
        out &= rows[_SIDE_PORT[n.side]] == n.port
    return out


def row_mask_of(node: Any, rows: np.ndarray, process: tuple[np.ndarray, list[str]] | None) -> np.ndarray:
    """The rows of ``rows`` that ``node`` keeps, as a boolean array (vectorised)."""
    if isinstance(node, Const):
        return np.full(len(rows), node.value, bool)
    if isinstance(node, Not):
        return ~row_mask_of(node.item, rows, process)
    if isinstance(node, (And, Or)):
        op = np.logical_and if isinstance(node, And) else np.logical_or
        return reduce(op, (row_mask_of(i, rows, process) for i in node.items))
    if isinstance(node, Port):
        col = rows[_SIDE_PORT[node.side]]
        return (col >= node.lo) & (col <= node.hi)
    if isinstance(node, Host):
        return _host_mask(node, rows)
    if isinstance(node, State):
        return np.isin(rows["state"], np.fromiter(node.states, np.uint8))
    if isinstance(node, Family):
        return rows["family"] == node.family
    if isinstance(node, Number):
        col = rows[node.field]
        return (col >= node.lo) & (col <= node.hi)
    if isinstance(node, Process):
        if process is None:
            raise ValueError("this filter tests process names: give process=(codes, names)")
        codes, names = process
        want = [i for i, name in enumerate(names) if name in node.names]
        return np.isin(codes, np.asarray(want, dtype=np.asarray(codes).dtype))
    raise TypeError(f"not a filter node: {node!r}")


# ------------------------------------------------------------------ pyarrow

#: The scalar function the expressions call for an address in a network: registered with
#: pyarrow once; its arguments are the address column (as text) and the network's text.
ADDR_IN_UDF = "tcpsnap_address_in_network"
_registered = False


def _addr_in(ctx, addrs, network):
    import pyarrow as pa
    import pyarrow.compute as pc

    net = ipaddress.ip_network(network.as_py())
    if isinstance(addrs, pa.ChunkedArray):
        addrs = addrs.combine_chunks()
    enc = pc.dictionary_encode(addrs)
    # once per distinct address, not per row: a recording repeats its addresses
    ok = np.zeros(len(enc.dictionary) + 1, bool)
    for i, text in enumerate(enc.dictionary.to_pylist()):
        try:
            a = ipaddress.ip_address(text)
        except ValueError:
            continue
        if net.version == 4 and a.version == 6 and a.ipv4_mapped is not None:
            a = a.ipv4_mapped
        ok[i] = a.version == net.version and a in net
    idx = enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)
    return pa.array(ok[idx], pa.bool_())


def _register() -> None:
    global _registered
    if _registered:
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.register_scalar_function(
            _addr_in, ADDR_IN_UDF,
            {"summary": "address in network",
             "description": "tcpsnap: whether each address (text) is in the network (text); "
                            "an IPv4-mapped IPv6 address counts as its IPv4 form"},
            {"address": pa.string(), "network": pa.string()}, pa.bool_())
    except pa.ArrowKeyError:
        pass                                    # registered already (module reloaded)
    _registered = True


def arrow_expression(node: Any):
    """``node`` over the stored columns, as a ``pyarrow.compute.Expression``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(node, Const):
        return pc.scalar(node.value)
    if isinstance(node, Not):
        return ~arrow_expression(node.item)
    if isinstance(node, (And, Or)):
        parts = [arrow_expression(i) for i in node.items]
        return reduce((lambda a, b: a & b) if isinstance(node, And) else (lambda a, b: a | b), parts)
    if isinstance(node, Port):
        f = pc.field(_SIDE_PORT[node.side])
        if node.lo == node.hi:
            return f == node.lo
        return (f >= node.lo) & (f <= node.hi)
    if isinstance(node, Host):
        parts = []
        if node.net is not None:
            _register()
            col = pc.field(_SIDE_ADDR[node.side]).cast(pa.string())
            parts.append(pc.Expression._call(ADDR_IN_UDF, [col, pc.scalar(str(node.net))]))
        if node.port is not None:
            parts.append(pc.field(_SIDE_PORT[node.side]) == node.port)
        return reduce(lambda a, b: a & b, parts)
    if isinstance(node, State):
        # the stored state is its name (tcpsnap._arrow: a dictionary of TcpState names)
        return pc.field("state").cast(pa.string()).isin([STATE_NAMES[s - 1] for s in sorted(node.states)])
    if isinstance(node, Family):
        return pc.field("family") == node.family
    if isinstance(node, Number):
        f = pc.field(node.field)
        return (f == node.lo) if node.lo == node.hi else ((f >= node.lo) & (f <= node.hi))
    if isinstance(node, Process):
        return pc.field("process").cast(pa.string()).isin(sorted(node.names))
    raise FilterError(f"not a filter node: {node!r}")
