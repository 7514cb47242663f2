"""The pid resolver's background jobs (check rounds, name re-reads) run on two long-lived
worker threads, ``tcpsnap-check`` and ``tcpsnap-names``, not on a new thread per job; the
checks they run still catch a socket that moves to another process."""

import os
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pid resolution")

if sys.platform.startswith("linux"):
    from _sockets import closing_all, inode, pair, rows_of
    from tcpsnap import Snapshotter
    from test_pids import Child, _fork_keeping, _pid_of, fast


def _threads(name: str) -> list[int]:
    out = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                if f.read().strip() == name:
                    out.append(int(t))
        except OSError:
            pass
    return sorted(out)


def test_check_rounds_and_name_reads_run_on_one_worker_each():
    ch = Child("tcpsnap-w")
    try:
        with Snapshotter(pids=True) as snap:
            res = fast(snap).resolver
            res.background = True
            res.verify_interval = 0.0
            res.name_ttl = 0.0
            rows = rows_of(snap.take(), ch.inodes)
            assert len(rows) == 3 and (rows["pid"] == ch.pid).all()
            seen: dict[str, set] = {"tcpsnap-check": set(), "tcpsnap-names": set()}
            for _ in range(400):
                rows = rows_of(snap.take(), ch.inodes)
                snap.process_names(rows["pid"])
                for k in seen:
                    seen[k].update(_threads(k))
                st = res.stats
                if st["check_jobs"] >= 8 and st["name_jobs"] >= 8:
                    break
                time.sleep(0.06)                   # a check round at most every 50 ms
            st = res.stats
            assert st["check_jobs"] >= 8 and st["name_jobs"] >= 8
            # each kind on the one thread it started on, still there between jobs
            assert [len(v) for v in seen.values()] == [1, 1], seen
            assert _threads("tcpsnap-check") == sorted(seen["tcpsnap-check"])
            assert _threads("tcpsnap-names") == sorted(seen["tcpsnap-names"])
        # closing the resolver ends them
        for _ in range(200):
            if not _threads("tcpsnap-check") and not _threads("tcpsnap-names"):
                break
            time.sleep(0.01)
        assert not _threads("tcpsnap-check") and not _threads("tcpsnap-names")
    finally:
        ch.close()


def test_an_owner_that_forks_then_closes_is_noticed_by_the_worker_within_the_bound():
    """test_pids' case on the recorder's path (background: the links are read on the
    check worker, a later take merges): resolved with one holder, then fork and the
    parent closes its copy (its descriptor count moves); within 32 takes of a round each
    (verify_interval 0) and the merge's lag, the socket has the child's pid."""
    lst, c, s = pair("127.0.0.1")
    ino_s = inode(s)
    r, w = os.pipe()
    with closing_all(lst, c), Snapshotter(pids=True) as snap:
        res = fast(snap).resolver
        res.background = True
        res.verify_interval = 0.0
        assert _pid_of(snap, ino_s) == os.getpid()
        jobs, moved = res.stats["check_jobs"], res.stats["moved"]
        pid = _fork_keeping(r, w)
        try:
            s.close()
            got = []
            for _ in range(32 + 3):
                time.sleep(0.06)                   # a round at most every 50 ms
                got.append(_pid_of(snap, ino_s))
            assert all(g in (os.getpid(), pid, 0) for g in got)
            assert got[-1] == pid, got
            assert res.stats["moved"] > moved and res.stats["check_jobs"] > jobs
            assert len(_threads("tcpsnap-check")) == 1   # the checks ran on the worker
        finally:
            os.close(w)
            os.waitpid(pid, 0)


def test_walks_run_on_long_lived_walk_workers():
    """Walk after walk (a new connection before each take), in the background as the
    recorder has it: every walk ran on the same ``tcpsnap-walk`` threads (no thread per
    walk), each new socket got its pid, and closing the resolver ends them."""
    with Snapshotter(pids=True) as snap:
        res = fast(snap).resolver
        res.background = True
        snap.take()                                    # the first walk, in place
        seen: set[int] = set()
        walks = res.stats["walks"]
        for _ in range(6):
            lst, c, s = pair("127.0.0.1")
            with closing_all(lst, c, s):
                for _ in range(200):
                    rows = rows_of(snap.take(), {inode(x) for x in (lst, c, s)})
                    seen.update(_threads("tcpsnap-walk"))
                    if len(rows) == 3 and (rows["pid"] == os.getpid()).all():
                        break
                    time.sleep(0.01)
                assert (rows["pid"] == os.getpid()).all()
        assert res.stats["walks"] >= walks + 6
        assert len(seen) == res.threads and _threads("tcpsnap-walk") == sorted(seen)
    for _ in range(200):
        if not _threads("tcpsnap-walk"):
            break
        time.sleep(0.01)
    assert not _threads("tcpsnap-walk")
