"""``tcpsnap record``'s options for running unattended on every host: retention
(``--keep``, ``--max-bytes``), health metrics (``--metrics``, ``--metrics-textfile``) and
log lines for the systemd journal. Kept apart from ``_cmd_record`` (which calls in at a
few places); the work is done in ``record.retention`` and ``record.metrics``."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from ._cli_args import positive_duration_arg, positive_size_arg

__all__ = ["add_args", "recorder_kwargs", "check", "start", "stop", "to_journal",
           "JournalFormatter"]

#: seconds between two writes of --metrics-textfile
TEXTFILE_INTERVAL = 15.0


def _listen_arg(text: str) -> tuple[str, int]:
    from .record.metrics import parse_listen

    try:
        return parse_listen(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retention and health (for a recorder left running)")
    g.add_argument("--keep", type=positive_duration_arg, default=None, metavar="DUR",
                   help="delete finished files once their newest snapshot is older than this "
                        "(e.g. 14d)")
    g.add_argument("--max-bytes", type=positive_size_arg, default=None, metavar="SIZE",
                   help="delete the oldest finished files while the recording is bigger "
                        "(e.g. 5GiB, 500MiB; K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, "
                        "KB/MB/GB/TB of 1000); never the newest file nor the one in progress")
    g.add_argument("--metrics", type=_listen_arg, default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. "
                        "127.0.0.1:9464 (the host is required; port 0: any, logged); "
                        "needs pip install 'tcpsnap[metrics]'")
    g.add_argument("--metrics-textfile", default=None, metavar="PATH",
                   help="write the metrics to PATH (node_exporter's textfile collector: "
                        f"*.prom) every {TEXTFILE_INTERVAL:g}s and at exit, atomically")


def recorder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"keep": args.keep, "max_bytes": args.max_bytes}


def check(args: argparse.Namespace) -> None:
    """Before anything is touched: metrics asked without prometheus_client is a
    one-line error, exit status 1 (the command line was right; the host lacks a
    package)."""
    if args.metrics is None and args.metrics_textfile is None:
        return
    from .record.metrics import require_prometheus

    try:
        require_prometheus()
    except ImportError as e:
        raise SystemExit(f"tcpsnap: error: {e}") from None


def start(args: argparse.Namespace, rec: Any) -> Any:
    """The metrics exporter of an open recorder (None if not asked for). If it cannot
    start (the port is taken...), the recorder is closed and ``OSError`` raised."""
    if args.metrics is None and args.metrics_textfile is None:
        return None
    from .record.metrics import MetricsExporter

    try:
        return MetricsExporter(rec, listen=args.metrics, textfile=args.metrics_textfile,
                               textfile_interval=TEXTFILE_INTERVAL).start()
    except BaseException:
        rec.close()
        raise


def stop(exporter: Any) -> None:
    """After the recorder is closed: the textfile gets the final counts."""
    if exporter is not None:
        exporter.close()


# ------------------------------------------------------------ the journal

def to_journal() -> bool:
    """stderr is connected to the systemd journal: ``JOURNAL_STREAM`` (set by systemd)
    names its device and inode (checked, as sd_journal_stream_fd(3) advises: a
    child's stderr may have been redirected since)."""
    v = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = v.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class JournalFormatter(logging.Formatter):
    """``<N>message``: the syslog priority as a prefix, which the journal turns into the
    line's priority (sd-daemon(3)); no timestamp, no program name (the journal adds
    both)."""

    def format(self, record: logging.LogRecord) -> str:
        n = record.levelno
        prio = (2 if n >= logging.CRITICAL else 3 if n >= logging.ERROR else
                4 if n >= logging.WARNING else 6 if n >= logging.INFO else 7)
        return f"<{prio}>{record.getMessage()}"
