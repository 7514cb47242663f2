"""What ``--all-netns`` and ``--netns`` need, measured as an unprivileged user (``setpriv``,
as ``tests/test_service.py`` does): CAP_SYS_ADMIN and CAP_SYS_PTRACE, each named in one
line when missing; the attribution columns need nothing."""

from __future__ import annotations

import json
import os
import socket

import pytest

from test_service import NOBODY, _as_nobody, needs_setpriv, nobody_dir, nobody_python  # noqa: F401 - fixtures

ADMIN = "CAP_SYS_ADMIN (setns into another network namespace; run as root)"
PTRACE = "CAP_SYS_PTRACE (to open other processes' /proc/PID/ns/net; run as root)"


@needs_setpriv
@pytest.mark.parametrize("caps,missing", [
    ([], [ADMIN, PTRACE]),
    (["CAP_SYS_ADMIN"], [PTRACE]),
    (["CAP_SYS_PTRACE"], [ADMIN]),
    (["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"], []),
], ids=["none", "sys_admin", "sys_ptrace", "both"])
def test_all_netns_needs_both_capabilities(nobody_dir, nobody_python, caps, missing):  # noqa: F811
    home = nobody_dir / f"home-{'-'.join(caps) or 'none'}"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    rec = home / "rec"
    r = _as_nobody(caps, [str(nobody_python), "-m", "tcpsnap", "record", str(rec), "--all-netns",
                          "--duration", "300ms", "--interval", "100ms", "-q", "--no-pids"], cwd=nobody_dir)
    if missing:
        assert r.returncode == 1 and r.stderr == f"tcpsnap: error: --all-netns needs {' and '.join(missing)}\n"
        assert not rec.exists()
    else:
        assert r.returncode == 0, r.stderr
        assert list(rec.glob("date=*/*.parquet"))


@needs_setpriv
def test_one_netns_without_sys_admin_is_one_line(nobody_dir, nobody_python):  # noqa: F811
    r = _as_nobody(["CAP_SYS_PTRACE"], [str(nobody_python), "-m", "tcpsnap", "record", str(nobody_dir / "one"),
                                        "--netns", "/proc/self/ns/net",
                                        "--duration", "300ms", "-q", "--no-pids"], cwd=nobody_dir)
    assert r.returncode == 1
    assert r.stderr == f"tcpsnap: error: --netns needs {ADMIN}\n", r.stderr
    assert not (nobody_dir / "one").exists()


@needs_setpriv
def test_attribution_needs_no_capability(nobody_dir, nobody_python):  # noqa: F811
    with socket.socket() as s:  # root's, in no container: its cgroup path is still known
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # with its address: another listener on the host (on ::1, say) may have the port
        r = _as_nobody([], [str(nobody_python), "-m", "tcpsnap", "show", "--format", "json", "--no-pids",
                            "--port", str(port), "--state", "listen", "--filter", "src 127.0.0.1"],
                       cwd=nobody_dir)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    with open("/proc/self/cgroup") as f:
        mine = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
    assert len(rows) == 1 and rows[0]["cgroup_id"] != 0 and rows[0]["cgroup"] == mine
