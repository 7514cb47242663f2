"""Running one test again inside a network namespace of its own (``unshare -n``): only its
sockets are in the table there (the host's, thousands on a shared machine, would make the
pid resolver's check rounds long and its counters not the test's alone)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

INNER = "TCPSNAP_TEST_PRIVATE_NETNS"


def elsewhere(file: str, test: str) -> bool:
    """Run ``file::test`` again in a network namespace of its own; True when that was done
    here (the caller returns), False inside that namespace (lo brought up: go on). Skips
    where ``unshare -n`` is not permitted."""
    if os.environ.get(INNER):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return False
    from conftest import CAN_UNSHARE_NET

    if not CAN_UNSHARE_NET:
        pytest.skip("needs unshare -n (root)")
    p = subprocess.run(["unshare", "-n", sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        f"{file}::{test}"], env={**os.environ, INNER: "1"}, capture_output=True,
                       text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(file))))
    assert p.returncode == 0 and " passed" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]
    return True
