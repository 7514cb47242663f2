"""Run inside a private network namespace (unshare -n), by tests/test_changes_identity.py;
prints JSON.

    probe           DestroyFeed.probe on sockets of every kind
    client-first    record changes mode (10 ms, destroy feed) while connections open and the
                    client closes first; each connection's identities in the recording
    skips           (in a namespace with a small TCP hash) hold connections open under churn,
                    record, and compare the recording with the dumps, which skip sockets
"""

import json
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import tcpsnap
from tcpsnap import Recorder


def lo_up():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def probe():
    from tcpsnap._destroy import DestroyFeed

    snap = tcpsnap.Snapshotter()
    feed = DestroyFeed()
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)    # keeps request sockets
    lst.listen(8)
    l6 = socket.socket(socket.AF_INET6)
    l6.bind(("::1", 0))
    l6.listen(8)
    port, port6 = lst.getsockname()[1], l6.getsockname()[1]
    keep = []
    c1 = socket.create_connection(("127.0.0.1", port))
    c1.send(b"x")
    s1, _ = lst.accept()
    c2 = socket.create_connection(("127.0.0.1", port))
    c2.send(b"x")
    s2, _ = lst.accept()
    c2.close()                                     # c2: FIN_WAIT2, s2: CLOSE_WAIT
    c3 = socket.create_connection(("127.0.0.1", port))
    c3.send(b"x")
    s3, _ = lst.accept()
    s3.recv(1)
    s3.close()
    c3.close()                                     # s3: TIME_WAIT
    c4 = socket.create_connection(("127.0.0.1", port))      # a request socket (no data yet)
    c6 = socket.create_connection(("::1", port6))
    s6, _ = l6.accept()
    keep += [c1, s1, s2, c4, c6, s6]
    time.sleep(0.05)
    rows = snap.take().copy()
    found, now = feed.probe(rows)
    wrong = rows.copy()
    wrong["cookie"] += 1 << 40
    # the TIME_WAIT, by its addresses and ports only
    tw = rows[rows["state"] == tcpsnap.TcpState.TIME_WAIT]
    asked = tw.copy()
    asked["cookie"] = 12345
    f_tw, n_tw = feed.probe(asked, by_cookie=False)
    # a 4-tuple no socket has: the lookup falls back to the listener on the local side
    nothing = rows[(rows["state"] == tcpsnap.TcpState.ESTABLISHED) & (rows["local_port"] == port)][:1].copy()
    nothing["remote_port"] = 1
    f_no, n_no = feed.probe(nothing, by_cookie=False)
    for s in (c1, s1, c6, s6):
        s.close()
    time.sleep(0.05)
    fields = ["family", "state", "local_port", "remote_port", "local_addr", "remote_addr", "cookie",
              "inode", "uid"]
    closed = rows[~np.isin(rows["cookie"], snap.take()["cookie"])]     # the server sides
    f_closed, _ = feed.probe(closed)
    return {"found_all": bool(found.all()),
            "same_rows": all(bool((now[f] == rows[f]).all()) for f in fields),
            "states": sorted(tcpsnap.TcpState(s).name for s in rows["state"]),
            "wrong_cookie_found": int(feed.probe(wrong)[0].sum()),
            "closed": sorted(tcpsnap.TcpState(x).name for x in closed["state"]),
            "closed_found": int(f_closed.sum()),
            "by_tuple_time_wait": tcpsnap.TcpState(n_tw["state"][0]).name if f_tw.all() else None,
            "by_tuple_cookie_differs": bool(n_tw["cookie"][0] == tw["cookie"][0] != 12345),
            "by_tuple_no_socket": tcpsnap.TcpState(n_no["state"][0]).name if f_no.all() else None}


def client_first(folder, seconds=1.0):
    """connect; the client closes (FIN_WAIT2, then TIME_WAIT: a mini-socket succeeds its
    full socket); the server closes 5 connections later (LAST_ACK, then freed)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(512)
    port = lst.getsockname()[1]
    rec = Recorder(folder, interval="10ms", mode="changes", pids=False, destroy=True, nice=None)
    rec.open()
    stop = threading.Event()
    made = []

    def loop():
        pending = []
        while not stop.is_set():
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = lst.accept()
            cp = c.getsockname()[1]
            c.close()
            pending.append((s, cp))
            if len(pending) > 5:
                s0, cp0 = pending.pop(0)
                s0.close()
                made.append((cp0, time.time_ns()))
        for s, cp in pending:
            s.close()
            made.append((cp, time.time_ns()))

    th = threading.Thread(target=rec.run, kwargs={"duration": f"{seconds}s"})
    th.start()
    while rec.snapshots < 2:
        time.sleep(0.001)
    t0 = time.time_ns()
    lt = threading.Thread(target=loop)
    lt.start()
    th.join()
    stop.set()
    lt.join()
    stats = dict(rec.stats)
    rec.close()
    ev = tcpsnap.read(folder, mode="changes")
    conn = ev[ev["family"] != 0]
    last = int(ev[ev["family"] == 0]["timestamp"].max().value)
    # connections made while the recorder ran, both sides closed 20 ms before its end, on
    # a client port no other connection used (a reset connection frees its port at once)
    uses = {}
    for cp, _ in made:
        uses[cp] = uses.get(cp, 0) + 1
    done = sorted({cp for cp, t in made if t0 < t < last - 20_000_000 and uses[cp] == 1})
    cli = conn[(conn["remote_port"] == port) & conn["local_port"].isin(done)]
    srv = conn[(conn["local_port"] == port) & conn["remote_port"].isin(done)]
    cid = cli.groupby("local_port")["cookie"].nunique().reindex(done, fill_value=0)
    sid = srv.groupby("remote_port")["cookie"].nunique().reindex(done, fill_value=0)

    def unseen(d):
        return (d["event"] == "closed") & ~d["seen_in_snapshot"]

    def race(g):
        """The kernel's race, left as it is: a dump gave the full socket its cookie while
        the kernel made its successor, which got none: the full socket's closed event and
        its successor's opened one in the same snapshot."""
        ck = g["cookie"].unique()
        if len(ck) != 2 or unseen(g).any():
            return False
        a, b = (g[g["cookie"] == c] for c in ck)
        if a["seq"].min() > b["seq"].min():
            a, b = b, a
        c_a = a[a["event"] == "closed"]
        o_b = b[b["event"] == "opened"]
        return (len(c_a) == 1 and len(o_b) == 1 and int(c_a["seq"].iloc[0]) == int(o_b["seq"].iloc[0])
                and str(o_b["state"].iloc[0]) in ("TIME_WAIT", "FIN_WAIT2", "ESTABLISHED", "CLOSE_WAIT"))

    def only_unseen(d, col):
        return int(d.groupby(col).apply(lambda g: len(g) == 1 and bool(unseen(g).all()),
                                        include_groups=False).sum())

    races = sum(int(race(d[d[col] == p])) for d, ids, col in ((cli, cid, "local_port"), (srv, sid, "remote_port"))
                for p in ids[ids > 1].index)
    return {"connections": len(done), "snapshots": stats["snapshots"],
            "client_sides_by_identities": {str(k): int(v) for k, v in cid.value_counts().items()},
            "server_sides_by_identities": {str(k): int(v) for k, v in sid.value_counts().items()},
            "cookie_races": races,
            "unseen_closes_client_side": int(unseen(cli).sum()),
            "unseen_closes_server_side": int(unseen(srv).sum()),
            "client_sides_only_unseen": only_unseen(cli, "local_port"),
            "server_sides_only_unseen": only_unseen(srv, "remote_port"),
            "two_identities": [[[int(q), str(e), str(st), int(c), int(ts.value), bool(seen)]
                                for q, e, st, c, ts, seen in zip(x["seq"], x["event"], x["state"], x["cookie"],
                                                                 x["timestamp"], x["seen_in_snapshot"])]
                               for d, ids, col in ((cli, cid, "local_port"), (srv, sid, "remote_port"))
                               for p in ids[ids > 1].index[:3] for x in [d[d[col] == p]]],
            "stats": {k: v for k, v in stats.items() if k.startswith(("destroy", "probe", "unprobed"))}}


class Tee:
    """The real Snapshotter, keeping the cookies of every table it returns."""

    pids = False

    def __init__(self):
        self.snap = tcpsnap.Snapshotter()
        self.cookies = []

    def take(self):
        rows = self.snap.take()
        self.cookies.append(rows["cookie"].copy())
        return rows

    def process_names(self, pids):
        return np.full(len(pids), -1, np.int32), []

    def close(self):
        self.snap.close()


def skips(folder, pairs=2000, seconds=10.0):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    port = lst.getsockname()[1]
    keep = []
    for _ in range(pairs):
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = lst.accept()
        keep += [c, s]
    held = np.array([int.from_bytes(k.getsockopt(socket.SOL_SOCKET, 57, 8), "little") for k in keep],
                    np.uint64)                                         # SO_COOKIE
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = lst.accept()
            s.close()
            c.close()

    tee = Tee()
    rec = Recorder(folder, interval="10ms", mode="changes", destroy=True, snapshotter=tee, nice=None,
                   keyframe="10m")
    rec.open()
    th = threading.Thread(target=churn)
    th.start()
    run = threading.Thread(target=rec.run)
    run.start()
    # until dumps skipped a few sockets (how often varies: tens a second, or a few)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and (rec.stats.get("probed_alive") or 0) < 5:
        time.sleep(0.1)
    rec.stop()
    run.join()
    stop.set()
    th.join()
    stats = dict(rec.stats)
    rec.close()
    tables = tee.cookies[1:]                     # the first: the recorder's warm-up take
    ev = tcpsnap.read(folder, mode="changes")
    h = ev[ev["cookie"].isin(held)]
    other = h[h["event"] != "keyframe"]
    full = tcpsnap.read(folder, columns=["seq", "cookie"])
    per = full[full["cookie"].isin(held)].groupby("seq").size().reindex(range(len(tables)), fill_value=0)
    return {"held": len(held), "snapshots": len(tables),
            "held_keyframe_rows": int((h["event"] == "keyframe").sum()),
            "held_other_events": sorted({(str(e), int(q)) for e, q in zip(other["event"], other["seq"])}),
            "skipped_by_first_dump": int((~np.isin(held, tables[0])).sum()),
            "skipped_by_later_dumps": sum(int((~np.isin(held, t)).sum()) for t in tables[1:]),
            "held_in_rebuilt_snapshots_after_the_first": bool((per.iloc[1:] == len(held)).all()),
            "probed": stats.get("probed"), "probed_alive": stats.get("probed_alive")}


if __name__ == "__main__":
    lo_up()
    what = sys.argv[1]
    if what == "probe":
        out = probe()
    elif what == "client-first":
        out = client_first(Path(sys.argv[2]))
    else:
        out = skips(Path(sys.argv[2]))
    json.dump(out, sys.stdout)
    # read with pyarrow's threads: end without the interpreter's teardown (apache/arrow#34314)
    from tcpsnap.cli import exit_process

    exit_process(0)
