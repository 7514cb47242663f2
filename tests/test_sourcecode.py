"""Lint and types are tests: ruff and mypy over the sources, with pyproject.toml's config;
and the version is written in one place.

The tools run as ``python -m ruff`` / ``python -m mypy`` from the project root, so a
failure shows exactly what running them by hand shows. They come with the ``test`` extra;
without them these tests skip. Only the folders present are linted: a wheel's tests run
with ``tests`` and ``src`` but no ``benchmarks``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import tcpsnap

ROOT = Path(__file__).resolve().parent.parent
LINTED = ("src", "tests", "benchmarks")


def _source_tree() -> None:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip(f"no pyproject.toml in {ROOT}: not a source tree")


def _tool(module: str, *args: str, timeout: float) -> None:
    _source_tree()
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it comes with: pip install '.[test]')")
    cmd = [sys.executable, "-m", module, *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        # pytest.fail prints the message whole; an assert's message would be cut short
        pytest.fail(f"{' '.join(cmd[1:])} (in {ROOT}) exited {r.returncode}:\n{r.stdout}{r.stderr}",
                    pytrace=False)


def test_ruff() -> None:
    # --no-cache: a test run leaves nothing in the source tree
    _tool("ruff", "check", "--no-cache", *[p for p in LINTED if (ROOT / p).is_dir()], timeout=300)


def test_mypy() -> None:
    # what to check and how: [tool.mypy] in pyproject.toml
    _tool("mypy", timeout=900)


def test_version_single_source() -> None:
    from tcpsnap._version import __version__

    assert tcpsnap.__version__ == __version__
    # what pip installed says the same (after a version bump: reinstall)
    assert importlib.metadata.version("tcpsnap") == tcpsnap.__version__


def test_pyproject_takes_the_version_from_the_package() -> None:
    _source_tree()
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in meta["project"]
    assert "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tcpsnap._version.__version__"}


# ---------------------------------------------------------------- the house's rules

def _modules() -> dict[str, Path]:
    pkg = ROOT / "src" / "tcpsnap"
    if not pkg.is_dir():
        pytest.skip("needs the source tree")
    out = {}
    for p in pkg.rglob("*.py"):
        parts = list(p.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mod: str, path: Path, known: set[str]) -> set[str]:
    """The tcpsnap modules ``mod`` imports, at the top or inside functions."""
    import ast

    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            m = ".".join(base[: len(base) - n.level + 1] + ([n.module] if n.module else [])) \
                if n.level else (n.module or "")
            out |= {f"{m}.{a.name}" if f"{m}.{a.name}" in known else m for a in n.names}
    return {t for t in out if t in known and t != mod}


def test_no_import_cycle() -> None:
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    cycles = []

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for w in graph[todo.pop()]:
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    for m in graph:
        back = [w for w in graph[m] if m in reach(w)]
        if back:
            cycles.append(f"{m} <-> {', '.join(sorted(back))}")
    assert cycles == []


def test_no_private_name_imported_from_another_module() -> None:
    import ast

    mods = _modules()
    bad = []
    for m, p in mods.items():
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, ast.ImportFrom) and n.module != "__future__":
                bad += [f"{m}: {n.module}.{a.name}" for a in n.names
                        if a.name.startswith("_") and not a.name.startswith("__")
                        and f"{n.module or ''}.{a.name}".lstrip(".") not in
                        {k.split(".", 1)[1] for k in mods if "." in k}
                        and not (ROOT / "src" / "tcpsnap" / f"{a.name}.pyx").exists()]
    assert bad == []


def test_files_and_classes_stay_small() -> None:
    """No file of src/tcpsnap over 600 lines (the compiled pid resolver aside), no class over
    300: the layout the README describes stays readable."""
    import ast

    pkg = ROOT / "src" / "tcpsnap"
    if not pkg.is_dir():
        pytest.skip("needs the source tree")
    big = [f"{p.relative_to(pkg)}: {n} lines" for p in sorted(pkg.rglob("*.py*"))
           if p.suffix in (".py", ".pyx", ".pxd") and p.name != "_procfs.pyx"
           and (n := len(p.read_text(encoding="utf-8").splitlines())) > 600]
    for p in sorted(pkg.rglob("*.py")):
        for c in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(c, ast.ClassDef) and c.end_lineno - c.lineno + 1 > 300:
                big.append(f"{p.relative_to(pkg)}: class {c.name} {c.end_lineno - c.lineno + 1} lines")
    assert big == []
