"""``tcpsnap ship``: upload a recording's finished files to S3 (``tcpsnap.ship``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from ._cli_args import duration_arg, positive_size_arg
from ._errors import UsageError
from ._units import human_bytes

EPILOG = """\
examples:
  tcpsnap ship /var/lib/tcpsnap s3://fleet/tcpsnap
  tcpsnap ship rec s3://fleet/tcpsnap --endpoint-url http://127.0.0.1:9000
  tcpsnap ship rec s3://fleet/tcpsnap --delete-after-ship --limit-rate 10MiB
  tcpsnap ship --status rec                what is not shipped yet
  tcpsnap record rec --ship s3://fleet/tcpsnap   ship while recording

layout: s3://BUCKET/PREFIX/date=YYYY-MM-DD/host=NAME/tcpsnap-<UTC start>.parquet (the
file's own date partition and the host named in its footer). Only finished files are
shipped, each once: a receipt in DIR/_tcpsnap_shipped/ is written after a HEAD of the
object confirms its size and SHA-256; an object already there with the same bytes is
not uploaded again. Failures are retried with exponential backoff (1 s doubling to
1 min) for --give-up. Credentials: the standard AWS chain (AWS_ACCESS_KEY_ID...,
AWS_PROFILE, ~/.aws, an instance role). Exit status 1 if files are still pending.
A killed upload leaves no object; the next run aborts its incomplete multipart upload
(a bucket lifecycle rule AbortIncompleteMultipartUpload is a good second net).
"""


def _part_size_arg(text: str) -> int:
    """``--part-size``: a size (the one grammar) of at least 5 MiB, S3's smallest part."""
    from .ship.target import MIN_PART_SIZE

    v = positive_size_arg(text)
    if v < MIN_PART_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least 5MiB (S3's smallest part): {text!r}")
    return v


def add_ship_args(p: argparse.ArgumentParser, *, record: bool = False) -> None:
    """The options shared by ``ship`` and ``record --ship``."""
    g = p.add_argument_group("shipping") if record else p
    g.add_argument("--endpoint-url", metavar="URL", default=None,
                   help="an S3-compatible endpoint (MinIO, Ceph, a test server); default: AWS")
    g.add_argument("--delete-after-ship", action="store_true",
                   help="delete each local file once its object is confirmed (the newest "
                        "finished file stays until a newer one is shipped)")
    g.add_argument("--part-size", type=_part_size_arg, default=16 << 20, metavar="SIZE",
                   help="files up to SIZE are one PUT, larger ones go in parts of SIZE "
                        "(default: 16MiB; at least 5MiB)")
    g.add_argument("--limit-rate", type=positive_size_arg, default=None, metavar="SIZE",
                   help="upload at most SIZE bytes per second (default: no limit)")
    g.add_argument("--ship-host", dest="ship_host", metavar="NAME", default=None,
                   help="host name for files whose footer has none (0.1.0 recordings)")


def register(sub) -> None:
    p = sub.add_parser("ship", help="upload a recording's finished files to S3",
                       description="Upload every finished file of the recording folder DIR to "
                                   "an S3 bucket, once, checksummed and confirmed.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="recording folder")
    p.add_argument("url", metavar="URL", nargs="?", help="s3://BUCKET/PREFIX")
    p.add_argument("--status", action="store_true",
                   help="say what is shipped and what is pending (no upload, no network)")
    p.add_argument("--give-up", type=duration_arg, default=300.0, metavar="DUR",
                   help="stop retrying after this long of failures (default: 5m)")
    add_ship_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="errors only")
    g.add_argument("-v", "--verbose", action="count", default=0, help="each file shipped")
    p.set_defaults(func=cmd_ship)


def make_target(args: argparse.Namespace, url: str):
    from .ship import Target

    return Target(url, endpoint_url=args.endpoint_url, part_size=args.part_size,
                  limit_rate=args.limit_rate)


def _log_setup(args: argparse.Namespace) -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("tcpsnap: %(levelname)s: %(message)s"))
    lg = logging.getLogger("tcpsnap.ship")
    lg.handlers[:] = [h]
    lg.propagate = False
    lg.setLevel(logging.ERROR if args.quiet else logging.INFO if args.verbose else logging.WARNING)


def cmd_ship(args: argparse.Namespace) -> int:
    from .ship import Shipper

    _log_setup(args)
    if args.status:
        return _status(args)
    if not args.url:
        raise UsageError("give the URL to ship to (s3://BUCKET/PREFIX), or --status")
    sh = Shipper(args.dir, make_target(args, args.url), host=args.ship_host,
                 delete_after=args.delete_after_ship)
    left = sh.ship_all(give_up=args.give_up)
    s = sh.stats
    if not args.quiet:
        print(f"tcpsnap: shipped {s.shipped_files} file(s) ({human_bytes(s.shipped_bytes)}) to "
              f"{args.url}; {s.already_there} already there; {s.deleted} deleted locally; "
              f"{left} pending", file=sys.stderr)
    if left:
        print(f"tcpsnap: error: {left} file(s) not shipped after {args.give_up:g} s of failures "
              f"(last: {s.last_error}); run again to resume", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from .ship import pending

    todo, done = pending(args.dir)  # the folder only: --status never touches the network
    size = sum(f.size for f in todo)
    print(f"{args.dir}: {len(done)} file(s) shipped, {len(todo)} pending ({human_bytes(size)})")
    for f in todo:
        print(f"  pending  {f.rel}  {human_bytes(f.size)}")
    return 0


def add_fleet_arguments(p: argparse.ArgumentParser) -> None:
    """``info URL``'s options (a shipped fleet: ``s3://BUCKET/PREFIX``)."""
    g = p.add_argument_group("a shipped fleet (PATH is s3://BUCKET/PREFIX)")
    g.add_argument("--endpoint-url", metavar="URL", default=None,
                   help="an S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    g.add_argument("--host", action="append", metavar="NAME", default=None,
                   help="only this host (host=NAME/ in the layout); repeat for more; default: every host")


def info_url(args: argparse.Namespace, summarize: Callable[[str], dict], show: Callable[[dict, bool], int]) -> int:
    """``tcpsnap info s3://BUCKET/PREFIX``: ``summarize`` (``tcpsnap info``'s numbers, in
    bounded memory) of each host of the shipped fleet, printed by ``show`` one host after
    the other (``--json``: one document, ``{"url":, "hosts": {NAME: summary}}``). Each
    host's objects are fetched into a temporary folder, summarized and removed before the
    next host's (``tcpsnap.ship.remote.each_host``): memory and disk of one host."""
    from .ship.remote import each_host, host_list

    out: dict[str, dict] = {}
    for i, (host, folder, objects) in enumerate(each_host(args.path, host_list(args.host),
                                                          endpoint_url=args.endpoint_url)):
        s = summarize(folder)
        s["path"] = f"{args.path.rstrip('/')}/date=*/host={host}/ ({len(objects)} object(s))"
        for k in s.get("skipped", []):   # the objects, not the temporary copy's files
            k["file"] = str(k["file"]).replace(folder, args.path.rstrip("/"), 1)
        if args.json:
            out[host] = s
            continue
        if i:
            sys.stdout.write("\n")
        show(s, False)
    if args.json:
        json.dump({"url": args.path, "hosts": out}, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    return 0
