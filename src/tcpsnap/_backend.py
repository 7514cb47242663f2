"""The platform's capture backend, chosen once, here and nowhere else.

A backend is a class whose instances own their buffers and expose:
``dump() -> int`` (fill ``rows`` with the whole table, return the count), ``rows``
(the ROW_DTYPE array, possibly replaced by a larger one during ``dump``), ``close()``,
and the counters ``dumps``, ``retries``, ``skipped``, ``grows``.
"""

from __future__ import annotations

import sys

from ._errors import BackendUnavailable

__all__ = ["BACKEND", "backend_class"]


def _select() -> tuple[str, type | None, str]:
    if sys.platform.startswith("linux"):
        try:
            from ._netlink import NetlinkDumper
        except ImportError as e:  # pragma: no cover - a broken install
            return "netlink", None, f"tcpsnap._netlink failed to import: {e}"
        return "netlink", NetlinkDumper, ""
    if sys.platform == "win32":
        try:
            from ._windows import WindowsDumper
        except ImportError as e:  # pragma: no cover - a broken install
            return "windows", None, f"tcpsnap._windows failed to import: {e}"
        return "windows", WindowsDumper, ""
    return "none", None, f"tcpsnap has no capture backend for platform {sys.platform!r} yet"


BACKEND, _CLASS, _WHY = _select()


def backend_class() -> type:
    """The backend class for this platform, or BackendUnavailable saying why not."""
    if _CLASS is None:
        raise BackendUnavailable(_WHY)
    return _CLASS
