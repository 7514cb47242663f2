"""Bad arguments for the compiled modules' entry points, shared by the tables in
test_mib_parser.py and test_netlink_parser.py.

The contract (issue "Safe recordings", item 9): a compiled entry point given a bad argument
raises exactly ValueError or TypeError -- never BufferError, OverflowError, AttributeError,
MemoryError or a subclass of either -- with a one-line message naming the argument. Not a
buffer / not a number: TypeError. A buffer that is not C-contiguous, or read-only where it
is written: ValueError. A value out of range: ValueError. An output row array of the wrong
kind: ValueError, whatever is wrong with it (as ever).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from tcpsnap import ROW_DTYPE


def _readonly_rows() -> np.ndarray:
    a = np.zeros(4, ROW_DTYPE)
    a.flags.writeable = False
    return a


# name -> a fresh bad value (fresh: a call may keep or change what it is given)
KINDS: dict[str, Callable[[], Any]] = {
    "noncontig_memoryview": lambda: memoryview(bytes(64))[::2],
    "noncontig_numpy_bytes": lambda: np.zeros(64, np.uint8)[::2],
    "noncontig_rows": lambda: np.zeros(8, ROW_DTYPE)[::2],
    "readonly_rows": _readonly_rows,
    "wrong_dtype_rows": lambda: np.zeros(4, np.uint8),
    "2d_rows": lambda: np.zeros((2, 2), ROW_DTYPE),
    "bytearray": lambda: bytearray(320),
    "2**64": lambda: 2**64,
    "2**63-1": lambda: 2**63 - 1,
    "-1": lambda: -1,
    "-2**64": lambda: -(2**64),
    "10**400": lambda: 10**400,
    "float": lambda: 1.5,
    "None": lambda: None,
    "str": lambda: "x",
    "object": object,
}

#: The kinds that no integer (size, count, sequence number) accepts.
NOT_INTS = {"noncontig_memoryview", "noncontig_numpy_bytes", "noncontig_rows", "readonly_rows",
            "wrong_dtype_rows", "2d_rows", "bytearray", "float", "None", "str", "object"}


def cases(table: dict[str, tuple[Callable[[Any], object], set[str]]]) -> list[Any]:
    """pytest params ``(call, kind, argname)`` for every entry of ``table`` -- ``{"f.arg":
    (call taking the bad value, kinds that are valid for it)}`` -- and every other kind."""
    return [pytest.param(call, kind, name.rsplit(".", 1)[-1], id=f"{name}-{kind}")
            for name, (call, valid) in table.items() for kind in KINDS if kind not in valid]


def assert_rejected(call: Callable[[Any], object], value: Any, argname: str,
                    aliases: dict[str, str] | None = None) -> BaseException:
    """``call(value)`` raises exactly ValueError or TypeError, one line naming ``argname``
    (or its alias: a message kept from before may name the thing, not the keyword)."""
    with pytest.raises((ValueError, TypeError)) as info:
        call(value)
    exc = info.value
    assert type(exc) in (ValueError, TypeError), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert "\n" not in msg, msg
    want = (aliases or {}).get(argname, argname)
    assert want in msg, f"{msg!r} does not name {want!r}"
    return exc


def assert_only_value_or_type_error(call: Callable[[], object]) -> object:
    """``call()``'s result, or None if it raised exactly ValueError or TypeError; any other
    exception fails (for property tests, where a good argument may come up too)."""
    try:
        return call()
    except (ValueError, TypeError) as e:
        assert type(e) in (ValueError, TypeError), f"{type(e).__name__}: {e}"
        return None


def one_bad_argument(names: list[str]) -> st.SearchStrategy[tuple[str, Any] | None]:
    """None (every argument good), or one of ``names`` and a bad value to put there: half
    the examples of a property test stay good, the other half try every kind everywhere."""
    bad = st.tuples(st.sampled_from(names), st.sampled_from(sorted(KINDS)).map(lambda k: KINDS[k]()))
    return st.one_of(st.none(), bad)


# ------------------------------------------------------------------ the command line
#
# The contract (issue 13, item 2): every command, every bad argument: exit status 2 for a
# command line that cannot work, 1 for a failure, and exactly one line on stderr that says
# what to do -- never a traceback. ``{rec}`` is a good recording (the v1 fixture, 0.8 s),
# ``{empty}`` an empty folder, ``{garbage}`` a folder with a file that is not Parquet,
# ``{seqtype}`` a recording one of whose files has ``seq`` as int32, ``{file}`` a regular
# file, ``{tmp}`` a scratch folder. (argv, exit status, text the line must hold)
CLI_BAD: list[tuple[str, int, str]] = [
    # the command itself
    ("", 2, "required: COMMAND"),
    ("frobnicate", 2, "invalid choice: 'frobnicate'"),
    ("--bogus", 2, "tcpsnap: error:"),
    # show
    ("show --state nope", 2, "unknown TCP state"),
    ("show --port 70000", 2, "ports are 0..65535"),
    ("show --family 5", 2, "invalid choice"),
    ("show --format xml", 2, "choose from 'table', 'csv', 'json'"),
    ("show 'dport ='", 2, "filter 'dport =' ends where a port was expected"),
    ("show 'dport = :x'", 2, "bad port ':x'"),
    # record
    ("record", 2, "required: DIR"),
    ("record {tmp}/r --interval soon", 2, "bad duration 'soon': expected e.g. 10ms"),
    ("record {tmp}/r --interval 1M", 2, "units are lowercase: '1m' is 1 minute"),
    ("record {tmp}/r --interval 10MS", 2, "'10ms' is 10 milliseconds"),
    ("record {tmp}/r --rotate 0", 2, "must be more than 0"),
    ("record {tmp}/r --duration -1s", 2, "argument --duration"),
    ("record {tmp}/r --row-group-rows 0", 2, "must be at least 1"),
    ("record {tmp}/r --compression zip", 2, "invalid choice: 'zip'"),
    ("record {tmp}/r --mode sometimes", 2, "invalid choice: 'sometimes'"),
    ("record {tmp}/r --keyframe 0", 2, "must be more than 0"),
    ("record {tmp}/r --max-bytes 5XB", 2, "bad size '5XB'"),
    ("record {tmp}/r --metrics nohost", 2, "e.g. 127.0.0.1:9464"),
    ("record {tmp}/r --nice x", 2, "invalid int value: 'x'"),
    ("record {tmp}/r --keep 1M", 2, "units are lowercase"),
    ("record /dev/null --duration 1s", 1, "/dev/null is not a folder"),
    ("record {file}/r --duration 1s", 1, "cannot create recording folder"),
    ("record {tmp}/r --config {tmp}/none.toml", 1, "none.toml: cannot read"),
    # recover
    ("recover", 2, "required: DIR"),
    ("recover {tmp}/none", 1, "no recording folder at"),
    ("recover /dev/null", 1, "/dev/null is not a folder"),
    # info
    ("info", 2, "required: path"),
    ("info {tmp}/none", 1, "no recording at"),
    ("info /dev/null", 1, "/dev/null is not a recording: give a recording folder or one of its .parquet files"),
    ("info {empty}", 1, "no Parquet files in"),
    ("info {garbage}", 1, "not a readable recording file"),
    ("info {seqtype}", 1, "column 'seq' is int32, not int64); skip_bad=True or --skip-bad reads the other files"),
    ("info {rec} --bogus", 2, "unrecognized arguments: --bogus"),
    ("info gs://fleet/x", 2, "only s3:// URLs are read"),
    ("info s3://Bad_Bucket/x", 2, "is not an S3 URL"),
    ("info s3://fleet/x --host a/b", 2, "hosts must be host names"),
    # plot
    ("plot {rec}", 2, "required: -o/--output"),
    ("plot {rec} -o {tmp}/x.png --kind pie", 2, "invalid choice: 'pie'"),
    ("plot {rec} -o {tmp}/x.png --freq 0s", 2, "argument --freq: must be more than 0"),
    ("plot {rec} -o {tmp}/x.png --freq 1M", 2, "units are lowercase: '1m' is 1 minute"),
    ("plot {rec} -o {tmp}/x.png --freq 1ns", 2, "--freq 1ns cuts 0.7 s into 700,000,000 bins, over the 100,000 a "
                                                "plot draws; try --freq 1ms or more"),
    ("plot {rec} -o {tmp}/x.png --tz Mars/Olympus", 2, "unknown time zone 'Mars/Olympus' (give an IANA name"),
    ("plot {rec} -o {tmp}/x.png --utc --tz Europe/Paris", 2, "--utc and --tz Europe/Paris name two zones"),
    ("plot {rec} -o {tmp}/x.png --start soon", 2, "argument --start: not a time: 'soon'"),
    ("plot {rec} -o {tmp}/x.xyz", 2, "name it .png, .svg or .pdf"),
    ("plot {rec} -o {tmp}/none/x.png", 1, "folder"),
    ("plot {rec} -o {tmp}/x.png --start 2020-01-01 --end 2020-01-02", 1, "no snapshots in that time range"),
    ("plot /dev/null -o {tmp}/x.png", 1, "/dev/null is not a recording"),
    # export
    ("export {rec}", 2, "--format is required: csv or jsonl"),
    ("export {rec} --format xml", 2, "invalid choice: 'xml'"),
    ("export {rec} --to xml", 2, "invalid choice: 'xml'"),
    ("export {tmp}/none --format csv", 1, "no recording at"),
    ("export {rec} --format csv -o {tmp}/none/x.csv", 1, "x.csv: No such file or directory"),
    ("export {rec} --format csv --end now-x", 2, "argument --end: not a time: 'now-x'"),
    # top
    ("top --interval 0s", 2, "argument --interval: must be more than 0"),
    ("top --no-pids --process sshd", 2, "--pid/--process filters need pids: drop --no-pids"),
    ("record {tmp}/r --no-pids --process sshd", 2, "--pid/--process filters need pids: drop --no-pids"),
    ("top --at now", 2, "--at needs --replay DIR"),
    ("top --replay {rec} --record {tmp}/r", 2, "--record records the live table: it cannot go with --replay"),
    ("top 'dport ='", 2, "filter 'dport =' ends where a port was expected"),
    ("top --replay {tmp}/none", 1, "no recording at"),
    ("top --replay {garbage}", 1, "not a readable recording file"),
    ("top --replay {rec} --at 2000-01-01", 1, "no snapshot at or before 2000-01-01 00:00:00+00:00 in"),
    # ship (issue 16): sizes in the one grammar, 0 refused
    ("ship {tmp}/r s3://fleet/x --part-size 0", 2, "argument --part-size: must be more than 0: '0'"),
    ("ship {tmp}/r s3://fleet/x --part-size 4MiB", 2, "argument --part-size: must be at least 5MiB"),
    ("ship {tmp}/r s3://fleet/x --part-size 5XB", 2, "bad size '5XB'"),
    ("ship {tmp}/r s3://fleet/x --limit-rate 0", 2, "argument --limit-rate: must be more than 0: '0'"),
    ("ship {tmp}/r s3://fleet/x --limit-rate -1MiB", 2, "argument --limit-rate"),
    ("record {tmp}/r --ship s3://fleet/x --limit-rate 0", 2, "argument --limit-rate: must be more than 0"),
    # config, install-service
    ("config", 2, "one of the arguments --check --show is required"),
    ("install-service --bogus", 2, "unrecognized arguments: --bogus"),
]
