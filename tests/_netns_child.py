"""Run inside a private network namespace (unshare -n): make sockets in known states,
then print our table and ss's table, taken back to back, as JSON."""

import json
import socket
import subprocess
import sys
import time

import tcpsnap
from tcpsnap.frame import format_address

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _sockets import listener, pair, syn_sent


def rows_json(rows):
    return [dict(family=int(r["family"]), state=int(r["state"]),
                 local=format_address(int(r["family"]), r["local_addr"]), lport=int(r["local_port"]),
                 remote=format_address(int(r["family"]), r["remote_addr"]), rport=int(r["remote_port"]),
                 uid=int(r["uid"]), inode=int(r["inode"]), cookie=int(r["cookie"]),
                 rq=int(r["rx_queue"]), wq=int(r["tx_queue"]))
            for r in rows]


def main():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    keep = []
    keep += pair("127.0.0.1")
    keep += pair("::1")
    dual = listener("::", family=socket.AF_INET6, v6only=False)
    keep += pair("::", lst=dual, connect_host="127.0.0.1")
    keep.append(listener("127.0.0.1", backlog=3))
    keep.append(listener("::1", v6only=True))
    # half-closed: FIN_WAIT2 on the client, CLOSE_WAIT on the server
    lst, c, s = pair("127.0.0.1")
    keep += [lst, c, s]
    c.shutdown(socket.SHUT_WR)
    # TIME_WAIT: active close of a pair
    l2, c2, s2 = pair("::1")
    keep.append(l2)
    c2.close()
    s2.close()
    # bytes waiting in a receive queue
    l3, c3, s3 = pair("127.0.0.1")
    keep += [l3, c3, s3]
    c3.sendall(b"y" * 777)
    # SYN_SENT against a full accept queue
    l4, queued, stuck = syn_sent("127.0.0.1")
    keep += [l4, stuck] + queued
    time.sleep(0.3)    # let FIN/ACKs and the TIME_WAIT transition settle

    with tcpsnap.Snapshotter() as snap:
        ours1 = rows_json(snap.take())
        ss4 = subprocess.run(["ss", "-tane", "-4", "-H"], capture_output=True, text=True, check=True).stdout
        ss6 = subprocess.run(["ss", "-tane", "-6", "-H"], capture_output=True, text=True, check=True).stdout
        ours2 = rows_json(snap.take())
        single_walk = snap._impl.single_walk
    from tcpsnap._netlink import NetlinkDumper

    v2 = NetlinkDumper(single_walk=False)     # the two-dump fallback path
    ours_v2 = rows_json(v2.rows[:v2.dump()])
    json.dump({"ours1": ours1, "ours2": ours2, "ours_v2": ours_v2, "single_walk": single_walk,
               "ss4": ss4, "ss6": ss6}, sys.stdout)


if __name__ == "__main__":
    main()
