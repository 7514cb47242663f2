"""Run inside a private network namespace (unshare -n): make sockets at known addresses,
ports and states, then for each filter print what `ss -Htan` shows and what tcpsnap keeps
(the kernel alone with our bytecode, Snapshotter(filter=...), and the numpy mask), as JSON.
argv[1]: a JSON list of [ss arguments, our filter text]."""

import ipaddress
import json
import socket
import subprocess
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
import tcpsnap
from _sockets import listener, pair
from tcpsnap._netlink import NetlinkDumper
from tcpsnap.frame import format_address

SS_STATES = {"ESTAB": 5, "SYN-SENT": 3, "SYN-RECV": 4, "FIN-WAIT-1": 6, "FIN-WAIT-2": 7,
             "TIME-WAIT": 11, "UNCONN": 1, "CLOSE-WAIT": 8, "LAST-ACK": 10, "LISTEN": 2,
             "CLOSING": 9}


def endpoint(text):
    host, port = text.rsplit(":", 1)
    host = host.strip("[]").split("%", 1)[0]
    if host == "*":          # ss's spelling of a dual-stack socket's [::]
        host = "::"
    return str(ipaddress.ip_address(host)), 0 if port == "*" else int(port)


def ss_rows(args):
    out = subprocess.run(["ss", "-Htan", *args], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] in SS_STATES:
            rows.append([SS_STATES[f[0]], *endpoint(f[3]), *endpoint(f[4])])
        elif f:              # one state asked for: ss leaves the State column out (-1 here)
            rows.append([-1, *endpoint(f[2]), *endpoint(f[3])])
    return sorted(rows)


def our_rows(rows):
    return sorted([int(r["state"]), str(ipaddress.ip_address(format_address(int(r["family"]), r["local_addr"]))),
                   int(r["local_port"]),
                   str(ipaddress.ip_address(format_address(int(r["family"]), r["remote_addr"]))),
                   int(r["remote_port"])] for r in rows)


def bound_pair(lhost, lport, chost, cport=0):
    fam = socket.AF_INET6 if ":" in lhost else socket.AF_INET
    lst = socket.socket(fam, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((lhost, lport))
    lst.listen(8)
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.bind((chost, cport))
    c.connect((lhost, lport))
    s, _ = lst.accept()
    return [lst, c, s]


def main():
    cases = json.loads(sys.argv[1])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", "10.1.2.3/8", "dev", "lo"], check=True)
    subprocess.run(["ip", "addr", "add", "192.168.7.1/24", "dev", "lo"], check=True)
    time.sleep(0.2)
    keep = []
    keep += bound_pair("127.0.0.1", 443, "127.0.0.1")
    keep += bound_pair("::1", 8443, "::1")
    keep += bound_pair("10.1.2.3", 22, "10.1.2.3", 40022)
    keep += bound_pair("192.168.7.1", 5432, "10.1.2.3")
    keep += bound_pair("127.0.0.1", 80, "127.0.0.1", 1023)
    d = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    d.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    d.bind(("::", 2000))
    d.listen(8)
    keep += list(pair("::", lst=d, connect_host="127.0.0.1"))      # a v4-mapped IPv6 server side
    keep.append(listener("::1", v6only=True))
    # half-closed: FIN_WAIT2 on the client, CLOSE_WAIT on the server
    lst, c, s = bound_pair("127.0.0.1", 3000, "127.0.0.1")
    keep += [lst, c, s]
    c.shutdown(socket.SHUT_WR)
    # TIME_WAIT, IPv4 and IPv6: the client closes first
    for host, port in (("127.0.0.1", 4443), ("::1", 4444)):
        lst, c, s = bound_pair(host, port, host)
        c.close()
        time.sleep(0.05)
        s.close()
        keep.append(lst)
    time.sleep(0.3)
    out = {}
    for ss_args, text in cases:
        f = tcpsnap.parse_filter(text)
        states, bc = f.kernel()
        d = NetlinkDumper()
        d.set_filter(states, bc)
        n = d.dump()
        dumped = our_rows(d.rows[:n])
        d.close()
        with tcpsnap.Snapshotter(filter=f) as snap:
            kept = our_rows(snap.take())
        with tcpsnap.Snapshotter() as snap:
            rows = snap.take().copy()
        masked = our_rows(rows[f.mask(rows)])
        out[text] = {"ss": ss_rows(ss_args), "dump": dumped, "snapshotter": kept, "mask": masked,
                     "all": len(rows), "bytecode": None if bc is None else len(bc)}
    for s in keep:
        s.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
