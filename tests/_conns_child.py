"""A process with known loopback connections, for the namespace and cgroup tests.

argv: [CGROUP_DIR or -]. Moves itself into CGROUP_DIR (writing cgroup.procs) if given,
brings lo up (a new namespace's is down), opens a listener with two ESTABLISHED pairs
(IPv4, and IPv6 where ::1 exists) plus one more IPv4 pair, prints one JSON line
{"pid", "ports": [...], "tw_port": client port of the third pair, "listening",
"sockets", "inodes": the socket inode of every socket it holds (the exact way to find its
rows: another socket on the host may hold one of its port numbers)}, then on "close" from
stdin closes the third pair's client, reads its FIN on the server side, then closes that
(only the client goes to TIME_WAIT), prints "closed",
and exits at end of input.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sockets import pair


def main():
    if len(sys.argv) > 1 and sys.argv[1] != "-":
        with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    # a new namespace's lo is down (and /sys may still show another namespace's): up, always
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    keep = list(pair("127.0.0.1"))
    try:
        keep += pair("::1")
    except OSError:
        pass
    lst, c, s = pair("127.0.0.1")
    ports = sorted({k.getsockname()[1] for k in keep + [lst, c, s]})
    listening = sorted(k.getsockname()[1] for k in keep[::3] + [lst])
    print(json.dumps({"pid": os.getpid(), "ports": ports, "tw_port": c.getsockname()[1],
                      "listening": listening, "sockets": len(keep) // 3 * 2 + 2,
                      "inodes": sorted(os.fstat(k.fileno()).st_ino for k in keep + [lst, c, s])}),
          flush=True)
    for line in sys.stdin:
        if line.strip() == "close":
            c.close()
            # read the FIN before the passive close: closing both at once can cross the
            # FINs, and a simultaneous close leaves the server's side in TIME_WAIT too
            s.settimeout(10)
            s.recv(1)
            s.close()
            print("closed", flush=True)
    for k in keep:
        k.close()
    lst.close()


if __name__ == "__main__":
    main()
