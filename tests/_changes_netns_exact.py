"""Run inside a private network namespace (unshare -n): record the live table in changes
mode with the destroy feed while connections come and go, keeping a copy of every table
the recorder took; print whether the rebuilt recording equals those tables, snapshot by
snapshot, as JSON."""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import tcpsnap
from tcpsnap import Recorder


class Tee:
    """The real Snapshotter, keeping a copy of every table it returns."""

    pids = False

    def __init__(self):
        self.snap = tcpsnap.Snapshotter()
        self.tables = []

    def take(self):
        rows = self.snap.take()
        self.tables.append(rows.copy())
        return rows

    def process_names(self, pids):
        return np.full(len(pids), -1, np.int32), []

    def close(self):
        self.snap.close()


def churn(stop, port):
    keep = []
    i = 0
    while not stop.is_set():
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = LST.accept()
        if i % 3 == 0:
            keep.append((c, s))            # lives on, with bytes in its queue now and then
            c.send(b"x" * (i % 50 + 1))
        elif i % 3 == 1:
            s.close()                      # server first: the server side goes TIME_WAIT
            c.close()
        else:
            c.close()
            s.close()
        if len(keep) > 20:
            a, b = keep.pop(0)
            a.close()
            b.close()
        i += 1
        time.sleep(0.002)


def main(folder):
    global LST
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    LST = socket.socket()
    LST.bind(("127.0.0.1", 0))
    LST.listen(512)
    tee = Tee()
    rec = Recorder(folder, interval="20ms", mode="changes", keyframe="300ms", destroy=True,
                   snapshotter=tee, nice=None)
    rec.open()
    stop = threading.Event()
    th = threading.Thread(target=churn, args=(stop, LST.getsockname()[1]))
    th.start()
    rec.run(duration="1.5s")
    stop.set()
    th.join()
    stats = dict(rec.stats)
    rec.close()
    tables = tee.tables[1:]                 # the first: the recorder's untimed warm-up take
    df = tcpsnap.read(folder)
    ev = tcpsnap.read(folder, mode="changes")
    bad = []
    refound = 0
    by_seq = {int(k): g for k, g in df.groupby("seq")}
    for k, t in enumerate(tables):
        g = by_seq.get(k)
        have = sorted(zip(g["cookie"].tolist(), g["state"].astype(str).tolist(),
                          g["rx_queue"].tolist(), g["tx_queue"].tolist(), g["inode"].tolist(),
                          g["local_port"].tolist(), g["remote_port"].tolist())) if g is not None else []
        want = sorted(zip(t["cookie"].tolist(), [tcpsnap.TcpState(s).name for s in t["state"]],
                          t["rx_queue"].tolist(), t["tx_queue"].tolist(), t["inode"].tolist(),
                          t["local_port"].tolist(), t["remote_port"].tolist()))
        if have != want:
            # a socket the dump skipped, which the kernel still held when asked, is kept in
            # the recorded snapshot (tcpsnap._events): rows more, from the table before
            extra = set(have) - set(want)
            before = set(tables[k - 1]["cookie"].tolist()) if k else set()
            if set(want) <= set(have) and all(r[0] in before for r in extra):
                refound += len(extra)
                continue
            bad.append(k)
    closed = ev[(ev["event"] == "closed")]
    json.dump({"snapshots": len(tables), "bad": bad, "destroyed": stats["destroyed"],
               "unseen": int((~closed["seen_in_snapshot"]).sum()),
               "closed_seen": int(closed["seen_in_snapshot"].sum()),
               "rows": int(len(df)), "refound": refound, "probed_alive": stats["probed_alive"]},
              sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # read with pyarrow's threads: end without the interpreter's teardown (apache/arrow#34314)
    from tcpsnap.cli import exit_process

    exit_process(0)
