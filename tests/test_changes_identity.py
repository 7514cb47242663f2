"""The building blocks of changes mode's identity rules: ``Differ.rollback`` (diff a table
again once it is completed) and ``DestroyFeed.probe`` (the kernel's lookup of one socket),
the latter on the real kernel in a private network namespace."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _changes_util import row
from conftest import CAN_UNSHARE_NET
from tcpsnap import ROW_DTYPE, TcpState

S = TcpState
LST = row(S.LISTEN, "127.0.0.1", 80, "0.0.0.0", 0, cookie=1, pid=100)
A = row(S.ESTABLISHED, "127.0.0.1", 6000, "10.0.0.2", 443, cookie=40, pid=100)


def tables_of(*snapshots):
    return [np.array([LST, *rows], ROW_DTYPE) for rows in snapshots]


def test_differ_rollback():
    from tcpsnap._diff import Differ

    a, b = tables_of([A], [])
    d = Differ()
    d.diff(a, np.full(len(a), -1, np.int32), False)
    _, _, closed, _, _ = d.diff(b, np.full(len(b), -1, np.int32), False)
    assert closed["cookie"].tolist() == [40]
    d.rollback()
    with pytest.raises(RuntimeError):
        d.lookup([40])
    with pytest.raises(RuntimeError):
        d.rollback()
    assert d.rows["cookie"].tolist() == [1, 40]
    ev_idx, ev_code, closed, _, _ = d.diff(a, np.full(len(a), -1, np.int32), False)
    assert len(ev_idx) == 0 and len(closed) == 0
    assert d.lookup([40, 1, 7]).tolist() == [1, 0, -1]
    d2 = Differ()
    d2.diff(a, np.full(len(a), -1, np.int32), False)
    d2.rollback()                           # back to no table at all
    assert not d2.primed and len(d2.rows) == 0


needs_netns = pytest.mark.skipif(not CAN_UNSHARE_NET, reason="needs unshare -n (root) on Linux")
CHILD = Path(__file__).with_name("_changes_netns_identity.py")


def _child(*args, nested_ehash=None, timeout=120):
    cmd = [sys.executable, str(CHILD), *map(str, args)]
    if nested_ehash:
        # a network namespace's TCP hash size is set by its parent's sysctl: a small one
        # makes a dump skip sockets often
        inner = " ".join(f"'{c}'" for c in ["unshare", "-n", *cmd])
        cmd = ["unshare", "-n", "sh", "-c",
               f"sysctl -qw net.ipv4.tcp_child_ehash_entries={nested_ehash} && exec {inner}"]
    else:
        cmd = ["unshare", "-n", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": str(CHILD.parent)})
    if p.returncode != 0 and "needs CAP_NET_ADMIN" in p.stderr:
        pytest.skip("no socket-destroy feed here")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.netns
@needs_netns
def test_probe_asks_the_kernel_about_one_socket():
    out = _child("probe")
    assert out["found_all"] and out["same_rows"]
    assert out["states"] == sorted(["LISTEN"] * 2 + ["ESTABLISHED"] * 5 + ["SYN_RCVD", "FIN_WAIT2",
                                                                        "CLOSE_WAIT", "TIME_WAIT"])
    assert out["wrong_cookie_found"] == 0
    # closed since: two server sides (LAST_ACK, then freed), a client reset by its peer
    assert out["closed"] == ["ESTABLISHED"] * 3 and out["closed_found"] == 0
    assert out["by_tuple_time_wait"] == "TIME_WAIT" and out["by_tuple_cookie_differs"]
    assert out["by_tuple_no_socket"] == "LISTEN"        # the lookup falls back to the listener
