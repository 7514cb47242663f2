"""The recorder's footprint: /proc walks off the capture path, memory limits, no pandas.

No timings are asserted: where a test needs a walk to be slow, a child holds tens of
thousands of descriptors, and what is checked is the order of events and the pids.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from _sockets import rows_of, socket_inodes
from tcpsnap import Recorder, Snapshotter
from tcpsnap.record.footprint import MIN_ROW_GROUP, ROW_GROUP_CAP, MemoryGuard, cgroup_memory_max

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pid resolution")

# A child that holds N extra descriptors (/dev/null), then on "conn" opens a loopback
# connection (both ends its own) and prints its pid, the client end's inode and the
# monotonic ns just after; EOF ends it.
HOLDER = r"""
import os, resource, socket, sys, time
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
fd = os.open("/dev/null", os.O_RDONLY)
held = [os.dup(fd) for _ in range(n)]
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(16)
print("ready", flush=True)
keep = []
for line in sys.stdin:
    c = socket.create_connection(lst.getsockname()); a, _ = lst.accept()
    keep += [c, a]
    print(os.getpid(), os.fstat(c.fileno()).st_ino, time.monotonic_ns(), flush=True)
"""


class Holder:
    def __init__(self, fds: int):
        self.p = subprocess.Popen([sys.executable, "-c", HOLDER, str(fds)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.p.stdout is not None and self.p.stdout.readline().strip() == "ready"

    def connect(self) -> tuple[int, int, int]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("conn\n")
        self.p.stdin.flush()
        pid, ino, t = map(int, self.p.stdout.readline().split())
        return pid, ino, t

    def close(self) -> None:
        if self.p.stdin is not None:
            self.p.stdin.close()
        self.p.wait(10)


def _hard_nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@linux
@pytest.mark.skipif(_hard_nofile() < 16000, reason="needs RLIMIT_NOFILE >= 16000")
def test_background_walk_never_delays_take_and_its_pid_lands_later():
    h = Holder(15000)  # a walk reads 15k links: far longer than a take of a small table
    try:
        with Snapshotter(pids=True) as snap:
            res = snap.resolver
            res.background = True
            res.walk_interval = 0.0
            res.walk_share = 1e6  # no pause between walks
            snap.take()  # the cold walk (empty map) is done in place
            walks = res.stats["walks"]
            pid, ino, _ = h.connect()
            rows = snap.take()  # sees the new socket, starts a walk, does not wait for it
            st = res.stats
            row = rows[rows["inode"] == ino]
            assert len(row) == 1 and row["pid"][0] == 0  # pending: 0, never a guess
            assert st["walking"] and st["walks"] == walks  # the walk goes on after take()
            takes_during = 0
            got = 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                rows = snap.take()
                row = rows[rows["inode"] == ino]
                got = int(row["pid"][0])
                assert got in (0, pid)  # never another process's pid
                if got:
                    break
                takes_during += 1
                time.sleep(0.002)
            assert got == pid
            assert res.stats["walks"] == walks + 1
            assert takes_during >= 1  # snapshots went on while the walk ran
    finally:
        h.close()


@linux
def test_synchronous_walk_is_still_the_default_of_a_snapshotter():
    h = Holder(10)
    try:
        with Snapshotter(pids=True) as snap:
            assert snap.resolver.background is False
            snap.resolver.walk_interval = 0.0
            snap.resolver.walk_share = 1e6
            snap.take()
            pid, ino, _ = h.connect()
            rows = snap.take()
            assert rows[rows["inode"] == ino]["pid"][0] == pid
    finally:
        h.close()


@linux
def test_recording_gives_a_child_socket_its_pid_later_and_never_a_wrong_one(tmp_path):
    """A connection a child opens while recording (10 ms, pids in the background) is
    recorded with pid 0 until a walk found it, then with the child's pid in every
    snapshot; never another pid. (How soon is a benchmark: bench_footprint stall.)"""
    import pyarrow.dataset as ds

    h = Holder(1000)
    try:
        with Recorder(tmp_path / "rec", interval="10ms", pids=True, nice=None) as rec:
            res = rec._snap.resolver
            assert res.background is True
            rec.run(duration="0.3s")
            pid, ino, t_open = h.connect()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (res.owner(ino) or (0,))[0] != pid:
                rec.run(duration="0.2s")
            rec.run(duration="0.3s")  # a few snapshots with the pid
    finally:
        h.close()
    t = ds.dataset(str(tmp_path / "rec"), format="parquet", partitioning="hive").to_table(
        columns=["inode", "pid", "seq", "process"]).to_pandas()
    mine = t[t.inode == ino].sort_values("seq")
    pids = mine.pid.tolist()
    assert len(pids) > 20 and set(pids) <= {0, pid} and pids[-1] == pid
    first = pids.index(pid)
    assert all(p == pid for p in pids[first:])  # once known, kept
    assert mine.process.iloc[first:].str.startswith("python").all()
    assert mine.process.iloc[:first].isna().all()  # pending: no process either


def test_recorder_never_imports_pandas(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from tcpsnap import Recorder
        with Recorder({str(tmp_path / 'rec')!r}, interval="10ms", nice=None) as rec:
            rec.run(duration="0.3s")
        print(rec.snapshots > 0, "pandas" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]


@pytest.mark.parametrize("mode", ["full", "changes"])
def test_recorder_does_without_pyarrow_compute(tmp_path, mode):
    """pyarrow.compute (its kernels' Python wrappers, ~8 MiB resident) is never loaded
    by a recording: dictionary encoding is tcpsnap._encode's."""
    code = textwrap.dedent(f"""
        import sys
        from tcpsnap import Recorder
        with Recorder({str(tmp_path / 'rec')!r}, interval="10ms", nice=None, mode={mode!r},
                      rotate="0.2s") as rec:
            rec.run(duration="0.5s")
        print(len(rec.files) > 1, rec.snapshots > 0, "pyarrow._compute" in sys.modules,
              "pyarrow.compute" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False", "False"]


def test_tcpsnap_record_uses_the_system_arrow_pool(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from tcpsnap.cli import main
        rc = main(["record", {str(tmp_path / 'rec')!r}, "--duration", "0.2s", "-q"])
        import pyarrow
        print(rc, pyarrow.default_memory_pool().backend_name, "pandas" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "system", "False"]


@pytest.mark.parametrize("bad", ["0", "-5MiB", "12XB", "lots"])
def test_max_rss_bad_values_are_usage_errors(tmp_path, bad):
    out = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "rec"),
                          "--duration", "0.1s", f"--max-rss={bad}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-rss" in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "rec").exists()


def test_max_rss_in_the_config_file_equals_the_option(tmp_path):
    from tcpsnap.cli import build_parser  # type: ignore[attr-defined]

    conf = tmp_path / "t.toml"
    conf.write_text('dir = "rec"\nmax-rss = "100MiB"\n')
    from tcpsnap._config import resolve

    p = build_parser()
    from_file = resolve(p.parse_args(["record", "--config", str(conf)]))
    from_cli = resolve(p.parse_args(["record", str(tmp_path / "rec"), "--max-rss", "100MiB"]))
    assert from_file.max_rss == from_cli.max_rss == 100 << 20


def test_tiny_max_rss_degrades_and_never_crashes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tcpsnap.recorder")
    with Recorder(tmp_path / "rec", interval="0", pids=False, max_rss="1MiB", nice=None) as rec:
        rec.run(duration="0.5s")
    st = rec.stats
    assert st["memory_limit"] == 1 << 20
    assert st["row_group_rows"] == MIN_ROW_GROUP
    assert rec.snapshots > 0
    hints = [r for r in caplog.records if "--mode changes" in r.getMessage()]
    assert len(hints) == 1  # said once
    import pyarrow.dataset as ds

    t = ds.dataset(str(tmp_path / "rec"), format="parquet", partitioning="hive").to_table(columns=["seq"])
    assert len(set(t.column("seq").to_pylist())) == rec.snapshots  # nothing lost


def test_max_rss_parses_iec_sizes():
    from tcpsnap.record.config import RecorderConfig

    assert RecorderConfig.make("x", max_rss="100MiB").max_rss == 100 << 20
    assert RecorderConfig.make("x", max_rss=5000).max_rss == 5000
    assert RecorderConfig.make("x").max_rss is None
    with pytest.raises(ValueError):
        RecorderConfig.make("x", max_rss="0")


def test_row_groups_are_capped_without_a_limit():
    g = MemoryGuard(None)
    assert g.plan(1 << 20, 24, 1 << 14) == (ROW_GROUP_CAP, 24)
    assert g.plan(1000, 24, 1 << 14) == (1000, 24)
    assert g.check() is False


def test_cgroup_limits_are_read(tmp_path):
    root = tmp_path / "cg"
    (root / "system.slice" / "tcpsnap.service").mkdir(parents=True)
    (root / "system.slice" / "tcpsnap.service" / "memory.max").write_text("134217728\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/tcpsnap.service\n")
    assert cgroup_memory_max(str(proc), str(root)) == 128 << 20
    (root / "system.slice" / "tcpsnap.service" / "memory.max").write_text("max\n")
    assert cgroup_memory_max(str(proc), str(root)) is None
    (root / "memory" / "a").mkdir(parents=True)
    (root / "memory" / "a" / "memory.limit_in_bytes").write_text("1048576\n")
    proc.write_text("4:memory:/a\n")
    assert cgroup_memory_max(str(proc), str(root)) == 1 << 20
    assert cgroup_memory_max(str(tmp_path / "none"), str(root)) is None


@linux
def test_changes_mode_records_a_late_pid_as_a_change(tmp_path):
    """Changes mode with background walks: a connection first recorded with pid 0 gets
    its pid by a ``changed`` event, and the rebuilt snapshots show 0 before, the child's
    pid after, never another."""
    import tcpsnap

    h = Holder(1000)
    try:
        with Recorder(tmp_path / "rec", interval="10ms", pids=True, mode="changes", nice=None,
                      destroy=False) as rec:
            res = rec._snap.resolver
            rec.run(duration="0.3s")
            pid, ino, t_open = h.connect()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (res.owner(ino) or (0,))[0] != pid:
                rec.run(duration="0.2s")
            rec.run(duration="0.3s")
    finally:
        h.close()
    full = tcpsnap.read(tmp_path / "rec")
    mine = full[full.inode == ino].sort_values("seq")
    assert len(mine) > 20
    pids = mine.pid.tolist()
    assert set(pids) <= {0, pid} and pids[-1] == pid
    first = pids.index(pid)
    assert all(p == pid for p in pids[first:])  # once known, kept
    events = tcpsnap.read(tmp_path / "rec", mode="changes")
    ev = events[events.inode == ino]
    if first > 0:  # recorded as pending first: the pid came as a change
        changed = ev[ev.event == "changed"]
        assert len(changed) >= 1 and changed.pid.iloc[0] == pid


# A child holding one loopback connection (both ends), named by prctl; "name X" on stdin
# renames it and answers "ok"; EOF ends it.
NAMED = r"""
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(1)
c = socket.create_connection(lst.getsockname()); a, _ = lst.accept()
print(os.getpid(), lst.getsockname()[1], flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "name":
        libc.prctl(15, cmd[1].encode(), 0, 0, 0); print("ok", flush=True)
    elif cmd[0] == "handoff":  # a child keeps the sockets, this process closes its own
        kid = os.fork()
        if kid == 0:
            import time; libc.prctl(15, b"tcpsnap-kid", 0, 0, 0); time.sleep(300); os._exit(0)
        for s in (lst, c, a):
            os.close(s.detach())
        print(kid, flush=True)
"""


class Named:
    def __init__(self, name: str):
        self.p = subprocess.Popen([sys.executable, "-c", NAMED, name], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.p.stdout is not None
        self.pid, self.port = map(int, self.p.stdout.readline().split())
        # its three sockets, which the tests select by inode: another socket on the host
        # may have its listener's port number at either end
        self.inodes = socket_inodes(self.pid)
        assert len(self.inodes) == 3

    def rename(self, name: str) -> None:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(f"name {name}\n")
        self.p.stdin.flush()
        assert self.p.stdout.readline().strip() == "ok"

    def handoff(self) -> int:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("handoff\n")
        self.p.stdin.flush()
        self.kid = int(self.p.stdout.readline())
        return self.kid

    def close(self) -> None:
        kid = getattr(self, "kid", 0)
        if kid:
            with contextlib.suppress(OSError):
                os.kill(kid, 9)
        if self.p.stdin is not None:
            self.p.stdin.close()
        self.p.wait(10)


def _in_thread(fn, *args):
    """Run fn in a thread; True if it returned within 120 s (a hang detector, not a
    timing: what it runs takes well under a second when nothing blocks it)."""
    import threading

    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    t.join(120)
    return not t.is_alive()


@linux
def test_a_blocked_name_lookup_never_delays_take_and_the_new_name_lands_later():
    ch = Named("tcpsnap-old")
    r, w = os.pipe()
    try:
        with Snapshotter(pids=True) as snap:
            res = snap.resolver
            res.background = True
            res.name_ttl = 0.0         # every name is due for a re-read at once
            rows = snap.take()
            mine = rows_of(rows, ch.inodes)
            assert len(mine) == 3 and (mine["pid"] == ch.pid).all()
            res._name_block = r        # each lookup waits for a byte on the pipe: blocked
            codes, names = snap.process_names(mine["pid"])
            assert [names[c] for c in codes] == ["tcpsnap-old"] * 3  # the walk read it
            assert res.stats["naming"] and res.stats["name_jobs"] == 1  # a lookup blocked
            ch.rename("tcpsnap-new")
            seen: list = []

            def snapshots():
                for _ in range(50):
                    rows = snap.take()
                    m = rows[rows["pid"] == ch.pid]
                    c, n = snap.process_names(m["pid"])
                    seen.append({n[x] for x in c})

            assert _in_thread(snapshots)  # 50 snapshots while the lookup stays blocked
            assert seen == [{"tcpsnap-old"}] * 50  # the cached name, never a gap
            assert res.stats["name_jobs"] == 1 and res.stats["names_refreshed"] == 0
            res._name_block = -1
            os.write(w, b"x" * 64)     # the lookup ends: a later call takes the new name up
            deadline = time.monotonic() + 60
            got = None
            while time.monotonic() < deadline and got != {"tcpsnap-new"}:
                rows = snap.take()
                m = rows[rows["pid"] == ch.pid]
                c, n = snap.process_names(m["pid"])
                got = {n[x] for x in c}
                time.sleep(0.005)
            assert got == {"tcpsnap-new"}
            assert res.stats["names_refreshed"] >= 1
    finally:
        ch.close()
        os.close(w)
        os.close(r)


@linux
def test_recording_goes_on_while_a_name_lookup_is_blocked(tmp_path):
    """The recorder's names come from the cache; a re-read that blocks (here: on a pipe)
    leaves every snapshot to be taken, with the name it had, and the new name is
    recorded in a later snapshot once the lookup ends."""
    import pyarrow.dataset as ds

    ch = Named("tcpsnap-old")
    r, w = os.pipe()
    try:
        with Recorder(tmp_path / "rec", interval="10ms", pids=True, nice=None) as rec:
            res = rec._snap.resolver
            res.name_ttl = 0.0
            res._name_block = r
            assert _in_thread(rec.run, "0.2s")
            assert res.stats["naming"] and res.stats["names_refreshed"] == 0
            ch.rename("tcpsnap-new")
            before = rec.snapshots
            assert _in_thread(rec.run, "0.5s")
            blocked = rec.snapshots - before
            assert blocked >= 10 and res.stats["name_jobs"] == 1  # still that one lookup
            last_blocked_seq = rec.stats["last_seq"]
            res._name_block = -1
            os.write(w, b"x" * 64)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and res.stats["names_refreshed"] == 0:
                rec.run(duration="0.1s")
            rec.run(duration="0.2s")
    finally:
        ch.close()
        os.close(w)
        os.close(r)
    t = ds.dataset(str(tmp_path / "rec"), format="parquet", partitioning="hive").to_table(
        columns=["pid", "seq", "process"]).to_pandas()
    mine = t[t.pid == ch.pid].sort_values("seq")
    names = mine.groupby("seq").process.agg(lambda s: set(s.astype(str)))
    assert (names.loc[:last_blocked_seq] == {"tcpsnap-old"}).all()  # every snapshot, its name
    assert names.loc[:last_blocked_seq].size >= 10
    assert names.iloc[-1] == {"tcpsnap-new"}
    changed = names[names == {"tcpsnap-new"}].index[0]
    assert (names.loc[changed:] == {"tcpsnap-new"}).all()


@linux
def test_background_owner_rechecks_move_a_handed_off_socket_to_its_holder():
    """Re-reading owners' links runs on a thread of its own (background resolver): a
    process that hands its sockets to a child and closes its own descriptors (alive,
    so no pidfd says anything) loses them when a later take merges that check, and a
    walk gives them to the child; no row ever names a third process."""
    ch = Named("tcpsnap-old")
    try:
        with Snapshotter(pids=True) as snap:
            res = snap.resolver
            res.background = True
            res.verify_interval = 0.0   # the largest slice per take
            res.walk_interval = 0.0
            res.walk_share = 1e6
            rows = snap.take()
            mine = rows_of(rows, ch.inodes)
            inodes = set(mine["inode"].tolist())
            assert len(inodes) == 3 and (mine["pid"] == ch.pid).all()
            kid = ch.handoff()
            checks = res.stats["check_jobs"]
            deadline = time.monotonic() + 60
            pids: set = {ch.pid}
            while time.monotonic() < deadline:
                rows = snap.take()
                mine = rows[np.isin(rows["inode"], list(inodes))]
                pids = set(mine["pid"].tolist())
                assert pids <= {ch.pid, kid, 0}
                if pids == {kid}:
                    break
                time.sleep(0.002)
            assert pids == {kid}
            st = res.stats
            assert st["check_jobs"] > checks and st["moved"] >= 3
            codes, names = snap.process_names(mine["pid"])
            assert {names[c] for c in codes} == {"tcpsnap-kid"}
    finally:
        ch.close()
