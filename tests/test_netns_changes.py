"""Changes mode across network namespaces: the socket-destroy feed of every namespace
(``record.nsfeed.NamespaceFeeds`` over ``Namespaces.want_feeds``), cross-checked against
what the test opened and against ``ss`` run inside each namespace.

- a connection opened and closed between two snapshots inside an ``ip netns`` namespace
  (not tcpsnap's) is recorded as a ``closed`` event with that namespace's ``netns``;
- a deleted namespace's feed is drained one last time (the deaths of its end), then closed,
  which lets the kernel free the namespace (its veth disappears);
- an overflow of one namespace's feed is counted for that namespace and costs the others
  nothing.

Skips where ``ip netns add`` is not permitted (root, iproute2).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid

import numpy as np
import pytest

import tcpsnap
from _sockets import more_snapshots
from test_netns_all import CAN, Ns, _rows, _run, _veth_exists

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not CAN, reason="needs root, ip netns, ss and nsenter (iproute2, util-linux)")]

# inside a namespace: lo up, COUNT loopback connections opened then closed, client first
# (its end goes on as TIME_WAIT, the server's is freed), their (client port, server port)
# printed as one JSON line
_CHURN = r"""
import json, socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(64)
out = []
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(lst.getsockname()); s, _ = lst.accept()
    out.append([c.getsockname()[1], lst.getsockname()[1]])
    c.close(); s.close()
lst.close()
print(json.dumps(out), flush=True)
"""


def _churn(name: str, count: int) -> list[tuple[int, int]]:
    p = _run("ip", "netns", "exec", name, sys.executable, "-c", _CHURN, str(count))
    return [tuple(x) for x in json.loads(p.stdout)]


@pytest.fixture
def two():
    made: list[Ns] = []
    try:
        made += [Ns("ip"), Ns("ip")]
        yield made
    finally:
        for n in made:
            n.close()


@pytest.mark.parametrize("tcp_info", [False, True], ids=["plain", "tcp_info"])
def test_a_connection_that_lived_between_two_snapshots_in_another_namespace_is_closed_there(
        two, tmp_path, tcp_info):
    a, b = two
    rec = tmp_path / "rec"
    r = tcpsnap.Recorder(rec, mode="changes", netns="all", interval="1s", tcp_info=tcp_info)
    r.open()
    if not r.stats.get("destroy_feed"):
        r.close()
        pytest.skip("the kernel refuses the socket-destroy subscription")
    t = threading.Thread(target=r.run)
    t.start()
    try:
        more_snapshots(r, 1)                 # a snapshot first (not a sleep: a loaded machine)
        short = _churn(a.name, 1)[0]         # lives a few ms, between two 1 s snapshots
        more_snapshots(r, 2)                 # two more snapshots: its report is placed
    finally:
        r.stop()
        t.join()
        r.close()
    ev = tcpsnap.read(rec, mode="changes")
    ev = ev[ev.family == 4]
    mine = ev[((ev.local_port == short[0]) & (ev.remote_port == short[1]))
              | ((ev.local_port == short[1]) & (ev.remote_port == short[0]))]
    # in namespace a only, both ends: the server's end one closed event that no snapshot
    # saw (the destroy feed of a); the client's goes on as TIME_WAIT (its full socket's
    # report is that TIME_WAIT's predecessor: one connection), which the next snapshot opens
    assert set(mine.netns.tolist()) == {a.ino}
    assert set(mine.local_addr) == {"127.0.0.1"} and set(mine.remote_addr) == {"127.0.0.1"}
    server = mine[mine.local_port == short[1]]
    client = mine[mine.local_port == short[0]]
    assert list(server.event) == ["closed"] and not server.seen_in_snapshot.any()
    assert list(server.remote_port) == [short[0]]
    if tcp_info:
        # its final tcp_info, from a's destroy feed: no payload; the client's FIN received
        # and its own FIN acked, one byte each (the kernel counts FINs, tests/test_closetotals.py)
        assert server.bytes_received.tolist() == [1] and server.bytes_acked.tolist() == [1]
    assert list(client.event) == ["opened"] and list(client.state) == ["TIME_WAIT"]
    # the long-lived connections, rebuilt, are what ss shows inside each namespace
    df = tcpsnap.read(rec)
    last = df[df.seq == df.seq.max()].copy()
    last["state_code"] = [int(tcpsnap.TcpState[s]) for s in last.state]
    for n in (a, b):
        assert _rows(last[last.netns == n.ino]) == n.ss()
    st = r.stats
    assert st["destroyed_unseen"] >= 2 and st["destroy_drops"] == 0


def test_netns_one_namespace_subscribes_there_not_in_ours(two, tmp_path):
    """``--netns a`` in changes mode: a's short connection is a closed event of a; one that
    lives and dies meanwhile in tcpsnap's own namespace is not in the recording at all."""
    import socket

    a, _b = two
    rec = tmp_path / "rec"
    r = tcpsnap.Recorder(rec, mode="changes", netns=a.name, interval="1s")
    r.open()
    if not r.stats.get("destroy_feed"):
        r.close()
        pytest.skip("the kernel refuses the socket-destroy subscription")
    t = threading.Thread(target=r.run)
    t.start()
    try:
        more_snapshots(r, 1)
        short = _churn(a.name, 1)[0]
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        ours = (s.getsockname()[1], c.getsockname()[1])      # the server end: (local, remote)
        c.close()
        s.close()
        lst.close()
        more_snapshots(r, 2)
    finally:
        r.stop()
        t.join()
        r.close()
    ev = tcpsnap.read(rec, mode="changes")
    ev = ev[ev.family == 4]
    assert set(ev[ev.event != "keyframe"].netns.tolist()) <= {a.ino}
    server = ev[(ev.local_port == short[1]) & (ev.remote_port == short[0])]
    assert list(server.event) == ["closed"] and list(server.netns) == [a.ino]
    assert not ((ev.local_port == ours[0]) & (ev.remote_port == ours[1])).any()


# inside a namespace: lo up, one connection from 127.0.0.1:CPORT to 127.0.0.1:SPORT, closed
# by FIRST ("server" or "client") first: that end goes on as TIME_WAIT
_FIXED = r"""
import socket, subprocess, sys
first, sport, cport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", sport)); lst.listen(1)
c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.bind(("127.0.0.1", cport)); c.connect(("127.0.0.1", sport)); s, _ = lst.accept()
for k in ((s, c) if first == "server" else (c, s)):
    k.close()
lst.close()
"""


def test_equal_4_tuples_in_two_namespaces_are_two_connections(two, tmp_path):
    """a holds a TIME_WAIT mini-socket on 127.0.0.1:P -> 127.0.0.1:Q (its server closed
    first). Then in b a connection on the same 4-tuple lives between two snapshots, client
    first: b's server end (P -> Q) is freed, and its report must not be taken for the
    predecessor of a's mini-socket (same 4-tuple, another namespace): a closed event in b."""
    a, b = two
    sport, cport = 20000 + os.getpid() % 20000, 40000 + os.getpid() % 20000
    _run("ip", "netns", "exec", a.name, sys.executable, "-c", _FIXED, "server", str(sport), str(cport))
    rec = tmp_path / "rec"
    r = tcpsnap.Recorder(rec, mode="changes", netns="all", interval="1s")
    r.open()
    if not r.stats.get("destroy_feed"):
        r.close()
        pytest.skip("the kernel refuses the socket-destroy subscription")
    t = threading.Thread(target=r.run)
    t.start()
    try:
        more_snapshots(r, 1)
        _run("ip", "netns", "exec", b.name, sys.executable, "-c", _FIXED, "client", str(sport), str(cport))
        more_snapshots(r, 2)
    finally:
        r.stop()
        t.join()
        r.close()
    ev = tcpsnap.read(rec, mode="changes")
    mine = ev[(ev.family == 4) & (ev.local_port == sport) & (ev.remote_port == cport)]
    in_a, in_b = mine[mine.netns == a.ino], mine[mine.netns == b.ino]
    assert list(in_a.state) == ["TIME_WAIT"] and list(in_a.event) in (["keyframe"], ["opened"])
    assert list(in_b.event) == ["closed"] and not in_b.seen_in_snapshot.any()
    client_b = ev[(ev.family == 4) & (ev.local_port == cport) & (ev.remote_port == sport) & (ev.netns == b.ino)]
    assert list(client_b.event) == ["opened"] and list(client_b.state) == ["TIME_WAIT"]


def test_a_deleted_namespaces_feed_is_drained_then_closed():
    """The feed of a namespace found gone reports the deaths of its end, then is closed:
    the kernel frees the namespace (its veth peer, in a namespace that stays, disappears).
    While the feed is kept (no re-discovery) the namespace stays alive."""
    from tcpsnap.record.nsfeed import NamespaceFeeds

    keep = Ns("ip")
    try:
        with tcpsnap.Snapshotter(netns="all") as snap:
            ns = snap.namespaces
            if not ns.want_feeds():
                pytest.skip("the kernel refuses the socket-destroy subscription")
            mux = NamespaceFeeds(ns)
            try:
                ns.rescan_interval = 0.05
                new = Ns("ip")
                try:
                    peer = f"tv{uuid.uuid4().hex[:8]}"
                    _run("ip", "link", "add", peer, "netns", keep.name, "type", "veth", "peer", "name", "tvx",
                         "netns", new.name)
                    deadline = time.monotonic() + 10
                    while new.ino not in mux.netns:
                        assert time.monotonic() < deadline, "the new namespace never got a feed"
                        snap.take()
                        mux.drain()
                        time.sleep(0.02)
                    mux.take()
                    gone, ports = new.ino, set(new.ports)
                    ns.rescan_interval = 3600        # no re-discovery: tcpsnap keeps its sockets
                    new.close()                      # its process ends (closing its sockets), its name goes
                    time.sleep(0.5)
                    snap.take()
                    mux.drain()
                    assert gone in mux.netns and _veth_exists(keep.name, peer)
                    ns.rescan_interval = 0.05
                    deadline = time.monotonic() + 10
                    rows = []
                    while gone in mux.netns or _veth_exists(keep.name, peer):
                        assert time.monotonic() < deadline, "the gone namespace's feed was never closed"
                        snap.take()
                        mux.drain()
                        rows.append(mux.take()[0])
                        time.sleep(0.02)
                    died = np.concatenate(rows)
                    died = died[died["netns"] == gone]     # (our own namespace's deaths come too)
                    # the connections of the namespace's end, reported by its feed before it closed
                    assert ports <= set(died["local_port"].tolist()) | set(died["remote_port"].tolist())
                    assert ns.feeds.keys() == dict(ns.targets()).keys() and not ns.retired
                finally:
                    new.close()
            finally:
                mux.close()
    finally:
        keep.close()


def test_one_namespaces_feed_overflow_is_counted_there_and_costs_the_others_nothing(two):
    """Namespace a's feed has the smallest receive buffer the kernel grants, b's the
    default; a burst of deaths in each, read only after both bursts: a's overflow is
    counted as a's, and b's feed reports every one of b's connections."""
    from tcpsnap._destroy import DestroyFeed
    from tcpsnap._netns import sock_diag_in
    from tcpsnap.record.nsfeed import NamespaceFeeds

    a, b = two

    class Pair:        # what NamespaceFeeds follows of a tcpsnap.netns.Namespaces
        feeds: dict = {}
        retired: list = []

    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    made: list = []

    def open_feeds() -> None:
        try:
            for n, rcvbuf in ((a, 0), (b, 32 << 20)):
                nsfd = os.open(n.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    socks = sock_diag_in(nsfd, home), sock_diag_in(nsfd, home)
                finally:
                    os.close(nsfd)
                made.append(DestroyFeed(rcvbuf, sock=socks[0], query=socks[1], netns=n.ino))
        except OSError as e:
            made.append(e)

    th = threading.Thread(target=open_feeds)      # setns only ever on a thread of its own
    th.start()
    th.join()
    os.close(home)
    if made and isinstance(made[-1], OSError):
        for f in made[:-1]:
            f.close()
        pytest.skip(f"no destroy feed in a namespace: {made[-1]}")
    Pair.feeds = {a.ino: made[0], b.ino: made[1]}
    mux = NamespaceFeeds(Pair)
    try:
        assert mux.netns == sorted([a.ino, b.ino])
        burst_a = _churn(a.name, 300)
        burst_b = _churn(b.name, 300)
        want_b = {p for c in burst_b for p in (c, c[::-1])}
        got_b: set = set()
        deadline = time.monotonic() + 10         # a bound, not a timing assertion
        while time.monotonic() < deadline and not (want_b <= got_b and mux.drops_by_netns.get(a.ino)):
            time.sleep(0.2)
            mux.drain()
            rows, _ts = mux.take()
            for r in rows[(rows["netns"] == b.ino) & (rows["family"] == 4)]:
                got_b.add((int(r["local_port"]), int(r["remote_port"])))
        assert want_b <= got_b                       # b lost nothing
        assert mux.drops_by_netns[a.ino] > 0         # a overflowed, counted as a's
        assert mux.drops_by_netns[b.ino] == 0
        assert mux.drops == mux.drops_by_netns[a.ino]
        assert len(burst_a) == 300
    finally:
        mux.close()
        for f in made:
            f.close()
