"""tcpsnap top over several network namespaces (``--netns``/``--all-netns``): the live
source through ``Snapshotter(netns=...)``, checked against ``ss`` run in each namespace.
Namespaces are made here with ``ip netns add`` (deleted after); skips where not permitted."""

import os
import shutil
import subprocess
import sys
import threading
import uuid

import pytest

pytest.importorskip("textual")

from tcpsnap.top.model import TopModel
from tcpsnap.top.sources import LiveSource

LISTENER = ("import socket, sys\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); sys.stdin.read()\n")


def _run(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check)


def _can() -> bool:
    if not (sys.platform == "linux" and os.geteuid() == 0 and shutil.which("ip") and shutil.which("ss")):
        return False
    name = f"tcpsnap-top-probe-{uuid.uuid4().hex[:8]}"
    if _run("ip", "netns", "add", name, check=False).returncode != 0:
        return False
    _run("ip", "netns", "delete", name, check=False)
    return True


pytestmark = pytest.mark.skipif(not _can(), reason="needs root, ip netns and ss (iproute2)")


@pytest.fixture
def two_namespaces():
    """Two namespaces, a listener on 127.0.0.1 in each: [(name, inode, child), ...]."""
    made = []
    try:
        for _ in range(2):
            name = f"tcpsnap-top-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            _run("ip", "netns", "add", name)
            made.append([name, os.stat(f"/run/netns/{name}").st_ino, None])
            made[-1][2] = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", LISTENER],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            made[-1][2].stdout.readline()
        yield made
    finally:
        for name, _, child in made:
            if child is not None:
                child.stdin.close()
                child.wait(10)
            _run("ip", "netns", "delete", name, check=False)


def test_netns_column_matches_ss_in_each_namespace(two_namespaces):
    frames = []
    got_one = threading.Event()
    src = LiveSource(0.05, pids=False, netns=[n for n, _, _ in two_namespaces])
    src.start(lambda fr: (frames.append(fr), got_one.set()))
    try:
        assert got_one.wait(30)
    finally:
        src.stop()
    assert src.error is None
    m = TopModel()
    m.update(frames[0])
    keys = [c[0] for c in m.columns]
    assert "netns" in keys
    shown = sorted((m.cells(i)[keys.index("netns")], m.cells(i)[keys.index("local")],
                    m.cells(i)[keys.index("state")]) for i in range(m.nrows))
    want = []
    for name, ino, _ in two_namespaces:       # what ss sees inside each one
        for line in _run("ip", "netns", "exec", name, "ss", "-Htan").stdout.splitlines():
            f = line.split()
            want.append((str(ino), f[3], "LISTEN" if f[0] == "LISTEN" else f[0]))
    assert shown == sorted(want) and len(want) == 2
