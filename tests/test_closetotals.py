"""Final totals for every connection (issue 14): the kernel's last ``struct tcp_info`` of each
socket, from its socket-destroy report, in the connection's ``closed`` event of a changes
recording made with ``--tcp-info`` -- exact byte counts, also for connections that lived and
died between two snapshots. Live, in private network namespaces (``unshare -n``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcpsnap._backend import BACKEND

CHILD = Path(__file__).with_name("_closetotals_child.py")


def _can_unshare() -> bool:
    if BACKEND != "netlink":
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_netns = pytest.mark.skipif(not _can_unshare(), reason="needs unshare -n (root) on Linux")


def _child(*args, timeout=180):
    p = subprocess.run(["unshare", "-n", sys.executable, str(CHILD), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(CHILD.parent)})
    if p.returncode != 0 and "needs CAP_NET_ADMIN" in p.stderr:
        pytest.skip("no socket-destroy feed here")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.netns
@needs_netns
def test_each_side_closes_with_exactly_the_bytes_it_moved():
    """N bytes one way, M the other, the client closes first. The kernel counts sequence
    space: the client (it sent the SYN) acks N + SYN + FIN; the server (it accepted: its
    SYN-ACK was acked before its socket existed) M + FIN; each received the other's bytes,
    plus the client's FIN at the server -- the client's full socket is freed at FIN_WAIT2,
    before the server's FIN comes. bytes_sent counts payload only."""
    n, m = 100_000, 70_001
    out = _child("one", n, m)
    closed = out["closed"]
    server = [e for e in closed if e["local_port"] == out["server_port"] and e["remote_port"] == out["client_port"]]
    client = [e for e in closed if e["local_port"] == out["client_port"]]
    assert len(server) == 1 and len(client) == 1, closed
    s, c = server[0], client[0]
    assert (s["bytes_acked"], s["bytes_received"], s["bytes_sent"]) == (m + 1, n + 1, m)
    assert (c["bytes_acked"], c["bytes_received"], c["bytes_sent"]) == (n + 2, m, n)
    for e in (s, c):
        assert e["seen_in_snapshot"] and e["tcp_info_len"] >= 144
        assert e["total_retrans"] == 0 and e["min_rtt"] > 0
    # the client's full socket was reported while its FIN_WAIT2 / TIME_WAIT lived on: its
    # totals waited for that connection's closed event
    assert c["state"] == "TIME_WAIT"
    assert out["stats"]["final_totals"] == 2


@pytest.mark.netns
@needs_netns
def test_a_thousand_short_connections_between_snapshots_all_have_exact_totals():
    """1,000 connections opened and closed at 1,000/s, snapshots every second: every side of
    every one has a closed event with its exact counters (see the test above for the +1/+2)."""
    out = _child("burst", 1000, 1000, timeout=300)
    assert out["errors"] == []
    assert out["stats"]["destroy_drops"] == 0
    by = {}
    for e in out["closed"]:
        by.setdefault((e["local_port"], e["remote_port"]), []).append(e)
    wrong = []
    for i, (cport, sport) in enumerate(out["ports"]):
        a, b = 100 + i, 3 * (100 + i)
        s, c = by.get((sport, cport), []), by.get((cport, sport), [])
        if len(s) != 1 or (s[0]["bytes_acked"], s[0]["bytes_received"], s[0]["bytes_sent"]) != (b + 1, a + 1, b):
            wrong.append(("server", i, s))
        if len(c) != 1 or (c[0]["bytes_acked"], c[0]["bytes_received"], c[0]["bytes_sent"]) != (a + 2, b, a):
            wrong.append(("client", i, c))
    assert wrong == []
    assert len(out["closed"]) == 2000 and out["stats"]["final_totals"] == 2000
    # most of them no snapshot saw: the burst is within about one interval
    assert sum(not e["seen_in_snapshot"] for e in out["closed"]) >= 500
