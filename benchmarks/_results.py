"""Machine-readable results: every benchmark run writes one JSON file.

By default ``benchmarks/results/<benchmark>-<UTC start time>.json`` (``--json PATH`` to
choose another place), holding::

    {"benchmark": "bench_snapshot", "format": 1,
     "started_utc": "2026-11-29T12:00:00Z", "finished_utc": "...", "seconds": 212.4,
     "command": "python3 benchmarks/bench_snapshot.py --sizes 1000",
     "machine": {"kernel": ..., "cpu_count": ..., "cpu": ..., "python": ...,
                 "packages": {"numpy": ..., "pyarrow": ..., ...}, "git": {...}, ...},
     "results": {... the numbers and ratios the benchmark prints ...}}

NaN and infinities are written as null (JSON has no NaN); numpy scalars and arrays,
tuples, sets and paths as plain JSON values.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
FORMAT = 1
PACKAGES = ("tcpsnap", "numpy", "pyarrow", "pandas", "psutil", "Cython")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", type=Path, default=None,
                        help="write the results here (default: benchmarks/results/<benchmark>-<UTC time>.json)")


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=HERE)
    except (OSError, subprocess.SubprocessError):
        return None
    out = (r.stdout or r.stderr).strip()
    return out.splitlines()[0] if r.returncode == 0 and out else None


def git_info() -> dict[str, Any]:
    """The commit the benchmarked code is at, and whether the work tree differed from it."""
    commit = _run(["git", "rev-parse", "HEAD"])
    if commit is None:
        return {"commit": None}
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                            capture_output=True, text=True, timeout=10).stdout
    return {"commit": commit, "dirty": bool(status.strip())}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "system": platform.system(), "kernel": platform.release(), "arch": platform.machine(),
        "cpu": cpu, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "python_implementation": platform.python_implementation(),
        "packages": packages,
        "tools": {"ss": _run(["ss", "-V"]), "gcc": _run(["gcc", "--version"])},
        "loadavg": load, "git": git_info(),
    }


def plain(x: Any) -> Any:
    """x as plain JSON values (see the module docstring)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return [plain(v) for v in sorted(x, key=repr)]
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):            # numpy scalars and arrays
        return plain(x.tolist())
    return str(x)


class Run:
    """One run of a benchmark: started now; ``write(results)`` when done."""

    def __init__(self, name: str, path: Path | None = None, argv: list[str] | None = None,
                 script: str | None = None) -> None:
        self.name = name
        self.started = time.time()
        self.t0 = time.monotonic()
        argv = sys.argv[1:] if argv is None else argv
        script = script or f"benchmarks/{Path(sys.argv[0]).name}"
        self.command = shlex.join(["python3", script, *argv])
        stamp = dt.datetime.fromtimestamp(self.started, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.path = path if path is not None else RESULTS_DIR / f"{name}-{stamp}.json"

    def write(self, results: dict[str, Any]) -> Path:
        doc = {
            "benchmark": self.name, "format": FORMAT,
            "started_utc": _utc(self.started), "finished_utc": _utc(time.time()),
            "seconds": round(time.monotonic() - self.t0, 1), "command": self.command,
            "machine": machine_info(), "results": results,
        }
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(plain(doc), indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
        print(f"results: {path}", file=sys.stderr, flush=True)
        return path


def load(path: Path | str) -> dict[str, Any]:
    """A results file, checked to be one."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "results" not in doc:
        raise SystemExit(f"{path}: not a benchmark results file (format {FORMAT})")
    return doc
