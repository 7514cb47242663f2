"""Issue 18: can a dump retried part-way keep a socket twice, or drop one wrongly?

The real ``NetlinkDumper`` (its request, receive loop, retries, row growth, namespace loop,
parser prefix and cookie dedupe) is run against a fake kernel: each "namespace" is one end
of an AF_UNIX datagram socketpair lent through ``set_targets``, whose other end answers
each request with scripted datagrams. An attempt ends with NLMSG_DONE, with NLMSG_DONE
after messages flagged NLM_F_DUMP_INTR (the dumper asks again on the same socket), or part-
way with a datagram larger than the receive buffer (MSG_TRUNC: the dumper drops the attempt,
asks the opener for a new socket and asks again: the ENOBUFS path does the same). What each
``dump()`` returns is compared with the rule (``test_netlink_prefix._model``) applied to the
last attempt of each namespace, concatenated: an aborted attempt's rows must leave no trace.
"""

import contextlib
import json
import os
import random
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpsnap import ROW_DTYPE
from test_netlink_prefix import _model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink backend is Linux's")
if sys.platform.startswith("linux"):
    from tcpsnap._netlink import NetlinkDumper

SOCK_DIAG_BY_FAMILY, NLMSG_DONE, NLM_F_MULTI, NLM_F_DUMP_INTR = 20, 3, 0x2, 0x10
ESTABLISHED, TIME_WAIT = 1, 6
RECV = 8192                       # the dumper's smallest receive buffer: doubled at each MSG_TRUNC


def _msg(c, g, tag, seq, flags=NLM_F_MULTI):
    # an IPv4 socket whose inode is its tag; TIME_WAIT (no cgroup attribute) when g is 0
    sockid = (struct.pack(">HH", 1024 + tag % 60000, 80) + socket.inet_aton("10.0.0.1").ljust(16, b"\0")
              + socket.inet_aton("10.0.0.2").ljust(16, b"\0") + struct.pack("=III", 0, c & 0xFFFFFFFF, c >> 32))
    body = (struct.pack("=BBBB", socket.AF_INET, ESTABLISHED if g else TIME_WAIT, 0, 0) + sockid
            + struct.pack("=IIIII", 0, 0, 0, 1000, tag))
    if g:
        body += struct.pack("=HHQ", 12, 21, g)                  # INET_DIAG_CGROUP_ID
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 4242) + body


def _done(seq, flags=NLM_F_MULTI):
    return struct.pack("=IHHII", 20, NLMSG_DONE, flags, seq, 4242) + b"\0\0\0\0"


class FakeKernel:
    """Namespaces as socketpairs. ``script[t]``: the attempts namespace t answers in turn, each
    ``(rows, end, per, cut)``: rows (cookie, cgroup, tag) in datagrams of ``per`` messages;
    end "done", "intr" (every message flagged NLM_F_DUMP_INTR) or "trunc" (after ``cut`` rows,
    a datagram one byte larger than the dumper's receive buffer)."""

    def __init__(self):
        self.recv = RECV
        self.threads, self.socks, self.queues = [], [], {}
        self.requests = []

    def pair(self, t):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.socks += [a, b]
        th = threading.Thread(target=self._serve, args=(t, b), daemon=True)
        th.start()
        self.threads.append(th)
        return a

    def _serve(self, t, b):
        # answer each request on this socket with namespace t's next attempt, until one is
        # cut (the dumper then opens another socket) or the socket is closed
        try:
            while True:
                req = b.recv(1 << 16)
                if not req:
                    return
                seq = struct.unpack_from("=I", req, 8)[0]
                self.requests.append((t, seq))
                rows, end, per, cut = self.queues[t].pop(0)
                flags = NLM_F_MULTI | (NLM_F_DUMP_INTR if end == "intr" else 0)
                shown = rows[:cut] if end == "trunc" else rows
                for i in range(0, len(shown), per):
                    b.send(b"".join(_msg(c, g, tag, seq, flags) for c, g, tag in shown[i:i + per]))
                if end == "trunc":
                    big = self.recv + 1
                    self.recv *= 2
                    # a real message as far as the header goes: only its size is wrong
                    b.send(_msg(*rows[cut], seq, flags).ljust(big, b"\0") if cut < len(rows) else b"\0" * big)
                    return
                b.send(_done(seq, flags))
        except OSError:
            return

    def close(self):
        for s in self.socks:
            # a thread blocked in recv wakes only on shutdown (a datagram peer's close is silent)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for th in self.threads:
            th.join(5)


def _run(script_per_dump, ntargets, capacity, into):
    """Each dump's kept (cookie, cgroup, inode, netns) rows through the real dumper."""
    k = FakeKernel()
    d = NetlinkDumper(capacity=capacity, recv_size=RECV)
    fds = {}
    try:
        def opener(ino):
            t = ino - 1000
            fds[t] = k.pair(t)
            return fds[t].fileno()

        d.set_targets([(1000 + t, opener(1000 + t)) for t in range(ntargets)], opener)
        outs = []
        for script in script_per_dump:
            for t in range(ntargets):
                k.queues[t] = list(script[t])
            if into is not None:
                buf = np.zeros(into[0], ROW_DTYPE)
                n, placed = d.dump_into(buf, into[1])
                rows = buf[into[1]:into[1] + n] if placed else d.rows[:n]
            else:
                n = d.dump()
                rows = d.rows[:n]
            for t in range(ntargets):
                assert k.queues[t] == [], "every scripted attempt was asked for"
            outs.append(list(zip(rows["cookie"].tolist(), rows["cgroup_id"].tolist(), rows["inode"].tolist(),
                                 rows["netns"].tolist(), strict=True)))
        return outs, d.retries
    finally:
        d.close()
        k.close()


def _expected(script_per_dump, ntargets):
    # the rule over the last attempt of each namespace, concatenated (inodes say which row
    # stayed; netns is the namespace's inode, as set_targets gave it)
    dumps, where = [], {}
    for script in script_per_dump:
        rows = []
        for t in range(ntargets):
            last = script[t][-1][0]
            rows += last
            for _, _, tag in last:
                where[tag] = 1000 + t
        dumps.append(rows)
    return [[(c, g, tag, where[tag]) for c, g, tag in kept] for kept in _model(dumps)]


def _scripts(rnd, ntargets, count=5):
    """count dumps of ntargets namespaces; each namespace's table churns (test_netlink_prefix's
    kinds of change, including the kernel's repeats), and before its last attempt each has
    0-3 attempts aborted part-way (cut or DUMP_INTR) whose rows are the table then, churned
    further: repeats, sockets of other namespaces, rows the final attempt lacks."""
    tag = iter(range(1, 1 << 30))
    nxt = 1 << 33
    tables = [[[c + (t << 40), rnd.choice([0, 3, 5])] for c in rnd.sample(range(1, 60), rnd.randint(0, 25))]
              for t in range(ntargets)]
    out = []
    truncs = 0
    for _ in range(count):
        script = []
        for t in range(ntargets):
            table = tables[t]
            for _ in range(rnd.choice([0, 0, 1, 3])):
                op = rnd.random()
                if op < 0.3 and table:
                    del table[rnd.randrange(len(table))]
                elif op < 0.6:
                    i = rnd.randint(0, len(table))
                    table[i:i] = [[nxt + j, rnd.choice([0, 5])] for j in range(rnd.choice([1, 2, 12]))]
                    nxt += 12
                elif op < 0.8 and table:
                    table[rnd.randrange(len(table))][1] = 0
                elif table:
                    table.insert(rnd.randint(0, len(table)), table.pop(rnd.randrange(len(table))))
            attempts = []
            for _ in range(rnd.choice([0, 0, 1, 1, 2, 3])):
                rows = [(c, g) for c, g in table]
                rnd.shuffle(rows) if rnd.random() < 0.2 else None
                for _ in range(rnd.choice([0, 1, 3])):            # repeats, others' sockets
                    src = rows or [(nxt, 5)]
                    rows.insert(rnd.randint(0, len(rows)), rnd.choice(src))
                    if rnd.random() < 0.3:
                        rows.insert(rnd.randint(0, len(rows)), (nxt + 7, 9))
                        nxt += 12
                rows = [(c, g, next(tag)) for c, g in rows]
                end = "trunc" if truncs < 3 and rnd.random() < 0.6 else "intr"
                truncs += end == "trunc"
                attempts.append((rows, end, rnd.choice([1, 3, 8]), rnd.randint(0, len(rows))))
            rows = [(c, g) for c, g in table]
            for _ in range(rnd.choice([0, 0, 0, 1, 2])):              # the kernel repeats one
                if rows:
                    c, g = rows[rnd.randrange(len(rows))]
                    rows.insert(rnd.randint(0, len(rows)), (c, rnd.choice([g, 0])))
            attempts.append(([(c, g, next(tag)) for c, g in rows], "done", rnd.choice([1, 3, 8]), 0))
            script.append(attempts)
        out.append(script)
    return out


@settings(max_examples=120, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 3), st.sampled_from([1, 4, 64]),
       st.sampled_from([None, (8, 0), (40, 3), (200, 0)]))
def test_aborted_attempts_leave_no_trace_in_the_snapshot(rnd, ntargets, capacity, into):
    # MAX_ATTEMPTS is 5 a namespace: at most 3 aborted attempts before the last
    scripts = _scripts(rnd, ntargets)
    outs, _ = _run(scripts, ntargets, capacity, into)
    assert outs == _expected(scripts, ntargets)


def test_a_retry_after_a_partial_attempt_keeps_each_socket_once():
    # dump 1 (one namespace): A B C D. Dump 2's first attempt sends A B, then C again and E,
    # and is cut; the second attempt is A B C D E. The aborted attempt's rows (found where
    # dump 1 had them: the parser's in-order prefix) must neither stay nor shadow the retry's.
    a, b, c, dd, e = 0x11, 0x22, 0x33, 0x44, 0x55
    one = [[([(a, 7, 1), (b, 7, 2), (c, 7, 3), (dd, 7, 4)], "done", 2, 0)]]
    two = [[([(a, 7, 5), (b, 7, 6), (c, 7, 7), (e, 7, 8), (dd, 7, 9)], "trunc", 1, 4),
            ([(a, 7, 10), (b, 0, 11), (a, 0, 12), (c, 7, 13), (dd, 7, 14), (e, 7, 15)], "done", 2, 0)]]
    outs, retries = _run([one, two], 1, 4, None)
    assert retries == 1
    assert outs[1] == [(a, 7, 10, 1000), (b, 7, 11, 1000), (c, 7, 13, 1000), (dd, 7, 14, 1000), (e, 7, 15, 1000)]
    assert outs == _expected([one, two], 1)


def test_namespace_loop_retry_after_the_first_namespace_matched_in_order():
    # two namespaces; in dump 2 the second is cut after repeating the first's socket, then
    # answers its table: the first namespace's rows stay once, the repeat across them goes
    rnd = random.Random(18)
    for _ in range(30):
        scripts = _scripts(rnd, 2, count=4)
        outs, _ = _run(scripts, 2, 4, None)
        assert outs == _expected(scripts, 2)


def _live(as_nobody):
    from pathlib import Path

    from conftest import CAN_UNSHARE_NET

    if os.geteuid() != 0 or not CAN_UNSHARE_NET or shutil.which("ip") is None or shutil.which("ss") is None:
        pytest.skip("needs root, unshare -n, ip and ss")
    if as_nobody and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    child = Path(__file__).with_name("_retry_netns_child.py")
    drop = "setpriv --reuid nobody --regid nogroup --clear-groups " if as_nobody else ""
    cmd = f"ip link set lo up && exec {drop}{shlex.quote(sys.executable)} {shlex.quote(str(child))} 300 60"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    p = subprocess.run(["unshare", "-n", "sh", "-c", cmd], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


@pytest.mark.parametrize("as_nobody", [False, True], ids=["root", "nobody"])
def test_live_dumps_retried_part_way_while_sockets_churn(as_nobody):
    # 300 stable connections (601 sockets, several datagrams a dump) in a private namespace
    # while a thread churns others; 60 dumps, most with 1-4 attempts aborted after 0-6
    # datagrams: no cookie or inode twice in any dump, every stable socket exactly once, and
    # their cookies those ss shows
    got = _live(as_nobody)
    assert got["uid"] == (65534 if as_nobody else 0)
    assert got["bad"] == [], got
    assert got["retries"] == got["injected"] > 0
    assert got["churned"] > 0
    assert got["cookies_agree"], got
