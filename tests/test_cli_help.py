"""One grammar and one set of spellings on the command line, help that fits the
terminal and explains its terms, and ``info`` that says what its words mean and which
ports a listener-only process holds."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tcpsnap._units import parse_duration
from tcpsnap.cli import build_parser, main

V1 = Path(__file__).resolve().parent / "fixtures" / "v1" / "full"
OURS = ["show", "record", "recover", "info", "plot", "export"]


def helptext(cmd, columns):
    p = subprocess.run([sys.executable, "-m", "tcpsnap", *([cmd] if cmd else []), "--help"], capture_output=True,
                       text=True, timeout=60, env={"COLUMNS": str(columns), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("cmd", OURS + [""])
def test_help_fits_80_columns(cmd):
    for line in helptext(cmd, 80).splitlines():
        assert len(line) <= 80, line


def test_help_paragraphs_follow_the_terminal():
    """Prose is wrapped to the width given, examples kept as written."""
    wide = helptext("record", 200)
    assert "durations: 10ms, 2s, 15m (minutes), 1h (also 1h30m, 500us, 0); units are lowercase (1M and 10MS are " \
           "refused: M is a month to pandas). Without --duration" in wide
    assert "  tcpsnap record rec --interval 0           as fast as the kernel answers\n" in wide


def test_recover_help_has_examples():
    out = helptext("recover", 100)
    assert "examples:\n  tcpsnap recover rec " in out


def test_info_help_explains_its_terms():
    out = " ".join(helptext("info", 100).split())
    assert "a gap is a time over 1.5 intervals with no snapshot" in out
    assert "conn-s (connection-seconds) is the lifetimes of a peer's connections summed" in out


@pytest.mark.parametrize("text,seconds", [("1m", 60), ("15m", 900), ("10ms", 0.01), ("1h30m", 5400), ("1min", 60),
                                          ("500us", 5e-4), ("0", 0), ("2", 2), ("1d", 86400)])
def test_one_duration_grammar(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,msg", [
    ("1M", "bad duration '1M': units are lowercase: '1m' is 1 minute (capitals are refused: M is a month to "
           "pandas, a minute to others)"),
    ("10MS", "bad duration '10MS': units are lowercase: '10ms' is 10 milliseconds"),
    ("1H", "'1h' is 1 hour"),
    ("2S", "'2s' is 2 seconds"),
])
def test_capital_units_are_refused_saying_what_they_would_mean(text, msg):
    with pytest.raises(ValueError) as e:
        parse_duration(text)
    assert msg in str(e.value) and str(e.value).startswith(f"bad duration {text!r}: units are lowercase")


def test_plot_freq_1m_is_one_minute_never_a_month():
    args = build_parser().parse_args(["plot", "r", "-o", "x.png", "--freq", "1m"])
    assert pd.Timedelta(args.freq) == pd.Timedelta(minutes=1)


def test_export_spells_format_like_show_and_keeps_to_hidden():
    out = helptext("export", 100)
    assert "--format {csv,jsonl,parquet}" in out and "--to" not in out
    a = build_parser().parse_args(["export", "r", "--format", "csv"])
    b = build_parser().parse_args(["export", "r", "--to", "csv"])
    assert a.to == b.to == "csv"
    assert "--format {table,csv,json}" in helptext("show", 100)


def test_info_names_listeners_ports_and_its_terms(capsys):
    assert main(["info", str(V1)]) == 0
    out = capsys.readouterr().out
    assert "       100  sshd                 0 connections, listening on 22\n" in out
    assert "       200  python3              1 connection\n" in out
    assert "top remotes (conn-s: connection-seconds, the connections' lifetimes summed)\n" in out
    assert "  10.0.0.2                                 1 connection, 0.3 conn-s\n" in out
    assert "(a gap: over 1.5 intervals with no snapshot taken)" in out
    assert main(["info", str(V1), "--json"]) == 0
    import json

    procs = {p["pid"]: p for p in json.loads(capsys.readouterr().out)["top_processes"]}
    assert procs[100]["listening"] == [22] and procs[101]["listening"] == []


README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def v2_recording(tmp_path_factory):
    from _recordings import record_at, v1_tables

    path = tmp_path_factory.mktemp("readme") / "rec"
    record_at(path, v1_tables())
    return path


def test_readme_first_command_prints_the_story(v2_recording):
    """The quick start's last step, as written, on a known recording: the columns that
    tell who talked to whom, not pandas' '...'."""
    import re

    first = README.read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    code = re.search(r'python -c "(.+?)"\n', first).group(1).replace("'recording'", repr(str(v2_recording)))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["timestamp", "state", "local_addr", "local_port", "remote_addr", "remote_port",
                                "process"]
    assert len(lines) == 1 + 18 and "..." not in p.stdout
    assert lines[1].split()[1:] == ["2026-11-18", "11:06:40.000+00:00", "LISTEN", "0.0.0.0", "22", "0.0.0.0", "0", "sshd"]


def test_readme_duckdb_durations_query(v2_recording):
    duckdb = pytest.importorskip("duckdb")
    text = README.read_text()
    sql = text.split("How long each connection was seen, longest first:\n\n```sql\n", 1)[1].split("```", 1)[0]
    with pytest.raises(duckdb.BinderException, match="TIMESTAMPTZ_NS"):     # why the README says so
        duckdb.sql(f"SELECT max(timestamp) - min(timestamp) FROM read_parquet('{v2_recording}/date=*/*.parquet')")
    rows = duckdb.sql(sql.replace("'rec/", f"'{v2_recording}/")).fetchall()
    got = [(cookie, proc, remote, secs, seen.total_seconds()) for _, cookie, proc, remote, secs, seen in rows]
    assert got == [(1, "sshd", "0.0.0.0", 0.7, 0.7), (2, "sshd", "10.0.0.2", 0.3, 0.3),
                   (4, "curl", "93.184.216.34", 0.3, 0.3), (3, "python3", "::1", 0.2, 0.2),
                   (5, "sshd", "10.0.0.3", 0.0, 0.0)]
