"""The ``record`` options in a TOML file: ``tcpsnap record --config FILE``.

One key per ``tcpsnap record`` option, spelled as the long option without its leading
dashes (``--row-group-rows`` is ``row-group-rows``; the positional DIR is ``dir``). The keys
come from the ``record`` parser itself, so every option it has can be set in the file, and
every value goes through that option's own parser (``_cli_args``, ``_units``, ``_filters``):
the file accepts exactly what the command line accepts, with the same messages.

TOML types: flags (``no-pids``, ``fsync``...) are booleans; durations are strings in the
duration grammar (``"10ms"``) or numbers of seconds; integers are integers; ``state`` and
``port`` are a string as on the command line (``"443,8000-8010"``) or an array of them.
A relative ``dir`` is relative to the folder holding the file.

The command line overrides the file, option by option (a ``--state`` on the command line
replaces the file's ``state``; ``-q`` or ``-v`` replace both ``quiet`` and ``verbose``).

Exit statuses: 1 for a file that cannot be used (unreadable, not TOML, an unknown key, a
wrong type, a bad value: every problem is printed, one line each, ``FILE:LINE: ...``);
2 for a bad command line, as for every tcpsnap command.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_PATH", "ConfigError", "Key", "layer", "resolve", "load",
           "check", "show"]

#: Where ``tcpsnap install-service`` puts the file and the unit reads it.
DEFAULT_PATH = "/etc/tcpsnap/tcpsnap.toml"

_LAYER = "_config_layer"  # the namespace attribute holding the record parser's keys


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Key:
    """One ``record`` option as a config key."""

    name: str
    action: argparse.Action = field(compare=False)
    default: Any = field(compare=False)  # the option's real default (the parser's is None)

    @property
    def dest(self) -> str:
        return self.action.dest


@dataclass
class Layer:
    """The ``record`` parser's options as keys, and which exclude each other."""

    parser: argparse.ArgumentParser
    keys: dict[str, Key]
    groups: list[list[Key]]


@dataclass
class Loaded:
    """A loaded file: values by ``dest``, and the line of each key (None if not found)."""

    path: str
    values: dict[str, Any]
    lines: dict[str, int | None]


# -- the record parser's options as keys ---------------------------------------------------

def _key_name(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    if longs:
        return longs[0][2:]
    if action.option_strings:
        return action.option_strings[0].lstrip("-")
    return action.dest


def layer(parser: argparse.ArgumentParser) -> None:
    """Make every option of ``parser`` (``record``) a config key. Call it after the last
    ``add_argument``: the parser's defaults become None (not on the command line) and
    :func:`resolve` fills in the file's value or the real default."""
    keys: dict[str, Key] = {}
    for action in parser._actions:
        if (isinstance(action, argparse._HelpAction) or action.dest in ("config", argparse.SUPPRESS)
                or action.default is argparse.SUPPRESS):
            continue
        default = action.default
        if action.help and "%(default)" in action.help:  # the help shows the real default
            action.help = action.help.replace("%(default)s", str(default))
        if isinstance(default, str) and callable(action.type):
            default = action.type(default)  # as argparse converts a string default
        name = _key_name(action)
        keys[name] = Key(name, action, default)
        action.default = None
    by_action = {id(k.action): k for k in keys.values()}
    groups = [[by_action[id(a)] for a in g._group_actions if id(a) in by_action]
              for g in parser._mutually_exclusive_groups]
    parser.set_defaults(**{_LAYER: Layer(parser, keys, groups)})


# -- values ------------------------------------------------------------------------------

def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


class _Bad(Exception):
    pass


def _duration_types() -> tuple[Any, ...]:
    from ._cli_args import duration_arg, positive_duration_arg

    return (duration_arg, positive_duration_arg)


def _int_types() -> tuple[Any, ...]:
    from ._cli_args import positive_int_arg

    return (int, positive_int_arg)


def _convert_one(action: argparse.Action, value: Any, what: str) -> Any:
    """A TOML scalar through the option's own parser, as argparse would run it."""
    t = action.type
    if t in _duration_types():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Bad(f'expected a duration such as "10ms" (or seconds as a number), '
                       f"not {_toml_type(value)}")
        arg: Any = value  # the duration parsers take numbers of seconds as they are
    elif t in _int_types():
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, not {_toml_type(value)}")
        arg = str(value)
    elif t is None:
        if not isinstance(value, str):
            raise _Bad(f"expected a string, not {_toml_type(value)}")
        arg = value
    else:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Bad(f"expected {what}, not {_toml_type(value)}")
        arg = value if isinstance(value, str) else str(value)
    if callable(t):
        try:
            out = t(arg)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise _Bad(str(e) or f"bad value {value!r}") from None
    else:
        out = arg
    if action.choices is not None and out not in action.choices:
        names = [str(c) for c in action.choices]
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _Bad(f"{value!r} is not one of: {', '.join(names)}{hint}")
    return out


def convert(key: Key, value: Any) -> Any:
    """A TOML value for ``key`` -> what argparse would store for the same option.
    Raises ``_Bad`` with the message."""
    action = key.action
    if isinstance(action, argparse._CountAction):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer >= 0, not {_toml_type(value)}")
        if value < 0:
            raise _Bad(f"expected an integer >= 0, not {value}")
        return value
    if action.nargs == 0:  # store_true / store_false / store_const, --x/--no-x
        if not isinstance(value, bool):
            raise _Bad(f"expected true or false, not {_toml_type(value)}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return value
        return action.const if value else key.default
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if isinstance(value, (dict, bool, float)) or not isinstance(value, (str, int, list)):
            raise _Bad(f"expected a string or an array of strings, not {_toml_type(value)}")
        out = []
        for i, item in enumerate(items, 1):
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise _Bad(f"item {i}: expected a string, not {_toml_type(item)}")
            out.append(_convert_one(action, item if isinstance(item, str) else str(item), "a string"))
        return out or None
    return _convert_one(action, value, "a string or a number")


# -- the file ----------------------------------------------------------------------------

_BARE = r"""(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))"""
_KEY_RE = re.compile(rf"\s*{_BARE}\s*[=.]")
_TABLE_RE = re.compile(rf"\s*\[\[?\s*{_BARE}\s*[\].]")


def _key_lines(text: str) -> dict[str, int]:
    """The line of each top-level key (or table) in ``text``: TOML's parser keeps none."""
    out: dict[str, int] = {}
    in_table = False
    for n, line in enumerate(text.splitlines(), 1):
        m = _TABLE_RE.match(line)
        if m:
            in_table = True
            out.setdefault(next(g for g in m.groups() if g is not None), n)
            continue
        if not in_table:
            m = _KEY_RE.match(line)
            if m:
                out.setdefault(next(g for g in m.groups() if g is not None), n)
    return out


def _where(path: str, line: int | None) -> str:
    return f"{path}:{line}" if line else path


def _did_you_mean(name: str, keys: Iterable[str]) -> str:
    names = list(keys)
    dashed = name.replace("_", "-").lower()
    if dashed in names:
        return f" (did you mean {dashed!r}?)"
    close = difflib.get_close_matches(dashed, names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return " (not an option of 'tcpsnap record')"


def _parse_toml(path: str) -> tuple[dict[str, Any], str]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x})"]) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            msg = f"{msg[:m.start()]} (column {col})"
        else:
            line = text.count("\n") + (0 if text.endswith("\n") else 1)
            msg = re.sub(r"\s*\(at end of document\)$", " (at the end of the file)", msg)
        raise ConfigError([f"{path}:{line}: not valid TOML: {msg}"]) from None


def load(path: str | os.PathLike[str], lay: Layer) -> Loaded:
    """Read and check a config file against ``lay`` (the keys of a command's parser, as
    ``tcpsnap._cmd_record.record_layer()`` gives them): every problem at once in a
    :class:`ConfigError`."""
    path = os.fspath(path)
    keys = lay.keys
    data, text = _parse_toml(path)
    lines = _key_lines(text)
    problems: list[str] = []
    values: dict[str, Any] = {}
    where: dict[str, int | None] = {}
    for name, value in data.items():
        line = lines.get(name)
        key = keys.get(name)
        if key is None:
            problems.append(f"{_where(path, line)}: unknown key {name!r}{_did_you_mean(name, keys)}")
            continue
        try:
            v = convert(key, value)
        except _Bad as e:
            problems.append(f"{_where(path, line)}: {name}: {e}")
            continue
        if key.dest == "dir":
            v = os.path.join(os.path.dirname(os.path.abspath(path)), v)
        values[key.dest] = v
        where[key.dest] = line
    for group in lay.groups:  # quiet and verbose, as the command line refuses -q -v
        both = [k for k in group if values.get(k.dest) not in (None, k.default)]
        if len(both) > 1:
            line = max((where.get(k.dest) or 0) for k in both) or None
            problems.append(f"{_where(path, line)}: {' and '.join(k.name for k in both)}: "
                            "set one or the other, not both")
    if problems:  # in the order of the file
        raise ConfigError(sorted(problems, key=_line_of))
    return Loaded(path, values, where)


def _line_of(problem: str) -> int:
    m = re.match(r".*?:(\d+): ", problem)
    return int(m.group(1)) if m else 0


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """The ``record`` namespace with each option from the command line, else from
    ``--config``, else its default. Raises :class:`ConfigError` for a bad file; exits 2
    (a usage error) when no DIR is given anywhere."""
    lay: Layer = getattr(args, _LAYER)
    loaded = load(args.config, lay) if getattr(args, "config", None) else None
    file_values = dict(loaded.values) if loaded else {}
    for group in lay.groups:
        if any(getattr(args, k.dest) is not None for k in group):
            for k in group:  # -q or -v on the command line replaces both quiet and verbose
                file_values.pop(k.dest, None)
    out = argparse.Namespace(**vars(args))
    for key in lay.keys.values():
        if getattr(args, key.dest) is None:
            setattr(out, key.dest, file_values.get(key.dest, key.default))
    if getattr(out, "dir", None) is None:
        lay.parser.error("the following arguments are required: DIR (or 'dir' in the --config file)")
    return out


# -- tcpsnap config --check / --show -------------------------------------------------------

def check(path: str | os.PathLike[str], lay: Layer) -> list[str]:
    """Every problem of a config file, one line each (an empty list: the file is good)."""
    try:
        load(path, lay)
    except ConfigError as e:
        return e.problems
    return []


def _ranges(values: Iterable[int]) -> str:
    """{1, 2, 3, 7} -> "1-3,7"."""
    out: list[list[int]] = []
    for v in sorted(values):
        if out and out[-1][1] == v - 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def _toml(key: Key, value: Any) -> str:
    """``value`` (as argparse stores it) spelled as the file would give it."""
    from ._schema import TcpState
    from ._units import format_duration

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and key.action.type in _duration_types():
        return json.dumps(format_duration(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list) and all(isinstance(v, frozenset) for v in value):
        merged = frozenset().union(*value)
        if key.dest == "state":
            return json.dumps([TcpState(s).name.lower() for s in sorted(merged)])
        return json.dumps(_ranges(merged))
    return json.dumps(os.fspath(value) if isinstance(value, os.PathLike) else str(value))


def show(path: str | os.PathLike[str], lay: Layer) -> str:
    """The settings ``tcpsnap record --config FILE`` runs with, as a config file (each
    value from the file or the default; the command line would override either)."""
    loaded = load(path, lay)
    out = [f"# tcpsnap record --config {os.fspath(path)}: the effective settings",
           "# (a value from the command line overrides the one here)"]
    rows = []
    for key in lay.keys.values():
        if key.dest in loaded.values:
            line = loaded.lines.get(key.dest)
            value, src = loaded.values[key.dest], f"from line {line}" if line else "from the file"
        else:
            value, src = key.default, "default"
        if value is None:
            rows.append((f"# {key.name} = (not set)", src))
        else:
            rows.append((f"{key.name} = {_toml(key, value)}", src))
    width = max(len(r[0]) for r in rows)
    out += [f"{text:<{width}}  # {src}" for text, src in rows]
    return "\n".join(out) + "\n"
