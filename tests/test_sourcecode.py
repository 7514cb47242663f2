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
