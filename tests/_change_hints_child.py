"""Run inside a private network namespace (unshare -n) by tests/test_change_hints.py;
prints JSON. Two ChangeTrackers on the same snapshots of a Snapshotter with pids: one given
the dump's hints, one not (on a copy of the rows); every snapshot's output must be the same
(``mismatches`` lists those that were not). Steps: quiet, a queue, a state change (FIN), a
socket passed by SCM_RIGHTS to another process whose first owner exits, a socket closed
(RST) and another opened on the same 4-tuple."""

import json
import os
import socket
import struct
import subprocess
import sys
import time

import numpy as np

import tcpsnap
from tcpsnap._events import EVENTS
from tcpsnap.record.changes import ChangeTracker

#: argv[1] "a": connect to port argv[2], print the local port, on "go" pass the socket over
#: the unix socket fd argv[3] and exit; "b": take one socket from fd argv[3], say "ok", hold it.
HELPER = r"""
import socket, sys
u = socket.socket(fileno=int(sys.argv[3]))
if sys.argv[1] == "a":
    s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    print(s.getsockname()[1], flush=True)
    sys.stdin.readline()
    socket.send_fds(u, [b"x"], [s.fileno()])
    print("sent", flush=True)
else:
    kept = socket.recv_fds(u, 16, 4)[1]
    print("ok", flush=True)
    sys.stdin.read()
"""


def helper(kind: str, port: int, fd: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HELPER, kind, str(port), str(fd)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1, pass_fds=(fd,))


def ss_line(lp: int, rp: int) -> str:
    out = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        if f[3].endswith(f":{lp}") and f[4].endswith(f":{rp}"):
            return line
    return ""


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(128)
    lport = lst.getsockname()[1]
    conns = []
    for _ in range(40):                        # 81 rows: blocks of 32 and a tail
        c = socket.create_connection(("127.0.0.1", lport))
        s, _ = lst.accept()
        conns.append((c, s))
    snap = tcpsnap.Snapshotter(pids=True)
    assert snap.set_change_hints(True)
    names = snap.process_names
    tr = ChangeTracker(10**15)
    sh = ChangeTracker(10**15)
    mismatches: list = []
    out: dict = {"steps": {}, "mismatches": mismatches}

    def take(label: str):
        rows = snap.take()
        hints = snap.change_hints
        h0 = tr._differ.hinted
        copy = rows.copy()
        t = time.time_ns()
        a = tr.step(rows, names, t, t, 0, hints=hints)
        b = sh.step(copy, names, t, t, 0)
        ok = a[0].tobytes() == b[0].tobytes() and all(np.array_equal(x, y) for x, y in zip(a[2], b[2], strict=True))
        na = nb = None
        if a[1] is not None:
            ca, la = a[1](None)
            cb, lb = b[1](None)
            na = [la[c] if c >= 0 else None for c in ca]
            nb = [lb[c] if c >= 0 else None for c in cb]
        if not ok or na != nb:
            mismatches.append(label)
        # a queues event holds the cookie, not the ports: named by the row of that cookie
        by_cookie = {int(r["cookie"]): f"{r['local_port']}:{r['remote_port']}" for r in rows}
        ev = [[EVENTS[e], by_cookie.get(int(r["cookie"]), f"{r['local_port']}:{r['remote_port']}")
               if EVENTS[e] != "closed" else f"{r['local_port']}:{r['remote_port']}", int(r["pid"])]
              for e, r in zip(a[2][0][1:].tolist(), a[0][1:], strict=True)]
        return ev, tr._differ.hinted > h0, rows

    def step(label: str, settle: float = 0.05):
        time.sleep(settle)
        ev, hinted, rows = take(label)
        out["steps"][label] = {"events": [e[:2] for e in ev], "hinted": hinted}
        return ev, rows

    for k in range(3):
        take(f"warm{k}")
    step("quiet")
    c, s = conns[3]
    c.send(b"x" * 10)                          # unread: the server row's recv-Q
    step("queues")
    out["queued_port"] = f"{lport}:{c.getsockname()[1]}"
    c, s = conns[20]
    c.shutdown(socket.SHUT_WR)                 # client FIN_WAIT2, server CLOSE_WAIT
    step("state")
    cp = c.getsockname()[1]
    out["fin_port"], out["fin_peer"] = f"{cp}:{lport}", f"{lport}:{cp}"
    st = {}
    for lp, rp, key in ((cp, lport, out["fin_port"]), (lport, cp, out["fin_peer"])):
        st[key] = ss_line(lp, rp).split()[0]
    out["ss_states"] = st

    # SCM_RIGHTS: A's socket passes to B, then A exits
    ua, ub = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pa = helper("a", lport, ua.fileno())
    pb = helper("b", lport, ub.fileno())
    ua.close()
    ub.close()
    aport = int(pa.stdout.readline())
    lst.accept()[0].detach()                   # the server end stays open (leaked on purpose)
    key = f"{aport}:{lport}"
    for k in range(5):
        take(f"a-owns{k}")
    pa.stdin.write("go\n")
    pa.stdin.flush()
    assert pa.stdout.readline().strip() == "sent"
    assert pb.stdout.readline().strip() == "ok"
    pa.wait(10)
    pids, changed = [], []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.1)
        ev, _, rows = take("passed")
        for e in ev:
            if e[1] == key:
                changed.append(e[2])
                assert e[0] == "changed", e
        m = (rows["local_port"] == aport) & (rows["remote_port"] == lport)
        pids.append(int(rows["pid"][m][0]))
        if pids[-1] == pb.pid:
            break
    out["steps"]["passed"] = {"pids": pids, "changed_pids": changed}
    out["receiver_pid"] = pb.pid
    line = ss_line(aport, lport)
    out["ss_pid"] = int(line.split("pid=")[1].split(",")[0]) if "pid=" in line else 0

    # the same 4-tuple, another socket: RST the old one, bind the new to its port
    for k in range(3):
        take(f"settle{k}")
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("127.0.0.1", 0))
    port = c.getsockname()[1]
    c.connect(("127.0.0.1", lport))
    s, _ = lst.accept()
    for k in range(3):
        take(f"before-reuse{k}")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()                                  # RST: no TIME_WAIT keeps the 4-tuple
    s.close()
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("127.0.0.1", port))
    c.connect(("127.0.0.1", lport))
    s2, _ = lst.accept()
    step("reused")
    out["reused"] = [f"{port}:{lport}", f"{lport}:{port}"]
    pb.stdin.close()
    pb.wait(10)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
    os._exit(0)
