"""Every network namespace: ``record --all-netns`` against ``ss -tan`` run inside each
namespace, namespaces created and destroyed while recording (and their sockets closed),
``--netns`` for one, and the one-line errors without the capabilities.

Namespaces are made with ``ip netns add`` (unique names, deleted in teardown) and one with
``unshare -n``; every test skips where that is not permitted.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import tcpsnap
from tcpsnap.frame import format_address
from tcpsnap.netns import Namespaces, discover

HERE = Path(__file__).resolve().parent
CHILD = str(HERE / "_conns_child.py")
LINUX = sys.platform.startswith("linux")
ROOT = LINUX and os.geteuid() == 0
SS_STATES = {"ESTAB": 5, "SYN-SENT": 3, "SYN-RECV": 4, "FIN-WAIT-1": 6, "FIN-WAIT-2": 7,
             "TIME-WAIT": 11, "CLOSE-WAIT": 8, "LAST-ACK": 10, "LISTEN": 2, "CLOSING": 9}


def _run(*argv, check=True, **kw):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check, **kw)


def _can_ip_netns() -> bool:
    if not (ROOT and shutil.which("ip") and shutil.which("ss") and shutil.which("nsenter")):
        return False
    name = f"tcpsnap-probe-{uuid.uuid4().hex[:8]}"
    if _run("ip", "netns", "add", name, check=False).returncode != 0:
        return False
    _run("ip", "netns", "delete", name, check=False)
    return True


CAN = _can_ip_netns()
pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not CAN, reason="needs root, ip netns, ss and nsenter (iproute2, util-linux)")]


class Ns:
    """One namespace made for a test: ``ip netns add`` (``name``) or ``unshare -n``, with a
    child holding known connections inside (``ports``). ``close()`` ends both."""

    def __init__(self, kind: str = "ip") -> None:
        self.kind = kind
        self.name = f"tcpsnap-t{os.getpid()}-{uuid.uuid4().hex[:8]}" if kind == "ip" else None
        self.holder = None
        if kind == "ip":
            _run("ip", "netns", "add", self.name)
            argv = ["ip", "netns", "exec", self.name, sys.executable, CHILD]
        else:
            argv = ["unshare", "-n", sys.executable, CHILD]
        self.child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.child.stdout.readline()
        if not line:
            self.close()
            pytest.fail(f"the namespace child ({kind}) did not start")
        info = json.loads(line)
        self.pid, self.ports = info["pid"], info["ports"]
        self.path = f"/run/netns/{self.name}" if kind == "ip" else f"/proc/{self.pid}/ns/net"
        self.ino = os.stat(self.path).st_ino

    def ss(self) -> list[tuple]:
        """``ss -tan`` run inside the namespace: (state, local, lport, remote, rport) rows."""
        pre = ["ip", "netns", "exec", self.name] if self.kind == "ip" else ["nsenter", f"--net={self.path}"]
        out = _run(*pre, "ss", "-Htan").stdout
        rows = []
        for line in out.splitlines():
            f = line.split()
            la, lp = f[3].rsplit(":", 1)
            ra, rp = f[4].rsplit(":", 1)
            rows.append((SS_STATES[f[0]], _addr(la), int(lp) if lp != "*" else 0, _addr(ra),
                         int(rp) if rp != "*" else 0))
        return sorted(rows)

    def close(self) -> None:
        if self.child.poll() is None:
            self.child.stdin.close()
            try:
                self.child.wait(10)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        if self.name is not None:
            _run("ip", "netns", "delete", self.name, check=False)
            self.name = None


def _addr(text: str) -> str:
    t = text.strip("[]").split("%", 1)[0]
    return str(ipaddress.ip_address("0.0.0.0" if t == "*" else t))


def _rows(df) -> list[tuple]:
    return sorted((int(r.state_code), str(ipaddress.ip_address(r.local_addr)), int(r.local_port),
                   str(ipaddress.ip_address(r.remote_addr)), int(r.remote_port)) for r in df.itertuples())


@pytest.fixture
def namespaces():
    made: list[Ns] = []
    try:
        for kind in ("ip", "ip", "ip", "unshare"):
            made.append(Ns(kind))
        yield made
    finally:
        for n in made:
            n.close()


@pytest.mark.parametrize("mode", ["full", "changes"])
def test_record_all_netns_gives_each_namespace_exactly_what_ss_shows(namespaces, tmp_path, mode):
    rec = tmp_path / "rec"
    p = _run(sys.executable, "-m", "tcpsnap", "record", str(rec), "--all-netns", "--duration", "1s",
             "--interval", "200ms", "-q", "--mode", mode, check=False)
    assert p.returncode == 0, p.stderr
    want = {n.ino: n.ss() for n in namespaces}
    df = tcpsnap.read(rec)
    assert set(df.netns.unique()) >= set(want)
    last = df[df.seq == df.seq.max()].copy()
    last["state_code"] = [int(tcpsnap.TcpState[s]) for s in last.state]
    for n in namespaces:
        got = _rows(last[last.netns == n.ino])
        assert got == want[n.ino], (n.kind, n.name)
        assert len(got) == (9 if "::1" in str(got) else 6)   # the child's: listener + 2 pairs + 1 pair
    # the recording says which namespaces it covers
    import pyarrow.parquet as pq

    f = next(rec.glob("date=*/*.parquet"))
    assert pq.read_metadata(f).metadata[b"tcpsnap.netns"] == b"all"


def test_one_namespace_by_name_path_and_pid(namespaces):
    a, u = namespaces[0], namespaces[3]
    for spec in (a.name, a.path):
        rows = tcpsnap.snapshot(netns=spec)
        assert set(rows["netns"].tolist()) == {a.ino}
        got = sorted((int(r["state"]), format_address(int(r["family"]), r["local_addr"]), int(r["local_port"]),
                      format_address(int(r["family"]), r["remote_addr"]), int(r["remote_port"])) for r in rows)
        assert [(s, str(ipaddress.ip_address(la)), lp, str(ipaddress.ip_address(ra)), rp)
                for s, la, lp, ra, rp in got] == a.ss()
    rows = tcpsnap.snapshot(netns=u.pid)
    assert set(rows["netns"].tolist()) == {u.ino} and len(rows) == len(u.ss())


def test_pids_resolve_across_namespaces(namespaces):
    with tcpsnap.Snapshotter(pids=True, netns="all") as snap:
        rows = snap.take()
        for n in namespaces:
            mine = rows[(rows["netns"] == n.ino) & (rows["inode"] != 0)]
            assert len(mine) > 0 and set(mine["pid"].tolist()) == {n.pid}, n.kind


def _veth_exists(ns_name: str, dev: str) -> bool:
    return _run("ip", "-n", ns_name, "link", "show", dev, check=False).returncode == 0


def test_namespaces_created_and_destroyed_while_recording():
    """A new namespace shows up; a deleted one's socket is closed, which lets the kernel
    free it: its veth's peer (in a namespace that stays) disappears. While tcpsnap still
    holds its socket it does not (the reason the socket must be closed)."""
    keep = Ns("ip")
    try:
        with tcpsnap.Snapshotter(netns="all") as snap:
            ns = snap.namespaces
            ns.rescan_interval = 0.05
            assert keep.ino in set(snap.take()["netns"].tolist())
            new = Ns("ip")
            try:
                peer = f"tv{uuid.uuid4().hex[:8]}"
                _run("ip", "link", "add", peer, "netns", keep.name, "type", "veth", "peer", "name", "tvx",
                     "netns", new.name)

                def seen():
                    return new.ino in set(snap.take()["netns"].tolist())

                deadline = time.monotonic() + 10
                while not seen():
                    assert time.monotonic() < deadline, "the new namespace was never dumped"
                    time.sleep(0.02)
                ns.rescan_interval = 3600     # no re-discovery: tcpsnap keeps its socket
                gone_ino = new.ino
                new.close()                   # its process ends, its name is deleted
                time.sleep(0.5)
                snap.take()
                assert gone_ino in dict(ns.targets())
                assert _veth_exists(keep.name, peer), "the namespace died while tcpsnap held a socket in it"
                ns.rescan_interval = 0.05
                deadline = time.monotonic() + 10
                while gone_ino in dict(ns.targets()) or _veth_exists(keep.name, peer):
                    assert time.monotonic() < deadline, "the gone namespace's socket was never closed"
                    snap.take()
                    time.sleep(0.02)
                assert gone_ino not in set(snap.take()["netns"].tolist())
                assert ns.stats["closed"] >= 1
            finally:
                new.close()
    finally:
        keep.close()


def test_discover_finds_bind_mounts_and_processes(namespaces):
    found = discover()
    for n in namespaces:
        assert n.ino in found
    assert found[namespaces[0].ino] == namespaces[0].path        # the bind mount, not a /proc path
    assert os.stat("/proc/self/ns/net").st_ino in found


def test_bad_netns_is_one_line(tmp_path):
    for spec, msg in (("tcpsnap-no-such-ns", "no network namespace tcpsnap-no-such-ns: /run/netns/"
                       "tcpsnap-no-such-ns: No such file or directory"),
                      ("/etc", "/etc: /etc is not a network namespace")):
        p = _run(sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "r"), "--netns", spec,
                 "--duration", "1s", check=False)
        assert p.returncode == 1 and p.stderr == f"tcpsnap: error: {msg}\n", p.stderr
        assert not (tmp_path / "r").exists()      # refused before the folder is made
    p = _run(sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "r"), "--netns", "1", "--all-netns",
             check=False)
    assert p.returncode == 2 and p.stderr == "tcpsnap: error: --all-netns and --netns exclude each other\n"
    assert not (tmp_path / "r").exists()


def test_namespaces_close_every_socket():
    ns = Namespaces("all")
    fds = [fd for _, fd in ns.targets()]
    assert fds and all(os.fstat(fd) for fd in fds)
    ns.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
