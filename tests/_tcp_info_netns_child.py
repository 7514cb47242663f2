"""Run inside a private network namespace (unshare -n): a loopback connection whose data
is dropped by an nft rule (so it is retransmitted with backoff), its internals read by
tcpsnap and by ss, as JSON. Exit 77 (skip) when nft cannot add the rule here."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _sockets import pair, wait_for
from _tcp_info_ss import ss_info
from tcpsnap import Snapshotter


def fields(info):
    return {n: int(info[n]) for n in ("total_retrans", "backoff", "retransmits", "bytes_retrans",
                                      "unacked", "bytes_acked", "bytes_sent")}


def main():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    lst, c, s = pair("127.0.0.1")
    port = lst.getsockname()[1]
    cport = c.getsockname()[1]
    rules = (f"add table inet tcpsnap_test\n"
             f"add chain inet tcpsnap_test in {{ type filter hook input priority 0; }}\n"
             f"add rule inet tcpsnap_test in tcp dport {port} drop\n")
    p = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"nft cannot add a rule here: {p.stderr.strip()}", file=sys.stderr)
        sys.exit(77)
    c.sendall(b"r" * 1000)
    with Snapshotter(tcp_info=True, filter=f"sport = :{cport}") as snap:
        def retransmitted():
            rows = snap.take()
            return len(rows) == 1 and snap.tcp_info[0]["backoff"] >= 2 and fields(snap.tcp_info[0])
        ours = wait_for(retransmitted, timeout=20, step=0.05)
        ss = ss_info(port)[(cport, port)]
        subprocess.run(["nft", "delete", "table", "inet", "tcpsnap_test"], check=True)
        got = b""
        while len(got) < 1000:
            got += s.recv(1000)

        def acked():
            snap.take()
            return snap.tcp_info[0]["unacked"] == 0 and fields(snap.tcp_info[0])
        after = wait_for(acked, timeout=20, step=0.05)
    print(json.dumps({"ours": ours, "ss": ss, "after": after}))


if __name__ == "__main__":
    main()
