"""No tracebacks: every bad invocation of every command (the table ``_badargs.CLI_BAD``)
exits 2 (usage) or 1 (failure) with one line on stderr saying what to do; plot checks for
matplotlib before reading anything; an unexpected error (a bug) is one line naming
TCPSNAP_DEBUG=1, which gives the traceback."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _badargs import CLI_BAD
from tcpsnap import _cmd_analyse
from tcpsnap.cli import main

V1 = Path(__file__).resolve().parent / "fixtures" / "v1" / "full"


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("badargs")
    rec = shutil.copytree(V1, tmp / "rec")
    (tmp / "empty").mkdir()
    garbage = tmp / "garbage" / "date=2026-01-01"
    garbage.mkdir(parents=True)
    (garbage / "x.parquet").write_bytes(b"this is not parquet" * 10)
    seqtype = shutil.copytree(V1, tmp / "seqtype")
    f = sorted(seqtype.glob("date=*/*.parquet"))[-1]
    t = pq.read_table(f)
    i = t.schema.get_field_index("seq")
    t = t.set_column(i, pa.field("seq", pa.int32()), t.column("seq").cast(pa.int32())).replace_schema_metadata(
        t.schema.metadata)
    pq.write_table(t, f)
    (tmp / "file").write_text("x")
    return {"tmp": tmp, "rec": rec, "empty": tmp / "empty", "garbage": garbage.parent, "seqtype": seqtype,
            "file": tmp / "file"}


@pytest.fixture(autouse=True)
def _logging_restored():
    """``record`` in this process sets up the command line's logging (a handler on the
    "tcpsnap" logger, no propagation): put it back for the tests after these."""
    import logging

    log = logging.getLogger("tcpsnap")
    saved = (list(log.handlers), log.propagate, log.level)
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict
              if name.startswith("tcpsnap.")}
    yield
    log.handlers[:], log.propagate, log.level = saved[0], saved[1], saved[2]
    for name in logging.root.manager.loggerDict:
        if name.startswith("tcpsnap."):         # recover quiets tcpsnap.recorder
            logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))


def run_main(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:     # argparse's errors and --help
        code = e.code
    out = capsys.readouterr()
    return code, out.err


@pytest.mark.parametrize("argv,code,text", CLI_BAD, ids=[a or "(nothing)" for a, _, _ in CLI_BAD])
def test_bad_invocation_is_one_line_and_an_exit_status(places, capsys, argv, code, text):
    args = [a.format(**places) for a in shlex.split(argv)]
    got, err = run_main(args, capsys)
    lines = err.strip("\n").split("\n")
    assert (got, len(lines)) == (code, 1), err
    assert "Traceback" not in err and lines[0].startswith("tcpsnap"), err
    assert text in lines[0], lines[0]


def test_plot_without_matplotlib_says_which_extra_before_reading(places, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # as if not installed
    got, err = run_main(["plot", str(places["tmp"] / "none"), "-o", str(places["tmp"] / "x.png")], capsys)
    assert (got, err) == (1, "tcpsnap: error: plots need matplotlib: pip install 'tcpsnap[plot]'\n")


def test_a_bug_is_one_line_and_debug_gives_the_traceback(places, capsys, monkeypatch):
    def broken(*a, **k):
        raise AttributeError("'NoneType' object has no attribute 'x'")

    monkeypatch.setattr(_cmd_analyse, "summarize", broken)
    got, err = run_main(["info", str(places["rec"])], capsys)
    assert (got, err) == (1, "tcpsnap: internal error: AttributeError: 'NoneType' object has no attribute 'x' "
                             "(a bug; run with TCPSNAP_DEBUG=1 for the traceback)\n")
    monkeypatch.setenv("TCPSNAP_DEBUG", "1")
    with pytest.raises(AttributeError):
        main(["info", str(places["rec"])])


def test_in_a_real_process_too(places):
    """The same lines from the installed entry point, a few of the table."""
    for argv, code, text in CLI_BAD:
        if not argv.startswith(("plot {rec} -o {tmp}/x.png --freq 1ns", "info /dev/null", "info {seqtype}")):
            continue
        args = [a.format(**places) for a in shlex.split(argv)]
        p = subprocess.run([sys.executable, "-m", "tcpsnap", *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == code and p.stdout == "", p.stderr
        assert p.stderr.count("\n") == 1 and text in p.stderr and "Traceback" not in p.stderr
