"""Changes mode's hints: the dump compares each row, as it parses it, with the row it
replaces (``NetlinkDumper.set_change_hints``), and the diff then skips reading the previous
table where they match (``Differ.diff(..., hints=)``). The events must be exactly those of
the diff without hints: every byte of a row counts (the parser's compare, byte by byte),
the pid counts (the resolver writes it after the parse), the process name counts, and
hints are trusted only for the next dump of the same array after the diff that saw the
one before (else ignored: lying hints change nothing). Live, in a private network
namespace: the recorder's ChangeTracker with hints and one without, in lockstep on the
same snapshots, through queues, state changes, a socket passed to another process
(SCM_RIGHTS; its owner exits), a socket closed and another opened on the same 4-tuple,
rows that swap places; cross-checked with ``ss -tanp``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CAN_UNSHARE_NET
from tcpsnap import ROW_DTYPE, TcpState

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink parser is built on Linux")
if sys.platform.startswith("linux"):
    from tcpsnap._diff import Differ
    from tcpsnap._nlparse import parse_messages

    from test_netlink_parser import SOCK_DIAG_BY_FAMILY, diag, nlmsg

HERE = Path(__file__).resolve().parent
PID_BYTES = range(48, 52)


def _dump(specs) -> bytes:
    """inet_diag messages for rows given as (state, local port, inode, cookie)."""
    return b"".join(nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, st, "10.0.0.1", lp, "10.0.0.2", 80, inode=ino,
                                                    cookie=(ck & 0xFFFFFFFF, ck >> 32)))
                    for st, lp, ino, ck in specs)


def _parse(data: bytes, out: np.ndarray, same_n: int):
    same = np.full(len(out), 7, np.uint8)
    opid = np.zeros(len(out), np.uint32)
    n, status, _, _ = parse_messages(data, out, 1, (same, opid, same_n))
    assert status == "more"
    return n, same[:n].tolist(), opid[:n].tolist()


BASE = [(1, 1000 + i, 50 + i, 900 + i) for i in range(4)]


def _parsed_with_pids(specs=BASE):
    out = np.zeros(len(specs) + 2, ROW_DTYPE)
    _parse(_dump(specs), out, 0)
    out["pid"][:len(specs)] = [4242 + i for i in range(len(specs))]   # as the resolver fills them
    return out


def test_a_table_parsed_again_is_the_same_but_pids():
    out = _parsed_with_pids()
    n, same, opid = _parse(_dump(BASE), out, 4)
    assert (n, same, opid) == (4, [1, 1, 1, 1], [4242, 4243, 4244, 4245])
    assert out["pid"][:4].tolist() == [0, 0, 0, 0]      # the parser's row, as without hints


@pytest.mark.parametrize("byte", [b for b in range(96) if b not in PID_BYTES])
def test_a_row_that_differs_in_any_one_byte_is_not_the_same(byte):
    out = _parsed_with_pids()
    out[2:3].view(np.uint8)[byte] ^= 0x80     # the row there before differs in this byte only
    _, same, _ = _parse(_dump(BASE), out, 4)
    assert same == [1, 1, 0, 1]


def test_changes_the_kernel_reports_are_not_the_same():
    out = _parsed_with_pids()
    now = [(4, 1000, 50, 900),                 # a state change
           (1, 1001, 51, 999),                 # another socket on the same 4-tuple (new cookie)
           (1, 1003, 53, 903),                 # the same cookies at each other's positions
           (1, 1002, 52, 902)]
    _, same, _ = _parse(_dump(now), out, 4)
    assert same == [0, 0, 0, 0]


def test_rows_past_the_previous_count_are_never_the_same():
    out = _parsed_with_pids()
    out[4] = out[0]                             # stale bytes equal to the next row
    _, same, _ = _parse(_dump(BASE + [BASE[0]]), out, 4)
    assert same == [1, 1, 1, 1, 0]
    _, same, _ = _parse(_dump(BASE), out, 2)
    assert same == [1, 1, 0, 0]


# ---------------------------------------------------------------- the Differ with hints

def _table(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.zeros(n, ROW_DTYPE)
    t["family"] = 4
    t["state"] = TcpState.ESTABLISHED
    t["local_port"] = np.arange(n) + 1000
    t["inode"] = np.arange(n) + 100
    t["cookie"] = np.arange(n) + 5000
    t["pid"] = rng.integers(1, 4, n) * 100
    t["rx_queue"] = rng.integers(0, 3, n)
    return t


def _hints_of(before: np.ndarray, after: np.ndarray, seq: int):
    """What the parser says of ``after`` dumped over ``before``: every byte but the pid."""
    a = before.view(np.uint8).reshape(-1, 96)
    b = after.view(np.uint8).reshape(-1, 96)
    keep = np.ones(96, bool)
    keep[48:52] = False
    same = (a[:, keep] == b[:, keep]).all(axis=1).astype(np.uint8)
    return same, before["pid"].astype(np.uint32), seq


def _events(res):
    ev_idx, ev_code, closed, closed_proc, dup = res
    return ev_idx.tolist(), ev_code.tolist(), closed.tobytes(), closed_proc.tolist(), dup


EDITS = {
    "state": lambda t, i: t["state"].__setitem__(i, TcpState.CLOSE_WAIT),
    "queue": lambda t, i: t["rx_queue"].__setitem__(i, t["rx_queue"][i] + 7),
    "pid": lambda t, i: t["pid"].__setitem__(i, 999),
    "last byte": lambda t, i: t[i:i + 1].view(np.uint8).__setitem__(95, 1),
    "first byte": lambda t, i: t[i:i + 1].view(np.uint8).__setitem__(0, 6),
    "uid": lambda t, i: t["uid"].__setitem__(i, 1),
    "4-tuple reused": lambda t, i: (t["cookie"].__setitem__(i, t["cookie"][i] + 100_000),
                                    t["inode"].__setitem__(i, t["inode"][i] + 100_000)),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("keyframe", [False, True])
def test_hinted_diff_finds_every_change_the_plain_diff_finds(edit, keyframe):
    n = 100                                    # three blocks of 32 and a tail
    buf = _table(n, 1)
    proc = (buf["pid"] // 100).astype(np.int32)
    hinted, plain = Differ(), Differ()
    hinted.diff(buf, proc, True, hints=(np.zeros(n, np.uint8), np.zeros(n, np.uint32), 1))
    plain.diff(buf.copy(), proc, True)
    used = 0
    for seq, rows in enumerate([[], [3], [40, 41], [99], [0, 31, 32, 63, 64]], start=2):
        before = buf.copy()
        for i in rows:
            EDITS[edit](buf, i)
        cproc = (buf["pid"] // 100).astype(np.int32) if edit != "pid" else proc.copy()
        got = _events(hinted.diff(buf, cproc, keyframe, hints=_hints_of(before, buf, seq)))
        want = _events(plain.diff(buf.copy(), cproc, keyframe))
        assert got == want
        # every one of these diffs took the hints but where an identity moved (then hashed)
        used += not (rows and edit == "4-tuple reused")
        assert hinted.hinted == used
        if not keyframe:
            assert got[0] == sorted(rows)     # the edited rows, and only they
        proc = cproc


def test_a_process_name_change_alone_is_found():
    buf = _table(64, 2)
    proc = np.zeros(64, np.int32)
    d = Differ()
    d.diff(buf, proc, False, hints=(np.zeros(64, np.uint8), np.zeros(64, np.uint32), 1))
    proc2 = proc.copy()
    proc2[5] = 3                               # renamed: same pid, same row bytes
    ev_idx, ev_code, *_ = d.diff(buf, proc2, False, hints=_hints_of(buf, buf, 2))
    assert (ev_idx.tolist(), ev_code.tolist(), d.hinted) == ([5], [4], 1)    # EV_CHANGED


def _lying(n: int, seq: int):
    return np.ones(n, np.uint8), np.zeros(n, np.uint32), seq


@pytest.mark.parametrize("case", ["seq skipped", "seq repeated", "another array", "after rollback",
                                  "after reset", "with info", "first diff"])
def test_hints_not_vouched_for_are_ignored(case):
    n = 40
    buf = _table(n, 3)
    buf["pid"] = 0
    proc = np.zeros(n, np.int32)
    d = Differ(np.ones(8, np.uint8))
    info = np.zeros(n, "V8") if case == "with info" else None
    if case != "first diff":
        d.diff(buf, proc, False, info)
        d.diff(buf, proc, False, info, hints=_lying(n, 1))      # the hints of dump 1 (a lie)
    if case == "after rollback":
        d.rollback()
    if case == "after reset":
        d.reset()
    buf["state"][7] = TcpState.CLOSE_WAIT
    cur = buf.copy() if case == "another array" else buf
    seq = {"seq skipped": 3, "seq repeated": 1}.get(case, 2)
    ev_idx, ev_code, *_ = d.diff(cur, proc, False, info, hints=_lying(n, seq))
    if case in ("first diff", "after reset"):
        assert len(ev_idx) == n                # a first table: every row, as a keyframe
    else:
        assert (ev_idx.tolist(), ev_code.tolist()) == ([7], [3])       # EV_STATE
    assert d.hinted == 0


def test_lying_hints_of_the_next_dump_are_trusted():
    # the contract's other side (what the tests above would not catch if the checks were
    # gone): hints of the next dump of the same array are not checked against the rows
    n = 40
    buf = _table(n, 3)
    proc = np.zeros(n, np.int32)
    d = Differ()
    d.diff(buf, proc, False, hints=_lying(n, 1))
    buf["state"][7] = TcpState.CLOSE_WAIT
    same, opid, seq = _lying(n, 2)
    opid[:] = buf["pid"]
    ev_idx, *_ = d.diff(buf, proc, False, hints=(same, opid, seq))
    assert (len(ev_idx), d.hinted) == (0, 1)


# ---------------------------------------------------------------- live, in a namespace

@pytest.mark.skipif(not CAN_UNSHARE_NET, reason="needs unshare -n (root)")
def test_live_tracker_with_hints_records_what_one_without_does():
    p = subprocess.run(["unshare", "-n", sys.executable, str(HERE / "_change_hints_child.py")],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONPATH": str(HERE)})
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout)
    # every snapshot: the same events with hints as without (the child asserts each one)
    assert got["mismatches"] == []
    steps = got["steps"]
    # the hints were used wherever the table kept its rows in place
    assert steps["quiet"]["hinted"] and steps["queues"]["hinted"] and steps["state"]["hinted"]
    assert steps["quiet"]["events"] == []
    q = steps["queues"]["events"]
    assert q == [["queues", got["queued_port"]]]
    # FIN sent by the client: its row FIN_WAIT2, the server's CLOSE_WAIT; as ss shows them
    assert sorted(steps["state"]["events"]) == sorted([["state", got["fin_port"]], ["state", got["fin_peer"]]])
    assert got["ss_states"] == {str(got["fin_port"]): "FIN-WAIT-2", str(got["fin_peer"]): "CLOSE-WAIT"}
    # the socket passed by SCM_RIGHTS, its first owner gone: a changed event to pid 0, then
    # one to the receiver's pid (ss agrees), nothing else
    passed = steps["passed"]
    assert passed["pids"][-1] == got["receiver_pid"] == got["ss_pid"]
    assert passed["changed_pids"] == [0, got["receiver_pid"]] or passed["changed_pids"] == [got["receiver_pid"]]
    # the same 4-tuple on a new socket: the old closed, the new opened
    assert sorted(steps["reused"]["events"]) == sorted([[e, k] for e in ("closed", "opened") for k in got["reused"]])
