"""Helpers for the changes-mode tests: record scripted tables through the real Recorder
on simulated clocks (one snapshot every 100 ms of simulated time), both ways."""

import ipaddress
import os
import signal

import numpy as np

from tcpsnap import ROW_DTYPE, Recorder

INTERVAL_NS = 100_000_000
WALL0 = 1_795_000_000 * 10**9


class ManualClock:
    """A clock the test moves by hand: ``mono`` (ns, starts at 0), the wall clock
    ``wall0 + mono`` (a writer driven without its capture thread)."""

    def __init__(self, wall0: int) -> None:
        self.wall0 = wall0
        self.mono = 0

    def monotonic_ns(self) -> int:
        return self.mono

    def time_ns(self) -> int:
        return self.wall0 + self.mono


class SimClock:
    """Every ``time_ns()`` (one per snapshot, just before ``take()``) starts the next
    slot; ``monotonic_ns()`` is that slot's start plus 1 ms of capture. Before slot 0 (the
    recorder's untimed warm-up take) the clock reads one interval earlier."""

    def __init__(self) -> None:
        self.k = -1

    def time_ns(self) -> int:
        self.k += 1
        return WALL0 + self.k * INTERVAL_NS

    def monotonic_ns(self) -> int:
        return 10**12 + self.k * INTERVAL_NS + 1_000_000


class Scripted:
    """The snapshotter protocol the Recorder uses, replaying known tables (the warm-up
    take gets table 0 too); stops the recorder after the last. ``on_take(i, rec)`` runs
    before take ``i`` (0: the warm-up; take i > 0 is snapshot i - 1)."""

    def __init__(self, tables, pids=True, names=None, on_take=None):
        self.tables, self.i, self.rec = [tables[0]] + list(tables), 0, None
        self.pids = pids
        self.names = names or {}
        self.on_take = on_take

    def take(self):
        if self.on_take is not None:
            self.on_take(self.i, self.rec)
        t = self.tables[self.i]
        self.i += 1
        if self.i == len(self.tables):
            self.rec.stop()
        return t

    def process_names(self, pids):
        names = sorted(set(self.names.values()))
        codes = np.array([names.index(self.names[int(p)]) if int(p) in self.names else -1
                          for p in pids], np.int32)
        return codes, names

    def close(self):
        pass


def crash_replay(tables, k):
    """``Scripted(tables)`` without pids that kills its own process (SIGKILL) just before
    it would hand over snapshot ``k``: the snapshotter of the kill -9 children."""

    def kill(i, rec):
        if i - 1 == k:          # take i > 0 is snapshot i - 1 (take 0: the warm-up)
            os.kill(os.getpid(), signal.SIGKILL)

    return Scripted(tables, pids=False, on_take=kill)


def record(path, tables, mode="full", names=None, **kw):
    """Record ``tables`` (one per snapshot) into ``path`` on the simulated clocks."""
    clock = SimClock()
    snap = Scripted(tables, pids=names is not None, names=names)
    extra = {"mode": mode, "destroy": False} if mode != "full" else {}
    with Recorder(path, interval=0, snapshotter=snap, clock=clock, nice=None, **extra, **kw) as rec:
        snap.rec = rec
        rec.run()
        return dict(rec.stats)


def row(state, la, lp, ra, rp, cookie, pid=0, rxq=0, txq=0, family=4):
    r = np.zeros(1, ROW_DTYPE)[0]
    r["family"] = family
    r["state"] = state
    n = 4 if family == 4 else 16
    r["local_addr"][:n] = list(ipaddress.ip_address(la).packed)
    r["remote_addr"][:n] = list(ipaddress.ip_address(ra).packed)
    r["local_port"], r["remote_port"], r["cookie"], r["pid"] = lp, rp, cookie, pid
    r["rx_queue"], r["tx_queue"] = rxq, txq
    return r


def canon(df):
    """A snapshot-by-snapshot comparable form: rows sorted within each seq."""
    cols = [c for c in df.columns if c not in ("event", "seen_in_snapshot")]
    out = df[cols].copy()
    for c in ("state", "local_addr", "remote_addr", "process", "host", "boot_id"):
        if c in out:
            out[c] = out[c].astype(object)
    keys = ["seq", "cookie", "family", "local_addr", "local_port", "remote_addr", "remote_port",
            "state", "pid", "rx_queue", "tx_queue", "uid", "inode"]
    out = out.sort_values(keys, kind="stable").reset_index(drop=True)
    return out
