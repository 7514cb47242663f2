"""The metrics endpoint's bounds, against a real recorder: at most HTTP_MAX_CONNECTIONS
connections (so threads) however many a local client opens, the oldest idle one closed
for a newcomer; and the server's own accepted sockets get the recorder's pid without a
/proc walk (checked against ``ss -tanp``)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from tcpsnap.record.metrics import HTTP_MAX_CONNECTIONS

LINUX = sys.platform.startswith("linux")
pytestmark = pytest.mark.skipif(not LINUX, reason="Linux: /proc/PID/task, ss")


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _serving_port(p: subprocess.Popen) -> tuple[int, list[str]]:
    """The port ``tcpsnap record --metrics 127.0.0.1:0`` chose (its "metrics: serving"
    line), and its stderr lines, read on a thread from then on so that the pipe never
    fills. Port 0 rather than a port found free first: another process may take that
    one before the recorder binds it."""
    import re
    import threading

    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert p.stderr is not None
        for raw in p.stderr:
            lines.append(raw.decode(errors="replace"))
            if re.search(r"metrics: serving http://127\.0\.0\.1:\d+/", lines[-1]):
                found.set()
        found.set()

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(120), "".join(lines)      # a hang detector, not a timing
    m = next((re.search(r"metrics: serving http://127\.0\.0\.1:(\d+)/", ln) for ln in lines
              if "metrics: serving" in ln), None)
    assert m is not None, "".join(lines)
    return int(m.group(1)), lines


def _scrape(port: int) -> int:
    """One scrape on a new connection: tcpsnap_snapshots_total."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200
    finally:
        c.close()
    return int(float(next(ln.split()[1] for ln in body.splitlines()
                          if ln.startswith("tcpsnap_snapshots_total "))))


def _settle(pid: int, want: int, timeout: float = 20.0) -> int:
    """The recorder's thread count once it is ``want`` (or whatever it is at the timeout)."""
    deadline = time.monotonic() + timeout
    n = _threads(pid)
    while n != want and time.monotonic() < deadline:
        time.sleep(0.05)
        n = _threads(pid)
    return n


def _closed(s: socket.socket) -> bool:
    s.settimeout(0.0)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_many_idle_connections_hold_at_most_the_cap(tmp_path):
    """A local client opens 3x the cap of idle connections to a running ``tcpsnap
    record --metrics``: the recorder holds exactly the cap's worth of handler threads
    (counted in /proc/PID/task), the oldest idle ones were closed (the last cap kept),
    and a scrape still works, closing the oldest idle one left for itself."""
    p = subprocess.Popen([sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "rec"),
                          "--interval", "200ms", "--no-pids", "--metrics", "127.0.0.1:0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    clients: list[socket.socket] = []
    try:
        port, err_lines = _serving_port(p)
        deadline = time.monotonic() + 60
        while True:
            try:
                first = _scrape(port)
                break
            except OSError:
                assert p.poll() is None, "".join(err_lines)
                assert time.monotonic() < deadline, "the endpoint never answered"
                time.sleep(0.1)
        time.sleep(0.3)  # the scrape's connection closed by now: its thread ended
        base = _threads(p.pid)
        for _ in range(3 * HTTP_MAX_CONNECTIONS):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.02)  # accepted in this order: their idle ages differ
        assert _settle(p.pid, base + HTTP_MAX_CONNECTIONS) == base + HTTP_MAX_CONNECTIONS
        time.sleep(0.2)
        assert [_closed(c) for c in clients] == ([True] * (2 * HTTP_MAX_CONNECTIONS)
                                                 + [False] * HTTP_MAX_CONNECTIONS)
        assert _scrape(port) > first  # still served, the recording goes on
        # the scrape took the oldest idle connection's place, then closed its own
        assert _settle(p.pid, base + HTTP_MAX_CONNECTIONS - 1) == base + HTTP_MAX_CONNECTIONS - 1
        assert [_closed(c) for c in clients] == ([True] * (2 * HTTP_MAX_CONNECTIONS + 1)
                                                 + [False] * (HTTP_MAX_CONNECTIONS - 1))
    finally:
        for c in clients:
            c.close()
        p.terminate()
        p.wait(timeout=60)
    assert p.returncode == 0, "".join(err_lines)


def test_a_full_set_of_busy_connections_refuses_a_newcomer(tmp_path):
    """Every connection in the middle of a request (a request line sent, headers not
    finished): a new one is refused (closed at once), none of them is cut."""
    from _changes_util import Scripted, SimClock
    from tcpsnap import Recorder
    from tcpsnap.record.metrics import MetricsExporter
    from test_metrics import tables

    rec = Recorder(tmp_path / "rec", interval=0, snapshotter=Scripted(tables(2), pids=False),
                   clock=SimClock(), nice=None)
    with MetricsExporter(rec, listen="127.0.0.1:0") as exp:
        assert exp._server is not None
        busy = [socket.create_connection(("127.0.0.1", exp.port or 0), timeout=10)
                for _ in range(HTTP_MAX_CONNECTIONS)]
        for s in busy:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never end
        deadline = time.monotonic() + 20
        while (sum(st[1] for st in exp._server.conns.values()) < HTTP_MAX_CONNECTIONS
               and time.monotonic() < deadline):
            time.sleep(0.02)
        late = socket.create_connection(("127.0.0.1", exp.port or 0), timeout=10)
        late.settimeout(10)
        assert late.recv(1) == b""  # refused: closed without an answer
        assert exp._server.stats == {"closed_idle": 0, "refused": 1}
        for s in busy:
            s.sendall(b"\r\n")  # each request ends and is answered
            s.settimeout(10)
            assert s.recv(12) == b"HTTP/1.1 200"
            s.close()
        late.close()


CLAIM_CHILD = r"""
import http.client, json, os, subprocess, sys, threading, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
from tcpsnap import Recorder, read
from tcpsnap.record.metrics import MetricsExporter

rec = Recorder(sys.argv[1], interval="500ms", pids=True, nice=None)
exp = MetricsExporter(rec, listen="127.0.0.1:0").start()  # its listener: in the first walk
rec.open()
t = threading.Thread(target=rec.run)
t.start()
time.sleep(0.5)
ss, client_ports = [], []
def after_a_snapshot():
    # connected well before the next snapshot: a snapshot taken between the accept and
    # the claim would see the socket without an owner (pid 0, as any new socket)
    n = rec.snapshots
    while rec.snapshots == n:
        time.sleep(0.005)
    time.sleep(0.05)
for i in range(6):
    after_a_snapshot()
    c = http.client.HTTPConnection("127.0.0.1", exp.port, timeout=10)
    c.connect()
    # the client end is ours too (this test's scaffolding): claimed, so that the only
    # sockets left to set off a walk are the server's
    assert rec.claim_socket(c.sock.fileno())
    client_ports.append(c.sock.getsockname()[1])
    c.request("GET", "/metrics")
    c.getresponse().read()
    time.sleep(1.1)              # two snapshots and over a walk interval (0.25 s)
    ss.append(subprocess.run(["ss", "-tanpH", "state", "established", f"( sport = :{exp.port} )"],
                             capture_output=True, text=True, check=True).stdout)
    c.close()
    time.sleep(0.2)
pstats = rec._snap.pid_stats
rec.stop()
t.join()
rec.close()
exp.close()
df = read(sys.argv[1])
port = exp.port
def pids(rows, key):  # each connection's pids, snapshot by snapshot
    rows = rows.sort_values("seq")
    return {str(k): g.pid.tolist() for k, g in rows.groupby(key)}
server = df[(df.local_port == port) & (df.state == "ESTABLISHED")]
client = df[(df.remote_port == port) & (df.state == "ESTABLISHED")]
print(json.dumps({"pid": os.getpid(), "walks": pstats["walks"], "claimed": pstats["claimed"],
                  "ss": ss, "server": pids(server, "remote_port"), "client": pids(client, "local_port"),
                  "client_ports": client_ports}))
"""


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss")
def test_scrapes_on_new_connections_set_off_no_walk(tmp_path: Path):
    """Six scrapes, each on a new connection (curl in a loop), during a 500 ms recording
    with pids in a private network namespace: the server's accepted sockets are claimed
    by the recorder (``Recorder.claim_socket``), so no /proc walk runs after the first
    (before, one per scrape), and every recorded row of those connections carries the
    recorder's pid, the pid ``ss -tanp`` names."""
    from conftest import CAN_UNSHARE_NET

    if not CAN_UNSHARE_NET:
        pytest.skip("needs unshare -n (root)")
    child = tmp_path / "child.py"
    child.write_text(CLAIM_CHILD)
    p = subprocess.run(["unshare", "-n", sys.executable, str(child), str(tmp_path / "rec")],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    pid = got["pid"]
    assert got["walks"] == 1  # the warm-up's, which found the listener
    assert got["claimed"] == 12  # six server ends, six client ends
    for ss_out, cport in zip(got["ss"], got["client_ports"], strict=True):
        lines = [ln for ln in ss_out.splitlines() if ln.strip()]
        assert len(lines) == 1, ss_out
        assert lines[0].split()[3].endswith(f":{cport}") and f"pid={pid}," in lines[0], lines[0]
    for side in ("server", "client"):
        assert sorted(got[side]) == sorted(str(cp) for cp in got["client_ports"])
        for cp, seen in got[side].items():
            assert len(seen) >= 2 and set(seen) == {pid}, (side, cp, seen)


def test_the_idle_server_thread_sleeps(tmp_path):
    """Between scrapes the serving thread does not wake (socketserver's serve_forever woke
    every 0.5 s to look for a shutdown); close() still ends it at once."""
    import threading

    from _changes_util import Scripted, SimClock
    from tcpsnap import Recorder
    from tcpsnap.record.metrics import MetricsExporter
    from test_metrics import tables

    rec = Recorder(tmp_path / "rec", interval=0, snapshotter=Scripted(tables(2), pids=False),
                   clock=SimClock(), nice=None)
    exp = MetricsExporter(rec, listen="127.0.0.1:0").start()
    try:
        (th,) = [t for t in threading.enumerate() if t.name == "tcpsnap-metrics-http"]

        def switches() -> int:
            with open(f"/proc/self/task/{th.native_id}/status") as f:
                return sum(int(ln.split()[1]) for ln in f if "ctxt_switches" in ln)

        time.sleep(0.2)
        before = switches()
        time.sleep(1.6)
        assert switches() == before
    finally:
        exp.close()
    th.join(timeout=10)
    assert not th.is_alive()


def test_claimed_sockets_have_our_pid_on_the_first_take():
    """``PidResolver.claim``: a socket of ours, claimed, has our pid on the first take that
    sees it, in the background (where an unclaimed one waits for a walk: pid 0 first);
    what is not a socket of ours is refused."""
    from _sockets import closing_all, inode, pair, rows_of
    from tcpsnap import Snapshotter
    from test_pids import fast

    with Snapshotter(pids=True) as snap:
        res = fast(snap).resolver
        res.background = True
        snap.take()                                   # the first walk, in place
        lst, c, s = pair("127.0.0.1")
        lst2, c2, s2 = pair("127.0.0.1")
        with closing_all(lst, c, s, lst2, c2, s2):
            assert res.claim(s.fileno()) and res.claim(c.fileno()) and res.claim(lst.fileno())
            r, w = os.pipe()
            assert not res.claim(r)                   # not a socket
            os.close(r)
            os.close(w)
            rows = snap.take()
            assert res.stats["claimed"] == 3
            # by inode: another socket on the host may have either listener's port number
            mine = rows_of(rows, {inode(x) for x in (lst, c, s)})
            assert len(mine) == 3 and (mine["pid"] == os.getpid()).all()
            other = rows_of(rows, {inode(x) for x in (lst2, c2, s2)})
            assert len(other) == 3 and (other["pid"] == 0).all()   # waits for its walk
