"""Hold N established loopback TCP connections open in helper processes.

One connection is a client socket and its accepted server socket, both on 127.0.0.1,
so N connections put 2*N ESTABLISHED rows (plus a few LISTEN rows) in the table.
Each helper process holds at most PER_PROC connections (2 fds each, under the
20,000-fd limit) spread over several listeners.

    with hold(10_000) as h:      # returns once every connection is up
        ...                      # h.rows: the rows they add to the table

Run as a script to hold connections until killed: ``python3 _conns.py 1000``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

PER_PROC = 4000
LISTENERS = 4


def _child(n: int) -> None:
    """Open n connection pairs, print 'ready <n>', wait for stdin to close."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * n + 64)), hard))
    except (ImportError, ValueError, OSError):
        pass
    lsts = []
    for _ in range(LISTENERS):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(1024)
        lsts.append(s)
    keep = []
    for i in range(n):
        lst = lsts[i % LISTENERS]
        c = socket.create_connection(lst.getsockname())
        a, _ = lst.accept()
        keep += (c, a)
    sys.stdout.write(f"ready {n}\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the parent closes our stdin or kills us


class Holder:
    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    @property
    def rows(self) -> int:
        return 2 * self.n + LISTENERS * len(self.procs)

    def start(self) -> "Holder":
        left = self.n
        while left > 0:
            k = min(PER_PROC, left)
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", str(k)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
            left -= k
        for p in self.procs:
            line = p.stdout.readline()
            if not line.startswith("ready"):
                self.stop()
                raise RuntimeError(f"connection holder failed: {line!r}")
        return self

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


@contextlib.contextmanager
def hold(n: int):
    h = Holder(n).start() if n > 0 else Holder(0)
    try:
        yield h
    finally:
        h.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]))
        sys.exit(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with hold(n) as h:
        print(f"holding {n} connections ({h.rows} rows); Ctrl-C to stop", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
