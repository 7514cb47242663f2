#!/usr/bin/env python3
"""Record this machine's TCP table for a few seconds, then answer three questions.

    python3 examples/three_questions.py                 # ~5 s, into a temporary folder
    python3 examples/three_questions.py --keep rec      # keep the recording in ./rec
    python3 examples/three_questions.py --no-traffic    # only what the machine does anyway

So that there is something to see, the script starts two small processes of its own
(named ``demo-server`` and ``demo-client``) that talk over loopback while it records:
a few long-lived connections, a stream of short ones (their closed ends wait in
TIME_WAIT), and a batch that the server "forgets" to close (CLOSE_WAIT piles up).
Everything else in the table -- the rest of the machine -- is recorded too.

1. Which processes hold the most connections?
2. Which connections lived longest?
3. When was the worst CLOSE_WAIT / TIME_WAIT pile-up, and whose sockets were they?
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import tcpsnap
from tcpsnap import analysis

# --------------------------------------------------------------------------- demo traffic

def _name(comm: str) -> None:
    """Set this process's name (``comm``, what tcpsnap's process column shows)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)  # PR_SET_NAME


def _server(portq, stop) -> None:
    """Two listeners: "polite" closes when the client does, "leaky" never does."""
    _name("demo-server")
    sel = selectors.DefaultSelector()
    listeners, ports = {}, {}
    for kind in ("polite", "leaky"):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(128)
        ls.setblocking(False)
        listeners[ls] = kind
        ports[kind] = ls.getsockname()[1]
        sel.register(ls, selectors.EVENT_READ, kind)
    portq.put(ports)
    held = []
    while not stop.is_set():
        for key, _ in sel.select(0.05):
            s = key.fileobj
            if s in listeners:
                conn, _ = s.accept()
                held.append(conn)
                if key.data == "polite":
                    sel.register(conn, selectors.EVENT_READ, "conn")
            elif not s.recv(4096):       # the client closed: so do we (leaky ones never get here)
                sel.unregister(s)
                s.close()
    for s in held + list(listeners):
        s.close()


def _client(ports, stop, seconds: float) -> None:
    _name("demo-client")
    polite, leaky = ("127.0.0.1", ports["polite"]), ("127.0.0.1", ports["leaky"])
    long_lived = [socket.create_connection(polite) for _ in range(6)]
    leaked = None
    t0 = time.monotonic()
    while not stop.is_set() and (now := time.monotonic() - t0) < seconds:
        if now > 0.5:                    # a short request every ~100 ms: TIME_WAIT behind us
            with socket.create_connection(polite) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        if leaked is None and now > 0.3 * seconds:
            leaked = [socket.create_connection(leaky) for _ in range(15)]
        if leaked and now > 0.5 * seconds:
            for c in leaked:             # we close; the server's ends sit in CLOSE_WAIT
                c.close()
            leaked = []
        time.sleep(0.1)
    stop.wait()
    for c in long_lived:
        c.close()


# --------------------------------------------------------------------------- the questions

def _conn(r) -> str:
    remote = f"{r.remote_addr}:{r.remote_port}" if r.remote_port else "*"
    return f"{r.local_addr}:{r.local_port} -> {remote}"


def _t(ts) -> str:
    return ts.strftime("%H:%M:%S.%f")[:-3]


def _who(r) -> str:
    return f"{r.process} ({r.pid})" if r.pid else "(owner unknown)"


def answer(df: pd.DataFrame) -> None:
    life = analysis.lifetimes(df)
    snaps = df["seq"].nunique()
    t_first, t_last = df["timestamp"].min(), df["timestamp"].max()
    print(f"\nrecorded {snaps} snapshots, {len(df):,} rows, {len(life):,} distinct connections, "
          f"{_t(t_first)} .. {_t(t_last)} UTC")

    print("\n1. Which processes hold the most connections?")
    bp = analysis.by_process(df, life=life)
    bp = bp[bp["connections"] > 0].head(5)
    for pid, r in bp.iterrows():
        who = f"{r['process']} (pid {pid})" if pid else "owner unknown (TIME_WAIT, ...)"
        listen = f", listening on {r['listening']}" if r["listening"] else ""
        print(f"   {who:<40} {r['connections']:>4} connections to {r['remotes']} remote address(es){listen}")

    print("\n2. Which connections lived longest?")
    up = life[life["states"].str.contains("ESTABLISHED")]          # not listeners, not leftovers
    conns = up.sort_values(["duration", "first_seen"], ascending=[False, True]).head(5)
    if len(conns) == 0:
        print("   none: no connection was established while recording")
    for r in conns.itertuples():
        life_s = f"{r.duration.total_seconds():.1f} s" + ("+" if r.open_at_start or r.open_at_end else "")
        print(f"   {life_s:>8}  {_conn(r):<44} {_who(r):<22} {r.states}")
    if len(conns):
        print("   (+: open before the recording began or still open at its end: lived longer)")

    print("\n3. When was the worst CLOSE_WAIT / TIME_WAIT pile-up?")
    per_snap = analysis.state_counts(df, freq="100ms", agg="max")
    for state, meaning in (("CLOSE_WAIT", "the peer closed, our program has not"),
                           ("TIME_WAIT", "closed by us, waiting out the 60 s timer")):
        if state not in per_snap or per_snap[state].max() == 0:
            print(f"   {state}: none ({meaning})")
            continue
        col = per_snap[state]
        when = col.idxmax()
        owners = life[life["states"].str.contains(state)]
        top = owners["process"].astype(object).fillna("(owner unknown)").value_counts().head(3)
        by = ", ".join(f"{name} {n}" for name, n in top.items())
        print(f"   {state}: at most {int(col.max())} at once, first at {_t(when)} UTC ({meaning})")
        print(f"      sockets that went through it, by owner: {by}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="record a few seconds of the TCP table and answer three questions")
    ap.add_argument("--seconds", type=float, default=5.0, help="how long to record (default 5)")
    ap.add_argument("--keep", metavar="DIR", help="record into DIR and keep it (default: a temporary folder)")
    ap.add_argument("--no-traffic", action="store_true", help="don't start the demo processes")
    args = ap.parse_args(argv)

    tmp = None
    if args.keep:
        path = Path(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="tcpsnap-example-")
        path = Path(tmp.name) / "recording"
    procs = []
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    stop = ctx.Event()
    try:
        if not args.no_traffic:
            portq = ctx.Queue()
            procs.append(ctx.Process(target=_server, args=(portq, stop), daemon=True))
            procs[-1].start()
            ports = portq.get(timeout=10)
            procs.append(ctx.Process(target=_client, args=(ports, stop, args.seconds), daemon=True))
            procs[-1].start()
        print(f"recording the TCP table every 100 ms for {args.seconds:g} s into {path} ...")
        with tcpsnap.Recorder(path, interval="100ms") as rec:
            rec.run(duration=args.seconds)
        s = rec.stats
        print(f"done: {s['snapshots']} snapshots, {s['rows']:,} rows, {s['overruns']} overruns, "
              f"pids {'on' if s['pids'] else 'off'}")
        stop.set()
        answer(tcpsnap.read(path))
    finally:
        stop.set()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
