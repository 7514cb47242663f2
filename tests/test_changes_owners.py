"""Changes mode with pids: an owner change of a socket that does not otherwise change.

Each test records a live change of owner (or of the owner's name) on loopback, reads the
recording back through ``tcpsnap.reading`` (rebuilt full snapshots) and checks, against
``ss -tanp`` and ``/proc/<pid>/comm`` (never against our own output), that every snapshot
taken after the resolver's documented delay bound (``tcpsnap.pids``) carries the right pid
and process name, and that the owner change came as an event of that connection.
These guard the capture path's pid lookup (issue 18: looking up only rows that changed
must still see an owner change the resolver finds for a row that did not).

No timing is asserted: the bound only selects which snapshots must already be right.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("Linux pid resolution", allow_module_level=True)

import tcpsnap
from _sockets import inode, socket_inodes, ss_owners
from tcpsnap import Recorder

INTERVAL = 0.01          # the recording's interval (s)
VERIFY = 0.1             # the resolver's verify_interval and name_ttl here (s)

# A child named argv[1] (prctl) that takes descriptors passed on the unix socket it
# inherits (descriptor argv[2]). Commands on stdin, one answer line each:
#   pair [LPORT CPORT]  a listener and a connection (both ends its own), on fixed ports
#                       if given (SO_REUSEADDR): "lport cport"
#   name X              prctl rename: "ok"
#   recv                takes one passed descriptor: "ok"
#   forkclose           a child (named tcpsnap-kid) keeps every socket, this one closes
#                       its own: the child's pid
#   forkexit            likewise, and this process exits after answering
#   rst                 closes every socket with an RST (no TIME_WAIT): "ok"
CHILD = r"""
import ctypes, os, socket, struct, sys, time
libc = ctypes.CDLL(None)
libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)
u = socket.socket(fileno=int(sys.argv[2]))
kept = []
def out(x):
    print(x, flush=True)
def kid():
    k = os.fork()
    if k == 0:
        libc.prctl(15, b"tcpsnap-kid", 0, 0, 0)
        time.sleep(300)
        os._exit(0)
    return k
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "pair":
        lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", int(cmd[1]) if len(cmd) > 1 else 0)); lst.listen(4)
        c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if len(cmd) > 2:
            c.bind(("127.0.0.1", int(cmd[2])))
        c.connect(lst.getsockname()); a, _ = lst.accept()
        kept += [lst, c, a]
        out(f"{lst.getsockname()[1]} {c.getsockname()[1]}")
    elif cmd[0] == "name":
        libc.prctl(15, cmd[1].encode(), 0, 0, 0); out("ok")
    elif cmd[0] == "recv":
        kept += [socket.socket(fileno=f) for f in socket.recv_fds(u, 16, 4)[1]]; out("ok")
    elif cmd[0] in ("forkclose", "forkexit"):
        k = kid()
        if cmd[0] == "forkexit":
            out(k); os._exit(0)
        for s in kept:
            os.close(s.detach())
        kept = []
        out(k)
    elif cmd[0] == "rst":
        for s in kept:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
        kept = []
        out("ok")
"""


class Child:
    def __init__(self, name: str, pid: int = 0) -> None:
        """``pid``: start it as that pid (``ns_last_pid``; skips where it cannot)."""
        self.unix, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.kids: list[int] = []
        for _ in range(50 if pid else 1):
            if pid:
                try:
                    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                        f.write(str(pid - 1))
                except OSError as e:     # not root (CAP_SYS_ADMIN in the pid namespace)
                    theirs.close()
                    self.unix.close()
                    pytest.skip(f"cannot choose the next pid: {e}")
            self.p = subprocess.Popen([sys.executable, "-c", CHILD, name, str(theirs.fileno())],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      bufsize=1, pass_fds=(theirs.fileno(),))
            if not pid or self.p.pid == pid:
                break
            self._end()
        else:
            theirs.close()
            pytest.skip(f"could not start a process as pid {pid} (others took it)")
        theirs.close()
        self.pid = self.p.pid

    def ask(self, line: str) -> str:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def pair(self, lport: int = 0, cport: int = 0) -> tuple[int, int]:
        a, b = self.ask(f"pair {lport} {cport}" if lport else "pair").split()
        return int(a), int(b)

    def fork(self, how: str) -> int:
        k = int(self.ask(how))
        self.kids.append(k)
        return k

    def give(self, sock: socket.socket) -> None:
        socket.send_fds(self.unix, [b"x"], [sock.fileno()])
        assert self.ask("recv") == "ok"

    def _end(self) -> None:
        if self.p.stdin is not None:
            with contextlib.suppress(OSError):
                self.p.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self.p.kill()
        self.p.wait(10)

    def close(self) -> None:
        for k in self.kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, 9)
        self.unix.close()
        self._end()



def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def delay_bound(res) -> float:
    """The documented bound (``tcpsnap.pids``, background resolver) for an owner change
    found by a check round (4 F, the backstop) then resolved by a walk, or a rename,
    with this recording's settings; D the longest walk seen, R taken as 0.1 s (a round
    re-reads a few links here)."""
    d = max(res.stats["last_walk_seconds"], 0.01)
    r = 0.1
    f = max(VERIFY, 32 * INTERVAL) + 0.05 + r + INTERVAL
    walk = max(0.25, 2 * d) + 2 * d + 2 * INTERVAL
    name = VERIFY + 2 * r + 2 * INTERVAL
    return 4 * f + walk + name


def run_until(rec, cond, limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, "ss never showed the expected owners"
        rec.run(duration="0.1s")


def record(tmp_path, ours: set[int], act, want) -> tuple:
    """Record (changes mode, pids) the sockets whose inodes are ``ours`` (``act`` may add
    to it: selecting by inode, as another socket on the host may have one of their port
    numbers), call ``act()``, wait until ``ss`` shows ``want()`` (a set of pids every one
    of ``ours`` must be held by one of, after the act), record past the delay bound;
    -> (rebuilt rows of ``ours`` as pandas, their events, wall ns of the act, the bound
    in ns, ss's owners by inode)."""
    path = tmp_path / "rec"
    with Recorder(path, interval=f"{int(INTERVAL * 1000)}ms", pids=True, mode="changes", nice=None,
                  destroy=False, keyframe="1h") as rec:
        res = rec._snap.resolver
        res.verify_interval = VERIFY
        res.name_ttl = VERIFY
        rec.run(duration="0.5s")
        run_until(rec, lambda: len(ss_owners(ours)) > 0)
        act()
        t_act = time.time_ns()      # the change has happened (the child answered)
        run_until(rec, lambda: {p for _, p in ss_owners(ours).values()} <= want()
                  and len(ss_owners(ours)) > 0)
        bound = delay_bound(res)
        end = t_act + int(bound * 1e9)
        while time.time_ns() < end + 300_000_000:
            rec.run(duration="0.2s")
        owners = ss_owners(ours)
    full = tcpsnap.read(path)
    mine = full[full.inode.isin(ours)]          # never a TIME_WAIT (inode 0)
    events = tcpsnap.read(path, mode="changes")
    events = events[events.inode.isin(ours)]
    return mine, events, t_act, end, owners


def check_after(mine, end: int, owners: dict) -> None:
    """Every snapshot from ``end`` on holds exactly ss's sockets, each with ss's owner and
    its /proc comm."""
    assert owners, "ss shows none of the sockets"
    for name, pid in owners.values():
        assert comm(pid) == name
    late = mine[mine.timestamp.astype("int64") >= end]
    seqs = sorted(set(late.seq))
    assert len(seqs) >= 5, "no snapshot after the delay bound"
    for seq in seqs:
        snap = late[late.seq == seq]
        got = {int(r.inode): (r.process, int(r.pid)) for r in snap.itertuples()}
        assert got == owners, f"snapshot {seq}"


def owner_changed_event(events, t_act: int, pid: int) -> None:
    """The new owner came as an event (not a silent edit of later snapshots)."""
    ev = events[(events.timestamp.astype("int64") >= t_act) & (events.pid == pid)]
    assert set(ev.event) & {"changed", "opened"}, events[["seq", "event", "local_port", "pid"]]


def test_socket_passed_by_scm_rights_then_closed_by_its_first_owner(tmp_path):
    a = Child("tcpsnap-scma")
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    ours = {inode(x) for x in (lst, c, s)}
    srv = inode(s)
    try:
        def act():
            a.give(s)
            s.close()
        mine, events, t_act, end, owners = record(tmp_path, ours, act, lambda: {os.getpid(), a.pid})
        assert owners[srv] == ("tcpsnap-scma", a.pid) and len(owners) == 3
        assert mine[mine.inode == srv].pid.iloc[0] == os.getpid()
        check_after(mine, end, owners)
        owner_changed_event(events, t_act, a.pid)
    finally:
        for x in (c, lst, s):
            x.close()
        a.close()


def test_fork_then_close(tmp_path):
    a = Child("tcpsnap-forka")
    try:
        a.pair()
        ours = socket_inodes(a.pid)
        kid = [0]

        def act():
            kid[0] = a.fork("forkclose")
        mine, events, t_act, end, owners = record(tmp_path, ours, act, lambda: {kid[0]})
        assert {p for _, p in owners.values()} == {kid[0]} and len(owners) == 3
        assert (mine[mine.seq == mine.seq.min()].pid == a.pid).all()
        check_after(mine, end, owners)
        owner_changed_event(events, t_act, kid[0])
    finally:
        a.close()


def test_owner_exits_and_its_child_keeps_the_sockets(tmp_path):
    a = Child("tcpsnap-exita")
    try:
        a.pair()
        ours = socket_inodes(a.pid)
        kid = [0]

        def act():
            kid[0] = a.fork("forkexit")
            a.p.wait(10)
        mine, events, t_act, end, owners = record(tmp_path, ours, act, lambda: {kid[0]})
        assert {p for _, p in owners.values()} == {kid[0]} and len(owners) == 3
        check_after(mine, end, owners)
        owner_changed_event(events, t_act, kid[0])
    finally:
        a.close()


def test_owner_renamed_and_nothing_else_changes(tmp_path):
    a = Child("tcpsnap-old")
    try:
        a.pair()
        ours = socket_inodes(a.pid)

        def act():
            assert a.ask("name tcpsnap-new") == "ok"
        mine, events, t_act, end, owners = record(tmp_path, ours, act, lambda: {a.pid})
        assert set(owners.values()) == {("tcpsnap-new", a.pid)} and len(owners) == 3
        assert (mine[mine.seq == mine.seq.min()].process == "tcpsnap-old").all()
        check_after(mine, end, owners)
        ev = events[(events.timestamp.astype("int64") >= t_act) & (events.process == "tcpsnap-new")]
        assert len(ev) >= 3
    finally:
        a.close()


_IN_PIDNS = "TCPSNAP_TEST_OWN_PIDNS"


def test_pid_reused_by_a_new_process(tmp_path):
    """The owner exits leaving its sockets to its child, and a new process takes the
    owner's pid: the rows get the child, never the newcomer.

    The newcomer gets that pid by writing ``ns_last_pid``, which is the pid namespace's:
    so this test runs itself in a pid namespace of its own (``unshare --pid --fork
    --mount-proc``, a /proc of that namespace for the recorder and ``ss``), where it
    touches no other process of the machine and no other process takes the pid."""
    if os.environ.get(_IN_PIDNS) != "1":
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare (util-linux)")
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "pytest", "-q",
                            "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"),
                            f"{__file__}::test_pid_reused_by_a_new_process"],
                           capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent,
                           env={**os.environ, _IN_PIDNS: "1"})
        if r.returncode != 0 and r.stderr.startswith("unshare:"):
            pytest.skip(f"no pid namespace here: {r.stderr.strip()}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines()[-1].startswith("1 passed"), r.stdout    # not skipped in there
        return
    a = Child("tcpsnap-reuse")
    b: list[Child] = []
    try:
        a.pair()
        ours = socket_inodes(a.pid)
        kid = [0]
        old = a.pid

        def act():
            kid[0] = a.fork("forkexit")
            a.p.wait(10)
            b.append(Child("tcpsnap-newcomer", pid=old))
            b[0].pair()
            ours.update(socket_inodes(old))
        mine, events, t_act, end, owners = record(tmp_path, ours, act, lambda: {kid[0], old})
        assert b[0].pid == old
        theirs = {k for k, (_, p) in owners.items() if p == kid[0]}
        assert len(theirs) == 3 and len(owners) == 6
        check_after(mine, end, owners)
        owner_changed_event(events, t_act, kid[0])
    finally:
        a.close()
        for x in b:
            x.close()


def test_new_socket_on_the_four_tuple_of_a_closed_one(tmp_path):
    """Child A's connection is reset and child B opens one on the same ports (both
    ends): the new connection's rows are B's, the old one's closed."""
    a = Child("tcpsnap-tupa")
    b = Child("tcpsnap-tupb")
    try:
        lport, cport = a.pair()
        ours = socket_inodes(a.pid)

        def act():
            assert a.ask("rst") == "ok"
            assert b.pair(lport, cport) == (lport, cport)
            ours.update(socket_inodes(b.pid))
        mine, events, t_act, end, owners = record(tmp_path, ours, act, lambda: {b.pid})
        assert set(owners.values()) == {("tcpsnap-tupb", b.pid)} and len(owners) == 3
        first = mine[mine.seq == mine.seq.min()]
        assert (first.pid == a.pid).all() and len(first) == 3
        check_after(mine, end, owners)
        assert "closed" in set(events[events.timestamp.astype("int64") >= t_act].event)
        owner_changed_event(events, t_act, b.pid)
    finally:
        a.close()
        b.close()

