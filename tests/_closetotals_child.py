"""Run inside a private network namespace (unshare -n) by tests/test_closetotals.py and
benchmarks/bench_changes.py; prints JSON.

    one N M          record changes mode with --tcp-info (200 ms, destroy feed) while one
                     connection sends N bytes one way and M the other, its client closes
                     first (after its FIN is acked: FIN_WAIT2), then its server; the
                     client's TIME_WAIT is removed (ss -K); each side's closed event
    burst COUNT RATE interval 1 s: COUNT connections opened and closed at RATE a second
                     (connection i sends 100 + i bytes, gets 3 * (100 + i) back, closes as
                     above), TIME_WAITs removed; every closed event's ports and counters

Each connection's close is made deterministic: the client shuts its side down, waits for the
server's ACK of its FIN (FIN_WAIT2), then closes -- the kernel then frees the client's full
socket before the server's FIN comes --, then the server closes.
"""

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import tcpsnap
from tcpsnap import Recorder

FIN_WAIT2 = 5          # struct tcp_info's tcpi_state (the kernel's numbering)


def lo_up():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def tcp_state(s):
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def recv_exact(s, n):
    got = 0
    while got < n:
        b = s.recv(min(1 << 16, n - got))
        if not b:
            raise RuntimeError("EOF before all bytes")
        got += len(b)


def exchange(lst, n_out, n_in):
    """One connection to ``lst``: the client sends ``n_out``, the server ``n_in``, then the
    deterministic close. Returns the client's local port and the server's."""
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    port = (c.getsockname()[1], lst.getsockname()[1])
    c.sendall(b"x" * n_out)
    recv_exact(s, n_out)
    s.sendall(b"y" * n_in)
    recv_exact(c, n_in)
    c.shutdown(socket.SHUT_WR)
    t0 = time.monotonic()
    while tcp_state(c) != FIN_WAIT2:
        if time.monotonic() - t0 > 5:
            raise RuntimeError("no FIN_WAIT2")
        time.sleep(0.0005)
    c.close()
    if s.recv(1) != b"":
        raise RuntimeError("no EOF")
    s.close()
    return port


def recording(folder, interval):
    return Recorder(folder, interval=interval, mode="changes", pids=False, destroy=True, nice=None,
                    tcp_info=True)


def run(rec, body, warmup, settle):
    """``body()`` while ``rec`` records; then the clients' TIME_WAITs are removed (so
    their closed events are written) and the recorder stops. Returns (body's result,
    the recorder's stats)."""
    th = threading.Thread(target=rec.run)
    th.start()
    try:
        time.sleep(warmup)
        got = body()
        time.sleep(settle)
        subprocess.run(["ss", "-K", "state", "time-wait"], capture_output=True)
        time.sleep(settle)
    finally:
        rec.stop()
        th.join()
    return got, dict(rec.stats)


def closed_events(folder):
    ev = tcpsnap.read(folder, mode="changes")
    c = ev[(ev["event"] == "closed")]
    cols = ["local_port", "remote_port", "state", "seen_in_snapshot", "tcp_info_len", "bytes_acked",
            "bytes_received", "bytes_sent", "total_retrans", "min_rtt"]
    out = c[cols].copy()
    out["state"] = out["state"].astype(str)
    return json.loads(out.to_json(orient="records"))


def one(n, m):
    lo_up()
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "rec"
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(8)
        with recording(folder, "200ms") as rec:
            port, stats = run(rec, lambda: exchange_seen(lst, n, m), 0.5, 0.6)
        print(json.dumps({"server_port": lst.getsockname()[1], "client_port": port,
                          "closed": closed_events(folder), "stats": stats}, default=str))


def exchange_seen(lst, n, m):
    """``exchange`` with the connection held open for a few snapshots before it closes."""
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    port = c.getsockname()[1]
    c.sendall(b"x" * n)
    recv_exact(s, n)
    s.sendall(b"y" * m)
    recv_exact(c, m)
    time.sleep(0.7)               # seen by snapshots, counters recorded
    c.shutdown(socket.SHUT_WR)
    while tcp_state(c) != FIN_WAIT2:
        time.sleep(0.001)
    c.close()
    time.sleep(0.5)               # the client's full socket freed, its FIN_WAIT2 recorded
    if s.recv(1) != b"":
        raise RuntimeError("no EOF")
    s.close()
    return port


def burst(count, rate, workers=50):
    lo_up()
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "rec"
        lsts = []
        for _ in range(workers):
            lst = socket.socket()
            lst.bind(("127.0.0.1", 0))
            lst.listen(64)
            lsts.append(lst)
        ports: list = [None] * count
        errors: list = []
        t0 = 0.0

        def work(w):
            try:
                for i in range(w, count, workers):
                    wait = t0 + i / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    ports[i] = exchange(lsts[w], 100 + i, 3 * (100 + i))
            except Exception as e:        # noqa: BLE001 -- reported to the test
                errors.append(repr(e))

        def body():
            nonlocal t0
            t0 = time.monotonic() + 0.05
            ths = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
            return time.monotonic() - t0

        with recording(folder, "1s") as rec:
            took, stats = run(rec, body, 1.5, 1.5)
        print(json.dumps({"ports": ports,
                          "errors": errors, "took": took, "closed": closed_events(folder),
                          "stats": stats}, default=str))


if __name__ == "__main__":
    if sys.argv[1] == "one":
        one(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "burst":
        burst(int(sys.argv[2]), float(sys.argv[3]))
    # read with pyarrow's threads: end without the interpreter's teardown (apache/arrow#34314)
    from tcpsnap.cli import exit_process

    exit_process(0)
