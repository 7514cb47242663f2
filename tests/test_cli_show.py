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


def test_json_has_the_documented_keys_and_our_rows(conn):
    lport, cport = conn
    rows = json.loads(run("show", "--format", "json", "--port", str(lport)).stdout)
    assert {"family", "state", "local_addr", "local_port", "remote_addr", "remote_port", "pid"} <= set(rows[0])
    got = {(r["state"], r["local_addr"], r["local_port"], r["remote_port"]) for r in rows}
    assert got == {("LISTEN", "127.0.0.1", lport, 0), ("ESTABLISHED", "127.0.0.1", lport, cport),
                   ("ESTABLISHED", "127.0.0.1", cport, lport)}


def test_state_and_family_filters(conn):
    lport, _ = conn
    rows = json.loads(run("show", "--format", "json", "--port", str(lport), "--state", "listen").stdout)
    assert [(r["state"], r["local_port"]) for r in rows] == [("LISTEN", lport)]
    assert json.loads(run("show", "--format", "json", "--port", str(lport), "--family", "6").stdout) == []
    rows = json.loads(run("show", "--format", "json", "--port", str(lport), "--state", "time-wait,syn-recv").stdout)
    assert rows == []


def test_csv(conn):
    lport, _ = conn
    out = run("show", "--format", "csv", "--port", str(lport)).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
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
