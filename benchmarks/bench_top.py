#!/usr/bin/env python3
"""`tcpsnap top`: what one refresh of the view costs, in CPU time.

Scripted (``--sizes``, default 1,000, 10,000, 100,000 rows): a table of N ESTABLISHED rows
where each refresh 5% churns (2.5% close, 2.5% open, 5% change their queues), shown by
the real Textual app headless (``App.run_test``) at 120x40. Per refresh, the median over
``--refreshes``:

  model        TopModel.update: the compiled diff, the marks, the stable order
  view         the whole refresh as the app does it: update, then Textual drawing the
               screen (``render_line`` of the visible lines only), measured as this
               process's CPU time from the frame's arrival until the screen is drawn

Live (``--live N``, as root: under ``unshare -n``, N loopback connections held by
bench_snapshot's helpers, so the table is 2N + helpers rows): a live refresh (Snapshotter
with pids, warm, then the view's update and lines; this process's CPU, all threads) side by
side with ``ss -tanp`` at the same table (a child process: its user + system CPU time), and
the view's overhead at a 1 s refresh as a share of one core: that refresh plus Textual's
drawing (the scripted run's view - model at 10k rows) per second.

    python3 benchmarks/bench_top.py                          # scripted 1k, 10k, 100k
    python3 benchmarks/bench_top.py --sizes 1000 --live 5000 # quicker; live at 10k rows

Replay (``--replay-step ROWS,SNAPSHOTS``): a recording of SNAPSHOTS tables of ROWS rows (5%
churn each; full and changes mode) is made in a temporary folder; one replay step
(``ReplaySource.frame(k)``, which reads through ``tcpsnap.table_at``) is timed at 10
snapshots spread over it: median and max CPU ms.

Results: a JSON file per run (benchmarks/_results.py; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys

import numpy as np

import _results
import bench_snapshot as bs
import tcpsnap
from tcpsnap import ROW_DTYPE
from tcpsnap.top.app import TopApp
from tcpsnap.top.model import Frame, TopModel


def table(n: int, first_cookie: int = 1) -> np.ndarray:
    rows = np.zeros(n, ROW_DTYPE)
    rows["family"] = 4
    rows["state"] = tcpsnap.TcpState.ESTABLISHED
    k = np.arange(n)
    rows["local_addr"][:, 0] = 127
    rows["local_addr"][:, 3] = 1
    rows["remote_addr"][:, 0] = 10
    rows["remote_addr"][:, 2] = (k // 250) % 250
    rows["remote_addr"][:, 3] = k % 250 + 1
    rows["local_port"] = 1024 + k % 60000
    rows["remote_port"] = 443
    rows["pid"] = 1000 + k % 50
    rows["cookie"] = first_cookie + k
    return rows


def churned(rows: np.ndarray, step: int) -> np.ndarray:
    """5% churn: the oldest 2.5% gone, 2.5% new (new cookies), 5% with other queues."""
    n = len(rows)
    c = max(1, n // 40)
    new = table(c, int(rows["cookie"].max()) + 1)
    out = np.concatenate([rows[c:], new])
    q = np.random.default_rng(step).choice(len(out), max(1, n // 20), replace=False)
    out["rx_queue"][q] += 1
    return out


class Scripted:
    recording = None
    error = None

    def start(self, deliver):
        self.deliver = deliver

    def stop(self):
        pass


def names_of(rows):
    return {1000 + i: f"proc{i}" for i in range(50)}


async def scripted(n: int, refreshes: int) -> dict:
    src = Scripted()
    app = TopApp(src)
    frames = []
    rows = table(n)
    for i in range(refreshes + 3):
        frames.append(Frame.of(rows, names_of(rows)))
        rows = churned(rows, i)
    model_ms, view_ms = [], []
    async with app.run_test(size=(120, 40)) as pilot:
        for i, fr in enumerate(frames):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            app.push_frame(fr)
            await pilot.pause()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            if i >= 3:                     # warm
                model_ms.append(app.model.refresh_ns / 1e6)
                view_ms.append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e3)
    return {"rows": n, "model_ms": statistics.median(model_ms), "view_ms": statistics.median(view_ms),
            "view_ms_max": max(view_ms)}


def live(n: int, refreshes: int) -> dict:
    with bs.Connections(n):
        snap = tcpsnap.Snapshotter(pids=True)
        model = TopModel()
        view, ss = [], []
        rows_n = 0
        for i in range(refreshes + 2):
            u0 = resource.getrusage(resource.RUSAGE_SELF)    # every thread (pid walks too)
            rows = snap.take()
            codes, names = snap.process_names(rows["pid"])
            model.update(Frame(rows.copy(), np.asarray(codes, np.int32), list(names)))
            for k in range(min(38, model.nrows)):
                model.line(k)
            u1 = resource.getrusage(resource.RUSAGE_SELF)
            rows_n = len(rows)
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(["ss", "-tanp"], stdout=subprocess.DEVNULL, check=True)
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i >= 2:
                view.append((u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime) * 1e3)
                ss.append((c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) * 1e3)
        snap.close()
    v, s = statistics.median(view), statistics.median(ss)
    return {"connections": n, "rows": rows_n, "view_ms": v, "ss_tanp_ms": s, "view_over_ss": v / s,
            "overhead_1s_pct_of_core": v / 10}


class _Tables:
    """The Recorder's snapshotter: the scripted tables once, then stop."""

    pids = False

    def __init__(self, tables: list[np.ndarray]) -> None:
        self.tables, self.i, self.rec = [tables[0], *tables], 0, None

    def take(self) -> np.ndarray:
        t = self.tables[self.i]
        self.i += 1
        if self.i == len(self.tables):
            self.rec.stop()
        return t

    def close(self) -> None:
        pass


def replay_step(rows: int, snaps: int) -> list[dict]:
    import tempfile
    import time

    from tcpsnap.top.sources import ReplaySource

    tables, t = [], table(rows)
    for i in range(snaps):
        tables.append(t)
        t = churned(t, i)
    out = []
    for mode in ("full", "changes"):
        with tempfile.TemporaryDirectory() as d:
            snap = _Tables(tables)
            extra = {"mode": mode, "destroy": False} if mode == "changes" else {}
            with tcpsnap.Recorder(d, interval=0, snapshotter=snap, nice=None, **extra) as rec:
                snap.rec = rec
                rec.run()
            src = ReplaySource(d)
            ms = []
            for k in np.linspace(1, len(src) - 1, 10).astype(int):
                c0 = time.process_time()
                src.frame(int(k))
                ms.append((time.process_time() - c0) * 1e3)
            out.append({"mode": mode, "rows": rows, "snapshots": len(src), "step_ms": statistics.median(ms),
                        "step_ms_max": max(ms)})
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10000, 100000])
    ap.add_argument("--refreshes", type=int, default=15)
    ap.add_argument("--live", type=int, default=0, metavar="N", help="also live, with N connections (root)")
    ap.add_argument("--replay-step", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    metavar="ROWS,SNAPSHOTS", help="also time one replay step in such a recording")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    where = bs.ensure_netns(argv, __file__) if args.live else "scripted rows only"
    run = _results.Run("bench_top", args.json, argv)
    print(f"# {where}", flush=True)
    res: dict = {"scripted": [], "live": None, "where": where}
    print(f"{'rows':>8} {'model ms':>9} {'view ms':>8} {'view max':>9}   (CPU per refresh, median)")
    for n in args.sizes:
        r = asyncio.run(scripted(n, args.refreshes))
        res["scripted"].append(r)
        print(f"{n:>8,} {r['model_ms']:>9.1f} {r['view_ms']:>8.1f} {r['view_ms_max']:>9.1f}", flush=True)
    if args.live:
        r = live(args.live, args.refreshes)
        draw = [x["view_ms"] - x["model_ms"] for x in res["scripted"] if x["rows"] == 10000]
        if draw:
            r["overhead_1s_pct_of_core"] = (r["view_ms"] + draw[0]) / 10
        res["live"] = r
        print(f"live: {r['rows']:,} rows: a refresh {r['view_ms']:.1f} ms CPU, ss -tanp {r['ss_tanp_ms']:.1f} ms "
              f"(ratio {r['view_over_ss']:.2f}); at 1 s refresh {r['overhead_1s_pct_of_core']:.1f}% of a core")
    if args.replay_step:
        res["replay"] = replay_step(*args.replay_step)
        for r in res["replay"]:
            print(f"replay {r['mode']}: {r['snapshots']} snapshots of {r['rows']:,} rows: a step "
                  f"{r['step_ms']:.1f} ms CPU (max {r['step_ms_max']:.1f})")
    big = [r for r in res["scripted"] if r["rows"] >= 100000]
    res["target"] = {"view_100k_ms_max": 200, "met": all(r["view_ms"] < 200 for r in big) if big else None}
    if big:
        print(f"target: a refresh at 100k rows under 200 ms CPU: {'met' if res['target']['met'] else 'NOT met'}")
    run.write(res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
