"""`tcpsnap show`: formats, filters, errors, as a user runs it."""

import csv
import io
import json
import subprocess
import sys

import pytest

from _sockets import closing_all, pair

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="live table")


def run(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "tcpsnap", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def conn():
    lst, c, s = pair("127.0.0.1")
    with closing_all(lst, c, s):
        yield lst.getsockname()[1], c.getsockname()[1]


def _ours(rows, lport, cport):
    """The rows of the fixture's connection, and that every row is one ``--port lport``
    selects: another socket on the host may have our port number at either end (a
    TIME_WAIT on ::1 whose remote port is our listener's), so the tests select by both
    ends and addresses, not by one port."""
    assert all(lport in (int(r["local_port"]), int(r["remote_port"])) for r in rows), rows
    mine = {(lport, 0), (lport, cport), (cport, lport)}
    return [r for r in rows if r["local_addr"] == "127.0.0.1" and str(r["family"]) == "4"
            and (int(r["local_port"]), int(r["remote_port"])) in mine]


def test_json_has_the_documented_keys_and_our_rows(conn):
    lport, cport = conn
    rows = json.loads(run("show", "--format", "json", "--port", str(lport)).stdout)
    assert {"family", "state", "local_addr", "local_port", "remote_addr", "remote_port", "pid"} <= set(rows[0])
    got = {(r["state"], r["local_addr"], r["local_port"], r["remote_port"]) for r in _ours(rows, lport, cport)}
    assert got == {("LISTEN", "127.0.0.1", lport, 0), ("ESTABLISHED", "127.0.0.1", lport, cport),
                   ("ESTABLISHED", "127.0.0.1", cport, lport)}


def test_state_and_family_filters(conn):
    lport, cport = conn
    rows = json.loads(run("show", "--format", "json", "--port", str(lport), "--state", "listen").stdout)
    assert {r["state"] for r in rows} == {"LISTEN"}
    assert [(r["state"], r["local_port"]) for r in _ours(rows, lport, cport)] == [("LISTEN", lport)]
    rows = json.loads(run("show", "--format", "json", "--port", str(lport), "--family", "6").stdout)
    assert all(r["family"] == 6 for r in rows) and _ours(rows, lport, cport) == []
    rows = json.loads(run("show", "--format", "json", "--port", str(lport), "--state", "time-wait,syn-recv").stdout)
    assert {r["state"] for r in rows} <= {"TIME_WAIT", "SYN_RECV"} and _ours(rows, lport, cport) == []


def test_csv(conn):
    lport, cport = conn
    out = run("show", "--format", "csv", "--port", str(lport)).stdout
    rows = _ours(list(csv.DictReader(io.StringIO(out))), lport, cport)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"LISTEN", "ESTABLISHED"}


def test_table_like_netstat(conn):
    lport, cport = conn
    out = run("show", "--port", str(lport)).stdout.splitlines()
    assert out[0].split()[:2] == ["Proto", "Local"]
    assert any(f"127.0.0.1:{lport}" in line and "LISTEN" in line for line in out)
    assert any(f"127.0.0.1:{cport}" in line and "ESTABLISHED" in line for line in out)


@pytest.mark.parametrize("args,msg", [
    (["show", "--state", "nope"], "unknown TCP state"),
    (["show", "--port", "70000"], "ports are 0..65535"),
    (["show", "--family", "5"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    (["record", "/tmp/tcpsnap-never", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "required: COMMAND"),
])
def test_bad_options_exit_2_with_a_reason(args, msg):
    p = run(*args, check=False)
    assert p.returncode == 2 and msg in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_help_teaches():
    out = run("show", "--help").stdout
    assert "examples:" in out and "--state" in out


def test_broken_pipe_is_quiet():
    p = subprocess.run(f"{sys.executable} -m tcpsnap show --format json | head -c 1", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stderr


LINK_LOCAL_CHILD = r"""
import json, socket, subprocess, sys
def sh(*a):
    subprocess.run(a, check=True, capture_output=True)
sh("ip", "link", "add", "tsv0", "type", "veth", "peer", "name", "tsv1")
sh("ip", "link", "set", "tsv0", "up")
sh("ip", "addr", "add", "fe80::1234/64", "dev", "tsv0", "nodad")
v4 = socket.socket()
sh("ip", "link", "set", "lo", "up")
v4.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
v4.bind(("127.0.0.1", 0)); v4.listen()
l = socket.socket(socket.AF_INET6)
l.bind(("fe80::1234", 0, 0, socket.if_nametoindex("tsv0"))); l.listen()
out = {}
for name, s in (("v6", l), ("v4", v4)):
    port = str(s.getsockname()[1])
    ss = subprocess.run(["ss", "-tanH", "sport", "=", ":" + port], capture_output=True, text=True).stdout
    ours = subprocess.run([sys.executable, "-m", "tcpsnap", "show", "--port", port], capture_output=True,
                          text=True).stdout
    out[name] = [ss, ours]
print(json.dumps(out))
"""


def test_link_local_interface_as_ss_prints_it(tmp_path):
    """A listener on a link-local address of a veth (and one bound to lo) in a network
    namespace of our own: the local address is the one ``ss`` prints, %interface and all."""
    from conftest import CAN_UNSHARE_NET

    if not CAN_UNSHARE_NET:
        pytest.skip("needs unshare -n (root) on Linux")
    child = tmp_path / "child.py"
    child.write_text(LINK_LOCAL_CHILD)
    p = subprocess.run(["unshare", "-n", sys.executable, str(child)], capture_output=True, text=True, timeout=120)
    if p.returncode != 0 and "veth" in p.stderr:
        pytest.skip(f"cannot make a veth here: {p.stderr.strip()[-200:]}")
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    for name, (ss, ours) in got.items():
        ss_local = ss.split()[3]                          # State Recv-Q Send-Q Local Peer
        rows = [line.split() for line in ours.splitlines()[1:]]
        assert len(rows) == 1, ours
        assert rows[0][1] == ss_local, (name, ss, ours)
    assert got["v6"][0].split()[3].startswith("[fe80::1234]%tsv0:")
    assert got["v4"][0].split()[3].startswith("127.0.0.1%lo:")
