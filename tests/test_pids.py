"""Owning processes (Linux): Snapshotter(pids=True), process names, the edges.

Every check compares with a real pid: children report their own, forks are ours.
No timings are asserted.
"""

import json
import os
import resource  # noqa: F401  imported before any setuid child needs it
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import tcpsnap
from _sockets import closing_all, conn_rows, ends_filter, inode, kill_pidfd, pair, pidfd, rows_of, socket_inodes
from tcpsnap import Snapshotter, TcpState
from tcpsnap.pids import missing_pid_note

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pid resolution")

if sys.platform.startswith("linux"):
    import tcpsnap._cmd_show
    import tcpsnap._netlink
    import tcpsnap._procfs
    import tcpsnap.cli

# A child that owns a listener and one connection (both ends), named by prctl; on
# stdin: "name X" renames it, "fork" forks a grandchild that keeps every socket
# (prints its pid), "exit" exits (the grandchild lives on), EOF ends it.
CHILD = r"""
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
def rename(n):
    libc.prctl(15, n.encode(), 0, 0, 0)
rename(sys.argv[1])
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(16)
c = socket.create_connection(lst.getsockname()); a, _ = lst.accept()
print(os.getpid(), lst.getsockname()[1], c.getsockname()[1], flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "name":
        rename(cmd[1]); print("ok", flush=True)
    elif cmd[0] == "fork":
        pid = os.fork()
        if pid == 0:                    # keeps every socket until the test kills it
            rename("tcpsnap-grand"); time.sleep(120); os._exit(0)
        print(pid, flush=True)
    elif cmd[0] == "exit":
        os._exit(0)
"""


class Child:
    def __init__(self, name):
        self.p = subprocess.Popen([sys.executable, "-c", CHILD, name], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        pid, self.lport, self.cport = map(int, self.p.stdout.readline().split())
        assert pid == self.p.pid
        self.pid = pid
        # its listener, client and accepted end: the tests select their rows by these
        # inodes (their port numbers may be another socket's on the host too)
        self.inodes = socket_inodes(pid)
        assert len(self.inodes) == 3
        self.extra = []

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self):
        for fd in self.extra:        # pidfds: never another process that got a pid again
            kill_pidfd(fd)
        with _quiet():
            self.p.stdin.close()
        with _quiet():
            self.p.kill()
        self.p.wait(10)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (OSError, ValueError))


def fast(snap):
    """No waiting between walks: a test sees a walk on every take() that needs one."""
    r = snap.resolver
    r.walk_interval = 0.0
    r.walk_share = 1.0
    r.retry_interval = 0.0
    return snap


def names_of(snap, rows):
    codes, names = snap.process_names(rows["pid"])
    return [names[c] if c >= 0 else None for c in codes]


def test_pids_off_by_default_and_on_when_asked():
    lst, c, s = pair("127.0.0.1")
    with closing_all(lst, c, s):
        ours = {inode(x) for x in (lst, c, s)}
        with Snapshotter() as plain:
            assert plain.pids is False and plain.resolver is None
            rows = rows_of(plain.take(), ours)
            assert len(rows) == 3 and (rows["pid"] == 0).all()
        with Snapshotter(pids=True) as snap:
            assert snap.pids is True
            rows = rows_of(snap.take(), ours)
            assert len(rows) == 3 and (rows["pid"] == os.getpid()).all()
            assert set(names_of(snap, rows)) == {open("/proc/self/comm").read().strip()}


def test_child_owns_its_sockets_and_name():
    ch = Child("tcpsnap-kid")
    try:
        with Snapshotter(pids=True) as snap:
            rows = rows_of(snap.take(), ch.inodes)
            assert len(rows) == 3          # listener, client end, accepted end
            assert (rows["pid"] == ch.pid).all()
            assert names_of(snap, rows) == ["tcpsnap-kid"] * 3
            df = tcpsnap.to_pandas(rows, names=snap.process_names)
            assert list(df["process"].astype(str)) == ["tcpsnap-kid"] * 3
    finally:
        ch.close()


def test_no_walk_while_every_inode_is_known():
    ch = Child("tcpsnap-steady")
    dumper = tcpsnap._netlink.NetlinkDumper()
    res = tcpsnap._procfs.PidResolver(walk_interval=0.0, walk_share=1.0, retry_interval=0.0)
    try:
        n = dumper.dump()
        table = dumper.rows[:n].copy()      # one table, replayed: nothing new can appear
        for _ in range(6):                  # until unresolvable inodes stop asking
            rows = table.copy()
            res.resolve(rows, n)
        assert res.stats["pending"] == 0 and res.stats["retry"] == 0
        walks = res.stats["walks"]
        for _ in range(5):
            rows = table.copy()
            res.resolve(rows, n)
            assert (rows_of(rows, ch.inodes)["pid"] == ch.pid).all()
        assert res.stats["walks"] == walks
    finally:
        dumper.close()
        ch.close()


def test_new_connection_resolved_on_a_later_take():
    with Snapshotter(pids=True) as snap:
        snap.take()
        fast(snap)
        lst, c, s = pair("127.0.0.1")
        with closing_all(lst, c, s):
            rows = rows_of(snap.take(), {inode(x) for x in (lst, c, s)})
            assert len(rows) == 3 and (rows["pid"] == os.getpid()).all()
            owner = snap.resolver.owner(inode(c))
            assert owner is not None and owner[0] == os.getpid() and owner[1] == c.fileno()


def test_time_wait_and_orphans_have_no_owner():
    lst, c, s = pair("127.0.0.1")
    lport, cport = lst.getsockname()[1], c.getsockname()[1]
    ino_lst = inode(lst)
    c.close()                           # active close: the client end goes to TIME_WAIT
    assert s.recv(1) == b""             # its FIN read first: no simultaneous close
    s.close()
    with closing_all(lst), Snapshotter(pids=True) as snap:
        # this connection's end by both ends, addresses and family: another socket on the
        # host may have either port number
        tw = conn_rows(snap.take(), "127.0.0.1", cport, lport)
        assert len(tw) == 1 and tw["state"][0] == TcpState.TIME_WAIT
        assert tw["inode"][0] == 0 and tw["pid"][0] == 0
        assert rows_of(snap.take(), {ino_lst})["state"].tolist() == [TcpState.LISTEN]


def _fork_holding(*socks):
    """Fork a child that keeps every descriptor until the returned pipe end closes."""
    r, w = os.pipe()
    return _fork_keeping(r, w), w


def _pid_of(snap, ino):
    rows = snap.take()
    rows = rows[rows["inode"] == ino]
    assert len(rows) == 1
    return int(rows["pid"][0])


def test_forked_pair_shares_one_socket():
    lst, c, s = pair("127.0.0.1")
    ours = {inode(x) for x in (lst, c, s)}
    pid, w = _fork_holding()
    try:
        with Snapshotter(pids=True) as snap:
            fast(snap)
            rows = rows_of(snap.take(), ours)
            assert len(rows) == 3
            # documented owner of a shared socket: the lowest pid holding it
            assert (rows["pid"] == min(os.getpid(), pid)).all()
            assert set(names_of(snap, rows)) <= {open("/proc/self/comm").read().strip()}
            # the parent lets go of the accepted end: a socket seen shared is re-checked
            # on every take, so the next walk gives it to the child; never to a process
            # that does not hold it
            ino_s = inode(s)
            s.close()
            got = [_pid_of(snap, ino_s) for _ in range(3)]
            assert all(g in (os.getpid(), pid, 0) for g in got)
            assert got[-1] == pid, got
            # the listener and client are still shared: still the lowest pid
            rows = rows_of(snap.take(), ours - {ino_s})
            assert len(rows) == 2 and (rows["pid"] == min(os.getpid(), pid)).all()
    finally:
        os.close(w)
        os.waitpid(pid, 0)
        lst.close()
        c.close()


def _fork_keeping(r, w):
    """As _fork_holding, with a pipe made before (so that forking opens no descriptor
    in this process): the child keeps every descriptor until ``w`` closes."""
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    return pid


#: tcpsnap._procfs: the slower re-check cursor reads every owned link once per this many
#: laps of the fast one (32 takes each at verify_interval 0)
BACKSTOP = 4


def test_owner_that_forks_then_closes_is_noticed_within_the_bound():
    """Resolved with one holder; then fork, and the parent closes its copy (one
    descriptor fewer). Only the periodic re-check can see that: the owner's descriptor
    count moved, so within max(verify_interval, 32 takes)."""
    lst, c, s = pair("127.0.0.1")
    ino_s = inode(s)
    r, w = os.pipe()
    with closing_all(lst, c), Snapshotter(pids=True) as snap:
        fast(snap).resolver.verify_interval = 0.0     # the 32-take bound alone
        assert _pid_of(snap, ino_s) == os.getpid()
        pid = _fork_keeping(r, w)
        try:
            s.close()
            got = [_pid_of(snap, ino_s) for _ in range(34)]
            assert all(g in (os.getpid(), pid, 0) for g in got)
            assert got[-1] == pid, got
            assert snap.pid_stats["moved"] >= 1
        finally:
            os.close(w)
            os.waitpid(pid, 0)


@pytest.mark.skipif(sys.platform.startswith("linux") and os.stat("/proc/self/fd").st_size == 0,
                    reason="Linux < 6.2: /proc/<pid>/fd gives no descriptor count")
def test_hand_off_that_keeps_the_descriptor_count_is_noticed_by_the_backstop():
    """As above, but the parent opens a descriptor as it closes the socket (the count
    stays): the count says nothing, so the links the fast cursor looks at are not
    read (counted as skipped) and the backstop finds it: within 4 x max(verify_interval,
    32 takes)."""
    lst, c, s = pair("127.0.0.1")
    ino_s = inode(s)
    r, w = os.pipe()
    with closing_all(lst, c), Snapshotter(pids=True) as snap:
        res = fast(snap).resolver
        res.verify_interval = 0.0
        assert _pid_of(snap, ino_s) == os.getpid()
        for _ in range(40):                            # a baseline count, then looks
            snap.take()
        before = _fd_count()
        pid = _fork_keeping(r, w)
        others = []
        try:
            skipped = res.stats["verify_skipped"]
            s.close()
            while _fd_count() < before:                # the same count as before the close
                others.append(os.open("/dev/null", os.O_RDONLY))
            assert _fd_count() == before
            got = [_pid_of(snap, ino_s) for _ in range(BACKSTOP * 32 + 2)]
            assert all(g in (os.getpid(), pid, 0) for g in got)
            assert got[-1] == pid, got
            assert res.stats["verify_skipped"] > skipped
        finally:
            for fd in others:
                os.close(fd)
            os.close(w)
            os.waitpid(pid, 0)


def _fd_count():
    return os.stat("/proc/self/fd").st_size


@pytest.mark.skipif(sys.platform.startswith("linux") and os.stat("/proc/self/fd").st_size == 0,
                    reason="Linux < 6.2: /proc/<pid>/fd gives no descriptor count")
def test_background_rounds_skip_the_links_of_an_owner_whose_count_stays():
    """Off the capture path (the recorder's resolver): an idle owner's links are looked
    at round after round but read only by the backstop; its rows keep their pid."""
    ch = Child("tcpsnap-idle")
    try:
        with Snapshotter(pids=True) as snap:
            res = fast(snap).resolver
            res.background = True
            res.verify_interval = 0.0
            rows = rows_of(snap.take(), ch.inodes)
            assert len(rows) == 3 and (rows["pid"] == ch.pid).all()
            # a lap is 32 slices: within a few laps each of the child's 3 sockets is looked
            # at and (its count unchanged) not read, unless by the backstop
            for _ in range(8 * 32):
                rows = rows_of(snap.take(), ch.inodes)
                assert (rows["pid"] == ch.pid).all()
                if res.stats["verify_skipped"] >= 3:
                    break
                time.sleep(0.06)                   # a round at most every 50 ms
            assert res.stats["verify_skipped"] >= 3
    finally:
        ch.close()


def test_owner_exits_and_the_socket_lives_on_in_its_child():
    ch = Child("tcpsnap-parent")
    try:
        with Snapshotter(pids=True) as snap:
            fast(snap)
            rows = rows_of(snap.take(), ch.inodes)
            assert (rows["pid"] == ch.pid).all()
            grand = int(ch.ask("fork"))
            ch.extra.append(pidfd(grand))   # its parent exits: killed by pidfd
            assert (rows_of(snap.take(), ch.inodes)["pid"] == ch.pid).all()
            ch.p.stdin.write("exit\n")
            ch.p.stdin.flush()
            ch.p.wait(10)
            rows = rows_of(snap.take(), ch.inodes)
            assert len(rows) == 3 and (rows["pid"] == grand).all(), rows["pid"]
            assert names_of(snap, rows) == ["tcpsnap-grand"] * 3
            assert snap.pid_stats["owner_exits"] >= 1
    finally:
        ch.close()


def test_process_exiting_between_dump_and_walk_is_no_error():
    ch = Child("tcpsnap-gone")
    dumper = tcpsnap._netlink.NetlinkDumper()
    res = tcpsnap._procfs.PidResolver(walk_interval=0.0, retry_interval=0.0)
    try:
        n = dumper.dump()
        rows = dumper.rows
        mine = np.isin(rows[:n]["inode"], list(ch.inodes))
        assert mine.sum() == 3
        ch.p.kill()
        ch.p.wait(10)
        res.resolve(rows, n)                # the dump's rows, its owner gone: a walk, no owner
        assert (rows[:n][mine]["pid"] == 0).all()
        assert res.stats["walks"] == 1
    finally:
        dumper.close()
        ch.close()


def test_process_exiting_during_many_takes():
    """Short-lived children connect and exit while we take snapshots: no errors, and
    every pid shown on their connections is one of theirs."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(128)
    port = lst.getsockname()[1]
    script = (f"import socket, sys, time; s = socket.create_connection(('127.0.0.1', {port})); "
              "time.sleep(float(sys.argv[1]))")
    kids, accepted = [], []
    with Snapshotter(pids=True) as snap:
        fast(snap)
        deadline = time.monotonic() + 4
        bad = []
        while time.monotonic() < deadline:
            if len(kids) < 40:
                kids.append(subprocess.Popen([sys.executable, "-c", script, str(0.05 * (len(kids) % 7))]))
            lst.settimeout(0.001)
            try:
                while True:
                    accepted.append(lst.accept()[0])
            except (TimeoutError, BlockingIOError):
                pass
            rows = snap.take()
            # clients of our listener (127.0.0.1:port): by address and family too, not
            # the port number alone (another socket on the host may have it)
            theirs = conn_rows(rows, "127.0.0.1", None, port)
            theirs = theirs[theirs["pid"] != 0]
            ours = set(k.pid for k in kids)
            bad += [int(p) for p in theirs["pid"] if int(p) not in ours]
            for k in list(kids):
                if k.poll() is not None:
                    kids.remove(k)
        for k in kids:
            k.wait(10)
        assert not bad
        assert snap.pid_stats["walks"] > 1
    lst.close()
    for a in accepted:
        a.close()


def test_pid_reuse_simulated_by_a_name_change():
    ch = Child("tcpsnap-a")
    try:
        with Snapshotter(pids=True) as snap:
            fast(snap)
            rows = rows_of(snap.take(), ch.inodes)
            assert names_of(snap, rows) == ["tcpsnap-a"] * 3
            assert ch.ask("name tcpsnap-b") == "ok"
            # same process, renamed: the cached name holds for name_ttl...
            assert names_of(snap, rows) == ["tcpsnap-a"] * 3
            # ...and now pretend the pid went to a new process (start time differs):
            # the cache must not answer with the old name
            snap.resolver._forge_start(ch.pid, 1)
            snap.resolver.name_ttl = 0.0
            assert names_of(snap, rows) == ["tcpsnap-b"] * 3
            # the sockets the forged "old" process owned are resolved again, correctly
            rows = rows_of(snap.take(), ch.inodes)
            rows = rows_of(snap.take(), ch.inodes)
            assert (rows["pid"] == ch.pid).all()
            # a plain rename is picked up once name_ttl has passed
            assert ch.ask("name tcpsnap-c") == "ok"
            assert names_of(snap, rows) == ["tcpsnap-c"] * 3
    finally:
        ch.close()


def test_process_names_interface():
    with Snapshotter(pids=True) as snap:
        codes, names = snap.process_names(np.array([0, os.getpid(), os.getpid(), 0], dtype=np.uint32))
        assert codes.dtype == np.int32 and list(codes) == [-1, 0, 0, -1]
        assert names == [open("/proc/self/comm").read().strip()]
        codes, names = snap.process_names(np.zeros(0, np.uint32))
        assert len(codes) == 0 and names == []
        # a pid with no process: -1
        free_pid = 4_000_000_000
        assert list(snap.process_names(np.array([free_pid], np.uint32))[0]) == [-1]
    # without pids=True, names still come from the shared cache
    with Snapshotter() as snap:
        codes, names = snap.process_names(np.array([os.getpid()], np.uint32))
        assert names[codes[0]] == open("/proc/self/comm").read().strip()


def test_to_pandas_process_column():
    lst, c, s = pair("127.0.0.1")
    with closing_all(lst, c, s):
        df = tcpsnap.to_pandas(tcpsnap.snapshot(pids=True))
        mine = df[df.local_port == lst.getsockname()[1]]
        assert (mine.pid == os.getpid()).all()
        assert set(mine.process.astype(str)) == {open("/proc/self/comm").read().strip()}
        assert str(df.process.dtype) == "category"
        assert df.process[df.pid == 0].isna().all()
        assert tcpsnap.to_pandas(tcpsnap.snapshot(), names=False).process.isna().all()


def test_eviction_keeps_the_cache_bounded_under_churn():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(256)
    live = []
    sizes = []
    prev_owners: set = set()
    with Snapshotter(pids=True) as snap:
        fast(snap)
        for i in range(400):
            for _ in range(5):          # 5 new connections a round, the oldest go
                c = socket.create_connection(lst.getsockname())
                a, _ = lst.accept()
                for x in (c, a):
                    x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                live.append((c, a))
            while len(live) > 30:
                for x in live.pop(0):
                    x.close()
            rows = snap.take()
            st = snap.pid_stats
            with_inode = int((rows["inode"] != 0).sum())
            assert st["entries"] == with_inode          # nothing gone is kept
            # processes the table references now or did one snapshot ago (a process no
            # row references is forgotten one snapshot later); the host's other processes
            # count too, so the bound comes from the table, not a constant
            owners = set(rows["pid"][rows["pid"] != 0].tolist())
            assert st["processes"] <= len(owners | prev_owners)
            prev_owners = owners
            # the map follows the table (load <= 0.7), not the 2,000 connections that came and went
            assert st["map_slots"] <= max(1024, 4 * with_inode)
            sizes.append((st["map_slots"], st["processes"]))
            if i % 50 == 0:
                mine = rows[(rows["local_port"] == lst.getsockname()[1]) | (rows["remote_port"] == lst.getsockname()[1])]
                assert (mine["pid"][mine["inode"] != 0] == os.getpid()).all()
        assert snap.pid_stats["evicted"] >= 1900
    for c, a in live:
        c.close()
        a.close()
    lst.close()


def _as_nobody(fn):
    """Run fn() in a forked child that dropped to nobody; return what it returns."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = json.dumps(fn()).encode()
            os.write(w, out)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"error": repr(e)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(os.geteuid() != 0 if hasattr(os, "geteuid") else True, reason="needs root to drop to nobody")
def test_unprivileged_sees_its_own_pids_and_zero_for_others():
    ch = Child("tcpsnap-root")          # root's process: nobody may not read its fds

    def child():
        lst, c, s = pair("127.0.0.1")
        with Snapshotter(pids=True) as snap:
            rows = snap.take()
            own = rows_of(rows, {inode(x) for x in (lst, c, s)})
            root = rows_of(rows, ch.inodes)
            note = missing_pid_note(root, snap.pid_stats)
            got = {"me": os.getpid(), "own": own["pid"].tolist(), "root": root["pid"].tolist(),
                   "denied": snap.pid_stats["denied"], "note": note,
                   "names": names_of(snap, own)}
            if len(root) != 3 or len(own) != 3:     # what the table held, to explain it
                got["rows"] = [str(r) for r in root] + [str(r) for r in own]
                got["n"] = len(rows)
                got["stats"] = {k: str(v) for k, v in snap.stats.items()} if hasattr(snap, "stats") else None
                got["ss"] = subprocess.run(["ss", "-tanpe"], capture_output=True, text=True).stdout
            return got

    try:
        got = _as_nobody(child)
        assert "error" not in got, got
        assert len(got["root"]) == 3 and len(got["own"]) == 3, (ch.inodes, ch.lport, ch.cport, got)
        assert got["own"] == [got["me"]] * 3
        assert got["root"] == [0, 0, 0]
        assert got["denied"] >= 1
        assert "CAP_SYS_PTRACE" in got["note"]
        assert got["names"][0] is not None
    finally:
        ch.close()


@pytest.mark.skipif(os.geteuid() != 0 if hasattr(os, "geteuid") else True, reason="needs root to drop to nobody")
def test_show_says_once_why_pids_are_missing():
    ch = Child("tcpsnap-root")

    def child():
        import contextlib
        import io
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = tcpsnap.cli.main(["show", "--format", "json", "--port", str(ch.lport)])
        return {"rc": rc, "err": err.getvalue(), "rows": json.loads(out.getvalue())}

    try:
        got = _as_nobody(child)
        assert got["rc"] == 0, got
        assert got["err"].count("tcpsnap: note:") == 1 and "no pid" in got["err"]
        assert {r["pid"] for r in got["rows"]} == {0}
        assert {r["process"] for r in got["rows"]} == {None}
    finally:
        ch.close()


def test_show_has_pid_and_process_columns():
    ch = Child("tcpsnap-show")
    try:
        # both ends with their address: in the host namespace another socket may have
        # either port number (a TIME_WAIT left by another test whose remote port is the
        # listener's, a client of another destination given the same port by connect())
        own = ("--port", str(ch.lport), "--filter", ends_filter("127.0.0.1", ch.lport, ch.cport))
        run = lambda *a: subprocess.run([sys.executable, "-m", "tcpsnap", "show", *a, *own],
                                        capture_output=True, text=True, timeout=60)
        p = run("--format", "json")
        assert p.returncode == 0, p.stderr
        rows = json.loads(p.stdout)
        assert len(rows) == 3
        assert {(r["pid"], r["process"]) for r in rows} == {(ch.pid, "tcpsnap-show")}
        table = run().stdout.splitlines()
        assert table[0].split()[-2:] == ["PID", "Process"]
        assert all(line.split()[-2:] == [str(ch.pid), "tcpsnap-show"] for line in table[1:])
        rows = json.loads(run("--format", "json", "--no-pids").stdout)
        assert {(r["pid"], r["process"]) for r in rows} == {(0, None)}
    finally:
        ch.close()


def test_no_pidfds_falls_back_to_start_times():
    ch = Child("tcpsnap-nofd")
    try:
        res = tcpsnap._procfs.PidResolver(walk_interval=0.0, walk_share=1.0, retry_interval=0.0,
                                          max_pidfds=0)
        dumper = tcpsnap._netlink.NetlinkDumper()
        try:
            def take():
                n = dumper.dump()
                res.resolve(dumper.rows, n)
                return rows_of(dumper.rows[:n], ch.inodes)
            assert (take()["pid"] == ch.pid).all()
            assert res.stats["pidfds"] == 0
            grand = int(ch.ask("fork"))
            ch.extra.append(pidfd(grand))   # its parent exits: killed by pidfd
            ch.p.stdin.write("exit\n")
            ch.p.stdin.flush()
            ch.p.wait(10)
            rows = take()
            assert (rows["pid"] == grand).all(), rows["pid"]
        finally:
            dumper.close()
    finally:
        ch.close()


BIG = r"""
import os, socket, sys
nul = [os.open("/dev/null", os.O_RDONLY) for _ in range(2600)]   # fds 3..2602
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(64)
pairs = []
for _ in range(20):
    c = socket.create_connection(lst.getsockname()); a, _ = lst.accept(); pairs += (c, a)
low = os.dup2(pairs[0].fileno(), 3)          # the first client also at fd 3 (block 0)
print(os.getpid(), lst.getsockname()[1], pairs[0].fileno(), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("threads,block", [(1, 1024), (2, 1024), (3, 1024), (2, 0), (2, 100)])
def test_large_fd_table_read_in_blocks(threads, block):
    """A process with thousands of descriptors is shared between walk threads block
    by block; every socket still gets it, at its lowest descriptor."""
    p = subprocess.Popen([sys.executable, "-c", BIG], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid, port, cfd = map(int, p.stdout.readline().split())
        dumper = tcpsnap._netlink.NetlinkDumper()
        res = tcpsnap._procfs.PidResolver(threads=threads)
        res.block = block
        try:
            res.begin()
            n = dumper.dump()
            res.resolve(dumper.rows, n)
            rows = rows_of(dumper.rows[:n], socket_inodes(pid))
            assert len(rows) == 41 and (rows["pid"] == pid).all()
            assert res.stats["last_walk_fds"] > 2600
            fds = sorted(res.owner(int(i))[1] for i in rows["inode"])
            assert fds[0] == 3 and cfd not in fds     # the dup at fd 3 wins over the original
            assert fds[-1] > 2602
        finally:
            dumper.close()
    finally:
        p.stdin.close()
        p.wait(10)


def test_walk_stops_once_every_unresolved_row_is_found():
    """/proc lists processes in ascending pid order: once every unresolved row has been
    found, later (higher) pids cannot be a lower owner, and are not read."""
    lst, c, s = pair("127.0.0.1")
    kids = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    dumper = tcpsnap._netlink.NetlinkDumper()
    try:
        res = tcpsnap._procfs.PidResolver(threads=1)
        n = dumper.dump()
        rows = dumper.rows[:n]
        mine = rows[np.isin(rows["inode"], [inode(lst), inode(c), inode(s)])].copy()
        assert len(mine) == 3
        res.resolve(mine, len(mine))
        assert (mine["pid"] == os.getpid()).all()
        later = sum(1 for k in kids if k.pid > os.getpid())
        assert res.stats["skipped_procs"] >= later
    finally:
        dumper.close()
        for k in kids:
            k.kill()
            k.wait()
        for x in (lst, c, s):
            x.close()
