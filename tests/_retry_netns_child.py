"""Run inside a private network namespace (unshare -n, loopback up), as root or as nobody,
by tests/test_netlink_retry.py: hold stable loopback connections while a thread churns
others (connect, exchange, close: TIME_WAITs come and go), and dump the table again and
again with attempts aborted part-way (``NetlinkDumper.inject_retries``). Prints JSON: per
dump the cookies and inodes repeated in its rows, the stable sockets missing or repeated;
at the end the stable sockets' cookies as ``ss -tane`` shows them beside the dump's."""

import json
import os
import random
import re
import socket
import subprocess
import sys
import threading

import numpy as np

from tcpsnap._netlink import NetlinkDumper

STABLE, DUMPS = int(sys.argv[1]), int(sys.argv[2])


def main():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    port = lst.getsockname()[1]
    keep = []
    for _ in range(STABLE):
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = lst.accept()
        keep += [c, s]
    keep.append(lst)
    stable = {os.fstat(x.fileno()).st_ino for x in keep}
    stop = threading.Event()
    churned = [0]

    def churn():
        # its own listener: the stable one's accept queue stays empty
        cl = socket.socket()
        cl.bind(("127.0.0.1", 0))
        cl.listen(4096)
        addr = cl.getsockname()
        while not stop.is_set():
            c = socket.create_connection(addr)
            s, _ = cl.accept()
            c.sendall(b"x")
            s.recv(1)
            c.close()
            s.close()
            churned[0] += 1
        cl.close()

    th = threading.Thread(target=churn, daemon=True)
    th.start()
    rnd = random.Random(18)
    d = NetlinkDumper(capacity=rnd.choice([16, 1024]), recv_size=8192)
    out = np.zeros(3 * STABLE, d.rows.dtype)
    bad, injected = [], 0
    for k in range(DUMPS):
        times = rnd.choice([0, 1, 1, 2, 4])
        d.inject_retries(rnd.randint(0, 6), times)
        injected += times
        if k % 3 == 2:
            n, placed = d.dump_into(out, 5)
            rows = out[5:5 + n] if placed else d.rows[:n]
        else:
            n = d.dump()               # before d.rows: a dump that grows replaces the array
            rows = d.rows[:n]
        cookies = rows["cookie"]
        inodes = rows["inode"][rows["inode"] != 0]
        ino, count = np.unique(rows["inode"], return_counts=True)
        mine = dict(zip(ino.tolist(), count.tolist(), strict=True))
        rep_c = int(len(cookies) - len(np.unique(cookies)))
        rep_i = int(len(inodes) - len(np.unique(inodes)))
        missing = sorted(i for i in stable if i not in mine)
        twice = sorted(i for i in stable if mine.get(i, 0) > 1)
        if rep_c or rep_i or missing or twice:
            bad.append({"dump": k, "rows": len(rows), "repeated_cookies": rep_c, "repeated_inodes": rep_i,
                        "missing": missing[:5], "twice": twice[:5]})
    stop.set()
    th.join()
    n = d.dump()
    rows = d.rows[:n]
    ours = {int(i): int(c) for i, c in zip(rows["inode"], rows["cookie"], strict=True) if int(i) in stable}
    ss = subprocess.run(["ss", "-taneH"], capture_output=True, text=True, check=True).stdout
    theirs = {}
    for line in ss.splitlines():
        i, c = re.search(r"\bino:(\d+)", line), re.search(r"\bsk:([0-9a-f]+)", line)
        if i and c and int(i.group(1)) in stable:
            theirs[int(i.group(1))] = int(c.group(1), 16)
    print(json.dumps({"bad": bad, "dumps": DUMPS, "retries": d.retries, "injected": injected,
                      "duplicates": d.duplicates, "grows": d.grows, "churned": churned[0],
                      "uid": os.getuid(), "stable": len(stable), "ours": len(ours),
                      "cookies_agree": ours == theirs and len(ours) == len(stable)}))


main()
