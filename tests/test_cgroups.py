"""Cgroup attribution: ``cgroup_id`` from the dump, ``cgroup``, ``container`` and
``pod_uid`` in a recording, for cgroups named as Docker, containerd, CRI-O, podman and
Kubernetes (systemd and cgroupfs drivers) name them, made under the cgroup-v2 mount with a
process moved into each; also for a TIME_WAIT row (no cgroup attribute of its own) and
without pids. Every cgroup made is removed, also on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

import tcpsnap
from _sockets import more_snapshots
from tcpsnap._cgroup import CgroupResolver, cgroup2_mount, container_of, pod_uid_of

HERE = Path(__file__).resolve().parent
CHILD = str(HERE / "_conns_child.py")
ID = "%064x"
UID = "%08x-1234-4abc-8def-%012x"


def _ids(i: int) -> tuple[str, str]:
    return ID % (0xC0FFEE0000 + i), UID % (0xABC00 + i, 0x5EED00 + i)


def _layouts() -> list[tuple[str, str, str | None]]:
    """(path under the test's cgroup, container, pod uid): one per runtime and driver."""
    out = []
    c, _ = _ids(1)
    out.append((f"system.slice/docker-{c}.scope", c, None))                      # Docker, systemd
    c, _ = _ids(2)
    out.append((f"docker/{c}", c, None))                                          # Docker, cgroupfs
    c, u = _ids(3)
    out.append((f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u.replace('-', '_')}.slice/"
                f"cri-containerd-{c}.scope", c, u))                               # containerd, systemd
    c, u = _ids(4)
    out.append((f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u.replace('-', '_')}.slice/"
                f"crio-{c}.scope", c, u))                                         # CRI-O, systemd
    c, _ = _ids(5)
    out.append((f"machine.slice/libpod-{c}.scope", c, None))                      # podman, systemd
    c, u = _ids(6)
    out.append((f"kubepods/besteffort/pod{u}/{c}", c, u))                         # Kubernetes, cgroupfs
    return out


def test_container_and_pod_parsing():
    for path, cont, pod in _layouts():
        assert container_of("/" + path) == cont and pod_uid_of("/" + path) == pod, path
    c, u = _ids(7)
    assert pod_uid_of(f"/kubepods/pod{u}/{c}") == u and container_of(f"/kubepods/pod{u}/{c}") == c  # guaranteed QoS
    assert pod_uid_of(f"/kubepods/pod{u}") == u and container_of(f"/kubepods/pod{u}") is None       # the pod itself
    for plain in ("/", "/user.slice/user-0.slice/session-1.scope", "/system.slice/ssh.service",
                  f"/system.slice/docker-{c[:12]}.scope"):
        assert container_of(plain) is None and pod_uid_of(plain) is None, plain


def test_cgroup2_mount_from_mountinfo(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text("25 1 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                  "41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(str(mi)) == "/sys/fs/cgroup/un ified"
    mi.write_text("25 1 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    assert cgroup2_mount(str(mi)) is None


MOUNT = cgroup2_mount() if sys.platform.startswith("linux") else None


def _can_make_cgroups() -> bool:
    if MOUNT is None or os.geteuid() != 0:
        return False
    probe = Path(MOUNT, f"tcpsnap-probe-{uuid.uuid4().hex[:8]}")
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


needs_cgroups = pytest.mark.skipif(not _can_make_cgroups(), reason="needs root and a writable cgroup-v2 mount")


def _remove_tree(top: Path) -> None:
    for d, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
        try:
            os.rmdir(d)
        except OSError:
            pass


class Tenant:
    """A child process moved into a cgroup, holding known loopback connections."""

    def __init__(self, cgdir: Path) -> None:
        import json

        self.p = subprocess.Popen([sys.executable, CHILD, str(cgdir)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        info = json.loads(self.p.stdout.readline())
        self.pid, self.ports, self.tw_port = info["pid"], set(info["ports"]), info["tw_port"]
        self.listening, self.sockets = info["listening"], info["sockets"]
        self.inodes = set(info["inodes"])  # its sockets' inodes: its rows, exactly

    def close_one(self) -> None:
        self.p.stdin.write("close\n")
        self.p.stdin.flush()
        assert self.p.stdout.readline().strip() == "closed"

    def end(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


@pytest.fixture
def tenants():
    top = Path(MOUNT, f"tcpsnap-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    made = []
    try:
        for rel, cont, pod in _layouts():
            d = top / rel
            d.mkdir(parents=True)
            made.append((Tenant(d), "/" + str(d.relative_to(MOUNT)), os.stat(d).st_ino, cont, pod))
        yield made
    finally:
        for t, *_ in made:
            t.end()
        _remove_tree(top)
        assert not top.exists()


@needs_cgroups
def test_snapshot_cgroup_id_is_the_cgroup_directorys_inode(tenants):
    rows = tcpsnap.snapshot()
    for t, _path, ino, _c, _p in tenants:
        mine = rows[np.isin(rows["inode"], list(t.inodes))]
        assert len(mine) == len(t.inodes) and set(mine["cgroup_id"].tolist()) == {ino}


@needs_cgroups
@pytest.mark.parametrize("mode", ["full", "changes"])
def test_recorded_container_and_pod_without_pids_also_for_time_wait(tenants, tmp_path, mode):
    rec = tcpsnap.Recorder(tmp_path / "rec", interval="20ms", pids=False, mode=mode)
    with rec:
        th = threading.Thread(target=rec.run)
        th.start()
        try:
            more_snapshots(rec, 2)  # counted, not slept: a loaded machine may starve it
            for t, *_ in tenants:
                t.close_one()       # its third connection's client goes to TIME_WAIT
            more_snapshots(rec, 2)  # the second began after the TIME_WAITs existed
        finally:
            rec.stop()
            th.join()
    df = tcpsnap.read(tmp_path / "rec")
    assert (df["pid"] == 0).all()
    for t, path, ino, cont, pod in tenants:
        # the tenant's sockets, by their inodes (another socket on the host, or a TIME_WAIT
        # row of an earlier test, may hold one of its port numbers: selecting by ports
        # once counted 10 for 9), and the TIME_WAIT rows they became (same cookie)
        cookies = set(df[df.inode.isin(t.inodes)].cookie)
        mine = df[df.cookie.isin(cookies)]
        assert len(cookies) == t.sockets + len(t.listening)
        assert set(mine.cgroup_id) == {ino}, path
        assert set(mine.cgroup.astype(str)) == {path}
        assert set(mine.container.astype(str)) == {cont}
        if pod is None:
            assert mine.pod_uid.isna().all()
        else:
            assert set(mine.pod_uid.astype(str)) == {pod}
        tw = mine[(mine.state == "TIME_WAIT") & (mine.local_port == t.tw_port)]
        assert len(tw) > 0 and (tw.inode == 0).all(), path
        assert set(tw.container.astype(str)) == {cont} and set(tw.cgroup_id) == {ino}
    # connections of no container: the recording's own process tree is not in one (the
    # table is the host's: leave out what another test run's tenants hold at the same time)
    theirs = set(df[df.inode.isin(set().union(*(t.inodes for t, *_ in tenants)))].cookie)
    other = df[~df.cookie.isin(theirs) & ~df.cgroup.astype(str).str.startswith("/tcpsnap-test-")]
    assert other.container.isna().all()
    per = tcpsnap.analysis.by_container(df)
    for t, _path, _ino, cont, pod in tenants:
        got = per.loc[(cont, pod)]
        assert got.connections == t.sockets            # each socket of its pairs, TIME_WAIT included
        assert got.listening == ",".join(map(str, t.listening)) and got.remotes == 2 - (t.sockets == 4)
        assert got.processes == "" and got.netns == 1


@needs_cgroups
def test_resolver_walks_at_once_for_a_new_id_and_rate_limits_ids_not_found(tmp_path):
    # A cgroup created after the last walk resolves at its first sighting (a changes-mode
    # recording writes a connection's attribution once: a rate-limited miss would leave it
    # null for good); an id no walk finds (a removed cgroup) re-walks once per interval.
    top = Path(MOUNT, f"tcpsnap-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    res = CgroupResolver(rewalk_interval=3600)
    try:
        top.mkdir()
        a = os.stat(top).st_ino
        assert res.path(a) == "/" + top.name and res.stats["walks"] == 1
        (top / "b").mkdir()
        b = os.stat(top / "b").st_ino
        assert res.path(b) == f"/{top.name}/b" and res.stats["walks"] == 2   # new id: walked now
        assert res.path(a) == "/" + top.name and res.stats["walks"] == 2     # a hit: no walk
        (top / "c").mkdir()
        c = os.stat(top / "c").st_ino
        (top / "c").rmdir()                      # removed before it was ever looked up
        assert res.path(c) is None and res.stats["walks"] == 3               # looked for once
        assert res.path(c) is None and res.stats["walks"] == 3               # then rate-limited
        res.rewalk_interval = 0
        assert res.path(c) is None and res.stats["walks"] == 4
    finally:
        _remove_tree(top)


@needs_cgroups
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_show_gives_cgroup_container_pod_and_netns(tenants, fmt):
    # `tcpsnap show` as a user runs it: each tenant's rows carry its cgroup path, container
    # id, pod uid (empty/null outside Kubernetes) and the namespace's inode (the one
    # `ls -iL /proc/self/ns/net` shows: show dumps the namespace it runs in)
    import csv
    import io
    import json

    netns = os.stat("/proc/self/ns/net").st_ino
    p = subprocess.run([sys.executable, "-m", "tcpsnap", "show", "--no-pids", "--format", fmt],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    if fmt == "json":
        rows = json.loads(p.stdout)
    else:
        rows = list(csv.DictReader(io.StringIO(p.stdout)))
        assert {"cgroup", "container", "pod_uid", "netns"} <= set(rows[0])
    for t, path, ino, cont, pod in tenants:
        # by its sockets' inodes: the host's table may hold another socket with one of its
        # port numbers
        mine = [r for r in rows if int(r["inode"]) in t.inodes]
        assert len(mine) == t.sockets + len(t.listening), path
        for r in mine:
            assert int(r["cgroup_id"]) == ino and r["cgroup"] == path and r["container"] == cont
            assert r["pod_uid"] == (pod if pod is not None else (None if fmt == "json" else ""))
            assert int(r["netns"]) == netns
