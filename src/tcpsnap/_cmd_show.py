"""``tcpsnap show``: the current table, like ``netstat -ano``."""

from __future__ import annotations

import argparse
import csv
import json
import sys

import numpy as np

from ._cgroup import default_resolver
from ._cli_args import FILTER_HELP, add_filter_arguments, filter_from_args
from ._schema import STATE_NAMES
from .frame import CGROUP_COLUMNS, COLUMNS, address_codes, with_cgroup_columns
from .pids import missing_pid_note

EPILOG_SHOW = """\
examples:
  tcpsnap show                          the whole table, like netstat -ano
  tcpsnap show --state listen           listening sockets only
  tcpsnap show --port 22,8000-8010      rows whose local or remote port matches
  tcpsnap show --family 6 --format json IPv6 rows as a JSON list
  tcpsnap show --no-pids                skip owning processes (no /proc walk)
  tcpsnap show --info --state established
                                        with the internals, as ss -ti
  tcpsnap show dport = :443 or sport = :443
                                        an ss expression (the kernel filters)

states: CLOSED LISTEN SYN_SENT SYN_RCVD ESTABLISHED FIN_WAIT1 FIN_WAIT2 CLOSE_WAIT
        CLOSING LAST_ACK TIME_WAIT DELETE_TCB (case-insensitive; ss spellings such as
        time-wait or syn-recv work too)

""" + FILTER_HELP



def register(sub) -> None:
    show = sub.add_parser(
        "show", help="print the current TCP table",
        description="Print the current TCP table: family, local and remote address, state, "
                    "owning pid and process name. Reading other users' processes needs root "
                    "(or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH); without it their rows show no pid.",
        epilog=EPILOG_SHOW, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_filter_arguments(show, positional=True)
    show.add_argument("--format", choices=("table", "csv", "json"), default="table",
                      help="output format (default: table)")
    show.add_argument("--no-pids", action="store_true",
                      help="do not look up owning processes (pid 0, no process name)")
    show.add_argument("--info", action="store_true",
                      help="each connection's internals too (Linux; Windows: elevated), as 'ss -ti' prints them: on "
                           "the same line in a table, as more keys (null where the kernel sends "
                           "none) in csv and json")
    show.set_defaults(func=cmd_show)


def _endpoint(family: int, addr: str, port: int, ifindex: int = 0) -> str:
    """``addr:port`` as ``ss`` prints it: IPv6 in brackets, and the interface a socket is
    bound to (a link-local address's scope) as ``%name`` after the address:
    ``[fe80::1]%eth0:22``."""
    host = f"[{addr}]" if family == 6 else addr
    return f"{host}{_ifname(ifindex)}:{port}"


def _ifname(ifindex: int) -> str:
    if not ifindex:
        return ""
    import socket

    try:
        return "%" + socket.if_indextoname(ifindex)
    except OSError:                     # gone since the snapshot, or in another namespace
        return f"%{ifindex}"


def cmd_show(args: argparse.Namespace) -> int:
    from ._snapshot import Snapshotter

    try:
        where = filter_from_args(args)
    except ValueError as e:                 # the positional expression: a usage error
        print(f"tcpsnap show: error: {e} (see 'tcpsnap show --help')", file=sys.stderr)
        return 2
    if where is not None and where.needs_pids and args.no_pids:
        print("tcpsnap show: error: --pid/--process filters need pids: drop --no-pids", file=sys.stderr)
        return 2
    from ._backend import BACKEND, tcp_info_unavailable

    info_cols: dict = {}
    live_info = args.info and BACKEND in ("netlink", "windows")
    why = tcp_info_unavailable() if args.info else None
    if why:
        # the columns stay, null; said once, not per row
        print(f"tcpsnap: note: --info: no TCP internals: {why}; the info columns are null", file=sys.stderr)
    with Snapshotter(pids=not args.no_pids, filter=where, tcp_info=live_info) as snap:
        rows = snap.take().copy()
        order = np.lexsort((rows["remote_port"], rows["local_port"], rows["state"], rows["family"]))
        rows = rows[order]
        if args.info:
            from ._arrow import tcp_info_columns
            from ._schema import TCP_INFO_DTYPE

            info = snap.tcp_info
            if info is None:              # nothing captured: every row null, never 0
                cols = tcp_info_columns(np.zeros(len(rows), TCP_INFO_DTYPE), sampled=np.zeros(len(rows), bool))
            else:
                cols = tcp_info_columns(info[order])
            info_cols = {k: v.to_pylist() for k, v in cols.items()}
        pcodes, pnames = snap.process_names(rows["pid"]) if snap.pids else (np.full(len(rows), -1), [])
        note = missing_pid_note(rows, snap.pid_stats) if snap.resolver is not None else None
    if note:
        print(f"tcpsnap: note: {note}", file=sys.stderr)
    lcodes, lstr = address_codes(rows["family"], rows["local_addr"])
    rcodes, rstr = address_codes(rows["family"], rows["remote_addr"])
    cg = dict(zip(CGROUP_COLUMNS, default_resolver().resolve(rows["cgroup_id"]), strict=False))
    out = sys.stdout

    def records():
        for i in range(len(rows)):
            r = rows[i]
            yield {
                "family": int(r["family"]),
                "state": STATE_NAMES[r["state"] - 1],
                "local_addr": lstr[lcodes[i]],
                "local_port": int(r["local_port"]),
                "remote_addr": rstr[rcodes[i]],
                "remote_port": int(r["remote_port"]),
                "pid": int(r["pid"]),
                "process": pnames[pcodes[i]] if pcodes[i] >= 0 else None,
                **{k: int(r[k]) for k in COLUMNS if k not in (
                    "family", "state", "local_addr", "local_port", "remote_addr",
                    "remote_port", "pid", "process")},
                **{k: cg[k][1][cg[k][0][i]] if cg[k][0][i] >= 0 else None for k in CGROUP_COLUMNS},
                **{k: v[i] for k, v in info_cols.items()},
            }

    if args.format == "json":
        json.dump(list(records()), out, indent=1)
        out.write("\n")
    elif args.format == "csv":
        w = csv.DictWriter(out, fieldnames=list(with_cgroup_columns(COLUMNS)) + list(info_cols),
                           lineterminator="\n")
        w.writeheader()
        w.writerows(records())
    else:
        table = [(f"TCPv{rec['family']}" if rec["family"] == 6 else "TCP",
                  _endpoint(rec["family"], rec["local_addr"], rec["local_port"], rec["local_scope_id"]),
                  _endpoint(rec["family"], rec["remote_addr"], rec["remote_port"]),
                  rec["state"], str(rec["pid"]) if rec["pid"] else "-", rec["process"] or "-")
                 + ((info_text(rec),) if args.info else ())
                 for rec in records()]
        head = ("Proto", "Local Address", "Foreign Address", "State", "PID", "Process") + (
            ("Info",) if args.info else ())
        widths = [max([len(head[c])] + [len(t[c]) for t in table]) for c in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
        out.write(fmt.format(*head) + "\n")
        for t in table:
            out.write(fmt.format(*t) + "\n")
    return 0


def _ms(us: int) -> str:
    return f"{us / 1000:g}"


def _bps(bytes_per_s: int) -> str:
    # as ss prints a rate (sprint_bw): bits per second with K, M, G
    bw = bytes_per_s * 8.0
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if bw > div:
            return f"{bw / div:.1f}{unit}bps"
    return f"{bw:g}bps"


def info_text(r: dict) -> str:
    """One connection's internals (a ``show --format json`` record) as ``ss -ti`` prints
    them, in its order and units (times in ms, rates in bits/s); what the kernel did not
    send is left out, "-" when it sent nothing (TIME_WAIT, request sockets)."""
    if not r.get("tcp_info_len"):
        return "-"
    parts = [r["congestion"]] if r.get("congestion") else []

    def add(fmt: str, *names: str, fn=str) -> None:
        # as ss, a field is left out when 0 (and when the kernel did not send it)
        vals = [r.get(n) for n in names]
        if any(v is None for v in vals) or not any(vals):
            return
        parts.append(fmt.format(*(fn(v) for v in vals)))

    add("rto:{}", "rto", fn=_ms)
    add("backoff:{}", "backoff")
    add("rtt:{}/{}", "rtt", "rttvar", fn=_ms)
    add("mss:{}", "snd_mss")
    add("pmtu:{}", "pmtu")
    add("rcvmss:{}", "rcv_mss")
    add("cwnd:{}", "snd_cwnd")
    if r.get("snd_ssthresh") is not None and r["snd_ssthresh"] < 0xFFFF:   # ss: only when set
        add("ssthresh:{}", "snd_ssthresh")
    add("bytes_sent:{}", "bytes_sent")
    add("bytes_retrans:{}", "bytes_retrans")
    add("bytes_acked:{}", "bytes_acked")
    add("bytes_received:{}", "bytes_received")
    add("segs_out:{}", "segs_out")
    add("segs_in:{}", "segs_in")
    add("data_segs_out:{}", "data_segs_out")
    add("data_segs_in:{}", "data_segs_in")
    add("lastsnd:{}", "last_data_sent")
    add("lastrcv:{}", "last_data_recv")
    add("lastack:{}", "last_ack_recv")
    if r.get("pacing_rate") != 0xFFFFFFFFFFFFFFFF:                       # ~0: unlimited
        add("pacing_rate {}", "pacing_rate", fn=_bps)
    add("delivery_rate {}", "delivery_rate", fn=_bps)
    add("delivered:{}", "delivered")
    add("busy:{}ms", "busy_time", fn=lambda v: v // 1000)
    add("rwnd_limited:{}ms", "rwnd_limited", fn=lambda v: v // 1000)
    add("sndbuf_limited:{}ms", "sndbuf_limited", fn=lambda v: v // 1000)
    add("unacked:{}", "unacked")
    add("retrans:{}/{}", "retrans", "total_retrans")
    add("lost:{}", "lost")
    add("dsack_dups:{}", "dsack_dups")
    add("reord_seen:{}", "reord_seen")
    add("rcv_rtt:{}", "rcv_rtt", fn=_ms)
    add("rcv_space:{}", "rcv_space")
    add("notsent:{}", "notsent_bytes")
    add("minrtt:{}", "min_rtt", fn=_ms)
    add("snd_wnd:{}", "snd_wnd")
    add("rcv_wnd:{}", "rcv_wnd")
    return " ".join(parts)
