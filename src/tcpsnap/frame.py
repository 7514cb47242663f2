"""Rows into readable columns: addresses as inet_ntop writes them, states by name."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import numpy as np

from ._schema import ROW_DTYPE, STATE_NAMES

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["to_pandas", "address_codes", "format_address", "process_column", "CGROUP_COLUMNS",
           "with_cgroup_columns"]

#: Column order of every DataFrame and table tcpsnap writes from rows. Every name is a
#: ROW_DTYPE field except ``process``, the owner's name, derived from ``pid``
#: (see ``process_column``).
COLUMNS = (
    "family", "state", "local_addr", "local_port", "remote_addr", "remote_port", "pid",
    "process", "uid", "inode", "cookie", "cgroup_id", "netns", "rx_queue", "tx_queue",
    "local_scope_id", "remote_scope_id", "offload_state",
)


#: The attribution columns derived from ``cgroup_id`` (``tcpsnap._cgroup``): the cgroup's
#: path, the container id and the Kubernetes pod uid it names; placed right after it.
CGROUP_COLUMNS = ("cgroup", "container", "pod_uid")


def with_cgroup_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    """``columns`` with ``CGROUP_COLUMNS`` right after ``cgroup_id``."""
    i = columns.index("cgroup_id") + 1
    return columns[:i] + CGROUP_COLUMNS + columns[i:]


def format_address(family: int, addr: bytes | np.ndarray) -> str:
    """One address as ``inet_ntop`` writes it (IPv4 from the first 4 bytes)."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, bytes(addr[:4]))
    return socket.inet_ntop(socket.AF_INET6, bytes(addr[:16]))


def address_codes(family: np.ndarray, addr: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Dictionary-encode addresses: ``(codes, strings)`` with ``strings[codes[i]]`` the
    address of row i. Only distinct addresses are formatted, so the cost is per
    distinct address, not per row."""
    n = len(family)
    if n == 0:
        return np.zeros(0, dtype=np.int32), []
    key = np.empty((n, 17), dtype=np.uint8)
    key[:, 0] = family
    key[:, 1:] = addr
    uniq, codes = np.unique(key.view("V17").ravel(), return_inverse=True)
    strings = [format_address(int(k[0]), k[1:]) for k in uniq.view(np.uint8).reshape(-1, 17)]
    return codes.astype(np.int32, copy=False).ravel(), strings


def merge_names(pnames: list[str], index: dict[str, int], names: list[str]) -> np.ndarray:
    """Fold one ``process_names`` answer into a running dictionary (``names``, with
    ``index`` its reverse): returns a lookup table such that ``lut[codes]`` are codes into
    ``names``; its last entry is -1, so ``np.take(lut, codes, mode="wrap")`` keeps -1."""
    lut = np.empty(len(pnames) + 1, dtype=np.int32)
    for j, name in enumerate(pnames):
        c = index.get(name)
        if c is None:
            c = index[name] = len(names)
            names.append(name)
        lut[j] = c
    lut[-1] = -1
    return lut


def _check(rows: np.ndarray) -> None:
    if getattr(rows, "dtype", None) != ROW_DTYPE:
        raise TypeError(f"expected an array of tcpsnap.ROW_DTYPE, got {getattr(rows, 'dtype', type(rows))!r}")


def process_column(pids: np.ndarray, names=None) -> tuple[np.ndarray, list[str]]:
    """``(codes, names)`` of the ``process`` column for ``pids``: int32 codes into
    ``names``, -1 where no name is known (pid 0, unreadable, or ``names=False``)."""
    n = len(pids)
    if names is None or names is True:
        from .pids import process_names

        codes, strings = process_names(pids)
    elif names is False:
        codes, strings = np.full(n, -1, dtype=np.int32), []
    elif callable(names):
        codes, strings = names(pids)
    else:
        codes, strings = names
    codes = np.asarray(codes, dtype=np.int32)
    if codes.shape != (n,):
        raise ValueError(f"process names: expected {n} codes, got shape {codes.shape}")
    return codes, list(strings)


def to_pandas(rows: np.ndarray, names=None, cgroups: bool = True) -> pd.DataFrame:
    """A DataFrame of ``rows``: ``state`` a categorical of ``TcpState`` names, addresses
    as strings (categorical), ports and pid as integers, ``process`` the owner's
    ``comm`` name (categorical, missing where unknown), plus every other field.

    ``names`` says where process names come from: by default the processes of this
    machine now, through a cache checked against each process's start time (right for
    rows just captured here: ``to_pandas(snap.take())``); pass
    ``names=snap.process_names`` to use a Snapshotter's own cache, ``names=False`` to
    leave the column empty (rows from another machine or another time), or a ready
    ``(codes, names)`` pair. ``cgroup``, ``container`` and ``pod_uid`` (after
    ``cgroup_id``) come from this machine's cgroup-v2 tree now (``tcpsnap._cgroup``);
    ``cgroups=False`` leaves them empty."""
    import pandas as pd

    _check(rows)
    rows = np.ascontiguousarray(rows)
    cols: dict[str, object] = {}
    cg = {}
    if cgroups:
        from ._cgroup import default_resolver

        cg = dict(zip(CGROUP_COLUMNS, default_resolver().resolve(rows["cgroup_id"]), strict=False))
    for name in with_cgroup_columns(COLUMNS):
        if name in CGROUP_COLUMNS:
            codes, strings = cg.get(name, (np.full(len(rows), -1, np.int32), []))
            cols[name] = pd.Categorical.from_codes(codes, categories=pd.Index(strings, dtype=object))
            continue
        if name == "state":
            cols[name] = pd.Categorical.from_codes(rows["state"].astype(np.int8) - 1,
                                                   categories=list(STATE_NAMES))
        elif name in ("local_addr", "remote_addr"):
            codes, strings = address_codes(rows["family"], rows[name])
            cols[name] = pd.Categorical.from_codes(codes, categories=pd.Index(strings, dtype=object))
        elif name == "process":
            codes, strings = process_column(rows["pid"], names)
            cols[name] = pd.Categorical.from_codes(codes, categories=pd.Index(strings, dtype=object))
        else:
            cols[name] = rows[name].copy()
    return pd.DataFrame(cols)
