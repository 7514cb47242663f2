"""The background backstop's fingerprint (``tcpsnap._procfs.run_fingerprint``): an owner
none of whose threads ran since a round that had read its links has them spared (no
``readlinkat``), and the documented bound still holds when it does run: a hand-off that
keeps its descriptor count (fork then close-one-open-another; SCM_RIGHTS then the same)
is found within the backstop's 4 laps of 32 rounds, as before."""

import os
import subprocess
import sys
import time

import pytest

from _own_netns import elsewhere

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pid resolution")

if sys.platform.startswith("linux"):
    from _sockets import rows_of, socket_inodes
    from tcpsnap import Snapshotter
    from test_pids import BACKSTOP, _pid_of, fast

HAS_SCHEDSTAT = (sys.platform.startswith("linux") and os.path.exists("/proc/self/schedstat")
                 and open("/proc/self/schedstat").read().split()[0] != "0")
needs_schedstat = pytest.mark.skipif(not HAS_SCHEDSTAT, reason="no schedstats in this kernel")

RECEIVER = r"""
import socket, sys, time
u = socket.socket(fileno=int(sys.argv[1]))
msg, fds, _, _ = socket.recv_fds(u, 1, 4)
print("got", flush=True)
time.sleep(120)
"""

# A child holding a listener and a connection (both ends), and a unix socket to a
# receiver process that inherited nothing else; quiet (blocked on stdin) between commands.
# "fork-swap": a grandchild keeps every socket, then the child closes the accepted end and
# opens /dev/null (its count stays); prints the grandchild's pid. "pass-swap": the accepted
# end goes to the receiver (SCM_RIGHTS), then the same close-one-open-another; prints the
# receiver's pid once it has it.
CHILD = r"""
import os, socket, subprocess, sys, time
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(16)
c = socket.create_connection(lst.getsockname()); a, _ = lst.accept()
u1, u2 = socket.socketpair(socket.AF_UNIX)
rcv = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(u2.fileno())], pass_fds=[u2.fileno()],
                       stdout=subprocess.PIPE, text=True)
u2.close()
print(os.getpid(), lst.getsockname()[1], c.getsockname()[1], os.fstat(a.fileno()).st_ino, rcv.pid,
      flush=True)
held = []
for line in sys.stdin:
    cmd = line.split()[0]
    if cmd == "fork-swap":
        pid = os.fork()
        if pid == 0:
            time.sleep(120); os._exit(0)
        a.close(); held.append(os.open("/dev/null", os.O_RDONLY))
        print(pid, flush=True)
    elif cmd == "pass-swap":
        socket.send_fds(u1, [b"x"], [a.fileno()])
        a.close(); held.append(os.open("/dev/null", os.O_RDONLY))
        assert rcv.stdout.readline().strip() == "got"
        print(rcv.pid, flush=True)
"""


class QuietChild:
    def __init__(self):
        self.p = subprocess.Popen([sys.executable, "-c", CHILD, RECEIVER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        pid, self.lport, self.cport, self.ino_a, self.rcv = map(int, self.p.stdout.readline().split())
        assert pid == self.p.pid
        self.pid = pid
        self.inodes = socket_inodes(pid)      # its rows, by inode (not by port numbers)
        self.others = [self.rcv]

    def ask(self, cmd: str) -> int:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        pid = int(self.p.stdout.readline())
        self.others.append(pid)
        return pid

    def fd_count(self) -> int:
        return os.stat(f"/proc/{self.pid}/fd").st_size

    def close(self):
        for pid in self.others:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        self.p.stdin.close()
        self.p.kill()
        self.p.wait(10)


def _elsewhere(test: str) -> bool:
    """``test`` again in a network namespace of its own (``_own_netns.elsewhere``)."""
    return elsewhere(__file__, test)


def _quiet_resolver(snap):
    res = fast(snap).resolver
    res.background = True
    res.verify_interval = 0.0
    res.backstop_min_links = 1           # its few links: fingerprinted all the same
    return res


def _until_quiet(snap, res, ch, spared=3):
    """Takes until the backstop spared ``spared`` of the child's link reads (it is quiet)."""
    for _ in range(8 * 32):
        rows = rows_of(snap.take(), ch.inodes)
        assert len(rows) == 3 and (rows["pid"] == ch.pid).all()
        if res.stats["backstop_quiet"] >= spared:
            return
        time.sleep(0.06)                   # a check round at most every 50 ms
    raise AssertionError(f"never spared: {res.stats}")


@needs_schedstat
def test_a_quiet_owner_has_its_links_spared_and_keeps_its_pid():
    """An idle owner: after one catch-up read of its links, the backstop reads none of
    them (``backstop_quiet`` counts the spared reads, ``verified`` stops) while every
    round still looks at it; its rows keep its pid."""
    if _elsewhere("test_a_quiet_owner_has_its_links_spared_and_keeps_its_pid"):
        return
    ch = QuietChild()
    try:
        with Snapshotter(pids=True) as snap:
            res = _quiet_resolver(snap)
            _until_quiet(snap, res, ch)
            verified, quiet, jobs = res.stats["verified"], res.stats["backstop_quiet"], res.stats["check_jobs"]
            # a backstop lap (the map's 1024 slots, 33 a take, a quarter of them for the
            # backstop) and more: each of its three links is due once at least
            for _ in range(BACKSTOP * 32 + 8):
                rows = rows_of(snap.take(), ch.inodes)
                assert (rows["pid"] == ch.pid).all()
                time.sleep(0.06)
            st = res.stats
            assert st["check_jobs"] > jobs
            assert st["backstop_quiet"] >= quiet + 3   # each link due, and spared
            assert st["verified"] == verified          # not one link read
    finally:
        ch.close()


def _found_within_the_bound(snap, ch, new_owner):
    got = []
    for _ in range(BACKSTOP * 32 + 8):
        time.sleep(0.06)
        got.append(_pid_of(snap, ch.ino_a))
        if got[-1] == new_owner:
            break
    assert all(g in (ch.pid, new_owner, 0) for g in got), got
    assert got[-1] == new_owner, got


@needs_schedstat
def test_fork_then_close_one_open_another_in_a_quiet_owner_is_found():
    """Quiet (its links spared), then the owner forks, closes the socket and opens another
    descriptor (its count stays): its threads ran, so the backstop reads its links again
    and the socket goes to the grandchild within the bound."""
    if _elsewhere("test_fork_then_close_one_open_another_in_a_quiet_owner_is_found"):
        return
    ch = QuietChild()
    try:
        with Snapshotter(pids=True) as snap:
            res = _quiet_resolver(snap)
            _until_quiet(snap, res, ch)
            before = ch.fd_count()
            gpid = ch.ask("fork-swap")
            assert ch.fd_count() == before
            _found_within_the_bound(snap, ch, gpid)
    finally:
        ch.close()


@needs_schedstat
def test_scm_rights_pass_from_a_quiet_owner_is_found():
    """Quiet, then the owner passes the socket to another process over a unix socket,
    closes its copy and opens another descriptor (its count stays): found within the
    bound, owned by the receiver."""
    if _elsewhere("test_scm_rights_pass_from_a_quiet_owner_is_found"):
        return
    ch = QuietChild()
    try:
        with Snapshotter(pids=True) as snap:
            res = _quiet_resolver(snap)
            _until_quiet(snap, res, ch)
            before = ch.fd_count()
            rpid = ch.ask("pass-swap")
            assert rpid == ch.rcv and ch.fd_count() == before
            _found_within_the_bound(snap, ch, rpid)
    finally:
        ch.close()


def test_backstop_min_links_is_checked():
    from tcpsnap._procfs import PidResolver

    r = PidResolver()
    assert r.backstop_min_links == 4
    with pytest.raises(ValueError):
        r.backstop_min_links = 0
    with pytest.raises(TypeError):
        r.backstop_min_links = 1.5
    r.close()
