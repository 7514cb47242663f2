"""Runs inside a private network namespace (``unshare -n``), started by harness.py.

Brings lo up, opens a few Linux sockets of its own (a Wine that lists every socket of the
namespace shows them too; one is a request socket in SYN_RCVD that Winsock cannot make), starts
the Windows driver under Wine with a wineserver of this namespace, runs ``ss`` while the driver
holds its sockets, releases it, stops that wineserver, and prints one JSON object.

    python3 netns_runner.py CONFIG_JSON
"""

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path


def linux_sockets():
    keep, made = [], []

    def rec(name, s, state, connected=True, peer=None):
        la, lp = s.getsockname()[:2]
        ra, rp = (s.getpeername()[:2] if connected else peer or ("::" if s.family == socket.AF_INET6 else "0.0.0.0", 0))
        made.append(dict(name=name, family=6 if s.family == socket.AF_INET6 else 4, state=state,
                         local=la, lport=lp, remote=ra, rport=rp))

    # A listener with TCP_DEFER_ACCEPT keeps a handshaken connection as a request socket
    # (SYN_RCVD) until data arrives.
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 60)
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    c = socket.create_connection(lst.getsockname())
    keep += [lst, c]
    rec("linux.deferlisten4", lst, 2, connected=False)
    rec("linux.client4", c, 5)
    made.append(dict(name="linux.synrcvd4", family=4, state=4, local="127.0.0.1", lport=lst.getsockname()[1],
                     remote="127.0.0.1", rport=c.getsockname()[1]))
    l6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    l6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    l6.bind(("::1", 0))
    l6.listen(8)
    keep.append(l6)
    rec("linux.listen6", l6, 2, connected=False)
    return keep, made


def main():
    cfg = json.loads(sys.argv[1])
    out = Path(cfg["outdir"])
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(WINEPREFIX=cfg["prefix"], WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    keep, made = linux_sockets()
    time.sleep(0.1)

    report = dict(linux=made, ss4="", ss6="", rc=None, stdout="", stderr="", ready=False)
    win_out = "Z:" + str(out).replace("/", "\\")
    errf = open(out / "driver.stderr", "wb")
    p = subprocess.Popen([cfg["wine"], cfg["exe"], win_out], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=errf, env=env, cwd=str(out))
    try:
        deadline = time.monotonic() + cfg["timeout"]
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break               # the driver exited before READY
                buf += chunk
                if b"READY" in buf:
                    report["ready"] = True
                    break
        report["stdout"] = buf.decode(errors="replace")
        if report["ready"]:
            for fam in ("4", "6"):
                report["ss" + fam] = subprocess.run(["ss", "-tane", "-" + fam, "-H"], capture_output=True,
                                                    text=True, check=True).stdout
        (out / "release").touch()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        report["rc"] = p.returncode
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        # stop this prefix's wineserver (and the Wine services it started), no other
        subprocess.run([cfg["wineserver"], "-k"], env=env, capture_output=True, timeout=30)
        subprocess.run([cfg["wineserver"], "-w"], env=env, capture_output=True, timeout=30)
        errf.close()
        for s in keep:
            s.close()
    report["stderr"] = (out / "driver.stderr").read_text(errors="replace")
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
