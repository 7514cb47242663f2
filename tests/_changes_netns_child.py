"""Run inside a private network namespace (unshare -n): record in changes mode at a 1 s
interval while 100 short connections open and close between two snapshots; print what
the recording holds of them as JSON."""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import tcpsnap
from tcpsnap import Recorder

N = 100


def main(folder):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(256)
    port = lst.getsockname()[1]
    rec = Recorder(folder, interval="1s", mode="changes", pids=False, destroy=True, nice=None)
    rec.open()
    th = threading.Thread(target=rec.run, kwargs={"duration": "3.5s"})
    th.start()
    while rec.snapshots < 1:            # just after a snapshot: a whole second until the next
        time.sleep(0.005)
    t0 = time.monotonic()
    clients = []
    for _ in range(N):
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = lst.accept()
        clients.append(c.getsockname()[1])
        s.close()                       # server closes first: its socket dies, the client's
        c.close()                       # (passive close, LAST_ACK) too
    took = time.monotonic() - t0
    th.join()
    snaps_during = rec.snapshots
    rec.close()
    ev = tcpsnap.read(folder, mode="changes")
    conn = ev[ev["family"] != 0]
    found = {}
    for p in clients:
        m = conn[(conn["local_port"] == p) | (conn["remote_port"] == p)]
        found[p] = sorted(zip(m["event"].astype(str), m["seen_in_snapshot"].astype(bool),
                              m["state"].astype(str), m["local_port"] == p))
    json.dump({"took": took, "snapshots": snaps_during, "ports": clients,
               "found": {str(k): v for k, v in found.items()},
               "identities": {str(p): int(conn[(conn["local_port"] == p) | (conn["remote_port"] == p)]["cookie"].nunique())
                              for p in clients},
               "unseen": int(((conn["event"] == "closed") & ~conn["seen_in_snapshot"]).sum()),
               "drops": 0}, sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # read with pyarrow's threads: end without the interpreter's teardown (apache/arrow#34314)
    from tcpsnap.cli import exit_process

    exit_process(0)
