"""Loopback sockets in known states, for the live tests (Linux)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import time


def stable_addr(sock: socket.socket) -> tuple[str, int]:
    a = sock.getsockname()
    return a[0], a[1]


def listener(host: str = "127.0.0.1", backlog: int = 16, family=None, v6only=None) -> socket.socket:
    fam = family or (socket.AF_INET6 if ":" in host else socket.AF_INET)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((host, 0))
    s.listen(backlog)
    return s


def pair(host: str = "127.0.0.1", lst: socket.socket | None = None, connect_host: str | None = None):
    """(listener, client, server) with an ESTABLISHED connection."""
    lst = lst or listener(host)
    port = lst.getsockname()[1]
    target = connect_host or host
    c = socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET, socket.SOCK_STREAM)
    c.connect((target, port))
    s, _ = lst.accept()
    return lst, c, s


def wait_for(pred, timeout=5.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def syn_sent(host: str = "127.0.0.1"):
    """A client stuck in SYN_SENT: its SYN is dropped because the listener's accept
    queue is full. Returns (listener, queued clients, the stuck client)."""
    lst = listener(host, backlog=0)
    port = lst.getsockname()[1]
    queued = []
    for _ in range(8):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        err = c.connect_ex((host, port))
        assert err in (0, errno.EINPROGRESS), err
        # a connection the kernel completed lands in the (full) accept queue
        time.sleep(0.05)
        if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _connected(c):
            queued.append(c)
            continue
        return lst, queued, c
    raise RuntimeError("could not get a client stuck in SYN_SENT")


def _connected(c: socket.socket) -> bool:
    try:
        c.getpeername()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def closing_all(*socks):
    try:
        yield
    finally:
        for s in socks:
            if isinstance(s, (list, tuple)):
                for x in s:
                    x.close()
            elif s is not None:
                s.close()


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def ss_owners(inodes: set[int]) -> dict[int, tuple[str, int]]:
    """inode -> (name, pid) of every socket of ``inodes`` (live sockets: a live socket's
    inode is unique, its port numbers are not) as ``ss -tanpe`` shows it; a socket with
    no holder or several is left out."""
    out = subprocess.run(["ss", "-tanpeH"], capture_output=True, text=True, check=True).stdout
    got: dict[int, tuple[str, int]] = {}
    for line in out.splitlines():
        ino = re.search(r"\bino:(\d+)", line)
        if ino is None or int(ino.group(1)) not in inodes:
            continue
        holders = set(re.findall(r'\("([^"]*)",pid=(\d+),', line))
        if len(holders) == 1:
            name, pid = holders.pop()
            got[int(ino.group(1))] = (name, int(pid))
    return got


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds now (its ``/proc/PID/fd`` links)."""
    got = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                got.add(int(link[8:-1]))
    return got


def rows_of(rows, inodes):
    """The rows (a structured array) of these live sockets, by inode: a live socket's
    inode is unique on the host, whereas a port number is not (a TIME_WAIT of an earlier
    test, a client of another destination given the same port by connect(), a socket on
    ``::1``). TIME_WAIT and orphaned rows (inode 0) are never selected."""
    import numpy as np

    return rows[np.isin(rows["inode"], np.array(sorted(inodes), dtype=rows["inode"].dtype))]


def _raw(host: str):
    import ipaddress

    import numpy as np

    ip = ipaddress.ip_address(host)
    raw = np.zeros(16, np.uint8)
    raw[:len(ip.packed)] = np.frombuffer(ip.packed, np.uint8)
    return ip.version, raw


def ends_mask(rows, host: str, ends: set[tuple[int, int]]):
    """Mask of the rows (a structured array) on loopback ``host`` whose (local port,
    remote port) is one of ``ends``, by family and both addresses ((port, 0): a listener
    on ``host``, its remote address unspecified): another socket on the host may have
    these port numbers on another address or family."""
    import numpy as np

    family, raw = _raw(host)
    local = (rows["family"] == family) & (rows["local_addr"] == raw).all(axis=1)
    m = np.zeros(len(rows), bool)
    for lp, rp in ends:
        remote = (rows["remote_addr"] == (raw if rp else 0)).all(axis=1)
        m |= local & remote & (rows["local_port"] == lp) & (rows["remote_port"] == rp)
    return m


def ends_filter(host: str, lport: int, cport: int) -> str:
    """A filter (ss's language) that selects exactly a listener ``host:lport`` and its
    connection from ``host:cport``, by both ends and address."""
    return (f"src {host} and dst {host} and ((sport = :{lport} and dport = :{cport}) or "
            f"(sport = :{cport} and dport = :{lport})) or src {host}:{lport} and state listening")


def conn_rows(rows, host: str, lport: int | None, rport: int | None):
    """The rows (a structured array) of the connections ``host:lport -> host:rport`` on
    loopback (a port None: any), by both ends with address and family (what identifies
    a TIME_WAIT)."""
    family, raw = _raw(host)
    m = ((rows["family"] == family) & (rows["local_addr"] == raw).all(axis=1)
         & (rows["remote_addr"] == raw).all(axis=1))
    if lport is not None:
        m &= rows["local_port"] == lport
    if rport is not None:
        m &= rows["remote_port"] == rport
    return rows[m]


def more_snapshots(rec, k: int, timeout: float = 120.0) -> None:
    """Wait until recorder ``rec`` (running on another thread) has taken ``k`` more
    snapshots than it had at the call: the exact condition a test means by "two more
    snapshots", where a sleep of two intervals is not enough on a loaded machine. The
    second of two counted after the call began after it."""
    n = rec.snapshots
    assert wait_for(lambda: rec.snapshots >= n + k, timeout=timeout), f"no {k} more snapshots in {timeout} s"


def pidfd(pid: int) -> int | None:
    """A pidfd of process ``pid``, taken while it is known to live (None if gone): what a
    test kills it by later. A bare pid may be another process's by then (pid_max is 32768
    on the shared machines; the pids of the exited are handed out again), and a kill by it
    hits that process: a signal no test of its own explains."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def kill_pidfd(fd: int | None) -> None:
    """SIGKILL the process of pidfd ``fd`` if it still runs (never another), and close it."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    os.close(fd)
