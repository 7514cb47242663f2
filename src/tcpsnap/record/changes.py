"""Changes mode, the capture side: each snapshot diffed against the previous one (in
compiled code, ``tcpsnap._diff``) becomes the event rows to record, and those rows become
Arrow record batches.

The events and their columns are described in ``tcpsnap._events``. Every file starts with
a keyframe, and one is written every ``keyframe`` interval (default 1 min) and whenever an
identity repeats within a table, so any file (also one that recovery cut short) rebuilds on
its own (``tcpsnap.reading.changes``).
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

import numpy as np

from .._events import EV_CLOSED, EV_COUNTERS, EV_KEYFRAME, EV_OPENED, EV_QUEUES, EV_SNAPSHOT, EVENTS, QUEUES_FIELDS
from .._filters import row_mask
from .._schema import ROW_DTYPE, TcpState
from ..frame import merge_names
from .changes_info import carry_info, counter_mask
from .reports import id_keys, place_destroyed

__all__ = ["build_schema", "ChangesEncoder", "ChangeTracker", "open_destroy_feed"]

# the logger of changes mode, capture and rebuild alike
log = logging.getLogger("tcpsnap.changes")

_TIME_WAIT = int(TcpState.TIME_WAIT)
_FIN_WAIT2 = int(TcpState.FIN_WAIT2)
_CLOSED = int(TcpState.CLOSED)
_ROW_VOID = np.dtype((np.void, ROW_DTYPE.itemsize))  # a row as one item: numpy copies it whole, not by field
_NO_U64 = np.zeros(0, np.uint64)   # forget_closed's "none" (read only)
_NO_U64.flags.writeable = False


# ---------------------------------------------------------------- schema and encoding

def build_schema(metadata: dict[str, str] | None = None, tcp_info: bool = False):
    """The full-mode schema (``tcp_info``: with the internals columns) plus ``event``
    (after ``seq``) and ``seen_in_snapshot`` (last)."""
    import pyarrow as pa

    from .._arrow import build_schema as full_schema

    fields = list(full_schema(tcp_info=tcp_info))
    fields.insert(2, pa.field("event", pa.dictionary(pa.int8(), pa.string()), nullable=False))
    fields.append(pa.field("seen_in_snapshot", pa.bool_(), nullable=False))
    return pa.schema(fields, metadata=metadata)


class ChangesEncoder:
    """``BatchEncoder`` for changes recordings: the full-mode columns (with per-row
    timestamps: a destroy report carries its own), ``event`` and ``seen_in_snapshot``;
    the internals columns too where ``schema`` has them. ``parts`` gives one
    ``tcpsnap._arrow.Part`` per column (what the writer copies into its row group),
    ``encode`` a record batch."""

    def __init__(self, schema, host: str = "", boot_id: str = "") -> None:
        import pyarrow as pa

        from .._arrow import BatchEncoder
        from .._arrow import build_schema as full_schema

        self.schema = schema
        self.tcp_info = "tcp_info_len" in schema.names
        self._base = BatchEncoder(full_schema(tcp_info=self.tcp_info), host, boot_id)
        self._events = pa.array(EVENTS, pa.string())

    def reset(self) -> None:
        self._base.reset()

    def parts(self, rows, counts, timestamps, seqs, capture_ns, proc_codes=None, proc_names=None,
              events=None, seen=None, row_ts=None, info=None, monotonic=None, tcp_info=None) -> dict:
        """As ``encode``, one ``Part`` per column (new arrays, not views of the arguments)."""
        from .._arrow import KIND_PARTIAL, KIND_SNAPSHOT

        ev = np.asarray(events)
        kinds = np.zeros(len(rows), np.int8)
        kinds[(rows["family"] == 0) & ((ev == EV_SNAPSHOT) | (ev == EV_KEYFRAME))] = KIND_SNAPSHOT
        kinds[(ev == EV_QUEUES) | (ev == EV_COUNTERS)] = KIND_PARTIAL
        if self.tcp_info and tcp_info is None and info is not None:
            # every event row carries its internals as the tracker gave them: a marker's or
            # a TIME_WAIT's have none (tcp_info_len 0), so their fields are null
            tcp_info = (info, np.ones(len(rows), bool))
        if tcp_info is not None:
            # an event keeps its internals whether its snapshot sampled or not (they are
            # the last sample's, which later snapshots' rebuilt rows hold); only a marker's
            # tcp_info_len says "not sampled" (null), so the rebuild nulls that snapshot's
            # internals as full mode does (reading.changes)
            tcp_info = (tcp_info[0], np.asarray(tcp_info[1], bool) | (kinds != KIND_SNAPSHOT))
        parts = self._base.parts(rows, counts, timestamps, seqs, capture_ns, proc_codes, proc_names,
                                 monotonic=monotonic, kinds=kinds, tcp_info=tcp_info)
        parts["timestamp"] = np.array(row_ts, np.int64), None, None
        parts["event"] = np.array(events, np.uint8).view(np.int8), None, self._events
        parts["seen_in_snapshot"] = np.array(seen, bool), None, None
        return parts

    def encode(self, rows, counts, timestamps, seqs, capture_ns, proc_codes=None, proc_names=None,
               events=None, seen=None, row_ts=None, info=None, monotonic=None, tcp_info=None):
        """As ``BatchEncoder.encode``, plus the per-row ``events``, ``seen`` and
        ``row_ts``; the rows' internals as ``info`` (``TCP_INFO_DTYPE``, the tracker's: a
        row without any has ``tcp_info_len`` 0) or ``tcp_info`` (``(info, sampled)``)."""
        from .._arrow import wrap_parts

        return wrap_parts(self.schema, self.parts(rows, counts, timestamps, seqs, capture_ns, proc_codes,
                                                  proc_names, events, seen, row_ts, info, monotonic, tcp_info))


# ---------------------------------------------------------------- capture side

#: Sockets missing from a dump asked about (at most) per snapshot; more are closed unasked.
PROBE_MAX = 4096


class ChangeTracker:
    """The capture thread's half of changes mode: each snapshot's table (after the
    recorder's filters) -> the event rows to record, with the destroy feed's reports
    folded in. Keeps the previous table (in the compiled ``Differ``) and a global
    process-name dictionary, so a process renaming counts as a change.

    What a disappearance and a destroy report mean, and where a report's final tcp_info
    goes (``tcp_info=True``: then every event carries its tcp_info row, and a row whose
    counters moved is an event, ``counters`` where nothing else did): ``record.reports``'
    docstring; ``tcpsnap._events`` has the rules for readers.
    """

    def __init__(self, keyframe_ns: int, feed=None, ports=None, family=None, states=None,
                 where=None, tcp_info: bool = False) -> None:
        from .._diff import Differ

        self.tcp_info = bool(tcp_info)
        self._info_dtype = None
        mask = None
        if self.tcp_info:
            from .._schema import TCP_INFO_DTYPE

            self._info_dtype = TCP_INFO_DTYPE
            mask = counter_mask()
        self._pend_info = np.zeros(0, self._info_dtype or np.uint8)
        self._final: dict[int, np.ndarray] = {}     # cookie -> a report its mini-socket absorbed
        self.final_totals = 0       # closed events that carry a destroy report's tcp_info
        self.keyframe_ns = int(keyframe_ns)
        self.feed = feed
        self._ports = ports
        self._family = family
        self._states = states
        self.where = where            # the recorder's tcpsnap.Filter, or None
        self._differ = Differ(mask)
        self._can_probe = True
        self._gnames: list[str] = []
        self._gcodes: dict[str, int] = {}
        self.names_into: Any = None  # PidResolver.names_into (set by the capture): into the above
        self._res: Any = None   # the PidResolver step looks rows up with itself (defer_pids)
        self._stale: tuple | None = None  # carried rows whose inode changed
        self._last_kf: int | None = None
        self._key = None
        self._quiet: tuple | None = None              # _marker's arrays
        self._sel: tuple | None = None                # sleep's descriptors (per waker)
        self._gbuf = np.zeros(0, np.int32)            # owners_before_diff's codes, rewritten
        self._gview = self._gbuf                      # ... its view of the last length
        self._pend_rows = np.zeros(0, ROW_DTYPE)      # destroy reports not yet placed
        self._pend_ts = np.zeros(0, np.int64)
        self._pend_age = np.zeros(0, np.int8)
        self._pend_succ = np.zeros(0, np.uint64)      # ... their successor's cookie, if asked
        self._gone: dict[int, None] = {}              # cookies found gone, report not read yet
        self._req_gone: dict[bytes, None] = {}        # request sockets found gone, likewise
        self._minis: dict[bytes, int] = {}            # mini-sockets recorded, no report yet
        #: namespaces this snapshot did not dump (their rows carried: record.capture.Carry):
        #: a report of one of their sockets waits for their next dump
        self.carried_netns: frozenset[int] = frozenset()
        # counters
        self.keyframes = 0
        self.events = 0
        self.destroyed = 0          # reports received
        self.unseen = 0             # closed events of sockets no snapshot held
        self.late = 0               # reports of sockets a snapshot had already found gone
        self.handover = 0           # reports of full sockets a recorded mini-socket succeeded
        self.probes = 0             # sockets missing from a dump, asked about
        self.refound = 0            # ... that the kernel still held: kept in the snapshot
        self.unprobed = 0           # ... beyond PROBE_MAX in a snapshot: closed unasked

    def sleep(self, waker, ns: int) -> None:
        """The recorder's wait between snapshots, reading the destroy feed as reports
        arrive (their time is the time they are read). After a read the feed rests 1 ms,
        so a burst of deaths costs a wake-up per millisecond, not one per socket."""
        end = time.monotonic_ns() + ns
        sel = self._sel
        if sel is None or sel[0] is not waker:
            # the descriptors, once per waker: (waker, [feed, waker]) where select() takes
            # both, else (waker, None)
            fds = [self.feed.fileno(), waker.fileno()]
            sel = self._sel = (waker, fds if waker.selectable(*fds) else None)
        if sel[1] is not None:
            _sleep_select(self.feed, waker, end, sel[1])
            return
        _sleep_poll(self.feed, waker, end)

    @property
    def stats(self) -> dict:
        f = self.feed
        return {"keyframes": self.keyframes, "events": self.events,
                "destroy_feed": f is not None,
                "destroyed": self.destroyed, "destroyed_unseen": self.unseen,
                "destroyed_late": self.late, "destroyed_handover": self.handover,
                "destroy_drops": f.drops if f is not None else 0,
                "probed": self.probes, "probed_alive": self.refound, "unprobed": self.unprobed,
                "final_totals": self.final_totals}

    def _global_codes(self, rows: np.ndarray, names) -> np.ndarray:
        n = len(rows)
        if names is None or n == 0:
            return np.full(n, -1, np.int32)
        if self.names_into is not None:
            g = np.empty(n, np.int32)
            self.names_into(rows["pid"], g, self._gcodes, self._gnames)
            return g
        codes, pnames = names(rows["pid"])
        return np.take(merge_names(pnames, self._gcodes, self._gnames), codes, mode="wrap")

    def defer_pids(self, snap) -> bool:
        """Look owners up in ``step``, only for the rows whose owner may have changed
        (``tcpsnap.pids``, "Changes mode"): ``snap.take()`` leaves the pids
        (``Snapshotter.defer_pids``), ``step`` carries the others' over from the previous
        table (``Differ.diff(carry=)``, ``PidResolver.begin_rows`` / ``end_rows`` /
        ``forget``). Needs ``names_into`` (pids on) and no filter on pids or processes (the
        recorder masks by them before ``step``). Returns whether it is on."""
        if self.names_into is None or (self.where is not None and self.where.needs_pids):
            return False
        defer = getattr(snap, "defer_pids", None)
        res = defer() if defer is not None else None
        if res is None:
            return False
        self._res = res
        return True

    def _take_reports(self) -> None:
        if self.tcp_info:
            from .._destroy import tcp_info_rows

            r, t, raw, lens = self.feed.take(info=True)
            if len(r):
                self._pend_info = np.concatenate([self._pend_info, tcp_info_rows(raw, lens)])
        else:
            r, t = self.feed.take()
        if len(r):
            self.destroyed += len(r)
            self._pend_rows = np.concatenate([self._pend_rows, r])
            self._pend_ts = np.concatenate([self._pend_ts, t])
            self._pend_age = np.concatenate([self._pend_age, np.zeros(len(r), np.int8)])
            self._pend_succ = np.concatenate([self._pend_succ, np.zeros(len(r), np.uint64)])

    def _probe(self, rows: np.ndarray, by_cookie: bool = True):
        """``feed.probe(rows)``, or None where the feed has none or it failed (once: then
        a warning, and no more asking)."""
        probe = getattr(self.feed, "probe", None) if self._can_probe else None
        if probe is None:
            return None
        try:
            return probe(rows, by_cookie=by_cookie)
        except OSError as e:
            self._can_probe = False
            log.warning("cannot ask the kernel about single sockets (%s): from now on a socket "
                        "missing from a dump is closed, and destroy reports are matched with the "
                        "snapshots only", e)
            return None

    def holds(self, cookies: np.ndarray) -> np.ndarray:
        """Whether each cookie is a connection the last snapshot held (not 0)."""
        d = self._differ
        if not d.primed or not len(cookies):
            return np.zeros(len(cookies), bool)
        try:
            return (d.lookup(cookies) >= 0) & (cookies != 0)
        except RuntimeError:          # rolled back: nothing held for certain
            return np.zeros(len(cookies), bool)

    def _refind(self, closed: np.ndarray):
        return refind(self, closed)

    def step(self, rows: np.ndarray, names, wall_ns: int, mono_ns: int, file_key, info=None):
        """One snapshot -> ``(event_rows, names, (events, seen, row_ts))``, ``names`` a
        callable as the recorder's (returning codes for event_rows) or None. With
        ``tcp_info``: ``info`` the snapshot's tcp_info rows (aligned with ``rows``; None:
        none taken, every row's counters are as before), and the extra tuple ends with
        the event rows' tcp_info. The arrays are valid until the next call (a snapshot
        with no event reuses its marker's)."""
        feed = self.feed
        if feed is not None and feed.drain():       # reports held (also read while asleep)
            self._take_reports()
        kf = (self._last_kf is None or file_key != self._key
              or mono_ns - self._last_kf >= self.keyframe_ns)
        first = not self._differ.primed
        plan = None
        if self._res is not None:
            fl = rows.flags
            if not (fl.c_contiguous and fl.writeable):
                rows = np.array(rows)
            gproc, plan = owners_before_diff(self, rows, first)
        else:
            gproc = self._global_codes(rows, names)
        if self.tcp_info:
            info = carry_info(self._differ, rows, info, self._info_dtype)
        ev_idx, ev_code, closed, closed_proc, dup = self._differ.diff(rows, gproc, kf, info, carry=plan)
        if plan is not None:
            # a quiet table (nothing to look up): carried, end_rows and fixup in one call
            ev = self._differ.settle(self._res.end_rows)
            ev_idx, ev_code = owners_after_diff(self, rows, gproc) if ev is None else ev
        closed_info = self._differ.closed_info
        if feed is not None and len(closed):
            back = self._refind(closed)
            if back is not None:
                # the dump skipped live sockets: diff the table completed with them instead
                back, bpos = back
                self._differ.rollback()
                rows = np.concatenate([rows, back])
                if self._res is not None:
                    gproc = owners_refound(self, back, gproc)
                else:
                    gproc = self._global_codes(rows, names)
                if info is not None:
                    # the kernel's lookup reports no tcp_info: as last seen
                    last = closed_info[bpos] if closed_info is not None else np.zeros(len(back), info.dtype)
                    info = np.concatenate([info, last])
                ev_idx, ev_code, closed, closed_proc, dup = self._differ.diff(rows, gproc, kf, info)
                closed_info = self._differ.closed_info
        if self._res is not None:
            if len(closed) or self._stale is not None:
                forget_closed(self, closed)
            else:
                self._res.forget(_NO_U64, _NO_U64)     # (ends the take: always called)
        kf = kf or dup
        if len(ev_idx) > 1:
            # in cookie order, not the kernel's: neighbouring cookies (and inodes) differ by
            # little, which the Parquet encodings and zstd turn into far fewer bytes
            o = np.argsort(rows["cookie"][ev_idx], kind="stable")
            ev_idx, ev_code = ev_idx[o], ev_code[o]
        if kf:
            self._last_kf = mono_ns
            self._key = file_key
            self.keyframes += 1
        ne, nc = len(ev_idx), len(closed)
        if not (ne or nc or len(self._pend_rows)):
            # nothing opened, changed or closed, no report waiting: only the marker
            return _marker(self, len(rows), kf, wall_ns, names)
        closed_ts = np.full(nc, wall_ns, np.int64)
        closed_dts = np.zeros(nc, bool)
        if feed is not None:
            opened = np.arange(len(rows)) if first else ev_idx[ev_code == EV_OPENED]
            st = rows["state"][opened]
            opened = opened[(st == _TIME_WAIT) | (st == _FIN_WAIT2)]
            minis = dict(zip(id_keys(rows[opened]), rows["cookie"][opened].tolist(), strict=True))
            if self.tcp_info and closed_info is None:
                closed_info = np.zeros(nc, self._info_dtype)
            ur, ut, ui = place_destroyed(self, self._differ.rows, closed, closed_ts, closed_dts, minis,
                                          closed_info)
        else:
            ur, ut, ui = np.zeros(0, ROW_DTYPE), np.zeros(0, np.int64), None
        nu = len(ur)
        n = 1 + nc + nu + ne
        out = np.zeros(n, ROW_DTYPE)
        out[0]["inode"] = len(rows)              # the marker: family 0, the table's size,
        out[0]["state"] = TcpState.CLOSED        # a state (the column has no nulls)
        if nc:
            out[1:1 + nc] = closed
        if nu:
            out[1 + nc:1 + nc + nu] = ur
        if ne:
            np.take(rows.view(_ROW_VOID), ev_idx, out=out.view(_ROW_VOID)[1 + nc + nu:], mode="clip")
            q = 1 + nc + nu + np.flatnonzero((ev_code == EV_QUEUES) | (ev_code == EV_COUNTERS))
            if len(q):
                keep = out[q][list(QUEUES_FIELDS)].copy()
                out[q] = np.zeros(len(q), ROW_DTYPE)
                for f in QUEUES_FIELDS:
                    out[f][q] = keep[f]
        events = np.empty(n, np.uint8)
        events[0] = EV_KEYFRAME if kf else EV_SNAPSHOT
        events[1:1 + nc + nu] = EV_CLOSED
        events[1 + nc + nu:] = ev_code
        seen = np.ones(n, bool)
        seen[1 + nc:1 + nc + nu] = False
        row_ts = np.full(n, wall_ns, np.int64)
        row_ts[1:1 + nc] = closed_ts
        row_ts[1 + nc:1 + nc + nu] = ut
        self.events += n - 1
        extra: tuple = (events, seen, row_ts)
        if self.tcp_info:
            oi = np.zeros(n, self._info_dtype)
            if nc and closed_info is not None:
                oi[1:1 + nc] = closed_info
            if nu and ui is not None:
                oi[1 + nc:1 + nc + nu] = ui
            if ne and info is not None:
                oi[1 + nc + nu:] = info[ev_idx]
            extra = (*extra, oi)
        if names is None:
            return out, None, extra
        g = np.full(n, -1, np.int32)
        g[1:1 + nc] = closed_proc
        g[1 + nc + nu:] = np.where((ev_code == EV_QUEUES) | (ev_code == EV_COUNTERS), -1, gproc[ev_idx])
        used = np.flatnonzero(np.bincount(g[g >= 0]))  # np.unique's, without a keyframe's sort
        local = [self._gnames[i] for i in used]
        codes = np.full(n, -1, np.int32)
        if len(used):
            m = g >= 0
            codes[m] = np.searchsorted(used, g[m]).astype(np.int32)
        return out, (lambda _pids: (codes, local)), extra


def _sleep_select(feed, waker, end: int, fds: list[int]) -> None:
    """``ChangeTracker.sleep`` where select() can wait on both descriptors ``fds`` (the
    feed's, the waker's): to the microsecond, so one wake-up where poll's whole
    milliseconds need two."""
    while True:
        left = end - time.monotonic_ns()
        if left <= 0:
            return
        ready = select.select(fds, (), (), left / 1e9)[0]
        if not ready:               # the deadline (nothing to read: no list searched)
            continue
        if fds[1] in ready:
            waker.sleep(0.0001)         # consumes the wake-up byte(s)
            return
        if fds[0] in ready:
            feed.drain()
            left = end - time.monotonic_ns()
            if left > 0:
                waker.sleep(min(left, 1_000_000) / 1e9)


def _sleep_poll(feed, waker, end: int) -> None:
    """``ChangeTracker.sleep`` with poll(), not select(): select fails for fds above 1023."""
    fd, wfd = feed.fileno(), waker.fileno()
    p = select.poll()
    p.register(fd, select.POLLIN)
    p.register(wfd, select.POLLIN)
    while True:
        left = end - time.monotonic_ns()
        if left <= 0:
            return
        if left < 1_000_000:  # poll counts whole milliseconds
            time.sleep(left / 1e9)
            return
        r = {f for f, _ in p.poll(left // 1_000_000)}
        if wfd in r:
            waker.sleep(0.0001)         # consumes the wake-up byte(s)
            return
        if fd in r:
            feed.drain()
            left = end - time.monotonic_ns()
            if left > 0:
                waker.sleep(min(left, 1_000_000) / 1e9)


def _marker(tr: ChangeTracker, n: int, kf: bool, wall_ns: int, names):
    """``ChangeTracker.step``'s result for a snapshot with no event: its marker row alone
    (what the general case gives then), in arrays made once and rewritten (the capture
    copies them into its batch before the next snapshot)."""
    m = tr._quiet
    if m is None:
        out = np.zeros(1, ROW_DTYPE)
        out["state"] = _CLOSED
        codes = np.full(1, -1, np.int32)
        seen, ts = np.ones(1, bool), np.zeros(1, np.int64)
        tail: tuple = (np.zeros(1, tr._info_dtype),) if tr.tcp_info else ()
        # the two extra tuples (snapshot, keyframe), made once: they hold the same arrays
        m = tr._quiet = (out, out["inode"], ts, (np.array([EV_SNAPSHOT], np.uint8), seen, ts, *tail),
                         (np.array([EV_KEYFRAME], np.uint8), seen, ts, *tail), lambda _pids: (codes, []))
    out, inode, ts, x_snap, x_kf, codes_of = m
    inode[0] = n
    ts[0] = wall_ns
    return out, (None if names is None else codes_of), (x_kf if kf else x_snap)


def owners_before_diff(tr: ChangeTracker, rows: np.ndarray, first: bool):
    """``defer_pids``, before the diff: ``(codes, plan)``, the rows' global name codes
    (to be completed by ``owners_after_diff`` when ``plan`` is not None: the diff carries owners
    over, ``Differ.diff(carry=plan)``) -- else every row looked up here."""
    res = tr._res
    n = len(rows)
    # rewritten every snapshot (the diff writes every carried code, owners_after_diff the
    # rest); nothing keeps it past step: the Differ copies its codes. The view of the
    # last length is kept: a table of the same size makes no slice
    g = tr._gview
    if len(g) != n:
        if len(tr._gbuf) < n:
            tr._gbuf = np.empty(n + (n >> 3), np.int32)
        g = tr._gview = tr._gbuf[:n]
    plan = res.begin_rows()
    tr._stale = None
    if plan is not None and not first:
        return g, plan
    res.end_rows(rows)                   # every row looked up (resolve's pass)
    tr.names_into(rows["pid"], g, tr._gcodes, tr._gnames, merge=False)
    return g, None

def owners_after_diff(tr: ChangeTracker, rows: np.ndarray, g: np.ndarray):
    """``defer_pids``, after a carry diff: the rows it could not carry looked up and
    named, the diff's events completed with them (``Differ.fixup``)."""
    need, carried, stale_ino, stale_ck = tr._differ.carried()
    tr._res.end_rows(rows, need, carried)
    if len(need):
        sub = np.empty(len(need), np.int32)
        tr.names_into(rows["pid"][need], sub, tr._gcodes, tr._gnames, merge=False)
        g[need] = sub
    if len(stale_ino):
        tr._stale = (stale_ino.copy(), stale_ck.copy())
    return tr._differ.fixup()

def owners_refound(tr: ChangeTracker, back: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``defer_pids``: the codes of the rows ``refind`` put back (``g`` extended): their
    pids carried over by refind, named as they are, and looked up at the next snapshot."""
    gb = np.empty(len(back), np.int32)
    tr.names_into(back["pid"], gb, tr._gcodes, tr._gnames, merge=False)
    tr._res.recheck_inodes(back["inode"])
    return np.concatenate([g, gb])


def forget_closed(tr: ChangeTracker, closed: np.ndarray) -> None:
    """``defer_pids``: the resolver's entries of the sockets gone from the table (``step``
    calls it when some closed or went stale, else ``forget`` with none itself)."""
    ino, ck = closed["inode"], closed["cookie"]
    if tr._stale is not None:
        ino = np.concatenate([ino, tr._stale[0]])
        ck = np.concatenate([ck, tr._stale[1]])
    tr._res.forget(ino, ck)


def refind(tr: ChangeTracker, closed: np.ndarray):
    """The sockets of ``closed`` (missing from this snapshot) that no report declared
    dead and the kernel, asked about each, still holds: ``(rows, where)``, as the
    kernel reports them now, pid carried over where the inode is the same, those that
    pass the recorder's filters, and their positions in ``closed``. None when there
    are none."""
    if not len(closed):
        return None
    ck = closed["cookie"]
    ask = ck != 0
    if len(tr._pend_rows):
        # a few against a few: a set, not np.isin's sort or table
        pend = set(tr._pend_rows["cookie"].tolist())
        ask &= np.array([c not in pend for c in ck.tolist()], bool)
    idx = np.flatnonzero(ask)
    if not len(idx):
        return None
    if len(idx) > PROBE_MAX:
        tr.unprobed += len(idx) - PROBE_MAX
        idx = idx[:PROBE_MAX]
    got = tr._probe(closed[idx])
    if got is None:
        return None
    found, now = got
    tr.probes += len(idx)
    if not found.any():
        return None
    pos = idx[found]
    last = closed[pos]
    now = now[found]
    same = (now["inode"] == last["inode"]) & (last["inode"] != 0)
    now["pid"] = np.where(same, last["pid"], 0)
    if tr.where is None:
        m = row_mask(now, tr._states, tr._ports, tr._family)
        if m is not None:
            now, pos = now[m], pos[m]
    # with ``where`` (the recorder's filters, one Filter) a socket the last snapshot
    # held is followed until it closes, inside the filter or not
    if not len(now):
        return None
    tr.refound += len(now)
    return now, pos


def open_destroy_feed(required: bool = False):
    """The socket-destroy feed, or None (with a one-line warning) where it cannot be had:
    not Linux, or the kernel refuses the subscription (EPERM without CAP_NET_ADMIN)."""
    try:
        from .._destroy import DestroyFeed
    except ImportError as e:
        if required:
            raise
        log.warning("no socket-destroy feed on this platform (%s): polling only", e)
        return None
    try:
        return DestroyFeed()
    except OSError as e:
        if required:
            raise
        log.warning("no socket-destroy feed (%s; needs CAP_NET_ADMIN on some kernels): polling "
                    "only, connections that live between two snapshots are not recorded", e)
        return None
