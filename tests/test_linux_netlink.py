"""The netlink backend on live loopback sockets: exact rows for sockets we own."""

import ipaddress
import os
import socket
import sys
import tracemalloc

import numpy as np
import pytest

import tcpsnap
from _sockets import closing_all, inode, listener, pair, syn_sent, wait_for
from tcpsnap import ROW_DTYPE, Snapshotter, TcpState
from tcpsnap.frame import format_address

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")


def find(rows, family, laddr, lport, raddr=None, rport=None):
    out = []
    for r in rows:
        if r["family"] != family or r["local_port"] != lport:
            continue
        if ipaddress.ip_address(format_address(family, r["local_addr"])) != ipaddress.ip_address(laddr):
            continue
        if rport is not None and r["remote_port"] != rport:
            continue
        if raddr is not None and ipaddress.ip_address(format_address(family, r["remote_addr"])) != ipaddress.ip_address(raddr):
            continue
        out.append(r.copy())
    return out


def one(rows, *key):
    got = find(rows, *key)
    assert len(got) == 1, (key, got)
    return got[0]


def check_socket_row(r, sock, state):
    assert TcpState(r["state"]) == state
    assert r["inode"] == inode(sock)
    assert r["uid"] == os.getuid()
    assert r["cookie"] != 0
    assert r["pid"] == 0 and r["offload_state"] == 0


def test_listener_v4():
    lst = listener("127.0.0.1", backlog=7)
    with closing_all(lst), Snapshotter() as snap:
        port = lst.getsockname()[1]
        r = one(snap.take(), 4, "127.0.0.1", port, "0.0.0.0", 0)
        check_socket_row(r, lst, TcpState.LISTEN)
        assert r["remote_port"] == 0 and not r["remote_addr"].any()
        assert not r["local_addr"][4:].any()
        assert r["tx_queue"] == 7           # a listener's send-Q is its backlog limit, as ss shows


@pytest.mark.parametrize("host,family", [("127.0.0.1", 4), ("::1", 6)])
def test_established_pair(host, family):
    lst, c, s = pair(host)
    with closing_all(lst, c, s), Snapshotter() as snap:
        rows = snap.take()
        cl, sv = c.getsockname(), s.getsockname()
        rc = one(rows, family, host, cl[1], host, sv[1])
        rs = one(rows, family, host, sv[1], host, cl[1])
        check_socket_row(rc, c, TcpState.ESTABLISHED)
        check_socket_row(rs, s, TcpState.ESTABLISHED)
        assert rc["cookie"] != rs["cookie"]
        check_socket_row(one(rows, family, host, sv[1], "::" if family == 6 else "0.0.0.0", 0), lst, TcpState.LISTEN)


def test_queues_reflect_unread_bytes():
    lst, c, s = pair("127.0.0.1")
    with closing_all(lst, c, s), Snapshotter() as snap:
        c.sendall(b"x" * 1000)
        cl, sv = c.getsockname(), s.getsockname()
        r = wait_for(lambda: (lambda r: r if r["rx_queue"] == 1000 else None)(
            one(snap.take(), 4, "127.0.0.1", sv[1], "127.0.0.1", cl[1])))
        assert r is not None and r["rx_queue"] == 1000


def test_dual_stack_listener_and_v4_mapped_peer():
    lst = listener("::", family=socket.AF_INET6, v6only=False)
    lst_, c, s = pair("::", lst=lst, connect_host="127.0.0.1")
    with closing_all(lst, c, s), Snapshotter() as snap:
        rows = snap.take()
        port = lst.getsockname()[1]
        check_socket_row(one(rows, 6, "::", port, "::", 0), lst, TcpState.LISTEN)
        cport = c.getsockname()[1]
        check_socket_row(one(rows, 4, "127.0.0.1", cport, "127.0.0.1", port), c, TcpState.ESTABLISHED)
        r = one(rows, 6, "::ffff:127.0.0.1", port, "::ffff:127.0.0.1", cport)
        check_socket_row(r, s, TcpState.ESTABLISHED)
        assert format_address(6, r["local_addr"]) == "::ffff:127.0.0.1"


def test_half_close_fin_wait2_and_close_wait():
    lst, c, s = pair("127.0.0.1")
    with closing_all(lst, c, s), Snapshotter() as snap:
        c.shutdown(socket.SHUT_WR)
        cl, sv = c.getsockname(), s.getsockname()

        def states():
            rows = snap.take()
            return (one(rows, 4, "127.0.0.1", cl[1], "127.0.0.1", sv[1]),
                    one(rows, 4, "127.0.0.1", sv[1], "127.0.0.1", cl[1]))
        wait_for(lambda: states()[0]["state"] == TcpState.FIN_WAIT2)
        rc, rs = states()
        check_socket_row(rc, c, TcpState.FIN_WAIT2)
        check_socket_row(rs, s, TcpState.CLOSE_WAIT)
        # the server closes too: the client goes to TIME_WAIT, the server to LAST_ACK then gone
        s.close()

        def client():
            return one(snap.take(), 4, "127.0.0.1", cl[1], "127.0.0.1", sv[1])
        wait_for(lambda: client()["state"] == TcpState.TIME_WAIT)
        assert client()["state"] == TcpState.TIME_WAIT


def test_time_wait_row_has_no_owner():
    lst, c, s = pair("127.0.0.1")
    cl, sv = c.getsockname(), s.getsockname()
    c.close()       # active close: the client side ends in TIME_WAIT
    s.close()
    with closing_all(lst), Snapshotter() as snap:
        r = wait_for(lambda: (lambda g: g[0] if g and g[0]["state"] == TcpState.TIME_WAIT else None)(
            find(snap.take(), 4, "127.0.0.1", cl[1], "127.0.0.1", sv[1])))
        assert r is not None
        assert r["inode"] == 0 and r["pid"] == 0 and r["cookie"] != 0


def test_syn_sent_against_full_backlog():
    lst, queued, stuck = syn_sent("127.0.0.1")
    with closing_all(lst, queued, stuck), Snapshotter() as snap:
        port = lst.getsockname()[1]
        rows = snap.take()
        r = one(rows, 4, "127.0.0.1", stuck.getsockname()[1], "127.0.0.1", port)
        check_socket_row(r, stuck, TcpState.SYN_SENT)


def test_array_grows_and_old_views_stay_valid():
    socks = [listener("127.0.0.1") for _ in range(40)]
    with closing_all(socks), Snapshotter(capacity=2) as snap:
        first = snap.take()
        ports = {s.getsockname()[1] for s in socks}
        assert ports <= set(first["local_port"].tolist())
        assert snap.capacity >= len(first) >= 40
        assert snap.stats["grows"] >= 1
        grows = snap.stats["grows"]
        for _ in range(5):
            again = snap.take()
        assert snap.stats["grows"] == grows            # warm: no more growth
        assert ports <= set(again["local_port"].tolist())
        assert ports <= set(first["local_port"].tolist())   # the old array is still alive


def test_view_is_reused_and_snapshot_copies():
    lst = listener("127.0.0.1")
    with closing_all(lst), Snapshotter() as snap:
        a = snap.take()
        b = snap.take()
        assert np.shares_memory(a, b)
        c = tcpsnap.snapshot()
        assert c.dtype == ROW_DTYPE and c.base is None or not np.shares_memory(c, b)


def test_take_allocates_nothing_when_warm():
    lst, c, s = pair("127.0.0.1")
    with closing_all(lst, c, s), Snapshotter() as snap:
        for _ in range(100):
            snap.take()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for _ in range(2_000):
                snap.take()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(d.size_diff for d in after.compare_to(before, "filename") if d.size_diff > 0)
        assert grown < 4096, grown


def test_closed_snapshotter_raises_cleanly():
    snap = Snapshotter()
    snap.close()
    with pytest.raises(ValueError, match="closed"):
        snap.take()


def test_to_pandas_readable_columns():
    lst, c, s = pair("::1")
    with closing_all(lst, c, s):
        df = tcpsnap.to_pandas(tcpsnap.snapshot())
        # by inode: another socket on the host may have the listener's port number
        mine = df[df.inode.isin([inode(x) for x in (lst, c, s)])]
        assert sorted(mine.state.astype(str)) == ["ESTABLISHED", "ESTABLISHED", "LISTEN"]
        assert set(mine.local_addr.astype(str)) == {"::1"} and set(mine.family) == {6}
        assert str(df.state.dtype) == "category"
        assert list(df.state.cat.categories) == [s.name for s in TcpState]
        assert df.local_port.dtype == np.uint16 and df.pid.dtype == np.uint32


def test_one_snapshotter_shared_by_threads_never_corrupts():
    import threading

    socks = [listener("127.0.0.1") for _ in range(50)]
    errors, seen = [], []
    with closing_all(socks), Snapshotter(capacity=1) as snap:
        def work():
            for _ in range(200):
                try:
                    rows = snap.take()
                    seen.append(len(rows) >= 50)
                except RuntimeError as e:
                    errors.append(str(e))
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(seen) and seen
        assert all("already running" in e for e in errors)
        ports = {s.getsockname()[1] for s in socks}
        assert ports <= set(snap.take()["local_port"].tolist())


def _ss_socks(inodes):
    """(local port, remote port, inode, cookie) of the sockets with these inodes (by inode:
    another socket on the host may have their port numbers), as ``ss -tane`` shows them."""
    import re
    import subprocess

    out = subprocess.run(["ss", "-tanHe"], capture_output=True, text=True, check=True).stdout
    got = set()
    for line in out.splitlines():
        f = line.split()
        m = re.search(r"ino:(\d+) sk:([0-9a-f]+)", line)
        if m is not None and int(m.group(1)) in inodes:
            got.add((int(f[3].rsplit(":", 1)[1]), int(f[4].rsplit(":", 1)[1]) if not f[4].endswith("*") else 0,
                     int(m.group(1)), int(m.group(2), 16)))
    return got


def _ours(rows, inodes):
    m = np.isin(rows["inode"], list(inodes))
    return set(zip(rows["local_port"][m].tolist(), rows["remote_port"][m].tolist(), rows["inode"][m].tolist(),
                   rows["cookie"][m].tolist(), strict=True))


@pytest.mark.skipif(__import__("shutil").which("ss") is None, reason="needs ss (iproute2)")
def test_take_into_writes_the_table_into_the_array_or_says_it_did_not():
    lst, c, s = pair("127.0.0.1")
    lst6, c6, s6 = pair("::1")
    socks = {inode(x) for x in (lst, c, s, lst6, c6, s6)}       # by inode, not port numbers
    with closing_all(lst, c, s, lst6, c6, s6), Snapshotter(pids=True) as snap:
        out = np.zeros(len(snap.take()) + 4096, ROW_DTYPE)
        out["inode"] = 77
        rows, placed = snap.take_into(out, 10)
        n = len(rows)
        assert placed and rows.ctypes.data == out[10:].ctypes.data and n > 6
        assert (out["inode"][:10] == 77).all() and (out["inode"][10 + n:] == 77).all()   # only its room
        assert _ours(rows, socks) == _ss_socks(socks) and len(_ours(rows, socks)) == 6
        assert set(rows["pid"][rows["inode"] == inode(c)].tolist()) == {os.getpid()}
        # less room than the table: the rows are in the snapshotter's own array, all of them
        small = np.zeros(13, ROW_DTYPE)
        rows, placed = snap.take_into(small, 10)
        assert not placed and not np.shares_memory(rows, small) and len(rows) > 3
        assert _ours(rows, socks) == _ss_socks(socks)
        assert set(rows["pid"][rows["inode"] == inode(s6)].tolist()) == {os.getpid()}
        rows, placed = snap.take_into(out, len(out))                         # no room at all
        assert not placed and _ours(rows, socks) == _ss_socks(socks)
        with pytest.raises(ValueError, match="start"):
            snap.take_into(out, len(out) + 1)
        with pytest.raises(ValueError, match="ROW_DTYPE"):
            snap.take_into(np.zeros(100, np.int64), 0)
    with Snapshotter(filter="sport = :1") as snap:                           # a filter: never placed
        assert snap.take_into(out, 0)[1] is False
