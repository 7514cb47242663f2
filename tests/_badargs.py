"""Bad arguments for the compiled modules' entry points, shared by the tables in
test_mib_parser.py and test_netlink_parser.py.

The contract (issue "Safe recordings", item 9): a compiled entry point given a bad argument
raises exactly ValueError or TypeError -- never BufferError, OverflowError, AttributeError,
MemoryError or a subclass of either -- with a one-line message naming the argument. Not a
buffer / not a number: TypeError. A buffer that is not C-contiguous, or read-only where it
is written: ValueError. A value out of range: ValueError. An output row array of the wrong
kind: ValueError, whatever is wrong with it (as ever).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from tcpsnap import ROW_DTYPE


def _readonly_rows() -> np.ndarray:
    a = np.zeros(4, ROW_DTYPE)
    a.flags.writeable = False
    return a


# name -> a fresh bad value (fresh: a call may keep or change what it is given)
KINDS: dict[str, Callable[[], Any]] = {
    "noncontig_memoryview": lambda: memoryview(bytes(64))[::2],
    "noncontig_numpy_bytes": lambda: np.zeros(64, np.uint8)[::2],
    "noncontig_rows": lambda: np.zeros(8, ROW_DTYPE)[::2],
    "readonly_rows": _readonly_rows,
    "wrong_dtype_rows": lambda: np.zeros(4, np.uint8),
    "2d_rows": lambda: np.zeros((2, 2), ROW_DTYPE),
    "bytearray": lambda: bytearray(320),
    "2**64": lambda: 2**64,
    "2**63-1": lambda: 2**63 - 1,
    "-1": lambda: -1,
    "-2**64": lambda: -(2**64),
    "10**400": lambda: 10**400,
    "float": lambda: 1.5,
    "None": lambda: None,
    "str": lambda: "x",
    "object": object,
}

#: The kinds that no integer (size, count, sequence number) accepts.
NOT_INTS = {"noncontig_memoryview", "noncontig_numpy_bytes", "noncontig_rows", "readonly_rows",
            "wrong_dtype_rows", "2d_rows", "bytearray", "float", "None", "str", "object"}


def cases(table: dict[str, tuple[Callable[[Any], object], set[str]]]) -> list[Any]:
    """pytest params ``(call, kind, argname)`` for every entry of ``table`` -- ``{"f.arg":
    (call taking the bad value, kinds that are valid for it)}`` -- and every other kind."""
    return [pytest.param(call, kind, name.rsplit(".", 1)[-1], id=f"{name}-{kind}")
            for name, (call, valid) in table.items() for kind in KINDS if kind not in valid]


def assert_rejected(call: Callable[[Any], object], value: Any, argname: str,
                    aliases: dict[str, str] | None = None) -> BaseException:
    """``call(value)`` raises exactly ValueError or TypeError, one line naming ``argname``
    (or its alias: a message kept from before may name the thing, not the keyword)."""
    with pytest.raises((ValueError, TypeError)) as info:
        call(value)
    exc = info.value
    assert type(exc) in (ValueError, TypeError), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert "\n" not in msg, msg
    want = (aliases or {}).get(argname, argname)
    assert want in msg, f"{msg!r} does not name {want!r}"
    return exc


def assert_only_value_or_type_error(call: Callable[[], object]) -> object:
    """``call()``'s result, or None if it raised exactly ValueError or TypeError; any other
    exception fails (for property tests, where a good argument may come up too)."""
    try:
        return call()
    except (ValueError, TypeError) as e:
        assert type(e) in (ValueError, TypeError), f"{type(e).__name__}: {e}"
        return None


def one_bad_argument(names: list[str]) -> st.SearchStrategy[tuple[str, Any] | None]:
    """None (every argument good), or one of ``names`` and a bad value to put there: half
    the examples of a property test stay good, the other half try every kind everywhere."""
    bad = st.tuples(st.sampled_from(names), st.sampled_from(sorted(KINDS)).map(lambda k: KINDS[k]()))
    return st.one_of(st.none(), bad)
