"""Which machine and which boot a recording comes from.

A socket cookie is a per-boot counter, and the monotonic clock restarts at boot: a
connection is identified by (host, boot_id, cookie), and monotonic times compare only
within one boot_id.
"""

from __future__ import annotations

import functools
import socket
import sys
import time

__all__ = ["host_name", "boot_id"]


def host_name() -> str:
    """This machine's host name (``socket.gethostname``)."""
    return socket.gethostname()


@functools.cache
def boot_id() -> str:
    """This boot's identity: Linux's ``/proc/sys/kernel/random/boot_id`` (a random UUID
    drawn at boot); on Windows the boot time (UTC, from ``GetTickCount64``, to the
    second); elsewhere "" (unknown)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                return f.read().strip()
        except OSError:
            return ""
    if sys.platform == "win32":  # pragma: no cover - Windows
        import ctypes

        up_ms = ctypes.windll.kernel32.GetTickCount64()  # type: ignore[attr-defined]
        boot = time.time() - up_ms / 1000.0
        return time.strftime("boot-%Y%m%dT%H%M%SZ", time.gmtime(round(boot)))
    return ""
