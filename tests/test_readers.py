"""Every reader, every time form, every moment.

- Time forms: one parser (``tcpsnap.reading.to_utc``) behind ``start``/``end``,
  ``table_at``'s ``when``, ``filters`` on ``timestamp`` and the CLI's ``--start``/``--end``,
  with one zone rule (no zone means UTC, whatever the local zone): a table of forms and the
  exact instant each is.
- Live and crashed recordings (``test_*_while_recording``, ``test_*_after_kill_9``): pandas,
  pyarrow, DuckDB, polars and tcpsnap read the documented globs exactly (as many snapshots
  as the finished files' footers say), while a real ``tcpsnap record`` runs and after it
  was killed before recovery; ``info`` says who is recording and what is unfinished.
"""

import datetime as dt
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import tcpsnap
from _recordings import V1, V1_ROWS, rows_of
from tcpsnap.reading import to_utc

NS = 10**9
T0_NS = 1_795_000_000 * NS          # 2026-11-18 11:06:40 UTC, the first snapshot of the v1 fixtures


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ------------------------------------------------------------------ time forms

#: (form, the instant it is, ns since the epoch)
FORMS = [
    ("2026-11-18 11:06:40", T0_NS),
    ("2026-11-18T11:06:40", T0_NS),
    ("2026-11-18 11:06:40.3", T0_NS + 300_000_000),
    ("2026-11-18T11:06:40.000000001", T0_NS + 1),
    ("2026-11-18T11:06:40Z", T0_NS),
    ("2026-11-18 12:06:40+01:00", T0_NS),
    ("2026-11-18T06:06:40.5-05:00", T0_NS + 500_000_000),
    ("2026-11-18", T0_NS - (11 * 3600 + 6 * 60 + 40) * NS),
    ("20261118T110640", T0_NS),
    ("  2026-11-18 11:06:40  ", T0_NS),
    ("@1795000000", T0_NS),
    ("@1795000000.25", T0_NS + 250_000_000),
    ("@ 1795000000.000000001", T0_NS + 1),
    (T0_NS, T0_NS),
    (np.int64(T0_NS), T0_NS),
    (dt.datetime(2026, 11, 18, 11, 6, 40), T0_NS),
    (dt.datetime(2026, 11, 18, 11, 6, 40, 300000), T0_NS + 300_000_000),
    (dt.datetime(2026, 11, 18, 12, 6, 40, tzinfo=dt.timezone(dt.timedelta(hours=1))), T0_NS),
    (dt.datetime(2026, 11, 18, 11, 6, 40, tzinfo=dt.UTC), T0_NS),
    (dt.date(2026, 11, 18), T0_NS - (11 * 3600 + 6 * 60 + 40) * NS),
    (pd.Timestamp("2026-11-18 11:06:40"), T0_NS),
    (pd.Timestamp("2026-11-18 12:06:40", tz="Europe/Berlin"), T0_NS),
    (pd.Timestamp(T0_NS + 7, tz="UTC"), T0_NS + 7),
    (np.datetime64("2026-11-18T11:06:40.300"), T0_NS + 300_000_000),
]

BAD_FORMS = [
    (1795000000.0, ValueError, "a float is ambiguous"),
    ("10:00", ValueError, "give the date too"),
    ("11:06:40.3", ValueError, "give the date too"),
    ("today", ValueError, "give the date too"),
    ("yesterday", ValueError, "not a time: 'yesterday'"),
    ("now-5 parsecs", ValueError, "not a time: 'now-5 parsecs'"),
    ("", ValueError, "not a time: ''"),
    ("@12x", ValueError, "not a time: '@12x'"),
    (True, TypeError, "not a time: True"),
    ([2026, 11, 18], TypeError, "not a time: list"),
    (None, TypeError, "not a time: None"),
]


@pytest.fixture
def elsewhere(monkeypatch):
    """A local zone far from UTC (and another in a child process): no zone still means UTC."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")          # UTC+14
    time.tzset()
    yield {**os.environ, "TZ": "America/Anchorage"}
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("form,ns", FORMS, ids=[repr(f)[:40] for f, _ in FORMS])
def test_every_time_form_is_one_exact_instant(elsewhere, form, ns):
    t = to_utc(form)
    assert isinstance(t, pd.Timestamp) and str(t.tz) == "UTC" and t.value == ns


@pytest.mark.parametrize("form,exc,msg", BAD_FORMS, ids=[repr(f)[:20] for f, _, _ in BAD_FORMS])
def test_what_is_not_a_time_says_so(form, exc, msg):
    with pytest.raises(exc) as e:
        to_utc(form)
    assert msg in str(e.value) and "'@1795000000' (epoch seconds)" in str(e.value) and "\n" not in str(e.value)


def test_now_is_utc_now_whatever_the_local_zone(elsewhere):
    for form, delta in (("now", 0), ("NOW", 0), ("now-5m", -300 * NS), ("now - 1h30m", -5400 * NS),
                        ("now+2s", 2 * NS), ("now-500ms", -500_000_000)):
        before = time.time_ns()
        got = to_utc(form).value
        after = time.time_ns()
        assert before + delta <= got <= after + delta, form


def test_read_start_end_filters_and_table_at_take_every_form(elsewhere):
    """The same instant in every form selects the same rows, through start/end, filters on
    timestamp (every operator) and table_at."""
    rec = V1 / "full"
    by_form = {}
    for form, ns in FORMS:
        if ns != T0_NS + 300_000_000:
            continue
        start = tcpsnap.read(rec, start=form)
        end = tcpsnap.read(rec, end=form)
        ge = tcpsnap.read(rec, filters=[("timestamp", ">=", form)])
        lt = tcpsnap.read(rec, filters=[("timestamp", "<", form)])
        eq = tcpsnap.read(rec, filters=[("timestamp", "==", form)])
        isin = tcpsnap.read(rec, filters=[("timestamp", "in", [form, T0_NS + 700_000_000])])
        dnf = tcpsnap.read(rec, filters=[[("timestamp", "==", form)], [("seq", "==", 0)]])
        by_form[repr(form)] = [rows_of(x) for x in (start, end, ge, lt, eq, isin, dnf)]
        assert rows_of(tcpsnap.table_at(rec, form)) == [r for r in V1_ROWS if r[0] == 3]
    assert len(by_form) == 3          # a string, a datetime, a numpy datetime64
    want = [[r for r in V1_ROWS if r[0] >= 3], [r for r in V1_ROWS if r[0] < 3], [r for r in V1_ROWS if r[0] >= 3],
            [r for r in V1_ROWS if r[0] < 3], [r for r in V1_ROWS if r[0] == 3],
            [r for r in V1_ROWS if r[0] in (3, 7)], [r for r in V1_ROWS if r[0] in (0, 3)]]
    assert all(v == want for v in by_form.values())
    # the changes recording too
    assert rows_of(tcpsnap.read(V1 / "changes", start="@1795000000.3", end="2026-11-18T12:06:40.6+01:00")) == \
        [r for r in V1_ROWS if 3 <= r[0] < 6]
    assert rows_of(tcpsnap.read(V1 / "changes", filters=[("timestamp", ">=", dt.datetime(2026, 11, 18, 11, 6, 40, 700000))])) == \
        [r for r in V1_ROWS if r[0] == 7]


def test_a_bad_time_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="not a time: '10:00'"):
        tcpsnap.read(V1 / "full", start="10:00")
    with pytest.raises(ValueError, match="a float is ambiguous"):
        tcpsnap.table_at(V1 / "full", 1795000000.3)
    with pytest.raises(ValueError, match="not a time: 'soon'"):
        tcpsnap.read(V1 / "full", filters=[("timestamp", ">", "soon")])


@pytest.mark.parametrize("cmd", ["export", "plot"])
def test_cli_time_options_take_the_same_forms_and_zone_rule(elsewhere, tmp_path, cmd):
    """--start/--end of export and plot: the API's forms, no zone = UTC (the child runs in
    another zone), and a time that is none is a one-line usage error (exit 2)."""
    env = elsewhere
    if cmd == "plot":
        pytest.importorskip("matplotlib")
    for start, end in (("2026-11-18 11:06:40.3", "2026-11-18 11:06:40.6"),
                       ("2026-11-18T12:06:40.3+01:00", "@1795000000.6"),
                       ("@1795000000.3", "2026-11-18T11:06:40.600Z")):
        if cmd == "export":
            p = cli("export", V1 / "full", "--to", "jsonl", "--start", start, "--end", end, env=env)
            assert p.returncode == 0, p.stderr
            got = sorted({int(x.split('"seq": ')[1].split(",")[0]) for x in p.stdout.splitlines()})
            assert got == [3, 5], (start, end)
        else:
            png = tmp_path / "x.png"
            p = cli("plot", V1 / "full", "-o", png, "--start", start, "--end", end, "--utc", env=env)
            assert p.returncode == 0 and png.stat().st_size > 1000, p.stderr
    p = cli(cmd, V1 / "full", "--to" if cmd == "export" else "-o", "csv" if cmd == "export" else tmp_path / "y.png",
            "--start", "now-5m", env=env)
    assert p.returncode in (0, 1)                  # fine (export: empty) or "no snapshots in that range"
    if cmd == "export":
        assert p.returncode == 0 and len(p.stdout.splitlines()) == 1     # the header: nothing that recent
    for bad in ("10:00", "soon", "now-x"):
        p = cli(cmd, V1 / "full", "--to" if cmd == "export" else "-o", "csv" if cmd == "export" else tmp_path / "z.png",
                "--start", bad, env=env)
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr == (f"tcpsnap {cmd}: error: argument --start: not a time: {bad!r} (give '2026-11-26 10:00' "
                            "(UTC unless it has a zone, e.g. +01:00 or Z), 'now-5m', '@1795000000' (epoch seconds)) "
                            f"(see 'tcpsnap {cmd} --help')\n")


def test_time_forms_are_documented_in_the_help():
    for cmd in ("export", "plot"):
        out = cli(cmd, "--help").stdout
        assert "now-5m" in out and "@1795000000" in out and "no zone means UTC" in out

