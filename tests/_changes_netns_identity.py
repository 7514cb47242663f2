"""Run inside a private network namespace (unshare -n), by tests/test_changes_identity.py;
prints JSON.

    probe           DestroyFeed.probe on sockets of every kind
"""

import json
import socket
import subprocess
import sys
import time

import numpy as np

import tcpsnap


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


if __name__ == "__main__":
    lo_up()
    json.dump(probe(), sys.stdout)
