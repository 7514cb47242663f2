"""The dumper's parse and dedupe as ``NetlinkDumper.dump()`` runs them (``CookieTable.parse``:
the parser takes the leading rows that are where the previous dump had them, in order, and
gives their timewait rows a cgroup; the dedupe does the rest) against the rule written
plainly, on netlink dumps of a churned table."""

import random
import socket
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpsnap import ROW_DTYPE

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink parser is built on Linux")
if sys.platform.startswith("linux"):
    from tcpsnap._nlparse import CookieTable

SOCK_DIAG_BY_FAMILY, NLMSG_DONE, NLM_F_MULTI = 20, 3, 0x2
ESTABLISHED, TIME_WAIT = 1, 6


def _nlmsg(mtype, payload, seq):
    return struct.pack("=IHHII", 16 + len(payload), mtype, NLM_F_MULTI, seq, 4242) + payload + b"\0" * (-len(payload) % 4)


def _dump(rows, seq):
    """Netlink bytes of one dump: a row (cookie, cgroup, tag) is an IPv4 socket whose inode is
    its tag, a TIME_WAIT one (no INET_DIAG_CGROUP_ID attribute, as the kernel sends) when its
    cgroup is 0; every message carries INET_DIAG_SHUTDOWN first, as the kernel's do."""
    out = []
    for c, g, tag in rows:
        sockid = (struct.pack(">HH", 1024 + tag % 60000, 80) + socket.inet_aton("10.0.0.1").ljust(16, b"\0")
                  + socket.inet_aton("10.0.0.2").ljust(16, b"\0") + struct.pack("=III", 0, c & 0xFFFFFFFF, c >> 32))
        msg = (struct.pack("=BBBB", socket.AF_INET, ESTABLISHED if g else TIME_WAIT, 0, 0) + sockid
               + struct.pack("=IIIII", 0, 0, 0, 1000, tag))
        msg += struct.pack("=HHB3x", 5, 8, 0)                       # INET_DIAG_SHUTDOWN
        if g:
            msg += struct.pack("=HHQ", 12, 21, g)                   # INET_DIAG_CGROUP_ID
        out.append(_nlmsg(SOCK_DIAG_BY_FAMILY, msg, seq))
    return b"".join(out) + _nlmsg(NLMSG_DONE, b"\0\0\0\0", seq)


def _model(dumps):
    """The rule: in each dump the first row of each cookie stays (cookie 0 always); a kept
    row without a cgroup takes the one its cookie had in the table of the dump before: that
    dump's kept rows, plus the sockets of the dump before it that it lacked (carried once,
    those with a cgroup)."""
    prev, outs = {}, []
    for rows in dumps:
        seen, kept = set(), []
        for c, g, tag in rows:
            if c and c in seen:
                continue
            seen.add(c)
            kept.append([c, g, tag])
        table = {}
        for r in kept:
            if r[0] == 0:
                continue
            if r[1] == 0 and prev.get(r[0], (0, False))[0]:
                r[1] = prev[r[0]][0]
            table[r[0]] = (r[1], False)
        for c, (g, carried) in prev.items():
            if c not in table and g and not carried:
                table[c] = (g, True)
        prev = table
        outs.append([tuple(r) for r in kept])
    return outs


def _through_parser(dumps):
    t, outs, taken = CookieTable(), [], []
    for seq, rows in enumerate(dumps, 1):
        a = np.zeros(len(rows) + 2, ROW_DTYPE)
        kept, status, in_order = t.parse(_dump(rows, seq), a, seq)
        assert status == "done"
        outs.append(list(zip(a["cookie"][:kept].tolist(), a["cgroup_id"][:kept].tolist(),
                             a["inode"][:kept].tolist(), strict=True)))
        taken.append(in_order)
    return outs, taken


def _churned(rnd, count=8):
    """A table dumped again and again: mostly the same sockets in the same order (runs of
    dumps unchanged), with sockets gone, new ones (some in runs longer than the look-ahead),
    moved ones, TIME_WAIT successors (same cookie, no cgroup), the kernel's repeats near and
    far, a cookie 0, an old cookie back, a reshuffle."""
    table = [[c, rnd.choice([0, 1, 2, 3])] for c in rnd.sample(range(1, 60), rnd.randint(0, 30))]
    nxt, dumps = 1 << 33, []                                   # cookies past 32 bits too
    for _ in range(count):
        for _ in range(rnd.choice([0, 0, 1, 2, 4])):
            op = rnd.random()
            if op < 0.25 and table:
                del table[rnd.randrange(len(table))]
            elif op < 0.5:
                k = rnd.choice([1, 1, 2, 12])
                i = rnd.randint(0, len(table))
                table[i:i] = [[nxt + j, rnd.choice([0, 5, 6])] for j in range(k)]
                nxt += k
            elif op < 0.6 and table:
                table.insert(rnd.randint(0, len(table)), table.pop(rnd.randrange(len(table))))
            elif op < 0.8 and table:
                table[rnd.randrange(len(table))][1] = 0            # now a timewait socket
            elif op < 0.85:
                rnd.shuffle(table)
            elif table:
                table[rnd.randrange(len(table))][1] = rnd.choice([0, 7])   # a cgroup moved
        rows = [(c, g) for c, g in table]
        for _ in range(rnd.choice([0, 0, 0, 1, 2])):              # the kernel repeats one
            if rows:
                c, g = rows[rnd.randrange(len(rows))]
                rows.insert(rnd.randint(0, len(rows)), (c, rnd.choice([g, 0])))
        if rnd.random() < 0.1:
            rows.insert(rnd.randint(0, len(rows)), (0, rnd.choice([0, 4])))
        if rnd.random() < 0.1:
            rows.append((rnd.randint(1, 30), rnd.choice([0, 7])))   # an old cookie back, maybe carried
        dumps.append([(c, g, i + 1) for i, (c, g) in enumerate(rows)])
    return dumps


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False))
def test_parse_and_dedupe_match_the_model_over_churned_dumps(rnd):
    dumps = _churned(rnd)
    outs, _ = _through_parser(dumps)
    assert outs == _model(dumps)


def test_an_unchanged_table_is_taken_in_order_by_the_parser():
    # dump two: the same sockets, one now a timewait (no cgroup attribute); dump three: a new
    # socket after the second row. The parser takes every row of dump two (the timewait one
    # given its cgroup from dump one) and the first two of dump three; the rest is the dedupe's.
    one = [(0x11, 7, 1), (0x22, 7, 2), (0x1_0000_0033, 8, 3), (0x44, 9, 4)]
    two = [(0x11, 7, 1), (0x22, 7, 2), (0x1_0000_0033, 0, 5), (0x44, 9, 4)]
    three = [(0x11, 7, 1), (0x22, 7, 2), (0x55, 9, 6), (0x1_0000_0033, 0, 5), (0x44, 9, 4)]
    four = [(0x11, 7, 1), (0x22, 7, 2), (0x22, 0, 7), (0x55, 9, 6), (0x1_0000_0033, 0, 5), (0x44, 9, 4)]
    dumps = [one, two, three, four]
    outs, taken = _through_parser(dumps)
    assert taken == [0, 4, 2, 2]
    assert outs == _model(dumps)
    assert outs[1][2] == (0x1_0000_0033, 8, 5) and outs[2][3] == (0x1_0000_0033, 8, 5)
    assert [c for c, _, _ in outs[3]] == [0x11, 0x22, 0x55, 0x1_0000_0033, 0x44]   # the repeat dropped


def test_long_unchanged_runs_between_changes():
    # tables large enough that the parser's in-order run and the dedupe's look-ahead (8 rows)
    # meet far from the first row
    rnd = random.Random(18)
    for _ in range(20):
        dumps = _churned(rnd, count=12)
        big = [[(c + (k << 40) if c else 0, g, tag + 1000 * k) for k in range(6) for c, g, tag in d] for d in dumps]
        outs, _ = _through_parser(big)
        assert outs == _model(big)
