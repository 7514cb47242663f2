"""Known recordings for the folder, old-recording and reader tests: the tables of the
schema-version-1 fixtures (``tests/fixtures/v1``, made by ``make_v1.py`` with the release
before version 2), their rows as literals, and scripted recordings with today's recorder
on a simulated clock that can start later (so a second run into a folder continues it)."""

import shutil
from pathlib import Path

import numpy as np

from _changes_util import INTERVAL_NS, WALL0, Scripted, SimClock, row
from tcpsnap import ROW_DTYPE, Recorder
from tcpsnap import TcpState as S

V1 = Path(__file__).resolve().parent / "fixtures" / "v1"
NAMES = {100: "sshd", 101: "sshd", 200: "python3", 300: "curl"}


def v1_tables():
    """The 8 snapshots of the v1 fixtures (as ``make_v1.tables``); snapshot 4 is empty."""
    def r(state, la, lp, ra, rp, cookie, pid=0, rxq=0, family=4):
        x = row(state, la, lp, ra, rp, cookie, pid=pid, rxq=rxq, family=family)
        x["inode"] = 1000 + cookie if pid else 0
        return x

    listen = r(S.LISTEN, "0.0.0.0", 22, "0.0.0.0", 0, 1, pid=100)
    ssh = r(S.ESTABLISHED, "10.0.0.1", 22, "10.0.0.2", 50000, 2, pid=101)
    ssh_q = r(S.ESTABLISHED, "10.0.0.1", 22, "10.0.0.2", 50000, 2, pid=101, rxq=5)
    v6 = r(S.ESTABLISHED, "::1", 8080, "::1", 40000, 3, pid=200, family=6)
    syn = r(S.SYN_SENT, "10.0.0.1", 40001, "93.184.216.34", 443, 4, pid=300)
    est = r(S.ESTABLISHED, "10.0.0.1", 40001, "93.184.216.34", 443, 4, pid=300)
    tw = r(S.TIME_WAIT, "10.0.0.1", 40001, "93.184.216.34", 443, 4)
    cw = r(S.CLOSE_WAIT, "10.0.0.1", 22, "10.0.0.3", 51000, 5, pid=101)
    t = [[listen, ssh, v6], [listen, ssh_q, v6], [listen, ssh_q, v6, syn], [listen, ssh_q, est], [],
         [listen, tw], [listen], [listen, cw]]
    return [np.array(x, ROW_DTYPE) if x else np.zeros(0, ROW_DTYPE) for x in t]


T0 = "2026-11-18 11:06:40"          # WALL0, the first snapshot of the fixtures
# (seq, ms after T0, state, local_addr, local_port, remote_addr, remote_port, pid, process,
#  rx_queue, cookie): every connection of the v1 recordings, in seq then cookie order
V1_ROWS = [
    (0, 0, "LISTEN", "0.0.0.0", 22, "0.0.0.0", 0, 100, "sshd", 0, 1),
    (0, 0, "ESTABLISHED", "10.0.0.1", 22, "10.0.0.2", 50000, 101, "sshd", 0, 2),
    (0, 0, "ESTABLISHED", "::1", 8080, "::1", 40000, 200, "python3", 0, 3),
    (1, 100, "LISTEN", "0.0.0.0", 22, "0.0.0.0", 0, 100, "sshd", 0, 1),
    (1, 100, "ESTABLISHED", "10.0.0.1", 22, "10.0.0.2", 50000, 101, "sshd", 5, 2),
    (1, 100, "ESTABLISHED", "::1", 8080, "::1", 40000, 200, "python3", 0, 3),
    (2, 200, "LISTEN", "0.0.0.0", 22, "0.0.0.0", 0, 100, "sshd", 0, 1),
    (2, 200, "ESTABLISHED", "10.0.0.1", 22, "10.0.0.2", 50000, 101, "sshd", 5, 2),
    (2, 200, "ESTABLISHED", "::1", 8080, "::1", 40000, 200, "python3", 0, 3),
    (2, 200, "SYN_SENT", "10.0.0.1", 40001, "93.184.216.34", 443, 300, "curl", 0, 4),
    (3, 300, "LISTEN", "0.0.0.0", 22, "0.0.0.0", 0, 100, "sshd", 0, 1),
    (3, 300, "ESTABLISHED", "10.0.0.1", 22, "10.0.0.2", 50000, 101, "sshd", 5, 2),
    (3, 300, "ESTABLISHED", "10.0.0.1", 40001, "93.184.216.34", 443, 300, "curl", 0, 4),
    (5, 500, "LISTEN", "0.0.0.0", 22, "0.0.0.0", 0, 100, "sshd", 0, 1),
    (5, 500, "TIME_WAIT", "10.0.0.1", 40001, "93.184.216.34", 443, 0, None, 0, 4),
    (6, 600, "LISTEN", "0.0.0.0", 22, "0.0.0.0", 0, 100, "sshd", 0, 1),
    (7, 700, "LISTEN", "0.0.0.0", 22, "0.0.0.0", 0, 100, "sshd", 0, 1),
    (7, 700, "CLOSE_WAIT", "10.0.0.1", 22, "10.0.0.3", 51000, 101, "sshd", 0, 5),
]
ROW_COLUMNS = ["seq", "ms", "state", "local_addr", "local_port", "remote_addr", "remote_port", "pid",
               "process", "rx_queue", "cookie"]


def rows_of(df, t0=T0):
    """``df`` (``tcpsnap.read``'s rows) as ``V1_ROWS``-like tuples, in seq then cookie order."""
    import pandas as pd

    base = pd.Timestamp(t0, tz="UTC")
    out = []
    for r in df.sort_values(["seq", "cookie"], kind="stable").itertuples(index=False):
        ms = (r.timestamp - base) // pd.Timedelta(milliseconds=1)
        proc = None if pd.isna(r.process) else str(r.process)
        out.append((int(r.seq), int(ms), str(r.state), str(r.local_addr), int(r.local_port),
                    str(r.remote_addr), int(r.remote_port), int(r.pid), proc, int(r.rx_queue),
                    int(r.cookie)))
    return out


def shifted(rows, dseq, dms):
    return [(s + dseq, ms + dms, *rest) for s, ms, *rest in rows]


def copy_v1(mode, dst):
    """A copy of the v1 fixture recording of ``mode`` at ``dst`` (tests never touch the
    fixtures themselves)."""
    shutil.copytree(V1 / mode, dst)
    return dst


def record_at(path, tables, first_slot=0, mode="full", **kw):
    """Record ``tables`` into ``path`` through today's Recorder on the simulated clock of
    ``_changes_util``, its first snapshot ``first_slot`` intervals after WALL0 (files of
    ``rotate="0.5s"`` by default). The Recorder's stats."""
    class Later(SimClock):
        def time_ns(self):
            return super().time_ns() + first_slot * INTERVAL_NS

        def monotonic_ns(self):
            return super().monotonic_ns() + first_slot * INTERVAL_NS

    snap = Scripted(tables, pids=True, names=NAMES)
    extra = {"mode": mode, "destroy": False} if mode != "full" else {}
    kw.setdefault("rotate", "0.5s")
    with Recorder(path, interval=0, snapshotter=snap, clock=Later(), nice=None, **extra, **kw) as rec:
        snap.rec = rec
        rec.run()
        return dict(rec.stats, path=rec.path)


__all__ = ["V1", "NAMES", "T0", "V1_ROWS", "ROW_COLUMNS", "WALL0", "v1_tables", "rows_of", "shifted",
           "copy_v1", "record_at"]
