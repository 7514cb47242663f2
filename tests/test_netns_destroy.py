"""The socket-destroy feed of another network namespace: a ``DestroyFeed`` over sockets
made inside an ``ip netns`` namespace (``tcpsnap._netns.sock_diag_in``, on a thread of its
own) reports the connections that die there, tagged with that namespace's inode; the feed
of tcpsnap's own namespace does not see them. Skips where ``ip netns add`` is not permitted.

This is the building block of changes mode across namespaces (one such feed per namespace
recorded, multiplexed: ``tests/test_netns_changes.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

LINUX = sys.platform.startswith("linux")

# inside the namespace: lo up, one loopback connection opened then closed (client first),
# its 4-tuple printed
_CHILD = r"""
import json, socket, subprocess
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(1)
c = socket.create_connection(lst.getsockname()); s, _ = lst.accept()
print(json.dumps([c.getsockname()[1], lst.getsockname()[1]]), flush=True)
c.close(); s.close(); lst.close()
"""


def _ip_netns_add() -> str | None:
    if not (LINUX and os.geteuid() == 0 and shutil.which("ip")):
        return None
    name = f"tcpsnap-d{os.getpid()}-{uuid.uuid4().hex[:8]}"
    p = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=30)
    return name if p.returncode == 0 else None


@pytest.fixture
def ns():
    name = _ip_netns_add()
    if name is None:
        pytest.skip("needs root and ip netns (iproute2)")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def _sockets_in(path: str) -> tuple[int, int]:
    """Two sock_diag sockets made inside ``path``'s namespace, on a thread of their own."""
    from tcpsnap._netns import sock_diag_in

    out: list = []

    def work() -> None:
        nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            out.extend([sock_diag_in(nsfd, home), sock_diag_in(nsfd, home)])
        except OSError as e:
            out.append(e)
        finally:
            os.close(nsfd)
            os.close(home)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if isinstance(out[-1], OSError):
        pytest.skip(f"cannot enter the namespace: {out[-1]}")
    return out[0], out[1]


def test_a_namespaces_feed_reports_its_deaths_tagged_with_its_inode(ns):
    from tcpsnap._destroy import DestroyFeed

    path = f"/run/netns/{ns}"
    ino = os.stat(path).st_ino
    sock, query = _sockets_in(path)
    try:
        feed = DestroyFeed(sock=sock, query=query, netns=ino)
    except PermissionError:
        pytest.skip("the destroy groups need CAP_NET_ADMIN")
    own = DestroyFeed()
    try:
        assert feed.netns == ino and own.netns == os.stat("/proc/self/ns/net").st_ino != ino
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _CHILD],
                           capture_output=True, text=True, timeout=60, check=True)
        cport, sport = json.loads(p.stdout)
        want = {(cport, sport), (sport, cport)}       # both ends of the connection
        got: set = set()
        deadline = time.monotonic() + 10              # a bound, not a timing assertion
        while not want <= got and time.monotonic() < deadline:
            feed.drain()
            rows, _ts = feed.take()
            for r in rows[rows["family"] == 4]:
                assert r["netns"] == ino
                got.add((int(r["local_port"]), int(r["remote_port"])))
            time.sleep(0.05)
        assert want <= got
        own.drain()
        rows, _ts = own.take()
        assert not (rows["netns"] == ino).any()
        assert not any((int(r["local_port"]), int(r["remote_port"])) in want
                       for r in rows[rows["family"] == 4])
    finally:
        feed.close()
        own.close()
