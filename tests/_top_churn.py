"""Churn for the tmux test of ``tcpsnap top`` (run inside a private network namespace):
a listener on 127.0.0.1:7000 and a connection opened every 0.3 s, the oldest of four closed
(so rows appear, change state and go); after ``sys.argv[1]`` of them, quiet (the last four
kept open) so the table can be compared with ``ss``. Its pid goes to ``sys.argv[2]`` (the
test kills it by that pid), and once quiet it creates ``sys.argv[2] + ".done"``."""

import os
import socket
import sys
import time

with open(sys.argv[2], "w") as f:
    f.write(str(os.getpid()))
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 7000))
srv.listen(64)
conns = []
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(("127.0.0.1", 7000))
    a, _ = srv.accept()
    conns.append((c, a))
    if len(conns) > 4:
        c0, a0 = conns.pop(0)
        c0.close()
        a0.close()
    time.sleep(0.3)
open(sys.argv[2] + ".done", "w").close()
time.sleep(600)
