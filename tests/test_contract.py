"""The contract every capture backend must pass, written once.

Each provider yields the rows a backend produced and the sockets that must be among
them. Providers that cannot run here skip; the Windows and Wine providers join this
list with their backends.
"""

import ipaddress
import json
import sys

import numpy as np
import pytest

from tcpsnap import ROW_DTYPE
from tcpsnap.frame import format_address


def _live(backend: str):
    """Rows of the live backend with loopback sockets we opened, and those sockets."""
    import tcpsnap
    from _sockets import closing_all, pair

    assert tcpsnap.Snapshotter.backend == backend
    socks = [pair("127.0.0.1"), pair("::1")]
    with closing_all(*[s for p in socks for s in p]), tcpsnap.Snapshotter() as snap:
        rows = snap.take().copy()
        expected = []
        for host, (lst, c, _s) in zip(("127.0.0.1", "::1"), socks):
            fam = 6 if ":" in host else 4
            lp, cp = lst.getsockname()[1], c.getsockname()[1]
            any_ = "::" if fam == 6 else "0.0.0.0"
            expected += [(fam, 2, host, lp, any_, 0), (fam, 5, host, cp, host, lp), (fam, 5, host, lp, host, cp)]
    return rows, expected


def _netlink():
    if not sys.platform.startswith("linux"):
        pytest.skip("netlink backend is Linux only")
    return _live("netlink")


def _mib_fixture(request):
    import tcpsnap

    d = request.getfixturevalue("windows_fixtures")
    parts, expected = [], []
    for name, fn, fam in (("tcptable2", tcpsnap.parse_tcptable2, 4), ("tcp6table2", tcpsnap.parse_tcp6table2, 6)):
        out = np.zeros(64, ROW_DTYPE)
        n = fn((d / f"{name}.bin").read_bytes(), out)
        parts.append(out[:n])
        expected += [(fam, e["state"], e["local_addr"], e["local_port"], e["remote_addr"], e["remote_port"])
                     for e in json.loads((d / f"{name}.expected.json").read_text())]
    return np.concatenate(parts), expected


def _windows():
    """The Windows backend, live (tcpsnap._windows: GetTcpTable2 / GetTcp6Table2)."""
    if sys.platform != "win32":
        pytest.skip("the Windows backend runs on Windows")
    return _live("windows")


def _wine_run(request):
    from wine import harness

    run = harness.wine_run(request.getfixturevalue("tmp_path_factory").getbasetemp())
    expected = [(s["family"], s["state"], s["local"], s["lport"], s["remote"], s["rport"])
                for s in run.expected_sockets()]
    return harness, run, expected


def _wine_fetched(request):
    """The buffers tcpfetch.c fetched under Wine (tests/wine), through the shared parser."""
    _, run, expected = _wine_run(request)
    return run.table2_rows(), expected


def _windows_replay(request):
    """The Windows backend's own code (WindowsDumper) on those buffers, built here with
    tests/wine/fake_tcpfetch.c in place of the IP Helper calls."""
    harness, run, expected = _wine_run(request)
    mod, lib = harness.windows_replay_module(request.getfixturevalue("tmp_path_factory").getbasetemp())
    for table, name in ((0, "tcp4"), (1, "tcp6")):
        lib.tcpfetch_fake_set(table, run.raw[name], len(run.raw[name]), 0, 0)
    d = mod.WindowsDumper(16)
    n = d.dump()
    return d.rows[:n].copy(), expected


PROVIDERS = {"netlink": lambda request: _netlink(), "mib-fixture": _mib_fixture,
             "windows": lambda request: _windows(), "wine-fetched": _wine_fetched,
             "windows-replay": _windows_replay}


@pytest.fixture(params=sorted(PROVIDERS))
def backend_rows(request):
    return PROVIDERS[request.param](request)


def test_dtype(backend_rows):
    rows, _ = backend_rows
    assert rows.dtype == ROW_DTYPE and rows.ndim == 1


def test_families_and_states(backend_rows):
    rows, _ = backend_rows
    assert set(rows["family"].tolist()) <= {4, 6}
    assert set(rows["state"].tolist()) <= set(range(1, 13))


def test_ipv4_addresses_use_first_four_bytes_only(backend_rows):
    rows, _ = backend_rows
    v4 = rows[rows["family"] == 4]
    assert not v4["local_addr"][:, 4:].any() and not v4["remote_addr"][:, 4:].any()


def test_listeners_have_no_peer(backend_rows):
    rows, _ = backend_rows
    lst = rows[rows["state"] == 2]
    assert len(lst) > 0
    assert (lst["remote_port"] == 0).all() and not lst["remote_addr"].any()


def test_known_sockets_seen_with_their_state(backend_rows):
    rows, expected = backend_rows
    seen = {(int(r["family"]), int(r["state"]), ipaddress.ip_address(format_address(int(r["family"]), r["local_addr"])),
             int(r["local_port"]), ipaddress.ip_address(format_address(int(r["family"]), r["remote_addr"])),
             int(r["remote_port"])) for r in rows}
    for fam, state, la, lp, ra, rp in expected:
        assert (fam, state, ipaddress.ip_address(la), lp, ipaddress.ip_address(ra), rp) in seen
