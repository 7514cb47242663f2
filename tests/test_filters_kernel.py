"""The kernel side of the filter language against `ss` itself, in a private network namespace:
for each expression, the sockets `ss -Htan EXPR` lists are exactly those our bytecode makes
the kernel dump, those `Snapshotter(filter=...)` keeps, and those the numpy mask keeps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tcpsnap
from conftest import CAN_UNSHARE_NET

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not CAN_UNSHARE_NET, reason="needs unshare -n (root) on Linux"),
]

# (ss arguments, the same filter in tcpsnap's language)
CASES = [
    (["sport = :443"], "sport = :443"),
    (["dport = :443 or sport = :443"], "dport = :443 or sport = :443"),
    (["dport != :22"], "dport != :22"),
    (["sport >= :1024"], "sport >= :1024"),
    (["sport < :1024"], "sport < :1024"),
    (["src 10.0.0.0/8"], "src 10.0.0.0/8"),
    (["dst 10.1.2.3"], "dst 10.1.2.3"),
    (["src 192.168.7/24"], "src 192.168.7/24"),
    (["src [::1]"], "src [::1]"),
    (["dst [::1]:8443"], "dst [::1]:8443"),
    (["src 127.0.0.1:443"], "src 127.0.0.1:443"),
    (["not dst 127.0.0.0/8"], "not dst 127.0.0.0/8"),
    (["dst 127.0.0.1"], "dst 127.0.0.1"),
    (["src 0.0.0.0/0"], "src 0.0.0.0/0"),
    (["( sport = :443 or dport = :443 ) and not src [::1]"], "( sport = :443 or dport = :443 ) and not src [::1]"),
    (["sport > :1000 dport < :3000"], "sport > :1000 dport < :3000"),
    (["state", "established", "dport = :443"], "state established and dport = :443"),
    (["state", "listening"], "state listening"),
    (["state", "time-wait"], "state time-wait"),
    (["state", "time-wait", "src [::1]"], "state time-wait and src [::1]"),
    (["state", "connected"], "state connected"),
    (["state", "synchronized"], "state synchronized"),
    (["state", "bucket"], "state bucket"),
    (["state", "big"], "state big"),
    (["state", "close-wait", "state", "fin-wait-2"], "state close-wait,fin-wait-2"),
    (["exclude", "time-wait", "sport >= :1000"], "not state time-wait and sport >= :1000"),
]


def same(ours, ss, text):
    """Equal (state, local, port, remote, port) sets; where ss left the state out (one state
    asked for), equal without it and every one of ours in that state."""
    if ss and ss[0][0] == -1:
        want = tcpsnap.parse_filter(text).node
        return (sorted(r[1:] for r in ours) == sorted(r[1:] for r in ss)
                and all(r[0] in _states(want) for r in ours))
    return ours == ss


def _states(node):
    from tcpsnap._filtertree import And, State
    parts = node.items if isinstance(node, And) else (node,)
    return next(p.states for p in parts if isinstance(p, State))


@pytest.fixture(scope="module")
def results():
    child = Path(__file__).with_name("_filters_netns_child.py")
    p = subprocess.run(["unshare", "-n", sys.executable, str(child), json.dumps(CASES)],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONPATH": str(child.parent)})
    if p.returncode != 0:
        pytest.fail(f"netns child failed:\n{p.stderr}")
    return json.loads(p.stdout)


@pytest.mark.parametrize("text", [t for _, t in CASES])
def test_kernel_snapshotter_and_mask_keep_what_ss_shows(results, text):
    r = results[text]
    for got in (r["snapshotter"], r["mask"]):
        assert same(got, r["ss"], text)


@pytest.mark.parametrize("text", [t for _, t in CASES if "state" not in t])
def test_the_kernel_alone_dumps_what_ss_shows(results, text):
    """Address and port filters run entirely in the kernel: the dump itself is ss's set."""
    r = results[text]
    assert r["bytecode"] is not None
    assert same(r["dump"], r["ss"], text)


def test_states_go_to_the_kernel_too(results):
    r = results["state time-wait"]
    assert same(r["dump"], r["ss"], "state time-wait") and {row[0] for row in r["dump"]} == {11}
    assert len(r["ss"]) == 2 and r["all"] > 10        # one v4 and one v6 TIME_WAIT of ~24 sockets


def test_the_cases_are_not_vacuous(results):
    assert {(row[0], row[1], row[2]) for row in results["sport = :443"]["ss"]} == {
        (2, "127.0.0.1", 443), (5, "127.0.0.1", 443)}
    # an IPv4 address matches the IPv4-mapped peer of a dual-stack socket, as in the kernel
    assert any(row[3] == "::ffff:7f00:1" for row in results["dst 127.0.0.1"]["ss"])
    assert any(row[0] == 8 for row in results["state close-wait,fin-wait-2"]["ss"])
    assert any(row[0] == 11 for row in results["state bucket"]["ss"])
    assert results["src 10.0.0.0/8"]["ss"] and results["src 192.168.7/24"]["ss"]
