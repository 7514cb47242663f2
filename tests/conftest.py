import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Copies of the real Windows buffers (made by Wine 8.0's iphlpapi; see fixtures/windows/README.md).
FIXTURES = Path(os.environ.get("TCPSNAP_FIXTURES", Path(__file__).resolve().parent / "fixtures"))
WINDOWS_FIXTURES = FIXTURES / "windows"


def _can_unshare_net() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


CAN_UNSHARE_NET = _can_unshare_net()


@pytest.fixture
def windows_fixtures() -> Path:
    if not (WINDOWS_FIXTURES / "tcptable2.bin").exists():
        pytest.skip(f"Windows fixture buffers not found under {WINDOWS_FIXTURES} (set TCPSNAP_FIXTURES)")
    return WINDOWS_FIXTURES
