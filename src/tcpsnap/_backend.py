"""The platform's capture backend, chosen once, here and nowhere else.

A backend is a class whose instances own their buffers and expose:
``dump() -> int`` (fill ``rows`` with the whole table, return the count), ``rows``
(the ROW_DTYPE array, possibly replaced by a larger one during ``dump``), ``close()``,
and the counters ``dumps``, ``retries``, ``skipped``, ``grows``.
"""

from __future__ import annotations

import sys

from ._errors import BackendUnavailable

__all__ = ["BACKEND", "backend_class", "tcp_info_unavailable"]


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


def tcp_info_unavailable() -> str | None:
    """Why ``Snapshotter(tcp_info=True)`` gets no internals here (one sentence), or None where
    it gets them: Linux always; Windows where iphlpapi.dll exports GetPerTcpConnectionEStats
    (resolved at run time) and the process is elevated (``tcpsnap._windows.estats_unavailable``);
    any other backend never."""
    if BACKEND == "netlink" and _CLASS is not None:
        return None
    if BACKEND == "windows" and _CLASS is not None:
        try:
            from ._windows import estats_unavailable
        except ImportError as e:  # pragma: no cover - a broken install
            return f"tcpsnap._windows failed to import: {e}"
        return estats_unavailable()
    return f"this backend ({BACKEND}) captures no internals" + (f": {_WHY}" if _WHY else "")
