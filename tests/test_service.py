"""tcpsnap as a systemd service: ``tcpsnap install-service``, the unit it writes (checked
by ``systemd-analyze``), and the capabilities the unit grants, measured one by one as an
unprivileged user (``setpriv``). PID 1 may not be systemd where the tests run, so the unit
is never started; ``_sandbox.c`` applies its seccomp part (system call filter, W^X memory,
address families) to a real recording instead.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tcpsnap._cmd_service import CAPABILITIES, _quote, tcpsnap_command, unit_text
from tcpsnap.cli import main

LINUX = sys.platform.startswith("linux")
ROOT = LINUX and os.geteuid() == 0
NOBODY = 65534
SETPRIV = shutil.which("setpriv")
ANALYZE = shutil.which("systemd-analyze")
HERE = Path(__file__).resolve().parent

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _install(tmp_path: Path, *args: str) -> tuple[Path, Path]:
    assert main(["install-service", "--prefix", str(tmp_path), *args]) == 0
    return tmp_path / "etc/systemd/system/tcpsnap.service", tmp_path / "etc/tcpsnap/tcpsnap.toml"


def _settings(unit: str) -> dict[str, list[str]]:
    """Each key of the unit -> its values in order (a key may be repeated)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in unit.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.setdefault(f"{section}.{k}", []).append(v)
    return out


# -- install-service -------------------------------------------------------------------

def test_install_writes_the_unit_and_a_default_config(tmp_path, capsys):
    unit_path, conf = _install(tmp_path)
    out = capsys.readouterr().out
    assert unit_path.read_text() == unit_text()
    assert conf.read_text().startswith("# Settings of 'tcpsnap record --config /etc/tcpsnap/tcpsnap.toml'")
    assert oct(unit_path.stat().st_mode & 0o777) == "0o644" and oct(conf.stat().st_mode & 0o777) == "0o644"
    assert f"wrote {unit_path}\nwrote {conf}\nnext, as root:\n" in out
    for step in ("systemctl daemon-reload", "systemctl enable --now tcpsnap.service",
                 "tcpsnap config --check /etc/tcpsnap/tcpsnap.toml"):
        assert f"\n  {step}\n" in out
    try:
        import pwd

        pwd.getpwnam("tcpsnap")
    except KeyError:
        assert ("\n  useradd --system --user-group --no-create-home --home-dir /var/lib/tcpsnap "
                "--shell /usr/sbin/nologin tcpsnap\n") in out
    # ExecStart runs this install's tcpsnap on the service's config file
    exec_start = _settings(unit_path.read_text())["Service.ExecStart"]
    assert exec_start == [" ".join(_quote(a) for a in tcpsnap_command())
                          + " record --config /etc/tcpsnap/tcpsnap.toml"]


def test_install_never_overwrites_a_config(tmp_path, capsys):
    unit_path, conf = _install(tmp_path)
    conf.write_text('dir = "/srv/tcpsnap"\n')
    unit_path.write_text("old\n")
    capsys.readouterr()
    _install(tmp_path, "--user", "netwatch")
    out = capsys.readouterr().out
    assert conf.read_text() == 'dir = "/srv/tcpsnap"\n'
    assert f"updated {unit_path}\nkept {conf} (it exists)\n" in out
    s = _settings(unit_path.read_text())
    assert s["Service.User"] == ["netwatch"] and s["Service.Group"] == ["netwatch"]
    _install(tmp_path, "--user", "netwatch")
    assert f"{unit_path}: unchanged\n" in capsys.readouterr().out


def test_dry_run_writes_nothing(tmp_path, capsys):
    assert main(["install-service", "--prefix", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert f"would write {tmp_path}/etc/systemd/system/tcpsnap.service:\n" in out
    assert "    ExecStart=" in out and f"would write {tmp_path}/etc/tcpsnap/tcpsnap.toml" in out


@pytest.mark.parametrize("user,msg", [("root", "not root"), ("Bad Name", "not a user name")])
def test_bad_user_is_a_usage_error(tmp_path, capsys, user, msg):
    with pytest.raises(SystemExit) as e:
        main(["install-service", "--prefix", str(tmp_path), "--user", user])
    assert e.value.code == 2 and msg in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_exec_start_words_are_quoted():
    assert _quote("/opt/tcpsnap/bin/tcpsnap") == "/opt/tcpsnap/bin/tcpsnap"
    assert _quote("/opt/my venv/bin/python") == '"/opt/my venv/bin/python"'
    assert _quote("/opt/100%/$x") == "/opt/100%%/$$x"
    assert _quote('a"b\\c d') == '"a\\"b\\\\c d"'


# -- the unit ---------------------------------------------------------------------------

def test_unit_is_hardened_as_documented():
    s = _settings(unit_text())
    caps = " ".join(CAPABILITIES)
    assert CAPABILITIES == ("CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_SYS_NICE")
    expected = {
        "Service.AmbientCapabilities": [caps], "Service.CapabilityBoundingSet": [caps],
        "Service.User": ["tcpsnap"], "Service.StateDirectory": ["tcpsnap"],
        "Service.Restart": ["on-failure"], "Service.RestartSec": ["5s"],
        "Unit.StartLimitIntervalSec": ["10min"], "Unit.StartLimitBurst": ["5"],
        "Service.KillSignal": ["SIGTERM"], "Service.TimeoutStopSec": ["30s"],
        "Service.NoNewPrivileges": ["yes"], "Service.ProtectSystem": ["strict"],
        "Service.ProtectHome": ["yes"], "Service.PrivateTmp": ["yes"], "Service.PrivateDevices": ["yes"],
        "Service.ProtectKernelTunables": ["yes"], "Service.ProtectKernelModules": ["yes"],
        "Service.ProtectKernelLogs": ["yes"], "Service.ProtectControlGroups": ["yes"],
        "Service.RestrictAddressFamilies": ["AF_NETLINK AF_UNIX"], "Service.RestrictNamespaces": ["yes"],
        "Service.LockPersonality": ["yes"], "Service.MemoryDenyWriteExecute": ["yes"],
        "Service.RestrictRealtime": ["yes"], "Service.SystemCallArchitectures": ["native"],
        "Service.SystemCallFilter": ["@system-service", "~@privileged"], "Service.UMask": ["0027"],
        "Service.MemoryMax": ["512M"],
    }
    assert {k: s.get(k) for k in expected} == expected
    # each would hide the pids or the table itself
    for k in ("ProtectProc", "ProcSubset", "PrivateNetwork", "PrivateUsers", "DynamicUser"):
        assert f"Service.{k}" not in s, k


def _our_unit(tmp_path: Path) -> Path:
    unit_path, _ = _install(tmp_path)
    return unit_path


@needs_analyze
def test_systemd_analyze_verify_finds_nothing(tmp_path):
    unit = _our_unit(tmp_path)
    r = subprocess.run([ANALYZE, "verify", "--man=no", "--generators=no", str(unit)],
                       capture_output=True, text=True, timeout=120)
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "tcpsnap" in ln]
    if any(re.search(r"Unit \S+\.target not found", ln) for ln in ours):
        pytest.skip(f"systemd's own units are not installed here: {ours}")
    assert ours == [] and r.returncode == 0, r.stdout + r.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_at_most_3(tmp_path):
    unit = _our_unit(tmp_path)
    r = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for tcpsnap\.service: (\d+(?:\.\d+)?)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 3.0, r.stdout  # 1.9 with systemd 252


# -- capabilities, one by one, as an unprivileged user -----------------------------------

needs_setpriv = pytest.mark.skipif(not (ROOT and SETPRIV), reason="needs root and setpriv (util-linux)")


def _as_nobody(caps: list[str], argv: list[str], **kw) -> subprocess.CompletedProcess:
    names = "".join(f",+{c.removeprefix('CAP_').lower()}" for c in caps)
    cmd = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           f"--inh-caps=-all{names}", f"--ambient-caps=-all{names}", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def _runs_as_nobody(python: Path, cwd: Path) -> bool:
    """Whether the user can run ``python`` with tcpsnap without any capability. Through
    a shell: setpriv itself execs with root's capabilities still in effect, so a python
    it starts directly may sit in a folder the user cannot enter (and then find its
    standard library elsewhere, or not at all)."""
    code = "import tcpsnap._netlink, tcpsnap._procfs, tcpsnap._destroy, pyarrow.parquet"
    r = _as_nobody([], ["/bin/sh", "-c", f'exec "$0" -c "{code}"', str(python)], cwd=cwd)
    return r.returncode == 0


@pytest.fixture(scope="module")
def nobody_dir():
    """A folder the unprivileged user can reach (pytest's tmp_path is root's, mode 0700)."""
    if not (ROOT and SETPRIV):
        pytest.skip("needs root and setpriv (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="tcpsnap-svc-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def nobody_python(nobody_dir) -> Path:
    """A python the unprivileged user can run, with this tcpsnap and its dependencies:
    this one if the user may reach it, else a venv (in a 0755 folder) of a reachable
    interpreter of the same version that adds this environment's site-packages."""
    me = Path(sys.executable)
    if _runs_as_nobody(me, nobody_dir):
        return me
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    purelib = sysconfig.get_path("purelib")
    for base in (Path(getattr(sys, "_base_executable", me)).resolve(), Path(f"/usr/bin/python{ver}"),
                 Path(f"/usr/local/bin/python{ver}")):
        if not base.is_file():
            continue
        venv = nobody_dir / f"venv-{base.name}-{abs(hash(str(base)))}"
        r = subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            continue
        site = subprocess.run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, timeout=60).stdout.strip()
        Path(site, "tcpsnap-tests.pth").write_text(f"import site; site.addsitedir({purelib!r})\n")
        if _runs_as_nobody(venv / "bin/python", nobody_dir):
            return venv / "bin/python"
    pytest.skip(f"user {NOBODY} can reach no python {ver} to run this tcpsnap with")


@needs_setpriv
@pytest.mark.parametrize("caps,filled", [
    ([], False),
    (["CAP_DAC_READ_SEARCH"], False),
    (["CAP_SYS_PTRACE"], False),
    (["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"], True),
    (list(CAPABILITIES), True),
], ids=["none", "dac_read_search", "sys_ptrace", "both", "the unit's"])
def test_pids_of_other_users_sockets_need_both_capabilities(nobody_dir, nobody_python, caps, filled):
    with socket.socket() as s:  # root's
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # with its address: another listener on the host (on ::1, say) may have the port
        r = _as_nobody(caps, [str(nobody_python), "-m", "tcpsnap", "show", "--format", "json",
                              "--port", str(port), "--state", "listen", "--filter", "src 127.0.0.1"],
                       cwd=nobody_dir)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 1, rows
    notes = [ln for ln in r.stderr.splitlines() if "no pid" in ln]
    if filled:
        assert rows[0]["pid"] == os.getpid() and rows[0]["process"]
        assert r.stderr == ""
    else:
        assert rows[0]["pid"] == 0 and rows[0]["process"] is None
        assert len(notes) == 1 and r.stderr == notes[0] + "\n", r.stderr
        assert re.fullmatch(r"tcpsnap: note: 1 connection shows no pid: /proc/<pid>/fd of "
                            r"(1 process|\d+ processes|other users' processes) is not readable by this user "
                            r"\(run as root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH\)", notes[0])


@needs_setpriv
@pytest.mark.parametrize("with_cap", [False, True], ids=["without", "with"])
def test_destroy_feed_buffer_needs_cap_net_admin(nobody_dir, nobody_python, with_cap):
    code = ("from tcpsnap._destroy import DestroyFeed\n"
            "f = DestroyFeed(); print(f.rcvbuf >= 32 << 20); f.close()")
    r = _as_nobody(["CAP_NET_ADMIN"] if with_cap else [], [str(nobody_python), "-c", code], cwd=nobody_dir)
    assert r.returncode == 0, r.stderr
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    if not with_cap and rmem_max * 2 >= 32 << 20:
        pytest.skip(f"net.core.rmem_max ({rmem_max}) grants the buffer without the capability")
    assert r.stdout == f"{with_cap}\n"


@needs_setpriv
@pytest.mark.parametrize("with_cap", [False, True], ids=["without", "with"])
def test_capture_thread_priority_needs_cap_sys_nice(nobody_dir, nobody_python, with_cap):
    code = ("import os\ntry:\n    os.setpriority(os.PRIO_PROCESS, 0, -10)\n    print('raised')\n"
            "except PermissionError:\n    print('refused')")
    r = _as_nobody(["CAP_SYS_NICE"] if with_cap else [], [str(nobody_python), "-c", code], cwd=nobody_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("raised\n" if with_cap else "refused\n")


# -- the unit's seccomp part, applied to a real recording ---------------------------------

def _syscalls(group: str, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    seen.add(group)
    r = subprocess.run([ANALYZE, "syscall-filter", "--no-pager", group], capture_output=True, text=True,
                       timeout=60, check=True)
    out: set[str] = set()
    for line in r.stdout.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if word.startswith("@"):
            if word not in seen:
                out |= _syscalls(word, seen)
        else:
            out.add(word)
    return out


@pytest.fixture(scope="module")
def sandbox(nobody_dir):
    """tests/_sandbox.c built with the unit's SystemCallFilter= lines (as systemd-analyze
    expands them on this machine)."""
    if ANALYZE is None or shutil.which("cc") is None:
        pytest.skip("needs systemd-analyze and a C compiler")
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"_sandbox.c knows x86_64 and aarch64, not {platform.machine()}")
    s = _settings(unit_text())["Service.SystemCallFilter"]
    allowed: set[str] = set()
    for value in s:
        deny = value.startswith("~")
        names = set().union(*(_syscalls(w) if w.startswith("@") else {w}
                              for w in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    build = nobody_dir / "sandbox"
    build.mkdir()
    (build / "allowed.h").write_text("".join(
        f"#ifdef __NR_{n}\n__NR_{n},\n#endif\n" for n in sorted(allowed) if re.fullmatch(r"\w+", n)))
    exe = build / "_sandbox"
    r = subprocess.run(["cc", "-O2", "-Wall", "-I", str(build), "-o", str(exe), str(HERE / "_sandbox.c")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot build _sandbox.c: {r.stderr.strip()}")
    os.chmod(build, 0o755)
    return exe


@needs_setpriv
def test_sandbox_enforces_what_it_says(sandbox, nobody_dir, nobody_python):
    code = ("import mmap, socket\n"
            "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "    print('wx allowed')\nexcept PermissionError:\n    print('wx refused')\n"
            "try:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n    print('inet allowed')\n"
            "except OSError:\n    print('inet refused')\n"
            "socket.socket(socket.AF_UNIX).close()\n"
            "import os; os.chroot('/')\n")  # in @privileged: the process dies
    r = _as_nobody([], [str(sandbox), str(nobody_python), "-u", "-c", code], cwd=nobody_dir)
    assert r.stdout == "wx refused\ninet refused\n"
    assert r.returncode == -31  # SIGSYS


@needs_setpriv
@pytest.mark.parametrize("mode", ["full", "changes"])
def test_recording_as_the_unit_runs_it(sandbox, nobody_dir, nobody_python, mode):
    """The unit's user, capabilities, umask and seccomp filters around a real recording:
    it runs, closes cleanly, and has the pid of root's socket."""
    import pyarrow.parquet as pq

    state = nobody_dir / f"state-{mode}"
    state.mkdir(mode=0o750)
    os.chown(state, NOBODY, NOBODY)
    conf = nobody_dir / f"tcpsnap-{mode}.toml"
    conf.write_text(f'dir = "{state}"\ninterval = "50ms"\nduration = "1.5s"\nmode = "{mode}"\n'
                    'verbose = 2\n')
    os.chmod(conf, 0o644)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        ino = os.fstat(s.fileno()).st_ino     # by inode: another socket may have its port
        r = _as_nobody(list(CAPABILITIES), [str(sandbox), str(nobody_python), "-m", "tcpsnap", "record",
                                            "--config", str(conf)], cwd="/", umask=0o027)
    assert r.returncode == 0, r.stderr
    # warnings allowed: overruns (a busy machine), and a socket whose owner even root
    # cannot see (some containers have one): noted, not ours
    assert not [ln for ln in r.stderr.splitlines() if ": error:" in ln or (
        ": warning:" in ln and "no pid" not in ln and ": warning: overrun:" not in ln)], r.stderr
    assert "capture thread nice 0 -> -10" in r.stderr  # CAP_SYS_NICE
    files = sorted(state.rglob("*.parquet"))
    assert files and not [p for p in state.rglob(".*")], list(state.rglob("*"))
    # the recorder gives its files exact modes (0644, whatever the umask): the state
    # folder (StateDirectoryMode=0750) is what keeps other users out
    assert oct(state.stat().st_mode & 0o777) == "0o750"
    for f in files:
        meta = pq.read_metadata(f).metadata
        assert meta[b"tcpsnap.closed"] == b"clean" and meta[b"tcpsnap.pids"] == b"true"
        if mode == "changes":
            assert meta[b"tcpsnap.destroy_feed"] == b"true"
    t = pq.read_table(files[0], columns=["inode", "pid"]).to_pylist()
    assert {row["pid"] for row in t if row["inode"] == ino} == {os.getpid()}


@needs_setpriv
def test_unprivileged_record_says_once_why_pids_are_missing(nobody_dir, nobody_python):
    """As ``tcpsnap show`` does: a recorder that may not read other users'
    /proc/<pid>/fd says so once, not silent zeros (our listening socket is root's)."""
    out = nobody_dir / "rec-nopids"
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _as_nobody([], [str(nobody_python), "-m", "tcpsnap", "record", str(out),
                            "--duration", "0.5s", "--interval", "100ms"], cwd=nobody_dir)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "no pid" in ln]
    assert len(notes) == 1, r.stderr
    assert "not readable by this user" in notes[0]
