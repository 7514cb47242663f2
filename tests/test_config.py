"""``tcpsnap record --config FILE`` and ``tcpsnap config --check / --show``: one TOML key
per ``record`` option, the same parsers as the command line, the command line on top.

Exit statuses: 1 for a file that cannot be used (each problem one line, FILE:LINE: ...),
2 for a bad command line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tcpsnap import _config
from tcpsnap._cli_args import merged
from tcpsnap._cmd_record import record_layer
from tcpsnap._cmd_service import default_config_text
from tcpsnap._filters import parse_states
from tcpsnap.cli import build_parser, main

TCPSNAP = [sys.executable, "-m", "tcpsnap"]

# Every record option: (its command-line words, the same setting as a TOML line).
# A new option of 'tcpsnap record' needs a line here (test_every_option_is_covered).
OPTIONS: dict[str, tuple[list[str], str]] = {
    "dir": (["/srv/rec"], 'dir = "/srv/rec"'),
    "interval": (["--interval", "10ms"], 'interval = "10ms"'),
    "duration": (["--duration", "1h30m"], 'duration = "1h30m"'),
    "rotate": (["--rotate", "1h"], 'rotate = "1h"'),
    "flush": (["--flush", "250ms"], "flush = 0.25"),
    "compression": (["--compression", "lz4"], 'compression = "lz4"'),
    "compression-level": (["--compression-level", "3"], "compression-level = 3"),
    "no-pids": (["--no-pids"], "no-pids = true"),
    "row-group-rows": (["--row-group-rows", "65536"], "row-group-rows = 65536"),
    "compat": (["--compat"], "compat = true"),
    "nice": (["--nice", "-5"], "nice = -5"),
    "mode": (["--mode", "changes"], 'mode = "changes"'),
    "keyframe": (["--keyframe", "30s"], 'keyframe = "30s"'),
    "no-destroy-feed": (["--no-destroy-feed"], "no-destroy-feed = true"),
    "fsync": (["--fsync"], "fsync = true"),
    "no-page-out": (["--no-page-out"], "no-page-out = true"),
    "state": (["--state", "established", "--state", "listen,time-wait"],
              'state = ["established", "listen,time-wait"]'),
    "port": (["--port", "443,8000-8010"], 'port = "443,8000-8010"'),
    "family": (["--family", "6"], "family = 6"),
    "sport": (["--sport", "443"], 'sport = "443"'),
    "dport": (["--dport", "1-1023", "--dport", "8080"], 'dport = ["1-1023", "8080"]'),
    "src": (["--src", "10.0.0.0/8,[::1]"], 'src = "10.0.0.0/8,[::1]"'),
    "dst": (["--dst", "192.0.2.1:443"], 'dst = "192.0.2.1:443"'),
    "pid": (["--pid", "1"], 'pid = "1"'),
    "process": (["--process", "nginx"], 'process = "nginx"'),
    "uid": (["--uid", "33"], 'uid = "33"'),
    "filter": (["--filter", "dport = :443 or sport = :443"], 'filter = "dport = :443 or sport = :443"'),
    "keep": (["--keep", "14d"], 'keep = "14d"'),
    "new-dataset": (["--new-dataset"], "new-dataset = true"),
    "max-bytes": (["--max-bytes", "5GiB"], 'max-bytes = "5GiB"'),
    "max-rss": (["--max-rss", "100MiB"], 'max-rss = "100MiB"'),
    "metrics": (["--metrics", "127.0.0.1:9464"], 'metrics = "127.0.0.1:9464"'),
    "metrics-textfile": (["--metrics-textfile", "/var/lib/node_exporter/tcpsnap.prom"],
                         'metrics-textfile = "/var/lib/node_exporter/tcpsnap.prom"'),
    "ship": (["--ship", "s3://fleet/tcpsnap"], 'ship = "s3://fleet/tcpsnap"'),
    "endpoint-url": (["--endpoint-url", "http://127.0.0.1:9000"], 'endpoint-url = "http://127.0.0.1:9000"'),
    "delete-after-ship": (["--delete-after-ship"], "delete-after-ship = true"),
    "part-size": (["--part-size", "8MiB"], 'part-size = "8MiB"'),
    "limit-rate": (["--limit-rate", "1MiB"], 'limit-rate = "1MiB"'),
    "ship-host": (["--ship-host", "web-1"], 'ship-host = "web-1"'),
    "all-netns": (["--all-netns"], "all-netns = true"),
    "netns": (["--netns", "web"], 'netns = "web"'),  # apart: it excludes --all-netns
    "tcp-info": (["--tcp-info"], "tcp-info = true"),  # apart: full mode only (the set has changes)
    "tcp-info-every": (["--tcp-info-every", "2s"], 'tcp-info-every = "2s"'),
    "verbose": (["-v", "-v"], "verbose = 2"),
    "quiet": (["-q"], "quiet = true"),  # with quiet and verbose apart (they exclude each other)
}
_APART = {"quiet", "netns", "pid", "process", "tcp-info", "tcp-info-every"}  # pid and process need pids (no-pids is in the set)
#: options that start something beside the recorder (a metrics exporter, a shipper): compared as
#: parsed settings, not through a fake recorder
_EXPORTERS = {"metrics", "metrics-textfile", "ship", "endpoint-url", "delete-after-ship", "part-size",
              "limit-rate", "ship-host"}


def _record_ns(argv: list[str]):
    args = build_parser().parse_args(["record", *argv])
    ns = vars(_config.resolve(args))
    ns = {k: v for k, v in ns.items() if k not in ("config", "_config_layer", "func")}
    # repeated --state / --port add up: what counts is their union, as the recorder gets it
    return {k: merged(v) if k in ("state", "port", "sport", "dport") else v for k, v in ns.items()}


def _write(tmp_path: Path, text: str, name: str = "tcpsnap.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_option_is_covered():
    keys = set(record_layer().keys)
    assert keys == set(OPTIONS), f"record options without a row in OPTIONS: {keys - set(OPTIONS)}"


@pytest.mark.parametrize("group", [sorted(set(OPTIONS) - _APART), sorted(_APART | {"dir"})])
def test_file_and_command_line_give_the_same_settings(tmp_path, group):
    cli = [w for k in group for w in OPTIONS[k][0]]
    conf = _write(tmp_path, "\n".join(OPTIONS[k][1] for k in group) + "\n")
    assert _record_ns(["--config", str(conf)]) == _record_ns(cli)


@pytest.mark.parametrize("key", sorted(OPTIONS))
def test_each_key_alone_matches_its_option(tmp_path, key):
    cli, line = OPTIONS[key]
    dir_cli, dir_line = OPTIONS["dir"] if key != "dir" else ([], "")
    conf = _write(tmp_path, f"{dir_line}\n{line}\n")
    from_file = _record_ns(["--config", str(conf)])
    assert from_file == _record_ns(dir_cli + cli)
    assert key == "dir" or from_file != _record_ns(dir_cli)  # the key did change something


class _Stop(BaseException):   # not an Exception: main() turns those into one line
    pass


def _recorder_kwargs(monkeypatch, argv: list[str]) -> tuple[tuple, dict, object]:
    """What ``tcpsnap record ARGV`` hands the Recorder (and run()), without recording."""
    import tcpsnap.record

    seen: dict = {}

    class FakeRecorder:
        def __init__(self, *args, **kwargs):
            seen["args"], seen["kwargs"] = args, kwargs
            self.path = args[0]  # where it records (new_dataset may change it)

        def open(self):
            return self

        def run(self, duration=None):
            seen["duration"] = duration
            raise _Stop

        def close(self):
            pass

    monkeypatch.setattr(tcpsnap.record, "Recorder", FakeRecorder)
    with pytest.raises(_Stop):
        main(["record", *argv])
    return seen["args"], seen["kwargs"], seen["duration"]


def test_recorder_gets_the_same_settings_from_the_file(tmp_path, monkeypatch):
    keys = sorted(set(OPTIONS) - _APART - _EXPORTERS)
    conf = _write(tmp_path, "\n".join(OPTIONS[k][1] for k in keys) + "\n")
    from_file = _recorder_kwargs(monkeypatch, ["--config", str(conf)])
    from_cli = _recorder_kwargs(monkeypatch, [w for k in keys for w in OPTIONS[k][0]])
    assert from_file == from_cli
    args, kwargs, duration = from_file
    assert args == ("/srv/rec",) and duration == 5400.0
    assert kwargs["interval"] == 0.01 and kwargs["flush"] == 0.25 and kwargs["pids"] is False
    assert kwargs["ports"] == frozenset([443, *range(8000, 8011)])


def test_exporter_options_from_the_file_equal_the_command_line(tmp_path):
    keys = sorted(_EXPORTERS)
    conf = _write(tmp_path, 'dir = "/srv/rec"\n' + "\n".join(OPTIONS[k][1] for k in keys) + "\n")
    from_file = _record_ns(["--config", str(conf)])
    from_cli = _record_ns(["/srv/rec", *[w for k in keys for w in OPTIONS[k][0]]])
    assert from_file == from_cli
    assert from_file["metrics"] == ("127.0.0.1", 9464)
    assert from_file["metrics_textfile"] == "/var/lib/node_exporter/tcpsnap.prom"


def test_defaults_without_a_file_are_unchanged(monkeypatch):
    _, kwargs, duration = _recorder_kwargs(monkeypatch, ["/srv/rec"])
    assert duration is None
    assert kwargs == dict(
        interval=0.1, rotate=900.0, flush=1.0, compression="zstd", compression_level=None,
        pids=None, states=None, ports=None, family=None, row_group_rows=1 << 20, compat=False,
        fsync=False, nice=-10, mode="full", keyframe=60.0, destroy=None, new_dataset=False, filter=None,
        netns=None,
        keep=None, max_bytes=None)


def test_command_line_overrides_the_file(tmp_path):
    conf = _write(tmp_path, 'dir = "/srv/a"\ninterval = "10ms"\nstate = ["listen"]\n'
                            'verbose = 2\nno-pids = true\nport = "22"\n')
    ns = _record_ns(["--config", str(conf), "/srv/b", "--interval", "100ms",
                     "--state", "established", "-q"])
    assert ns["dir"] == "/srv/b"
    assert ns["interval"] == 0.1  # the default's value, given on the command line, still wins
    assert ns["state"] == parse_states("established")  # replaced, not added to
    assert ns["quiet"] is True and ns["verbose"] == 0  # -q replaces the file's verbose
    assert ns["no_pids"] is True and ns["port"] == frozenset([22])  # the rest: the file


def test_relative_dir_is_relative_to_the_file(tmp_path):
    conf = _write(tmp_path, 'dir = "rec"\n')
    assert _record_ns(["--config", str(conf)])["dir"] == str(tmp_path / "rec")


def test_shipped_default_config_is_good(tmp_path, capsys):
    conf = _write(tmp_path, default_config_text())
    assert main(["config", "--check", str(conf)]) == 0
    assert capsys.readouterr().out == f"{conf}: ok\n"
    assert _record_ns(["--config", str(conf)])["dir"] == "/var/lib/tcpsnap"


# (TOML, the one line 'tcpsnap config --check' prints for it, after "FILE:")
BAD = [
    ('dir = "/x"\nintervall = "10ms"\n', '2: unknown key \'intervall\' (did you mean \'interval\'?)'),
    ("row_group_rows = 5\n", "1: unknown key 'row_group_rows' (did you mean 'row-group-rows'?)"),
    ("bogus = 1\n", "1: unknown key 'bogus' (not an option of 'tcpsnap record')"),
    ("[metrics]\nlisten = 1\n", "1: metrics: expected a string or a number, not a table"),
    ("[uploading]\nlisten = 1\n", "1: unknown key 'uploading' (not an option of 'tcpsnap record')"),
    ('interval = "fast"\n', "1: interval: bad duration 'fast': expected e.g. 10ms, 2s, 15m, 1h or 0"),
    ("interval = -1\n", "1: interval: bad duration -1: must be >= 0"),
    ('rotate = "0"\n', "1: rotate: must be more than 0: '0'"),
    ("rotate = true\n", '1: rotate: expected a duration such as "10ms" (or seconds as a number), not a boolean'),
    ('\n\nkeyframe = ["1m"]\n', '3: keyframe: expected a duration such as "10ms" (or seconds as a number), not an array'),
    ('row-group-rows = "5"\n', "1: row-group-rows: expected an integer, not a string"),
    ("row-group-rows = 0\n", "1: row-group-rows: must be at least 1: '0'"),
    ("nice = 1.5\n", "1: nice: expected an integer, not a float"),
    ('no-pids = "yes"\n', "1: no-pids: expected true or false, not a string"),
    ("verbose = -1\n", "1: verbose: expected an integer >= 0, not -1"),
    ("verbose = true\n", "1: verbose: expected an integer >= 0, not a boolean"),
    ('compression = "zsdt"\n',
     "1: compression: 'zsdt' is not one of: zstd, lz4, snappy, gzip, brotli, none (did you mean 'zstd'?)"),
    ("family = 5\n", "1: family: 5 is not one of: 4, 6"),
    ('state = ["listen", "nope"]\n', "1: state: unknown TCP state 'nope' (one of: established, syn-sent, "
     "syn-recv, fin-wait-1, fin-wait-2, time-wait, closed, close-wait, last-ack, listening, closing, "
     "delete-tcb; groups all, connected, synchronized, bucket, big)"),
    ('src = "10.0.0.0/33"\n', "1: src: bad address '10.0.0.0/33': '10.0.0.0/33' does not appear to be an "
     "IPv4 or IPv6 network"),
    ('filter = "sport ="\n', "1: filter: filter 'sport =' ends where a port was expected"),
    ("state = [true]\n", "1: state: item 1: expected a string, not a boolean"),
    ("port = 70000\n", "1: port: bad port '70000': ports are 0..65535, low to high"),
    ("port = { a = 1 }\n", "1: port: expected a string or an array of strings, not a table"),
    ("dir = 5\n", "1: dir: expected a string, not an integer"),
    ("quiet = true\nverbose = 1\n", "2: quiet and verbose: set one or the other, not both"),
    # TOML syntax: one line, with the line number
    ('dir = "/x"\ninterval = \n', "2: not valid TOML: Invalid value (column 12)"),
    ('dir = "/x"\ninterval = "1s', "2: not valid TOML: Unterminated string (at the end of the file)"),
    ('dir = "/x"\ndir = "/y"\n', "2: not valid TOML: Cannot overwrite a value (column 11)"),
]


@pytest.mark.parametrize("text,msg", BAD, ids=[m.split(": ", 1)[1][:40] for _, m in BAD])
def test_check_names_each_problem_in_one_line(tmp_path, capsys, text, msg):
    conf = _write(tmp_path, text)
    assert main(["config", "--check", str(conf)]) == 1
    out = capsys.readouterr()
    assert out.out == f"{conf}:{msg}\n"
    assert out.err == ""


def test_check_lists_every_problem_in_file_order(tmp_path, capsys):
    conf = _write(tmp_path, 'dir = "/x"\nintervall = "1s"\nrotate = "soon"\nfsync = 1\n')
    assert main(["config", "--check", str(conf)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{conf}:2: unknown key 'intervall' (did you mean 'interval'?)",
        f"{conf}:3: rotate: bad duration 'soon': expected e.g. 10ms, 2s, 15m, 1h or 0",
        f"{conf}:4: fsync: expected true or false, not an integer",
    ]


def test_check_of_a_missing_or_binary_file(tmp_path, capsys):
    assert main(["config", "--check", str(tmp_path / "nope.toml")]) == 1
    assert capsys.readouterr().out == f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"
    conf = tmp_path / "bin.toml"
    conf.write_bytes(b'dir = "/x"\n\xff\n')
    assert main(["config", "--check", str(conf)]) == 1
    assert capsys.readouterr().out == f"{conf}:2: not UTF-8 text (byte 0xff)\n"


def test_check_notes_a_file_without_dir(tmp_path, capsys):
    conf = _write(tmp_path, 'interval = "1s"\n')
    assert main(["config", "--check", str(conf)]) == 0
    out = capsys.readouterr()
    assert out.out == f"{conf}: ok\n"
    assert "sets no dir" in out.err


def _run(*args, **kw):
    return subprocess.run(TCPSNAP + [str(a) for a in args], capture_output=True, text=True,
                          timeout=60, **kw)


def test_record_with_a_bad_file_exits_1_with_its_lines_and_no_traceback(tmp_path):
    conf = _write(tmp_path, 'dir = "rec"\ninterval = "fast"\n[oops\n')
    r = _run("record", "--config", conf)
    assert r.returncode == 1
    assert r.stderr == f"tcpsnap: error: {conf}:3: not valid TOML: Expected ']' at the end of a table declaration (column 6)\n"
    conf = _write(tmp_path, 'dir = "rec"\ninterval = "fast"\nfsync = "no"\n')
    r = _run("record", "--config", conf)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"tcpsnap: error: {conf}:2: interval: bad duration 'fast': expected e.g. 10ms, 2s, 15m, 1h or 0",
        f"tcpsnap: error: {conf}:3: fsync: expected true or false, not a string"]
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize("argv,msg", [
    (["record", "--config", "{conf}", "--interval", "fast"], "argument --interval: bad duration 'fast'"),
    (["record", "--config", "{empty}"], "the following arguments are required: DIR (or 'dir' in the --config file)"),
    (["record"], "the following arguments are required: DIR (or 'dir' in the --config file)"),
    (["config"], "one of the arguments --check --show is required"),
    (["config", "--check", "a", "--show", "b"], "not allowed with argument"),
])
def test_command_line_errors_exit_2(tmp_path, argv, msg):
    conf = _write(tmp_path, 'dir = "rec"\n')
    empty = _write(tmp_path, "", "empty.toml")
    r = _run(*[a.format(conf=conf, empty=empty) for a in argv])
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="live capture")
def test_record_runs_from_the_file(tmp_path):
    conf = _write(tmp_path, 'dir = "rec"\ninterval = "20ms"\nduration = "0.4s"\nno-pids = true\n'
                            'rotate = "1h"\n')
    r = _run("record", "--config", conf, cwd="/")
    assert r.returncode == 0, r.stderr
    files = list((tmp_path / "rec").glob("date=*/*.parquet"))
    assert len(files) == 1
    import pyarrow.parquet as pq

    meta = pq.read_metadata(files[0]).metadata
    assert meta[b"tcpsnap.interval"] == b"20ms" and meta[b"tcpsnap.rotate"] == b"1h"
    assert meta[b"tcpsnap.pids"] == b"false"


def test_show_prints_every_setting_and_reads_back(tmp_path, capsys):
    conf = _write(tmp_path, 'dir = "rec"\ninterval = "10ms"\nstate = ["listen", "established"]\n'
                            'port = [443, "8000-8010"]\nno-pids = true\n')
    assert main(["config", "--show", str(conf)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert f'dir = "{tmp_path / "rec"}"' in text
    assert any(ln.startswith('interval = "10ms"') and ln.endswith("# from line 2") for ln in lines)
    assert any(ln.startswith('state = ["listen", "established"]') for ln in lines)
    assert any(ln.startswith('port = "443,8000-8010"') for ln in lines)
    assert any(ln.startswith('rotate = "15m"') and ln.endswith("# default") for ln in lines)
    assert any(ln.startswith("# duration = (not set)") for ln in lines)
    assert {ln.split(" ", 2)[1 if ln.startswith("#") else 0] for ln in lines[2:]} == set(OPTIONS)
    # what --show prints is a config file giving the same settings
    again = _write(tmp_path, text, "again.toml")
    assert _record_ns(["--config", str(again)]) == _record_ns(["--config", str(conf)])


def test_show_of_a_bad_file_exits_1(tmp_path, capsys):
    conf = _write(tmp_path, "interval = true\n")
    assert main(["config", "--show", str(conf)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (f'tcpsnap: error: {conf}:1: interval: expected a duration such as "10ms" '
                       "(or seconds as a number), not a boolean\n")


def test_record_help_shows_real_defaults():
    r = _run("record", "--help")
    assert "None" not in r.stdout and "--config FILE" in r.stdout


def _size(text: str) -> int:
    import argparse

    units = {"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    num = text.rstrip("KMGiB")
    if not num.isdigit() or text[len(num):] not in units:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: expected e.g. 512MiB")
    return int(num) * units[text[len(num):]]


def test_a_new_record_option_is_a_key_by_itself(tmp_path):
    """Options added to 'record' later (say --keep, --max-bytes, --metrics) are keys of
    the file with nothing else to do: the keys come from the parser."""
    import argparse

    from tcpsnap._cli_args import duration_arg

    p = argparse.ArgumentParser(prog="tcpsnap record")
    p.add_argument("dir", nargs="?")
    p.add_argument("--config")
    p.add_argument("--keep", type=duration_arg, default="7d", help="delete older files (default: %(default)s)")
    p.add_argument("--max-bytes", type=_size, default=None)
    p.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=False)
    _config.layer(p)
    assert "(default: 7d)" in p.format_help()
    conf = _write(tmp_path, 'dir = "/x"\nkeep = "2d"\nmax-bytes = "10GiB"\nmetrics = true\n')
    ns = _config.resolve(p.parse_args(["--config", str(conf)]))
    assert (ns.keep, ns.max_bytes, ns.metrics) == (2 * 86400.0, 10 << 30, True)
    ns = _config.resolve(p.parse_args(["--config", str(conf), "--no-metrics", "--keep", "1h"]))
    assert (ns.keep, ns.max_bytes, ns.metrics) == (3600.0, 10 << 30, False)
    ns = _config.resolve(p.parse_args(["/y"]))
    assert (ns.dir, ns.keep, ns.max_bytes, ns.metrics) == ("/y", 7 * 86400.0, None, False)
    bad = _write(tmp_path, 'keep = "soon"\nmax-bytes = "lots"\nmetrics = "on"\n', "bad.toml")
    with pytest.raises(_config.ConfigError) as e:
        _config.load(bad, p.get_default("_config_layer"))
    assert e.value.problems == [
        f"{bad}:1: keep: bad duration 'soon': expected e.g. 10ms, 2s, 15m, 1h or 0",
        f"{bad}:2: max-bytes: bad size 'lots': expected e.g. 512MiB",
        f"{bad}:3: metrics: expected true or false, not a string"]
