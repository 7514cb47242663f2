"""Build the Windows driver with mingw-w64 and run it under Wine in a private network namespace.

``wine_run(tmp_root)`` does it once per test session and returns a ``WineRun``; it raises
``pytest.skip`` where Wine, mingw-w64 or ``unshare -n`` is missing, and fails loudly if they are
there but the run goes wrong. Used by tests/test_windows_wine.py and the "wine" provider of
tests/test_contract.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WIN_SRC = ROOT / "src" / "tcpsnap" / "_win"
MINGW_CC = "x86_64-w64-mingw32-gcc"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra"]
LIBS = ["-liphlpapi", "-lws2_32"]

# ss state names -> MIB_TCP_STATE
SS_STATES = {"ESTAB": 5, "SYN-SENT": 3, "SYN-RECV": 4, "FIN-WAIT-1": 6, "FIN-WAIT-2": 7, "TIME-WAIT": 11,
             "UNCONN": 1, "CLOSE-WAIT": 8, "LAST-ACK": 10, "LISTEN": 2, "CLOSING": 9}

BUFFERS = {"tcp4": "tcptable2.bin", "tcp6": "tcp6table2.bin", "ownerpid4": "tcpext4_ownerpid.bin",
           "ownerpid6": "tcpext6_ownerpid.bin", "grow4": "grow4.bin", "grow6": "grow6.bin"}


def missing_tools() -> str | None:
    """Why the Wine test cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "the Wine test runs on Linux"
    for tool in ("wine", "wineserver", MINGW_CC, "unshare", "ss", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install wine gcc-mingw-w64-x86-64 iproute2)"
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        return "unshare -n is not permitted here (needs root)"
    return None


def mingw_compile(out: Path, sources: list[Path], extra: list[str] = (), link: bool = True) -> subprocess.CompletedProcess:
    cmd = [MINGW_CC, *CFLAGS, *extra, f"-I{WIN_SRC}", "-o", str(out), *map(str, sources)]
    if link:
        cmd += LIBS
    else:
        cmd.insert(1, "-c")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def build_driver(dest: Path) -> Path:
    exe = dest / "driver.exe"
    p = mingw_compile(exe, [HERE / "driver.c", WIN_SRC / "tcpfetch.c", WIN_SRC / "estats.c"])
    if p.returncode != 0:
        pytest.fail(f"mingw build of the driver failed:\n{p.stderr}")
    return exe


def parse_ss(text: str, family: int) -> list[tuple]:
    rows = []
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        rows.append((family, SS_STATES[f[0]], *_endpoint(f[3], family), *_endpoint(f[4], family)))
    return rows


def _endpoint(text: str, family: int) -> tuple:
    host, port = text.rsplit(":", 1)
    host = host.strip("[]").split("%", 1)[0]
    if host == "*":
        host = "::" if family == 6 else "0.0.0.0"
    return ipaddress.ip_address(host), 0 if port == "*" else int(port)


def row_key(r) -> tuple:
    """(family, state, local ip, local port, remote ip, remote port) of a ROW_DTYPE row."""
    fam = int(r["family"])
    n = 4 if fam == 4 else 16
    return (fam, int(r["state"]), ipaddress.ip_address(bytes(r["local_addr"][:n])), int(r["local_port"]),
            ipaddress.ip_address(bytes(r["remote_addr"][:n])), int(r["remote_port"]))


def sock_key(s: dict) -> tuple:
    return (s["family"], s["state"], ipaddress.ip_address(s["local"]), s["lport"],
            ipaddress.ip_address(s["remote"]), s["rport"])


@dataclass
class WineRun:
    outdir: Path
    result: dict                      # the driver's result.json
    report: dict                      # netns_runner.py's report (ss output, Linux sockets)
    raw: dict = field(default_factory=dict)    # name -> bytes of each fetched buffer

    def rows(self, name: str, **layout) -> np.ndarray:
        """The buffer ``name`` (a key of BUFFERS) parsed by tcpsnap's parser."""
        import tcpsnap
        fn = {"tcp4": tcpsnap.parse_tcptable2, "grow4": tcpsnap.parse_tcptable2,
              "tcp6": tcpsnap.parse_tcp6table2, "grow6": tcpsnap.parse_tcp6table2,
              "ownerpid4": tcpsnap.parse_tcptable_owner_pid,
              "ownerpid6": tcpsnap.parse_tcp6table_owner_pid}[name]
        buf = self.raw[name]
        out = np.zeros(max(1, int.from_bytes(buf[:4], "little")), tcpsnap.ROW_DTYPE)
        n = fn(buf, out, **layout)
        return out[:n]

    def table2_rows(self) -> np.ndarray:
        return np.concatenate([self.rows("tcp4"), self.rows("tcp6")])

    def ss_rows(self) -> list[tuple]:
        return parse_ss(self.report["ss4"], 4) + parse_ss(self.report["ss6"], 6)

    @property
    def lists_all(self) -> bool:
        """Whether this Wine lists every socket of the namespace (8.0 does), not only those of
        Wine processes: the runner's own Linux sockets are in the table."""
        ours = set(map(row_key, self.table2_rows()))
        return all(sock_key(s) in ours for s in self.report["linux"])

    def expected_sockets(self) -> list[dict]:
        """The driver's sockets the table must show: all of them where Wine lists every socket,
        else those a Wine process still owns (a TIME_WAIT socket has no owner)."""
        every = self.lists_all
        return [s for s in self.result["sockets"] if every or s["owned"]]


_RUN: WineRun | None = None
_FAILED: str | None = None


def wine_run(tmp_root: Path) -> WineRun:
    """Build and run the driver once per session; skip where the tools are missing."""
    global _RUN, _FAILED
    why = missing_tools()
    if why:
        pytest.skip(why)
    if _FAILED:
        pytest.fail(_FAILED)
    if _RUN is None:
        try:
            _RUN = _run(tmp_root)
        except BaseException as e:
            _FAILED = f"the Wine run failed earlier in this session: {e}"
            raise
    return _RUN


def _run(tmp_root: Path) -> WineRun:
    work = tmp_root / "wine"
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    exe = build_driver(work)
    prefix = work / "prefix"            # created by the first wine call, kept for the session
    cfg = dict(outdir=str(out), prefix=str(prefix), exe=str(exe), timeout=150,
               wine=shutil.which("wine"), wineserver=shutil.which("wineserver"))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["WINEPREFIX"] = str(prefix)
    # A wineserver for this prefix left outside the namespace would serve the driver there.
    subprocess.run([cfg["wineserver"], "-k"], env=env, capture_output=True, timeout=30)
    p = subprocess.run(["unshare", "-n", sys.executable, str(HERE / "netns_runner.py"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=240, env=env)
    if p.returncode != 0:
        pytest.fail(f"netns runner failed (rc {p.returncode}):\n{p.stderr[-4000:]}")
    report = json.loads(p.stdout)
    if not report["ready"] or report["rc"] != 0:
        pytest.fail(f"the driver failed under Wine (ready={report['ready']}, rc={report['rc']}):\n"
                    f"stdout: {report['stdout'][-2000:]}\nstderr: {report['stderr'][-4000:]}")
    result = json.loads((out / "result.json").read_text())
    raw = {k: (out / v).read_bytes() for k, v in BUFFERS.items()}
    return WineRun(outdir=out, result=result, report=report, raw=raw)


# --- the Cython backend, built on Linux against fake_tcpfetch.c -----------------------------------

_BUILD_SCRIPT = """
import sys
from setuptools import setup, Extension
from Cython.Build import cythonize
src, fake, out = sys.argv[1:4]
ext = Extension("tcpsnap._windows", [src + "/tcpsnap/_windows.pyx", fake],  # fake: tcpfetch.c and estats.c
                include_dirs=[src + "/tcpsnap", src + "/tcpsnap/_win"])
setup(name="tcpsnap-windows-replay", script_args=["build_ext", "--build-lib", out, "--build-temp", out + "/tmp"],
      ext_modules=cythonize([ext], include_path=[src], build_dir=out + "/c", quiet=True,
                            compiler_directives={"language_level": "3", "embedsignature": True}))
"""

_REPLAY = None
_PROBE = "import sys, sysconfig, Cython, setuptools; print(sysconfig.get_config_var('EXT_SUFFIX'))"


def _cython_python() -> str | None:
    """An interpreter that has Cython and builds extensions this one can load: this one, or
    else the python3 on PATH if its EXT_SUFFIX (ABI) is the same (a test venv made from it)."""
    import sysconfig
    want = sysconfig.get_config_var("EXT_SUFFIX")
    for exe in dict.fromkeys([sys.executable, shutil.which("python3"), shutil.which("python")]):
        if not exe:
            continue
        try:
            p = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.returncode == 0 and p.stdout.strip() == want:
            return exe
    return None


def windows_replay_module(tmp_root: Path):
    """tcpsnap._windows built here with fake_tcpfetch.c in place of tcpfetch.c: (module, lib) where
    lib is the same shared object through ctypes, for tcpfetch_fake_set / tcpfetch_fake_calls.
    Built once per session; not put in sys.modules."""
    global _REPLAY
    if _REPLAY is not None:
        return _REPLAY
    import ctypes
    import importlib.util

    if not sys.platform.startswith("linux") or shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("building the replay module needs a C compiler on Linux")
    builder = _cython_python()
    if builder is None:
        pytest.skip("no Cython for this Python (pip install Cython) to build the replay module")
    out = tmp_root / "windows-replay"
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([builder, "-c", _BUILD_SCRIPT, str(ROOT / "src"), str(HERE / "fake_tcpfetch.c"),
                        str(out)], capture_output=True, text=True, timeout=300, cwd=out)
    if p.returncode != 0:
        pytest.fail(f"building tcpsnap._windows (with fake_tcpfetch.c) failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    so = next((out / "tcpsnap").glob("_windows*.so"))
    spec = importlib.util.spec_from_file_location("tcpsnap._windows", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lib = ctypes.CDLL(str(so))
    lib.tcpfetch_fake_set.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_uint32]
    lib.tcpfetch_fake_set.restype = None
    lib.tcpfetch_fake_calls.argtypes = [ctypes.c_int]
    lib.tcpestats_fake_state.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.tcpestats_fake_state.restype = None
    lib.tcpestats_fake_calls.argtypes = [ctypes.c_int]
    lib.tcpestats_fake_conn.argtypes = [ctypes.c_uint16, ctypes.c_int]
    _REPLAY = (mod, lib)
    return _REPLAY
