"""Changes mode: where the kernel's socket-destroy reports go -- a ``closed`` event's time
(and final tcp_info), a mini-socket's predecessor, a request socket's successor, or a socket
no snapshot held -- for ``record.changes.ChangeTracker``.

With a destroy feed, what a disappearance and a report mean (``tcpsnap._events`` has
the rules for readers):

- A socket missing from this snapshot's dump that no report declared dead is asked
  about (``feed.probe``: the kernel's lookup of that one socket). If the kernel still
  holds it, the dump skipped it (dumps are not atomic): it stays in this snapshot, as
  the kernel reports it now (its pid carried over while its inode is the same), if it
  still passes the recorder's filters. Otherwise it is closed.
- A report of a socket in this snapshot: TIME_WAIT -- the connection lives on under
  the same cookie, drop; else it died after the dump: wait (up to two rounds) for the
  snapshot that finds it gone.
- A report of a socket this snapshot found gone stamps its ``closed`` event with the
  report's time; one of a socket an earlier snapshot found gone is late: drop.
- A report of a socket no snapshot held whose addresses and ports (family, ports,
  addresses, scope ids) are those of a TIME_WAIT or FIN_WAIT2 socket is the full
  socket that mini-socket succeeded (the kernel gives a socket its cookie when first
  asked, so a full socket no dump saw and its successor have different cookies): one
  connection, the mini-socket's; drop (``handover``). The mini-socket is one recorded
  as such (it appeared as TIME_WAIT or FIN_WAIT2, not by a state change) and still in
  the table -- reports can come late: the kernel sends them from a work queue -- or
  else one the kernel holds now (``feed.probe`` by addresses and ports) that the next
  snapshot records. A mini-socket absorbs one report, the latest.
- Likewise a report of a socket no snapshot held whose addresses and ports are those
  of a request socket (SYN_RCVD) that a snapshot held is the full socket that request
  became (the kernel hands the request's cookie on, but not when a dump gives the
  request its cookie while the full socket is being made): its ``closed`` event gets
  the report's time, or the report waits while the request is still in the table, or
  is late.
- Any other report is a socket that lived and died between two snapshots: a
  ``closed`` event with ``seen_in_snapshot`` false, at the report's time.

With tcp_info (``tcp_info=True``; ``step(..., info=)``): a row whose counters moved is
an event (``counters`` where nothing but counters and queues did), every event carries
its tcp_info row, and a ``closed`` event carries the connection's final tcp_info: the
destroy report's (the kernel's ``struct tcp_info`` as the socket was freed) where one
was read -- also a report a TIME_WAIT or FIN_WAIT2 successor absorbed, kept (at most
``GONE_MAX``) until that mini-socket's own ``closed`` -- else the last one seen.
"""

from __future__ import annotations

import numpy as np

from .._filters import row_mask
from .._schema import ROW_DTYPE, ROW_FIELDS, TcpState

__all__ = ["GONE_MAX", "id_keys", "place_destroyed", "successors"]

_TIME_WAIT = int(TcpState.TIME_WAIT)
_FIN_WAIT2 = int(TcpState.FIN_WAIT2)
_SYN_RCVD = int(TcpState.SYN_RCVD)
# family (byte 0) + ports, addresses, scope ids (bytes 4..47) + netns: two namespaces'
# equal 4-tuples are two connections
_NETNS_OFF = next(off for name, _, off in ROW_FIELDS if name == "netns")
_ID_BYTES = 45 + 8

#: Sockets a snapshot found gone remembered (at most) until their destroy report is read,
#: so that a report read long after (a socket reset while its program kept the file open)
#: is known as late, not taken for a socket no snapshot held.
GONE_MAX = 1 << 16

def id_keys(rows: np.ndarray) -> list[bytes]:
    """Each row's identity without its cookie (family, ports, addresses, scope ids,
    network namespace) as bytes."""
    n = len(rows)
    if n == 0:
        return []
    v = np.ascontiguousarray(rows).view(np.uint8).reshape(n, ROW_DTYPE.itemsize)
    b = np.concatenate([v[:, :1], v[:, 4:48], v[:, _NETNS_OFF:_NETNS_OFF + 8]], axis=1).tobytes()
    return [b[i:i + _ID_BYTES] for i in range(0, n * _ID_BYTES, _ID_BYTES)]


def successors(tr, reports: np.ndarray) -> np.ndarray | None:
    """For each report (a full socket no snapshot held), the cookie of the TIME_WAIT or
    FIN_WAIT2 socket that holds its addresses and ports now (asked of the kernel), 0
    for none; None where the kernel cannot be asked."""
    got = tr._probe(reports, by_cookie=False)
    if got is None:
        return None
    found, now = got
    out = np.zeros(len(reports), np.uint64)
    st = now["state"]
    mini = found & ((st == _TIME_WAIT) | (st == _FIN_WAIT2))
    if mini.any():
        same = np.array([a == b for a, b in zip(id_keys(reports), id_keys(now), strict=True)], bool)
        mini &= same
    out[mini] = now["cookie"][mini]
    return out


def place_destroyed(tr, cur: np.ndarray, closed: np.ndarray, closed_ts: np.ndarray,
                     closed_seen_ts: np.ndarray, minis: dict[bytes, int], closed_info=None):
    """Place the destroy reports (the rules are in ``ChangeTracker``'s docstring), for tracker ``tr``. Returns
    the unseen closed events' rows, times and tcp_info (None without tcp_info); with
    tcp_info, ``closed_info`` (the closed rows' last seen) gets the final tcp_info of
    the reports placed."""
    pr, pts, age, succ = tr._pend_rows, tr._pend_ts, tr._pend_age, tr._pend_succ
    pinfo = tr._pend_info if tr.tcp_info else None
    final = tr._final

    def absorb(i: int, cookie: int) -> None:
        # a report a live successor (TIME_WAIT, FIN_WAIT2) absorbed: the connection's
        # final totals, for that successor's closed event
        if pinfo is not None and pinfo["tcp_info_len"][i]:
            final[cookie] = pinfo[i].copy()
            while len(final) > GONE_MAX:
                del final[next(iter(final))]

    matched = np.zeros(len(closed), bool)
    keep = np.zeros(len(pr), bool)
    unseen = np.zeros(len(pr), bool)
    cand = tr._minis
    cand.update(minis)
    if len(closed) and cand:
        # mini-sockets gone from the table wait for no report any more
        for key, c in zip(id_keys(closed), closed["cookie"].tolist(), strict=True):
            if cand.get(key) == c:
                del cand[key]
    if len(pr):
        ck = pr["cookie"]
        idx = tr._differ.lookup(ck)
        in_cur = idx >= 0
        tw = np.zeros(len(pr), bool)
        if in_cur.any():
            tw[in_cur] = cur["state"][idx[in_cur]] == _TIME_WAIT
        keep = in_cur & ~tw & (age < 2)
        if tr.carried_netns and in_cur.any():
            # a namespace left out of this dump (record.capture.Carry): its reports wait
            # for the namespace's next dump
            keep |= in_cur & ~tw & np.isin(pr["netns"], list(tr.carried_netns))
        # a report whose cookie the table still holds as TIME_WAIT -- or, two rounds on,
        # as anything (an orphaned FIN_WAIT2 mini-socket keeps its full socket's cookie):
        # the connection lives on; its final totals wait for that socket's closed event
        for i in np.flatnonzero(in_cur & ~keep).tolist():
            absorb(i, int(ck[i]))
        gone = np.flatnonzero(~in_cur)
        ask: list[int] = []
        if len(gone):
            pos = {int(c): j for j, c in enumerate(closed["cookie"]) if c} if len(closed) else {}
            gone = gone[np.argsort(pts[gone], kind="stable")[::-1]]     # latest first
            keys = id_keys(pr[gone])
            rq = np.flatnonzero(closed["state"] == _SYN_RCVD) if len(closed) else np.zeros(0, np.int64)
            req_closed = dict(zip(id_keys(closed[rq]), rq.tolist(), strict=True))
            req_cur = set(id_keys(cur[cur["state"] == _SYN_RCVD]))
            for i, key in zip(gone.tolist(), keys, strict=True):
                c = int(ck[i])
                j = pos.get(c)
                if j is None:
                    j = req_closed.pop(key, None)       # the request socket it was
                    if j is not None:
                        tr.handover += 1
                if j is not None:               # found gone by this snapshot
                    closed_ts[j] = pts[i]
                    closed_seen_ts[j] = True
                    matched[j] = True
                    if pinfo is not None and pinfo["tcp_info_len"][i]:
                        closed_info[j] = pinfo[i]
                elif c in tr._gone:           # found gone by an earlier one: late
                    del tr._gone[c]
                    tr.late += 1
                elif key in tr._req_gone:     # ... as the request socket it was
                    del tr._req_gone[key]
                    tr.late += 1
                elif key in req_cur and age[i] < 2:
                    keep[i] = True              # its request socket: gone next time
                elif key in cand:               # the connection of a recorded mini-socket
                    absorb(i, cand.pop(key))
                    tr.handover += 1
                elif succ[i]:                   # its successor: in this snapshot?
                    if tr._differ.lookup(succ[i:i + 1])[0] >= 0:
                        absorb(i, int(succ[i]))
                        tr.handover += 1
                    else:
                        unseen[i] = True        # it died unseen too
                elif age[i] == 0:
                    ask.append(i)
                else:
                    unseen[i] = True
        if ask:
            # no recorded successor: does the kernel hold one now? (without the
            # probe: wait a round for the next snapshot to show it)
            ia = np.array(ask, np.int64)
            y = successors(tr, pr[ia])
            if y is None:
                keep[ia] = True
            else:
                y[tr._differ.lookup(y) >= 0] = 0      # recorded already: not this one's
                taken: set[int] = set()
                for i, yc in zip(ia.tolist(), y.tolist(), strict=True):      # latest first
                    if yc and yc not in taken:
                        taken.add(yc)
                        succ[i] = yc
                        keep[i] = True          # decided by the next snapshot
                    else:
                        unseen[i] = True
    tr._pend_rows, tr._pend_ts = pr[keep], pts[keep]
    tr._pend_age, tr._pend_succ = age[keep] + 1, succ[keep]
    if pinfo is not None:
        tr._pend_info = pinfo[keep]
        if len(closed) and final:
            # a mini-socket gone: its connection's final totals, from the report it absorbed
            for j, c in enumerate(closed["cookie"].tolist()):
                f = final.pop(c, None) if not matched[j] else None
                if f is not None:
                    closed_info[j] = f
                    tr.final_totals += 1
        tr.final_totals += int(np.count_nonzero(closed_seen_ts & (closed_info["tcp_info_len"] > 0))) \
            if len(closed) else 0
    if len(closed):
        # found gone without a report: the report may come later (a socket whose
        # connection ended while a program holds it); TIME_WAIT and request sockets
        # send none
        st, ck = closed["state"], closed["cookie"]
        rem = ~matched & (ck != 0) & (st != _TIME_WAIT) & ~((st == _SYN_RCVD) & (closed["inode"] == 0))
        gone_map = tr._gone
        for c in ck[rem].tolist():
            gone_map[c] = None
        while len(gone_map) > GONE_MAX:
            del gone_map[next(iter(gone_map))]
        # request sockets found gone: the full socket each became may be reported
        # later under another cookie
        rq = ~matched & (st == _SYN_RCVD)
        if rq.any():
            req_map = tr._req_gone
            for key in id_keys(closed[rq]):
                req_map[key] = None
            while len(req_map) > GONE_MAX:
                del req_map[next(iter(req_map))]
    ur, ut = pr[unseen], pts[unseen]
    ui = pinfo[unseen] if pinfo is not None else None
    if len(ur) and (tr._ports or tr._family):
        m = row_mask(ur, None, tr._ports, tr._family)
        if m is not None:
            ur, ut = ur[m], ut[m]
            ui = ui[m] if ui is not None else None
    if len(ur) and tr.where is not None:
        # the destroy feed (multicast) carries every socket: the same filter, with what a
        # dead socket cannot tell (its pid, its process: gone with it) taken as matching
        m = tr.where.dead_mask(ur)
        ur, ut = ur[m], ut[m]
        ui = ui[m] if ui is not None else None
    tr.unseen += len(ur)
    if ui is not None:
        tr.final_totals += int(np.count_nonzero(ui["tcp_info_len"] > 0))
    return ur, ut, ui
