"""The whole table, row for row, against `ss -tane`, in a private network namespace."""

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CAN_UNSHARE_NET

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not CAN_UNSHARE_NET, reason="needs unshare -n (root) on Linux"),
]

SS_STATES = {"ESTAB": 5, "SYN-SENT": 3, "SYN-RECV": 4, "FIN-WAIT-1": 6, "FIN-WAIT-2": 7,
             "TIME-WAIT": 11, "UNCONN": 1, "CLOSE-WAIT": 8, "LAST-ACK": 10, "LISTEN": 2,
             "CLOSING": 9}


def parse_endpoint(text, family):
    host, port = text.rsplit(":", 1)
    host = host.strip("[]").split("%", 1)[0]
    if host == "*":
        host = "::" if family == 6 else "0.0.0.0"
    return str(ipaddress.ip_address(host)), 0 if port == "*" else int(port)


def parse_ss(text, family):
    rows = []
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        local = parse_endpoint(f[3], family)
        remote = parse_endpoint(f[4], family)
        ext = " ".join(f[5:])
        ino = re.search(r"\bino:(\d+)", ext)
        sk = re.search(r"\bsk:([0-9a-f]+)", ext)
        uid = re.search(r"\buid:(\d+)", ext)
        rows.append(dict(family=family, state=SS_STATES[f[0]], local=local[0], lport=local[1],
                         remote=remote[0], rport=remote[1], rq=int(f[1]), wq=int(f[2]),
                         inode=int(ino.group(1)) if ino else 0,
                         cookie=int(sk.group(1), 16) if sk else None,
                         uid=int(uid.group(1)) if uid else None))
    return rows


def key(r):
    return (r["family"], r["state"], str(ipaddress.ip_address(r["local"])), r["lport"],
            str(ipaddress.ip_address(r["remote"])), r["rport"], r["inode"], r["rq"], r["wq"])


@pytest.fixture(scope="module")
def tables():
    child = Path(__file__).with_name("_netns_child.py")
    p = subprocess.run(["unshare", "-n", sys.executable, str(child)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(child.parent)})
    if p.returncode != 0:
        pytest.fail(f"netns child failed:\n{p.stderr}")
    return json.loads(p.stdout)


def test_table_is_stable_between_two_takes(tables):
    assert sorted(map(key, tables["ours1"])) == sorted(map(key, tables["ours2"]))


def test_whole_table_matches_ss_row_for_row(tables):
    ss = parse_ss(tables["ss4"], 4) + parse_ss(tables["ss6"], 6)
    ours = tables["ours1"]
    assert len(ours) == len(ss) >= 20
    assert sorted(map(key, ours)) == sorted(map(key, ss))


def test_single_walk_is_used_and_two_dump_fallback_agrees(tables):
    assert tables["single_walk"] is True
    ss = parse_ss(tables["ss4"], 4) + parse_ss(tables["ss6"], 6)
    assert sorted(map(key, tables["ours_v2"])) == sorted(map(key, ss))


def test_cookies_and_uids_match_ss(tables):
    ss = parse_ss(tables["ss4"], 4) + parse_ss(tables["ss6"], 6)
    by_key = {key(r): r for r in tables["ours1"]}
    for r in ss:
        mine = by_key[key(r)]
        if r["cookie"] is not None:
            assert mine["cookie"] == r["cookie"]
        if r["uid"] is not None:
            assert mine["uid"] == r["uid"]


def test_every_expected_state_is_present(tables):
    states = {r["state"] for r in tables["ours1"]}
    assert {2, 3, 5, 7, 8, 11} <= states
    fams = {r["family"] for r in tables["ours1"]}
    assert fams == {4, 6}
