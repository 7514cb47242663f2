"""`ss -ti` read back, for the live tcp_info tests: its numbers are the cross-check."""

from __future__ import annotations

import re
import subprocess

SS_STATES = {"ESTAB": 5, "SYN-SENT": 3, "SYN-RECV": 4, "FIN-WAIT-1": 6, "FIN-WAIT-2": 7,
             "TIME-WAIT": 11, "CLOSE-WAIT": 8, "LAST-ACK": 10, "LISTEN": 2, "CLOSING": 9}
# ss -ti key -> (our field, factor to our unit): ss prints times in ms with 3 decimals
_PLAIN = {"bytes_acked": "bytes_acked", "bytes_received": "bytes_received", "bytes_sent": "bytes_sent",
          "bytes_retrans": "bytes_retrans", "segs_in": "segs_in", "segs_out": "segs_out",
          "data_segs_in": "data_segs_in", "data_segs_out": "data_segs_out", "delivered": "delivered",
          "cwnd": "snd_cwnd", "ssthresh": "snd_ssthresh", "mss": "snd_mss", "rcvmss": "rcv_mss",
          "pmtu": "pmtu", "rcv_space": "rcv_space", "notsent": "notsent_bytes", "unacked": "unacked",
          "lost": "lost", "backoff": "backoff", "snd_wnd": "snd_wnd", "sacked": "sacked",
          "reord_seen": "reord_seen", "dsack_dups": "dsack_dups"}
_MS = {"minrtt": "min_rtt", "rto": "rto", "rcv_rtt": "rcv_rtt"}


def ss_info(port: int, host: str | None = None) -> dict[tuple[int, int], dict]:
    """``{(local port, remote port): {field: value}}`` of every TCP socket on ``port`` (either
    end; with ``host``, only those whose local address is ``host``, as another socket on the
    host may have the port number on another address), from ``ss -tinOH``: our field names
    and units (µs where ss says ms)."""
    out = subprocess.run(["ss", "-tinOH", "state", "all", f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        f = line.split()
        if not f or f[0] not in SS_STATES:
            continue
        if host is not None and f[3].rsplit(":", 1)[0].strip("[]") != host:
            continue
        lport, rport = int(f[3].rsplit(":", 1)[1]), int(f[4].rsplit(":", 1)[1].replace("*", "0"))
        d: dict = {"state": SS_STATES[f[0]]}
        if len(f) > 5 and re.fullmatch(r"[a-z_]+", f[5]):
            d["congestion"] = f[5]
        for tok in f[5:]:
            k, _, v = tok.partition(":")
            if not v:
                continue
            if k in _PLAIN and re.fullmatch(r"\d+", v):
                d[_PLAIN[k]] = int(v)
            elif k in _MS:
                d[_MS[k]] = round(float(v) * 1000)
            elif k == "rtt":
                a, b = v.split("/")
                d["rtt"], d["rttvar"] = round(float(a) * 1000), round(float(b) * 1000)
            elif k == "retrans":
                a, b = v.split("/")
                d["retrans"], d["total_retrans"] = int(a), int(b)
        res[(lport, rport)] = d
    return res
