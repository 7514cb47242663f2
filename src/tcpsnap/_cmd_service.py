"""``tcpsnap install-service`` and ``tcpsnap config``: tcpsnap as a systemd service."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import sysconfig
from importlib import resources
from pathlib import Path

from ._config import DEFAULT_PATH

UNIT_NAME = "tcpsnap.service"
UNIT_DIR = "/etc/systemd/system"
STATE_DIR = "/var/lib/tcpsnap"

#: Exactly what the recorder uses (measured): owning pids of other users' sockets need
#: both of the first two; the destroy feed's larger receive buffer CAP_NET_ADMIN; the
#: capture thread's higher priority CAP_SYS_NICE (optional).
CAPABILITIES = ("CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_SYS_NICE")

EPILOG_INSTALL = f"""\
Writes {UNIT_DIR}/{UNIT_NAME} (hardened: a dedicated user, recording into
{STATE_DIR}, only the capabilities {', '.join(CAPABILITIES)}) and, if it
is missing, a default {DEFAULT_PATH} (an existing one is never overwritten).
Then prints the commands that create the user and start the service.

examples:
  tcpsnap install-service --dry-run
      print what would be written, write nothing
  sudo tcpsnap install-service
      install for this tcpsnap ({sys.executable})
  tcpsnap install-service --prefix pkgroot
      stage the files under ./pkgroot (as DESTDIR)
"""

EPILOG_CONFIG = f"""\
The file: one key per 'tcpsnap record' option, spelled as the option without its leading
dashes (--row-group-rows is row-group-rows, DIR is dir), for example:
  dir = "/var/lib/tcpsnap"
  interval = "10ms"
  rotate = "1h"
  state = ["established", "listen"]
  port = "443,8000-8010"
  no-pids = true
Values are checked by the same parsers as the command line, whose options override the
file. A relative dir is relative to the file's folder.

exit status: 0 the file is good; 1 something is wrong with it (each problem is printed,
one line each, FILE:LINE: ...); 2 a bad command line. 'tcpsnap record --config FILE'
exits 1 for a bad file too. FILE defaults to {DEFAULT_PATH}.
"""


def register(sub) -> None:
    inst = sub.add_parser(
        "install-service", help="install tcpsnap as a systemd service",
        description="Install a systemd unit that runs 'tcpsnap record --config "
                    f"{DEFAULT_PATH}' as a dedicated user.",
        epilog=EPILOG_INSTALL, formatter_class=argparse.RawDescriptionHelpFormatter)
    inst.add_argument("--prefix", default="/", metavar="DIR",
                      help="write the files under DIR instead of / (a staging root: the "
                           "unit's own paths stay as on the target; default: /)")
    inst.add_argument("--user", default="tcpsnap", type=_user_name, metavar="NAME",
                      help="the service's user and group (default: tcpsnap)")
    inst.add_argument("--dry-run", action="store_true",
                      help="print what would be written; write nothing")
    inst.set_defaults(func=cmd_install_service)

    cfg = sub.add_parser(
        "config", help="check a 'record --config' file, or show its effective settings",
        description="Check a tcpsnap.toml (the settings of 'tcpsnap record --config FILE') "
                    "or print the settings the recorder would run with.",
        epilog=EPILOG_CONFIG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = cfg.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", nargs="?", const=DEFAULT_PATH, metavar="FILE",
                      help="print what is wrong, line by line; 'ok' if nothing is")
    what.add_argument("--show", nargs="?", const=DEFAULT_PATH, metavar="FILE",
                      help="print every setting, from the file or the default")
    cfg.set_defaults(func=cmd_config)


# -- tcpsnap config ----------------------------------------------------------------------

def cmd_config(args: argparse.Namespace) -> int:
    from ._cmd_record import record_layer
    from ._config import ConfigError, check, load, show

    lay = record_layer()

    if args.check is not None:
        problems = check(args.check, lay)
        for p in problems:  # the findings are the output, as a linter's
            print(p)
        if problems:
            return 1
        if "dir" not in load(args.check, lay).values:
            print(f"tcpsnap: note: {args.check} sets no dir: 'tcpsnap record --config "
                  f"{args.check}' needs DIR on its command line", file=sys.stderr)
        print(f"{args.check}: ok")
        return 0
    try:
        text = show(args.show, lay)
    except ConfigError as e:
        for p in e.problems:
            print(f"tcpsnap: error: {p}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


# -- tcpsnap install-service -------------------------------------------------------------

def _user_name(text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", text):
        raise argparse.ArgumentTypeError(f"not a user name: {text!r} (lower case letters, "
                                         "digits, _ and -; at most 32)")
    if text == "root":
        raise argparse.ArgumentTypeError("the service runs as a user of its own, not root "
                                         "(it gets the few capabilities it needs)")
    return text


def _quote(arg: str) -> str:
    """One word of an ExecStart= line: % and $ escaped, quoted if it has blanks."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\;]', arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def tcpsnap_command() -> list[str]:
    """How the service runs this install's tcpsnap: its ``tcpsnap`` script if the script
    runs this very interpreter (same folder, same file: a venv's python or python3), else
    ``python -m tcpsnap``."""
    me = Path(sys.executable)
    for d in (me.parent, Path(sysconfig.get_path("scripts"))):
        script = d / "tcpsnap"
        try:
            with open(script, "rb") as f:
                first = f.readline()
        except OSError:
            continue
        if not (first.startswith(b"#!") and os.access(script, os.X_OK)):
            continue
        words = os.fsdecode(first[2:]).split()
        interp = Path(words[0]) if words else None
        with contextlib.suppress(OSError):
            if interp is not None and interp.parent == me.parent and interp.samefile(me):
                return [str(script)]
    return [sys.executable, "-m", "tcpsnap"]


def unit_text(user: str = "tcpsnap", command: list[str] | None = None,
              config: str = DEFAULT_PATH) -> str:
    """The unit ``install-service`` writes."""
    template = resources.files("tcpsnap").joinpath("data", UNIT_NAME).read_text(encoding="utf-8")
    exec_ = " ".join(_quote(a) for a in (command or tcpsnap_command()))
    return (template.replace("@EXEC@", exec_).replace("@USER@", user)
            .replace("@CONFIG@", _quote(config)))


def default_config_text() -> str:
    return resources.files("tcpsnap").joinpath("data", "tcpsnap.toml").read_text(encoding="utf-8")


def _unreachable(command: list[str]) -> list[str]:
    """Why the service's user might not run ``command``: folders it may not enter,
    or homes that ProtectHome=yes hides."""
    out = []
    for p in {Path(command[0]).resolve(), Path(sys.executable).resolve(),
              Path(__file__).resolve().parent}:
        if any(p.is_relative_to(h) for h in ("/home", "/root", "/run/user")):
            out.append(f"{p} is under /home, /root or /run/user, which the unit's "
                       "ProtectHome=yes hides: install tcpsnap elsewhere (e.g. a venv in /opt)")
            continue
        for d in p.parents:
            try:
                mode = d.stat().st_mode
            except OSError:
                continue
            if not mode & 0o001:
                out.append(f"{d} is not searchable by other users: the service's user cannot "
                           f"reach {p}")
                break
    return sorted(out)


def _write_new(path: Path, text: str, mode: int) -> bool:
    """Create ``path`` with ``text``; False (and nothing written) if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)  # whatever the umask
    return True


def _replace(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tcpsnap-tmp")
    with contextlib.suppress(FileNotFoundError):  # left by an interrupted run
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _under(prefix: Path, path: str) -> Path:
    return prefix / path.lstrip("/")


def next_steps(user: str) -> list[str]:
    import pwd

    steps = []
    try:
        pwd.getpwnam(user)
    except KeyError:
        steps.append(f"useradd --system --user-group --no-create-home --home-dir {STATE_DIR} "
                     f"--shell /usr/sbin/nologin {user}")
    steps += [f"tcpsnap config --check {DEFAULT_PATH}",
              "systemctl daemon-reload",
              f"systemctl enable --now {UNIT_NAME}",
              f"systemctl status {UNIT_NAME}",
              "journalctl -u tcpsnap"]
    return steps


def cmd_install_service(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix)
    command = tcpsnap_command()
    unit = unit_text(args.user, command)
    unit_path = _under(prefix, f"{UNIT_DIR}/{UNIT_NAME}")
    config_path = _under(prefix, DEFAULT_PATH)
    for why in _unreachable(command):
        print(f"tcpsnap: warning: {why}", file=sys.stderr)
    if args.dry_run:
        print(f"would write {unit_path}:")
        print("    " + unit.rstrip("\n").replace("\n", "\n    "))
        if config_path.exists():
            print(f"would keep {config_path} (it exists)")
        else:
            print(f"would write {config_path} (the default settings)")
    else:
        unit_path.parent.mkdir(parents=True, exist_ok=True)
        old = unit_path.read_text(encoding="utf-8") if unit_path.is_file() else None
        if old == unit:
            print(f"{unit_path}: unchanged")
        else:
            _replace(unit_path, unit, 0o644)
            print(f"{'updated' if old is not None else 'wrote'} {unit_path}")
        config_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if _write_new(config_path, default_config_text(), 0o644):
            print(f"wrote {config_path}")
        else:
            print(f"kept {config_path} (it exists)")
    print("next, as root:")
    for step in next_steps(args.user):
        print(f"  {step}")
    return 0
