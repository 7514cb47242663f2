"""The row pass's pid lookup over rows of several owners (``PidResolver.resolve``): it
remembers the last owner it confirmed, so rows in runs of one owner, runs broken by
another owner, a socket passed to another process, and an owner whose identity no longer
holds must each get exactly their own pid (cross-checked with ``ss -tanp``) or 0, and
their process names must follow (``names_into``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from _sockets import inode, pair, rows_of, socket_inodes, ss_owners

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pid resolution"),
    pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)"),
]

if sys.platform.startswith("linux"):
    from tcpsnap import Snapshotter
    from tcpsnap.pids import new_resolver

#: A child named argv[1] (prctl) that owns a listener and a connected pair, and whatever
#: descriptors arrive on the unix socket it inherits (descriptor argv[2], SCM_RIGHTS); on stdin:
#: "name X" renames it, "recv" takes one passed descriptor; both answer "ok".
CHILD = r"""
import ctypes, socket, sys
libc = ctypes.CDLL(None)
libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(4)
c = socket.create_connection(lst.getsockname()); a, _ = lst.accept()
u = socket.socket(fileno=int(sys.argv[2]))
kept = []
print(lst.getsockname()[1], flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "name":
        libc.prctl(15, cmd[1].encode(), 0, 0, 0)
    elif cmd[0] == "recv":
        kept += socket.recv_fds(u, 16, 4)[1]
    print("ok", flush=True)
"""


class Child:
    def __init__(self, name: str) -> None:
        self.unix, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.p = subprocess.Popen([sys.executable, "-c", CHILD, name, str(theirs.fileno())],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                  pass_fds=(theirs.fileno(),))
        theirs.close()
        assert self.p.stdout is not None
        self.port = int(self.p.stdout.readline())
        self.pid = self.p.pid

    def ask(self, line: str) -> None:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        assert self.p.stdout.readline().strip() == "ok"

    def give(self, sock: socket.socket) -> None:
        """Pass ``sock`` to the child (SCM_RIGHTS); the caller closes its own copy."""
        socket.send_fds(self.unix, [b"x"], [sock.fileno()])
        self.ask("recv")

    def close(self) -> None:
        self.unix.close()
        if self.p.stdin is not None:
            self.p.stdin.close()
        self.p.wait(10)



@pytest.fixture
def owners():
    """Three owners of sockets on 127.0.0.1: this process (a listener and the client end
    of its connection), child A (its own three, plus the server end of this process's
    connection, passed to it and closed here), child B (its own three)."""
    a = Child("tcpsnap-runa")
    b = Child("tcpsnap-runb")
    lst, c, s = pair()
    try:
        a.give(s)
        s.close()
        yield a, b, lst, c
    finally:
        c.close()
        lst.close()
        a.close()
        b.close()


def _interleaved(rows: np.ndarray, seed: int) -> np.ndarray:
    """The rows many times over in runs of 1-5 rows of one socket, in a random order
    (the same owner in runs, broken by others at any point), pids zeroed."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([np.full(rng.integers(1, 6), rng.integers(len(rows))) for _ in range(400)])
    out = rows[idx].copy()
    out["pid"] = 0
    return out


def _ours(rows: np.ndarray, inodes: set[int]) -> np.ndarray:
    return rows_of(rows, inodes).copy()


def _inodes(a: Child, b: Child, *socks: socket.socket) -> set[int]:
    """The inodes of the fixture's sockets: the tests select rows and ss's lines by
    them, as another socket on the host may have one of their port numbers."""
    return socket_inodes(a.pid) | socket_inodes(b.pid) | {inode(x) for x in socks}


def test_runs_of_owners_and_a_passed_socket_get_their_own_pids(owners):
    a, b, lst, c = owners
    ours = _inodes(a, b, lst, c)
    truth = ss_owners(ours)
    assert len(truth) == 9
    assert {p for _, p in truth.values()} == {a.pid, b.pid, os.getpid()}
    with Snapshotter(pids=True) as snap:
        res = snap.resolver
        res.background = True
        rows = _ours(snap.take(), ours)          # the first walk runs in place: every pid
        assert len(rows) == 9
        assert {int(r["inode"]): int(r["pid"]) for r in rows} == \
               {k: p for k, (_, p) in truth.items()}
        for seed in range(5):
            arr = _interleaved(rows, seed)
            res.resolve(arr, len(arr))
            want = [truth[int(i)][1] for i in arr["inode"]]
            assert arr["pid"].tolist() == want
            # the names follow each row's owner, as ss names it
            out = np.full(len(arr), 99, np.int32)
            names: list[str] = []
            index: dict[str, int] = {}
            res.names_into(arr["pid"], out, index, names)
            assert [names[c] for c in out] == [truth[int(i)][0] for i in arr["inode"]]


def test_an_owner_whose_identity_fails_loses_every_row_of_its_runs(owners):
    """Without pidfds each owner's start time is confirmed once per pass: a pid that now
    names another process (simulated: its start time forged) gives 0 to all its rows in
    that pass, the first and the ones after it, while the other owners' rows keep theirs."""
    a, b, lst, c = owners
    ours = _inodes(a, b, lst, c)
    truth = ss_owners(ours)
    assert len(truth) == 9
    with Snapshotter(pids=False) as snap:
        rows = _ours(snap.take(), ours)
    res = new_resolver(max_pidfds=0, background=True)
    try:
        res.resolve(rows, len(rows))          # the first walk, in place
        assert sorted(rows["pid"].tolist()) == sorted(p for _, p in truth.values())
        arr = _interleaved(rows, 7)
        res._forge_start(a.pid, 1)
        res.resolve(arr, len(arr))
        owner = np.array([truth[int(i)][1] for i in arr["inode"]])
        assert (owner == a.pid).sum() >= 10 and (owner != a.pid).sum() >= 10
        assert (arr["pid"][owner == a.pid] == 0).all()
        assert (arr["pid"][owner != a.pid] == owner[owner != a.pid]).all()
    finally:
        res.close()


def test_a_renamed_owner_is_named_anew_in_runs_of_both_owners(owners):
    a, b, lst, c = owners
    ours = _inodes(a, b, lst, c)
    with Snapshotter(pids=True) as snap:
        res = snap.resolver
        res.background = True
        rows = _ours(snap.take(), ours)
        arr = _interleaved(rows, 3)
        res.resolve(arr, len(arr))
        a.ask("name tcpsnap-runa2")
        res.name_ttl = 0.0
        truth = ss_owners(ours)
        assert ("tcpsnap-runa2", a.pid) in truth.values()
        want = [truth[int(i)][0] for i in arr["inode"]]
        got: list[str] = []
        for _ in range(500):       # a name thread re-reads it; a later call merges it
            res.resolve(arr, len(arr))
            out = np.full(len(arr), 99, np.int32)
            names: list[str] = []
            index: dict[str, int] = {}
            res.names_into(arr["pid"], out, index, names)
            got = [names[c] for c in out]
            # never another owner's name, old or new: a's rows say a's, the others theirs
            assert all(g == w or (g, w) == ("tcpsnap-runa", "tcpsnap-runa2") for g, w in zip(got, want, strict=True))
            if got == want:
                break
            time.sleep(0.01)
        assert got == want
