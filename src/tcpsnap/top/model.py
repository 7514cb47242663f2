"""The table ``tcpsnap top`` shows, as numpy arrays: what changed (from the compiled diff,
``tcpsnap._diff``), the filter, the order, the per-process grouping. No terminal here: the
view (``tcpsnap.top.app``) asks for the lines it draws, so a refresh costs the diff, one
sort and the ~25 lines on screen, whatever the table's size."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .._diff import Differ
from .._events import EV_CHANGED, EV_OPENED, EV_QUEUES, EV_STATE
from .._schema import ROW_DTYPE, STATE_NAMES, TcpState
from ..filters import Filter
from ..frame import format_address, merge_names

__all__ = ["Frame", "TopModel", "COLUMNS", "GROUP_COLUMNS", "MARK_NONE", "MARK_NEW", "MARK_CHANGED",
           "MARK_CLOSED", "MARK_CHARS"]

#: What a row is marked with, for one refresh: opened since the last one (green), changed
#: (yellow: state, queues, pid...), gone (red, shown one last time).
MARK_NONE, MARK_NEW, MARK_CHANGED, MARK_CLOSED = range(4)
#: The mark's character in the first column: the colours' meaning without colours (NO_COLOR).
MARK_CHARS = (" ", "+", "~", "-")

#: (key, title, width): the table's columns, in order; ``container`` only when a frame has it,
#: ``netns`` (the namespace's inode) only when the rows come from more than one namespace.
COLUMNS = (("family", "Prot", 4), ("local", "Local Address", 21), ("remote", "Remote Address", 21),
           ("state", "State", 11), ("pid", "PID", 7), ("process", "Process", 15),
           ("container", "Container", 14), ("netns", "Netns", 10), ("recvq", "Recv-Q", 7), ("sendq", "Send-Q", 7))
#: The columns of the per-process grouping.
GROUP_COLUMNS = (("pid", "PID", 7), ("process", "Process", 15), ("conns", "Conns", 6),
                 ("listen", "Listen", 6), ("estab", "Estab", 6), ("other", "Other", 6),
                 ("recvq", "Recv-Q", 8), ("sendq", "Send-Q", 8))
_SHORT = {"ESTABLISHED": "ESTAB", "TIME_WAIT": "TIME-WAIT", "CLOSE_WAIT": "CLOSE-WAIT",
          "SYN_SENT": "SYN-SENT", "SYN_RCVD": "SYN-RECV", "FIN_WAIT1": "FIN-WAIT-1",
          "FIN_WAIT2": "FIN-WAIT-2", "LAST_ACK": "LAST-ACK", "DELETE_TCB": "DELETE-TCB"}
_NO_RANK = np.iinfo(np.int64).max
_ROW_KEYS = frozenset(c[0] for c in COLUMNS)


@dataclass
class Frame:
    """One snapshot for the view: ``rows`` (``ROW_DTYPE``, owned), ``proc`` (int32 codes
    into ``names``, -1 unknown), when it was taken (``wall_ns``, UTC epoch ns), what it cost
    (``capture_ns``), its ``seq`` in a recording (replay) and, where the source knows it,
    each row's container (``container``: codes into ``containers``)."""

    rows: np.ndarray
    proc: np.ndarray
    names: list[str]
    wall_ns: int = 0
    capture_ns: int = 0
    seq: int | None = None
    container: np.ndarray | None = None
    containers: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, rows: np.ndarray, names: dict[int, str] | None = None, **kw) -> Frame:
        """A frame of ``rows`` with process names from ``{pid: name}`` (tests, benchmarks)."""
        names = names or {}
        uniq = sorted(set(names.values()))
        lut = {p: uniq.index(n) for p, n in names.items()}
        proc = np.array([lut.get(int(p), -1) for p in rows["pid"]], np.int32)
        return cls(np.ascontiguousarray(rows, ROW_DTYPE), proc, uniq, **kw)


class TopModel:
    """The view's table. ``update(frame)`` diffs the frame against the last one (live);
    ``show(prev, cur)`` diffs two given snapshots (replay). Then ``nrows`` lines are
    drawn by ``cells(i)`` / ``mark(i)`` (in display order).

    Order: by ``sort`` (a key of ``COLUMNS``; ``reverse``), ties by cookie. With ``stable``
    (default) a row keeps its place from one refresh to the next and new rows come after
    the others (sorted among themselves); ``resort()`` (a new sort key) orders everything
    again once. A row is known across refreshes by its socket cookie: rows without one
    (Windows) are placed by the sort each refresh.
    """

    def __init__(self) -> None:
        self.differ = Differ()
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self.containers: list[str] = []
        self._cindex: dict[str, int] = {}
        self.has_container = False
        self.multi_netns = False
        self.filter: Filter | None = None
        self.sort = "local"
        self.reverse = False
        self.stable = True
        self.group = False
        self._resort = True
        self._rank_cookie = np.zeros(0, np.uint64)
        self._rank_val = np.zeros(0, np.int64)
        self.rows = np.zeros(0, ROW_DTYPE)         # the current table, then the rows gone
        self.proc = np.zeros(0, np.int32)
        self.cont = np.zeros(0, np.int32)
        self.marks = np.zeros(0, np.uint8)
        self.order = np.zeros(0, np.int64)         # display line -> index into rows
        self.n_current = 0
        self.frame: Frame | None = None
        self.refresh_ns = 0                        # CPU time of the last update (this thread)
        self._groups: dict[str, np.ndarray] = {}
        # the last table's containers by cookie (sorted), for its rows once they are gone
        self._prev_cont_keys: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.uint64), np.zeros(0, np.int32))

    # ------------------------------------------------------------------ input
    def update(self, frame: Frame) -> None:
        """The next live snapshot: what changed since the last ``update``."""
        t0 = time.thread_time_ns()
        proc = self._codes(frame)
        ev_idx, ev_code, closed, closed_proc, _ = self.differ.diff(frame.rows, proc, False)
        self._take(frame, proc, ev_idx, ev_code, closed, closed_proc)
        self.refresh_ns = time.thread_time_ns() - t0

    def show(self, prev: Frame | None, cur: Frame) -> None:
        """``cur`` marked with what changed since ``prev`` (None: nothing marked)."""
        t0 = time.thread_time_ns()
        self.differ.reset()
        if prev is not None:
            self.differ.diff(prev.rows, self._codes(prev), False)
        proc = self._codes(cur)
        ev_idx, ev_code, closed, closed_proc, _ = self.differ.diff(cur.rows, proc, False)
        self._take(cur, proc, ev_idx, ev_code, closed, closed_proc)
        self.refresh_ns = time.thread_time_ns() - t0

    def _codes(self, frame: Frame) -> np.ndarray:
        # one dictionary of names for the life of the view: the diff compares codes
        lut = merge_names(frame.names, self._index, self.names)
        return np.take(lut, frame.proc, mode="wrap").astype(np.int32)

    def _take(self, frame, proc, ev_idx, ev_code, closed, closed_proc) -> None:
        n, nc = len(frame.rows), len(closed)
        self.frame = frame
        self.n_current = n
        self.rows = np.concatenate([frame.rows, closed]) if nc else frame.rows
        self.proc = np.concatenate([proc, closed_proc]) if nc else proc
        marks = np.zeros(n + nc, np.uint8)
        code = np.asarray(ev_code)
        idx = np.asarray(ev_idx)
        marks[idx[code == EV_OPENED]] = MARK_NEW
        marks[idx[(code == EV_STATE) | (code == EV_CHANGED) | (code == EV_QUEUES)]] = MARK_CHANGED
        marks[n:] = MARK_CLOSED
        self.marks = marks
        ns = frame.rows["netns"]
        self.multi_netns = self.multi_netns or bool(n and (ns != ns[0]).any())
        cont = np.full(n + nc, -1, np.int32)
        if frame.container is not None:
            self.has_container = True
            lut = merge_names(frame.containers, self._cindex, self.containers)
            cont[:n] = np.take(lut, frame.container, mode="wrap")
        if nc and len(self.cont) and self.has_container:
            # the rows gone keep the container they had (found by cookie)
            keys = self._prev_cont_keys
            pos = np.searchsorted(keys[0], closed["cookie"])
            pos = np.minimum(pos, max(len(keys[0]) - 1, 0))
            hit = (keys[0][pos] == closed["cookie"]) if len(keys[0]) else np.zeros(nc, bool)
            cont[n:][hit] = keys[1][pos[hit]]
        self.cont = cont
        o = np.argsort(frame.rows["cookie"], kind="stable")
        self._prev_cont_keys = (frame.rows["cookie"][o], cont[:n][o])
        self.reorder()

    # ---------------------------------------------------------------- options
    def set_filter(self, f: Filter | None) -> None:
        self.filter = f if f else None
        self.reorder()

    def set_sort(self, key: str, reverse: bool | None = None) -> None:
        """Sort by ``key`` (a ``COLUMNS`` or ``GROUP_COLUMNS`` key); the whole table once."""
        if reverse is None:
            reverse = not self.reverse if key == self.sort else False
        self.sort, self.reverse, self._resort = key, reverse, True
        self.reorder()

    def resort(self) -> None:
        self._resort = True
        self.reorder()

    # ------------------------------------------------------------------ order
    def _sort_keys(self, idx: np.ndarray) -> list[np.ndarray]:
        """lexsort keys (last is primary) of ``rows[idx]`` for the current sort."""
        r = self.rows[idx]
        key = self.sort
        if key not in _ROW_KEYS:          # a column of the groups only (conns...): the rows by address
            key = "local"
        if key in ("local", "remote"):
            side = "local" if key == "local" else "remote"
            a = r[f"{side}_addr"].view(">u8").reshape(len(r), 2)
            main = [r[f"{side}_port"], a[:, 1], a[:, 0], r["family"]]
        elif key == "family":
            main = [r["family"]]
        elif key == "state":
            main = [r["state"]]
        elif key in ("pid", "netns"):
            main = [r[key]]
        elif key in ("process", "container"):
            names, codes = (self.names, self.proc) if key == "process" else (self.containers, self.cont)
            rank = np.empty(len(names) + 1, np.int64)
            rank[:-1] = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable"), kind="stable")
            rank[-1] = -1
            main = [np.take(rank, codes[idx], mode="wrap")]
        elif key == "recvq":
            main = [r["rx_queue"]]
        elif key == "sendq":
            main = [r["tx_queue"]]
        else:
            raise ValueError(f"unknown sort column {key!r}")
        return [r["cookie"], *main]

    def _sorted(self, idx: np.ndarray) -> np.ndarray:
        if len(idx) == 0:
            return idx
        o = np.lexsort(self._sort_keys(idx))
        return idx[o[::-1]] if self.reverse else idx[o]

    def reorder(self) -> None:
        """Filter and order the rows (after an update, or a new filter or sort)."""
        idx = np.arange(len(self.rows))
        if self.filter is not None:
            idx = idx[self.filter.mask(self.rows, process=(self.proc, self.names))]
        if not self.stable or self._resort or len(self._rank_cookie) == 0:
            order = self._sorted(idx)
        else:
            ck = self.rows["cookie"][idx]
            pos = np.searchsorted(self._rank_cookie, ck)
            pos = np.minimum(pos, len(self._rank_cookie) - 1)
            known = (self._rank_cookie[pos] == ck) & (ck != 0)
            rank = np.full(len(idx), _NO_RANK, np.int64)
            rank[known] = self._rank_val[pos[known]]
            new = self._sorted(idx[~known])
            o = np.argsort(rank[known], kind="stable")
            order = np.concatenate([idx[known][o], new])
        self._resort = False
        self.order = order
        # remember each shown row's place (closed rows too: they are gone next time)
        ck = self.rows["cookie"][order]
        o = np.argsort(ck, kind="stable")
        self._rank_cookie = ck[o]
        self._rank_val = o.astype(np.int64)          # the display line of each sorted cookie
        self._groups = self._group() if self.group else {}

    # ------------------------------------------------------------------ group
    def _group(self) -> dict[str, np.ndarray]:
        # the rows gone count for their group's colour (a process whose last connection
        # closed is shown red, with 0 connections, for one refresh), not in its numbers
        idx = self.order
        r = self.rows[idx]
        mk = self.marks[idx]
        cur = (mk != MARK_CLOSED).astype(np.int64)
        key = (r["pid"].astype(np.int64) << 32) | (self.proc[idx].astype(np.int64) + 1)
        uk, first, inv = np.unique(key, return_index=True, return_inverse=True)
        g = len(uk)
        st = r["state"]

        def count(w) -> np.ndarray:
            return np.bincount(inv, np.asarray(w, np.int64) * cur, minlength=g).astype(np.int64)

        out: dict[str, np.ndarray] = {
            "pid": r["pid"][first].astype(np.int64), "proc": self.proc[idx][first], "conns": count(1),
            "listen": count(st == TcpState.LISTEN), "estab": count(st == TcpState.ESTABLISHED),
            "recvq": count(r["rx_queue"]), "sendq": count(r["tx_queue"]),
            "new": count(mk == MARK_NEW), "changed": count(mk == MARK_CHANGED),
            "closed": np.bincount(inv, mk == MARK_CLOSED, minlength=g) > 0}
        out["other"] = out["conns"] - out["listen"] - out["estab"]
        sort = self.sort if self.sort in dict((c[0], 0) for c in GROUP_COLUMNS) else "conns"
        if sort == "process":
            names = np.array([*self.names, ""], dtype=object)
            o = np.argsort(names[out["proc"]], kind="stable")
        else:
            o = np.argsort(-out[sort] if sort != "pid" else out[sort], kind="stable")
        if self.reverse:
            o = o[::-1]
        return {k: v[o] for k, v in out.items()}

    # ------------------------------------------------------------------ lines
    @property
    def columns(self) -> tuple[tuple[str, str, int], ...]:
        if self.group:
            return GROUP_COLUMNS
        hide = {k for k, shown in (("container", self.has_container), ("netns", self.multi_netns)) if not shown}
        return tuple(c for c in COLUMNS if c[0] not in hide)

    @property
    def nrows(self) -> int:
        return len(self._groups["pid"]) if self.group else len(self.order)

    @property
    def width(self) -> int:
        return 2 + sum(w + 1 for _, _, w in self.columns)

    def header(self) -> str:
        """The column titles, the sorted one marked with its direction."""
        out = []
        for key, title, w in self.columns:
            if key == self.sort:
                title += "v" if self.reverse else "^"
            out.append(title[:w].ljust(w))
        return "  " + " ".join(out)

    def mark(self, i: int) -> int:
        if self.group:
            g = self._groups
            return (MARK_NEW if g["new"][i] else MARK_CLOSED if g["closed"][i]
                    else MARK_CHANGED if g["changed"][i] else MARK_NONE)
        return int(self.marks[self.order[i]])

    def line(self, i: int) -> str:
        """Display line ``i`` (0-based, in display order) as text: its mark, then each
        column cut to its width."""
        vals = self.cells(i)
        out = [MARK_CHARS[self.mark(i)], " "]
        for (key, _, w), v in zip(self.columns, vals, strict=True):
            if len(v) > w:
                v = v[:w - 1] + "…" if key not in ("local", "remote") else "…" + v[-(w - 1):]
            out.append((v.rjust(w) if key in ("pid", "recvq", "sendq", "conns", "listen", "estab", "other")
                        else v.ljust(w)) + " ")
        return "".join(out)

    def cells(self, i: int) -> list[str]:
        """The text of each column of display line ``i``."""
        if self.group:
            g = self._groups
            p = int(g["proc"][i])
            return [str(int(g["pid"][i])) if g["pid"][i] else "-", self.names[p] if p >= 0 else "-",
                    *(str(int(g[k][i])) for k in ("conns", "listen", "estab", "other", "recvq", "sendq"))]
        j = int(self.order[i])
        r = self.rows[j]
        fam = int(r["family"])
        p = int(self.proc[j])
        out = {"family": "TCP6" if fam == 6 else "TCP",
               "local": _endpoint(fam, r["local_addr"], int(r["local_port"])),
               "remote": _endpoint(fam, r["remote_addr"], int(r["remote_port"])),
               "state": _SHORT.get(STATE_NAMES[int(r["state"]) - 1], STATE_NAMES[int(r["state"]) - 1]),
               "pid": str(int(r["pid"])) if r["pid"] else "-",
               "process": self.names[p] if p >= 0 else "-",
               "container": self.containers[int(self.cont[j])] if self.cont[j] >= 0 else "-",
               "netns": str(int(r["netns"])), "recvq": str(int(r["rx_queue"])), "sendq": str(int(r["tx_queue"]))}
        return [out[k] for k, _, _ in self.columns]

    def state_counts(self) -> dict[str, int]:
        """Rows per state of the current table (the filter applied; rows gone not counted)."""
        shown = self.order[self.marks[self.order] != MARK_CLOSED]
        c = np.bincount(self.rows["state"][shown], minlength=len(STATE_NAMES) + 1)
        return {_SHORT.get(n, n): int(c[k + 1]) for k, n in enumerate(STATE_NAMES) if c[k + 1]}

    def counts(self) -> tuple[int, int, int]:
        """(new, changed, closed) rows shown at this refresh."""
        m = self.marks[self.order]
        return int((m == MARK_NEW).sum()), int((m == MARK_CHANGED).sum()), int((m == MARK_CLOSED).sum())


def _endpoint(family: int, addr: np.ndarray, port: int) -> str:
    a = format_address(family, addr)
    host = f"[{a}]" if family == 6 else a
    return f"{host}:{port or '*'}"              # as ss writes a listener's peer
