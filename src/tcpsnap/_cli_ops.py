"""``tcpsnap record``'s options for running unattended on every host: retention
(``--keep``, ``--max-bytes``). Kept apart from ``_cmd_record`` (which calls in at a
few places); the work is done in ``record.retention``."""

from __future__ import annotations

import argparse
from typing import Any

from ._cli_args import positive_duration_arg
from ._units import parse_size

__all__ = ["add_args", "recorder_kwargs"]


def _size_arg(text: str) -> int:
    try:
        v = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return v


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retention and health (for a recorder left running)")
    g.add_argument("--keep", type=positive_duration_arg, default=None, metavar="DUR",
                   help="delete finished files once their newest snapshot is older than this "
                        "(e.g. 14d)")
    g.add_argument("--max-bytes", type=_size_arg, default=None, metavar="SIZE",
                   help="delete the oldest finished files while the recording is bigger "
                        "(e.g. 5GiB, 500MiB; K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, "
                        "KB/MB/GB/TB of 1000); never the newest file nor the one in progress")


def recorder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"keep": args.keep, "max_bytes": args.max_bytes}
