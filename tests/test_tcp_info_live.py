"""TCP internals on live loopback connections: exact byte counts (the kernel counts the
active opener's SYN in its bytes_acked, and each FIN in the sender's bytes_acked and the
receiver's bytes_received), every counter as `ss -ti` prints it, rows and internals
aligned through filters and array growth; a retransmit forced by an nft drop rule in a
private namespace."""

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from _sockets import ends_filter, ends_mask, listener, pair, wait_for
from conftest import CAN_UNSHARE_NET

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink internals are Linux's")
if sys.platform.startswith("linux"):
    from _tcp_info_ss import ss_info
    from tcpsnap import NamespaceError, Snapshotter

N, M = 100_000, 54_321
COUNTERS = ("bytes_acked", "bytes_received", "bytes_sent", "segs_in", "segs_out", "data_segs_in",
            "data_segs_out", "delivered", "snd_cwnd", "snd_mss", "rcv_mss", "pmtu", "rcv_space",
            "unacked", "lost", "snd_wnd", "total_retrans", "retrans", "bytes_retrans")


def recv_exactly(s, n):
    got = 0
    while got < n:
        b = s.recv(min(65536, n - got))
        assert b, "peer closed early"
        got += len(b)


def by_ports(snap, host, port, cport):
    """The listener ``host:port`` and its connection from ``cport``, by both ends with
    address and family (another socket on the host may have these port numbers)."""
    rows = snap.take()
    info = snap.tcp_info
    assert info is not None and len(info) == len(rows)
    m = ends_mask(rows, host, {(port, 0), (port, cport), (cport, port)})
    return {(int(r["local_port"]), int(r["remote_port"])): (r, i) for r, i in zip(rows[m], info[m], strict=True)}


def quiet(sock):
    # every byte sent has been acknowledged (TCP_INFO's tcpi_unacked, offset 24)
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int.from_bytes(raw[24:28], "little") == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_exact_byte_counts_syn_and_fin_and_ss_agrees(host):
    lst, c, s = pair(host)
    port = lst.getsockname()[1]
    cport = c.getsockname()[1]
    try:
        c.sendall(b"x" * N)
        recv_exactly(s, N)
        s.sendall(b"y" * M)
        recv_exactly(c, M)
        assert wait_for(lambda: quiet(c) and quiet(s))
        with Snapshotter(tcp_info=True, filter=f"sport = :{port} or dport = :{port}") as snap:
            t = by_ports(snap, host, port, cport)
            assert len(t) == 3
            ci, si = t[(cport, port)][1], t[(port, cport)][1]
            # the client (active opener) counts its SYN in bytes_acked; the server counts
            # neither SYN-ACK nor the client's SYN
            assert (ci["bytes_sent"], ci["bytes_acked"], ci["bytes_received"]) == (N, N + 1, M)
            assert (si["bytes_sent"], si["bytes_acked"], si["bytes_received"]) == (M, M, N)
            assert ci["min_rtt"] > 0 and si["min_rtt"] > 0 and ci["rtt"] > 0
            assert ci["tcp_info_len"] >= 232 and ci["congestion"] != b""
            # the listener has internals too; nothing on it was sent or received
            li = t[(port, 0)][1]
            assert (li["tcp_info_len"], li["bytes_acked"], li["bytes_received"]) == (ci["tcp_info_len"], 0, 0)
            ss = ss_info(port, host)
            for key, (_row, info) in t.items():
                want = ss[key]
                assert info["congestion"].decode() == want["congestion"], key
                for name in COUNTERS:
                    if name in want:
                        assert int(info[name]) == want[name], (key, name)
                if key != (port, 0):     # ss prints these for connections, not the listener
                    assert {"bytes_acked", "segs_out", "snd_cwnd", "min_rtt"} <= set(want), key
                    assert int(info["min_rtt"]) == want["min_rtt"], key
            # each side's FIN: counted in the sender's bytes_acked once acknowledged, and
            # in the receiver's bytes_received
            c.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""
            assert wait_for(lambda: quiet(c))
            t = by_ports(snap, host, port, cport)
            (cr, ci), (sr, si) = t[(cport, port)], t[(port, cport)]
            assert (int(cr["state"]), int(sr["state"])) == (7, 8)        # FIN_WAIT2, CLOSE_WAIT
            assert (ci["bytes_sent"], ci["bytes_acked"], ci["bytes_received"]) == (N, N + 2, M)
            assert (si["bytes_sent"], si["bytes_acked"], si["bytes_received"]) == (M, M, N + 1)
            ss = ss_info(port, host)
            for key in ((cport, port), (port, cport)):
                for name in ("bytes_acked", "bytes_received", "bytes_sent"):
                    assert int(t[key][1][name]) == ss[key][name], (key, name)
    finally:
        for x in (c, s, lst):
            x.close()


def test_time_wait_rows_have_no_internals():
    lst, c, s = pair("127.0.0.1")
    port = lst.getsockname()[1]
    cport = c.getsockname()[1]
    c.close()                    # active close: the client ends in TIME_WAIT
    # the client's FIN read before the server closes: closing both at once can cross the
    # FINs (a simultaneous close puts both ends in TIME_WAIT)
    assert s.recv(1) == b""
    s.close()
    lst.close()
    # this connection's two ends only, with their address: another socket on the host may
    # have either port number
    both = (f"src 127.0.0.1 and dst 127.0.0.1 and ((sport = :{cport} and dport = :{port}) or "
            f"(sport = :{port} and dport = :{cport}))")
    with Snapshotter(tcp_info=True, filter=both) as snap:
        assert wait_for(lambda: len(snap.take()) == 1 and snap.take()["state"][0] == 11)
        rows = snap.take()
        assert snap.tcp_info.tobytes() == bytes(snap.tcp_info.dtype.itemsize)
        assert (int(rows[0]["local_port"]), int(rows[0]["remote_port"])) == (cport, port)


def test_rows_and_internals_stay_aligned_through_growth_filters_and_sampling():
    lst = listener("127.0.0.1")
    port = lst.getsockname()[1]
    conns = []
    for k in range(12):
        _, c, s = pair("127.0.0.1", lst=lst)
        c.sendall(b"z" * (1000 + k))             # a distinct byte count per connection
        recv_exactly(s, 1000 + k)
        conns.append((c, s))
    try:
        assert wait_for(lambda: all(quiet(c) for c, _ in conns))
        # capacity 1: the dump grows its arrays (rows and internals) several times; our
        # clients by address and state too (a TIME_WAIT of an earlier test, or a client
        # of a listener on ::1, may have the remote port number)
        ours = f"dst 127.0.0.1:{port} and state established"
        with Snapshotter(1, tcp_info=True, filter=ours) as snap:
            rows = snap.take()
            info = snap.tcp_info
            assert snap.stats["grows"] >= 3 and len(rows) == 12
            sent = {c.getsockname()[1]: 1000 + k for k, (c, _) in enumerate(conns)}
            assert {int(r["local_port"]): int(i["bytes_sent"]) for r, i in zip(rows, info, strict=True)} == sent
        # a filter applied by the mask (uid is not a kernel filter) compacts both arrays
        with Snapshotter(tcp_info=True, filter=f"src 127.0.0.1:{port} and uid = 0") as snap:
            rows = snap.take()
            info = snap.tcp_info
            got = {int(r["remote_port"]): int(i["bytes_received"]) for r, i in zip(rows, info, strict=True)
                   if r["state"] == 5}
            assert got == sent
        # tcp_info_every: the first take samples, the next (within the period) does not
        with Snapshotter(tcp_info=True, tcp_info_every="1h", filter=ours) as snap:
            snap.take()
            assert snap.tcp_info is not None and len(snap.tcp_info) == 12
            assert len(snap.take()) == 12 and snap.tcp_info is None
            assert snap.tcp_info_stats == {"tcp_info_len": int(info["tcp_info_len"].max()),
                                           "tcp_info_longer": 0}
    finally:
        for c, s in conns:
            c.close()
            s.close()
        lst.close()


def test_without_tcp_info_nothing_is_asked():
    with Snapshotter() as snap:
        snap.take()
        assert snap.tcp_info is None and snap.tcp_info_stats == {}


@pytest.mark.netns
@pytest.mark.skipif(not CAN_UNSHARE_NET, reason="needs unshare -n (root) on Linux")
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (nftables) for the drop rule")
def test_retransmit_forced_by_an_nft_drop_rule():
    child = Path(__file__).with_name("_tcp_info_netns_child.py")
    p = subprocess.run(["unshare", "-n", sys.executable, str(child)], capture_output=True, text=True,
                       timeout=60)
    if p.returncode == 77:
        pytest.skip(p.stderr.strip())
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    ours, ss = got["ours"], got["ss"]
    assert ours["total_retrans"] >= 1 and ours["backoff"] > 0 and ours["retransmits"] > 0
    assert ours["bytes_retrans"] >= 1000
    # ss, read right after, agrees on the retransmit counters (the rule still drops)
    assert ss["total_retrans"] >= ours["total_retrans"] and ss["backoff"] >= ours["backoff"]
    # after the rule is gone, the data gets through and the count stays
    after = got["after"]
    assert after["total_retrans"] >= ours["total_retrans"] and after["unacked"] == 0
    assert after["bytes_acked"] == 1000 + 1                                # its SYN, then the data once
    assert after["bytes_sent"] == 1000 + after["bytes_retrans"]            # every copy sent counts


def test_show_info_prints_the_internals_ss_prints():
    lst, c, s = pair("127.0.0.1")
    port, cport = lst.getsockname()[1], c.getsockname()[1]
    try:
        c.sendall(b"x" * N)
        recv_exactly(s, N)
        s.sendall(b"y" * M)
        recv_exactly(c, M)
        assert wait_for(lambda: quiet(c) and quiet(s))
        expr = ends_filter("127.0.0.1", port, cport)     # not the port alone: see ends_filter
        run = [sys.executable, "-m", "tcpsnap", "show", "--info", "--no-pids"]
        p = subprocess.run(run + ["--format", "json", expr], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        recs = {(r["local_port"], r["remote_port"]): r for r in json.loads(p.stdout)}
        cl, sv = recs[(cport, port)], recs[(port, cport)]
        assert (cl["bytes_sent"], cl["bytes_acked"], cl["bytes_received"]) == (N, N + 1, M)
        assert (sv["bytes_sent"], sv["bytes_acked"], sv["bytes_received"]) == (M, M, N)
        assert len(recs) == 3
        ss = ss_info(port, "127.0.0.1")
        for key, rec in recs.items():
            for name in ("bytes_acked", "bytes_received", "bytes_sent", "segs_in", "segs_out", "snd_cwnd",
                         "min_rtt", "snd_mss", "pmtu", "rcv_space"):
                if name in ss[key]:
                    assert rec[name] == ss[key][name], (key, name)
            assert rec["congestion"] == ss[key]["congestion"]
        # the table: one line per connection, ss's spelling of the same numbers
        p = subprocess.run(run + [expr], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines[0].split()[-1] == "Info" and len(lines) == 4
        client = next(ln for ln in lines if f"127.0.0.1:{cport}  127.0.0.1:{port}" in ln)
        tokens = client.split()
        for tok in (f"bytes_sent:{N}", f"bytes_acked:{N + 1}", f"bytes_received:{M}",
                    f"segs_out:{ss[(cport, port)]['segs_out']}", f"cwnd:{ss[(cport, port)]['snd_cwnd']}",
                    f"minrtt:{ss[(cport, port)]['min_rtt'] / 1000:g}", ss[(cport, port)]["congestion"]):
            assert tok in tokens, (tok, client)
        # csv: the same keys
        p = subprocess.run(run + ["--format", "csv", expr], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        rows = list(csv.DictReader(io.StringIO(p.stdout)))
        assert {"bytes_acked", "rtt", "congestion", "tcp_info_len"} <= set(rows[0])
        row = next(r for r in rows if r["local_port"] == str(cport))
        assert (row["bytes_acked"], row["congestion"]) == (str(N + 1), ss[(cport, port)]["congestion"])
    finally:
        for x in (c, s, lst):
            x.close()


_NS_CHILD = r"""
import json, os, socket, subprocess, sys
sys.path.insert(0, sys.argv[1])
from _sockets import pair
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
lst, c, s = pair("127.0.0.1")
c.sendall(b"n" * int(sys.argv[2]))
got = 0
while got < int(sys.argv[2]):
    got += len(s.recv(65536))
print(json.dumps({"pid": os.getpid(), "port": lst.getsockname()[1], "cport": c.getsockname()[1]}), flush=True)
sys.stdin.read()
"""


@pytest.mark.netns
@pytest.mark.skipif(not CAN_UNSHARE_NET, reason="needs unshare -n (root) on Linux")
@pytest.mark.parametrize("which", ["one", "all"])
def test_internals_of_another_namespace(which):
    # a connection that sent N bytes inside a namespace of its own: Snapshotter(netns=its pid
    # or "all", tcp_info=True) sees its internals as ss run inside that namespace does
    here = str(Path(__file__).resolve().parent)
    child = subprocess.Popen(["unshare", "-n", sys.executable, "-c", _NS_CHILD, here, str(N)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(child.stdout.readline())
        pid, port, cport = info["pid"], info["port"], info["cport"]
        ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        netns = str(pid) if which == "one" else "all"
        try:
            snap = Snapshotter(tcp_info=True, netns=netns, filter=f"sport = :{port} or dport = :{port}")
        except NamespaceError as e:     # not permitted here
            pytest.skip(f"cannot enter namespaces here: {e}")
        with snap:
            rows = snap.take()
            ti = snap.tcp_info
            mine = {(int(r["local_port"]), int(r["remote_port"])): i for r, i in zip(rows, ti, strict=True)
                    if r["netns"] == ino}
        ss = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ss", "-tinOH", "state", "all",
                             f"( sport = :{port} or dport = :{port} )"], capture_output=True, text=True)
        assert (int(mine[(cport, port)]["bytes_sent"]), int(mine[(cport, port)]["bytes_acked"])) == (N, N + 1)
        assert int(mine[(port, cport)]["bytes_received"]) == N
        assert f"bytes_acked:{N + 1}" in ss.stdout.split() and f"bytes_received:{N}" in ss.stdout.split()
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_show_info_without_internals_says_why_once(monkeypatch, capsys):
    # a backend without internals: the columns stay, null, and one note says why (Windows'
    # reasons, export missing or not elevated: tests/test_windows_wine.py)
    import tcpsnap._backend
    from tcpsnap.cli import main

    lst, c, s = pair("127.0.0.1")
    port = lst.getsockname()[1]
    try:
        monkeypatch.setattr(tcpsnap._backend, "BACKEND", "none")
        ours = ends_filter("127.0.0.1", port, c.getsockname()[1])
        assert main(["show", "--info", "--no-pids", "--format", "json", ours]) == 0
        out, err = capsys.readouterr()
        recs = json.loads(out)
        assert len(recs) == 3 and all(r["bytes_acked"] is None and r["congestion"] is None for r in recs)
        notes = err.strip().splitlines()
        assert notes == ["tcpsnap: note: --info: no TCP internals: this backend (none) captures no internals; "
                         "the info columns are null"]
    finally:
        for x in (c, s, lst):
            x.close()
