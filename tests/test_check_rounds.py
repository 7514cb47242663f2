"""How often the background resolver hands a check round (``PidResolver._verify``): at
most every other take, the slice of the take in between going with the next round, so
that at ``--interval 1s`` the check worker wakes every other second; every take while a
socket that several processes held waits to be re-read (tcpsnap.pids: "re-read on every
snapshot"). Each runs in a network namespace of its own: only this test's sockets in the
table, so no other process's (a quiet one would start catch-up rounds, which go every
take too)."""

import os
import subprocess
import sys
import time

import pytest

from _own_netns import elsewhere

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pid resolution")

if sys.platform.startswith("linux"):
    from _sockets import closing_all, inode, pair
    from tcpsnap import Snapshotter
    from test_pids import _fork_keeping, _pid_of, fast


def _elsewhere(test: str) -> bool:
    """``test`` again in a network namespace of its own (``_own_netns.elsewhere``)."""
    return elsewhere(__file__, test)


def _rounds_per_take(snap, res, ino, takes):
    """For each of ``takes`` takes: 1 if it handed a check round, else 0. Between takes,
    more than the 50 ms pace, and time for a round of a few links to end (one still
    running at a take makes it skip: the counts below allow a few)."""
    got = []
    for _ in range(takes):
        before = res.stats["check_jobs"]
        _pid_of(snap, ino)
        got.append(res.stats["check_jobs"] - before)
        time.sleep(0.15)
    return got


def test_a_check_round_at_most_every_other_take():
    if _elsewhere("test_a_check_round_at_most_every_other_take"):
        return
    socks = [pair("127.0.0.1") for _ in range(40)]   # owned links in most slices
    ino = inode(socks[0][2])
    with closing_all(*[x for p in socks for x in p]), Snapshotter(pids=True) as snap:
        res = fast(snap).resolver
        res.background = True
        res.verify_interval = 0.0
        assert _pid_of(snap, ino) == os.getpid()
        got = _rounds_per_take(snap, res, ino, 24)
        assert set(got) <= {0, 1}
        assert not any(a and b for a, b in zip(got, got[1:])), got   # never two in a row
        assert sum(got) >= 8, got                                    # but every other one
        assert _pid_of(snap, ino) == os.getpid()


def test_a_check_round_every_take_while_a_shared_socket_waits():
    """A socket two processes held when it was resolved (fork) is re-read every take:
    a round at each one (each take merges the round the one before handed)."""
    if _elsewhere("test_a_check_round_every_take_while_a_shared_socket_waits"):
        return
    lst, c, s = pair("127.0.0.1")
    ino = inode(s)
    r, w = os.pipe()
    with closing_all(lst, c, s):
        pid = _fork_keeping(r, w)
        try:
            with Snapshotter(pids=True) as snap:
                res = fast(snap).resolver
                res.verify_interval = 0.0
                # the first walk in place, begun before the dump, records every holder
                # (a background walk stops at the lowest): the socket is seen shared
                assert _pid_of(snap, ino) == min(os.getpid(), pid)
                res.background = True
                got = _rounds_per_take(snap, res, ino, 12)
                # every take but one whose round was still running (under load); at most
                # every other take would be 6
                assert sum(got) >= 9, got
        finally:
            os.close(w)
            os.waitpid(pid, 0)


# A child holding K connections (both ends) and a listener, idle on stdin; "fork-close":
# a grandchild keeps every socket, the child closes its K accepted ends (its descriptor
# count drops by K) and prints the grandchild's pid.
K = 8
CHILD = r"""
import os, socket, sys, time
k = int(sys.argv[1])
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(64)
cs = [socket.create_connection(lst.getsockname()) for _ in range(k)]
acc = [lst.accept()[0] for _ in range(k)]
print(" ".join(str(os.fstat(a.fileno()).st_ino) for a in acc), flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        time.sleep(120); os._exit(0)
    for a in acc:
        a.close()
    print(pid, flush=True)
"""


def test_a_count_that_moves_has_every_link_read_within_two_laps():
    """The round that finds an owner's count moved reads none of its links (they are not
    queued, only a look at the count): each is read when the slices next reach it, within
    a lap of that look -- so all K sockets the owner handed to its child are found within
    two laps of 31 takes (the look's, the reads'), where the backstop alone (a lap of 124)
    would leave some."""
    if _elsewhere("test_a_count_that_moves_has_every_link_read_within_two_laps"):
        return
    ch = subprocess.Popen([sys.executable, "-c", CHILD, str(K)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, bufsize=1)
    gpid = 0
    try:
        inodes = [int(x) for x in ch.stdout.readline().split()]
        with Snapshotter(pids=True) as snap:
            res = fast(snap).resolver
            res.background = True
            res.verify_interval = 0.0
            assert all(_pid_of(snap, i) == ch.pid for i in inodes[:1])
            for _ in range(40):                    # its count looked at: known
                snap.take()
                time.sleep(0.02)
            ch.stdin.write("fork-close\n")
            ch.stdin.flush()
            gpid = int(ch.stdout.readline())
            found = {}
            for t in range(2 * 31 + 6):
                time.sleep(0.06)                   # a round at most every 50 ms
                rows = snap.take()
                for i in inodes:
                    r = rows[rows["inode"] == i]
                    assert len(r) == 1 and int(r["pid"][0]) in (ch.pid, gpid, 0)
                    if int(r["pid"][0]) == gpid:
                        found.setdefault(i, t)
                if len(found) == K:
                    break
            assert len(found) == K, (found, res.stats)
    finally:
        if gpid:
            os.kill(gpid, 9)                       # the child's child (reaped by init)
        ch.kill()
        ch.wait(10)
