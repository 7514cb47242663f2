"""How the ``tcpsnap`` program ends (``tcpsnap.cli.run`` / ``exit_process``): exit codes
as documented (0, 1 for a failure, 2 for usage), stdout and stderr flushed, atexit handlers
and non-daemon threads waited for, and no abort from a pyarrow pool thread still busy at
exit (apache/arrow#34314)."""

import json
import subprocess
import sys
import textwrap

import pytest

pa_ds = pytest.importorskip("pyarrow.dataset")
fsspec = pytest.importorskip("fsspec")

# A scan whose files are opened through Python on Arrow's IO threads, left running (its
# readahead) when the process exits: what a command that stops reading early, or reads
# through a Python filesystem, leaves behind.
BUSY_AT_EXIT = r"""
import sys, time
import fsspec, pyarrow.dataset as ds, pyarrow.fs as pfs

class Slow(pfs.FSSpecHandler):
    def open_input_file(self, path):
        time.sleep(0.05)
        return super().open_input_file(path)

fs = pfs.PyFileSystem(Slow(fsspec.filesystem("file")))
it = ds.dataset(sys.argv[1], format="parquet", filesystem=fs).to_batches(batch_size=1000)
next(it)
print("read", flush=True)
from tcpsnap.cli import exit_process
exit_process(0)
"""


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(1)
    for i in range(32):
        pq.write_table(pa.table({"a": rng.integers(0, 1 << 40, 100_000), "b": rng.random(100_000)}),
                       d / f"f{i:02d}.parquet", row_group_size=10_000)
    return d


def test_a_pool_thread_busy_at_exit_does_not_abort_the_process(many_files):
    """With the interpreter's own exit (``sys.exit(0)`` in place of ``exit_process(0)``)
    this child aborted (SIGABRT) or hung in every run: 10 of 10 under two busy loops (5
    aborts, 5 hangs), 3 aborts and 1 hang of 4 with less load; through ``exit_process``:
    0 of 10 and 0 of 4. ``python3 benchmarks/bench_exit.py --rounds 10 --busy 2``
    (benchmarks/RESULTS.md "Exit with Arrow's threads busy")."""
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", BUSY_AT_EXIT, str(many_files)], capture_output=True,
                           text=True, timeout=120)
        assert (p.returncode, p.stdout, p.stderr) == (0, "read\n", "")


EXIT_PATH = r"""
import atexit, sys, threading, time
from tcpsnap.cli import exit_process

atexit.register(lambda: print("atexit ran", flush=False))
t = threading.Thread(target=lambda: (time.sleep(0.3), print("thread done", flush=False)))
t.start()
sys.stdout.write("x" * 1_000_000 + "\n")     # buffered, never flushed by this code
sys.stderr.write("to stderr")
exit_process(int(sys.argv[1]))
"""


@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_exit_process_waits_for_threads_runs_atexit_flushes_and_keeps_the_code(code):
    p = subprocess.run([sys.executable, "-c", EXIT_PATH, str(code)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == code
    assert p.stdout == "x" * 1_000_000 + "\nthread done\natexit ran\n"
    assert p.stderr == "to stderr"


def _tcpsnap(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_the_program_keeps_its_exit_codes_and_output(tmp_path):
    p = _tcpsnap("--version")
    assert p.returncode == 0 and p.stdout.startswith("tcpsnap ") and p.stderr == ""
    p = _tcpsnap("--help")
    assert p.returncode == 0 and "COMMAND" in p.stdout
    p = _tcpsnap("show", "--no-such-option")
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert "unrecognized arguments: --no-such-option" in p.stderr
    p = _tcpsnap()
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1
    p = _tcpsnap("info", str(tmp_path / "nothing"))
    assert p.returncode == 1 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith("tcpsnap: error: ")
    # a whole table as JSON to a file: every byte there when the process has ended
    with open(tmp_path / "out.json", "w") as out:
        p = subprocess.run([sys.executable, "-m", "tcpsnap", "show", "--format", "json", "--no-pids"],
                           stdout=out, stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert isinstance(json.loads((tmp_path / "out.json").read_text()), list)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a live table and a shell pipe")
def test_a_reader_that_goes_away_is_quiet_and_exit_status_stays():
    """``show | head -c 1``: the pipe breaks inside the command or at the last flush; the
    status is 0 either way (as a broken pipe inside a command always was), one byte read,
    nothing on stderr but notes (no "Exception ignored", no traceback)."""
    cmd = f"{sys.executable} -m tcpsnap show --format json --no-pids | head -c 1; echo \" ${{PIPESTATUS[0]}}\""
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert p.stdout == "[ 0\n"
    assert "Exception" not in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_console_script_and_module_use_the_orderly_exit():
    from importlib.metadata import entry_points

    import tcpsnap.cli

    assert [e.value for e in entry_points(group="console_scripts") if e.name == "tcpsnap"] == ["tcpsnap.cli:run"]
    code = textwrap.dedent("""
        import runpy, tcpsnap.cli
        called = []
        tcpsnap.cli.exit_process = lambda c: called.append(c) or print("exit", c)
        import sys; sys.argv = ["tcpsnap", "--version"]
        runpy.run_module("tcpsnap", run_name="__main__")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout.splitlines()[-1] == "exit 0", p
    assert callable(tcpsnap.cli.run)
