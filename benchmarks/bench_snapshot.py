#!/usr/bin/env python3
"""Core capture benchmark: Snapshotter.take() against the floor.

Holds N loopback TCP connections (``--sizes``, default 1,000 / 10,000 / 50,000) and
times, interleaved in the same run:

  floor      benchmarks/floor.c: the same netlink dump as tcpsnap's backend, in C,
             only counting rows (timed inside the C program)
  take()     tcpsnap.Snapshotter().take(), warm
  psutil     psutil.net_connections("tcp")
  /proc      a plain Python /proc/net/tcp + /proc/net/tcp6 parser
  ss -tan    the ss command as a subprocess, output captured

The table then holds 2N rows (both ends of each connection) plus one listener per
helper process. As root, the script re-executes itself under ``unshare -n`` so that
the table is exactly what it made; otherwise it runs on the host and says so. In
that namespace it also gets a TCP hash table of its own, as large as the host's
(see ensure_netns), so that sockets other processes hold elsewhere on the machine
do not enter the timings (``--shared-ehash`` keeps the shared one).

    python3 benchmarks/bench_snapshot.py                  # all three sizes
    python3 benchmarks/bench_snapshot.py --sizes 1000 --rounds 10
    python3 benchmarks/bench_snapshot.py --sizes 100 --rounds 2 --fast-per-slot 2 --no-alloc   # a quick try

The results go to a JSON file (benchmarks/_results.py; ``--json PATH``): per size each
method's median, minimum and ratios, the paired take()/floor ratio, the targets and the
allocation check; ``--raw`` adds every sample.

Connections are held by helper processes (this script with ``--hold``), up to
``--per-helper`` connections (2 fds each) per process, because of the open-file
limit. Every socket has SO_LINGER 0, so tearing a size down leaves no TIME_WAIT rows
behind for the next one. Helpers exit when this script exits (their stdin closes),
and are ended by pid on the way out.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _results

HERE = Path(__file__).resolve().parent
NETNS_ENV = "TCPSNAP_BENCH_NETNS"
DEFAULT_SIZES = (1000, 10000, 50000)
# rounds per size, and floor/take() samples per slot (3 slots a round): fewer at the larger
# sizes, where every sample costs more, to keep the default run of all three sizes short
ROUNDS = {1000: 60, 10000: 40, 50000: 20}
FAST_PER_SLOT = {1000: 20, 10000: 8, 50000: 4}
LINGER0 = struct.pack("ii", 1, 0)


# --------------------------------------------------------------------------- helpers

def hold_main(n: int, host: str) -> None:
    """Helper process: hold n loopback connections to a listener on host."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, 0))
    lst.listen(4096)
    addr = lst.getsockname()
    held = []
    batch = 512
    done = 0
    while done < n:
        k = min(batch, n - done)
        clients = []
        for _ in range(k):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            c.connect(addr)       # loopback: the handshake completes in the call
            clients.append(c)
        for _ in range(k):
            s, _ = lst.accept()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            held.append(s)
        held.extend(clients)
        done += k
    sys.stdout.write(f"ready {done} {addr[0]}:{addr[1]}\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()       # until the parent closes our stdin (or dies)


class Connections:
    """N loopback connections held by ceil(N / per_helper) helper processes."""

    def __init__(self, n: int, per_helper: int = 8000):
        self.n = n
        self.helpers = max(1, math.ceil(n / per_helper))
        self.procs: list[subprocess.Popen] = []
        self.listeners: list[str] = []

    @property
    def rows(self) -> int:
        """Rows these connections add to the table: both ends + one listener each."""
        return 2 * self.n + self.helpers

    def __enter__(self) -> Connections:
        try:
            base, extra = divmod(self.n, self.helpers)
            for i in range(self.helpers):
                k = base + (1 if i < extra else 0)
                host = f"127.1.{i // 250}.{i % 250 + 1}"
                self.procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--hold", str(k), "--host", host],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            for p in self.procs:
                line = p.stdout.readline().decode().split()
                if not line or line[0] != "ready":
                    raise RuntimeError(f"helper {p.pid} failed to set up its connections")
                self.listeners.append(line[2])
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()            # by pid: only our own helpers
                p.wait()
            if p.stdout:
                p.stdout.close()
        self.procs = []

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- netns

EHASH_ENV = "TCPSNAP_BENCH_EHASH"


def _reexec(argv: list[str], script: str, stage: str, **extra: str) -> None:
    env = dict(os.environ, **{NETNS_ENV: stage}, **extra)
    sys.stdout.flush()
    os.execvpe("unshare", ["unshare", "-n", "--", sys.executable, script, *argv], env)


def run_and_report(name: str, argv: list[str], script: str, args: argparse.Namespace,
                   run: Callable[[argparse.Namespace], dict], markdown: Callable[[dict], str],
                   allow: bool = True) -> int:
    """What a benchmark's ``main`` does once its arguments are parsed: re-exec under
    ``unshare -n`` (``ensure_netns``), ``run(args)``, print where it ran and
    ``markdown(res)``, and write the JSON (``--json``). Returns the exit status, 0."""
    where = ensure_netns(argv, script, allow=allow)
    out = _results.Run(name, args.json, argv)
    res = run(args)
    res["where"] = where
    print(where)
    print(markdown(res))
    out.write(res)
    return 0


def ensure_netns(argv: list[str], script: str, allow: bool = True,
                 own_ehash: bool = True) -> str:
    """Re-exec under ``unshare -n`` if we can; return a one-line description.

    By default every network namespace shares the host's TCP established hash, and a
    dump walks all of it, skipping other namespaces' sockets: what other processes on
    the machine hold would then enter our timings. With ``own_ehash`` the script goes
    through two namespaces: in the first it sets net.ipv4.tcp_child_ehash_entries (a
    per-namespace sysctl, so the host's stays untouched) to the host's hash size, and
    the second, where it runs, gets a private hash of that same size.
    """
    stage = os.environ.get(NETNS_ENV)
    if stage == "outer":
        size = os.environ.get(EHASH_ENV, "")
        try:
            with open("/proc/sys/net/ipv4/tcp_child_ehash_entries", "w") as f:
                f.write(size)
            how = "own"
        except OSError:
            how = "shared"
        _reexec(argv, script, "1", **{EHASH_ENV: f"{how}:{size}"})
    if stage == "1":
        r = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
        if r.returncode != 0:
            # without lo, nothing works; say so rather than measure nothing
            sys.exit(f"ip link set lo up failed in the private namespace: {r.stderr.strip()}")
        how, _, size = os.environ.get(EHASH_ENV, "shared:").partition(":")
        try:
            mine = int(open("/proc/sys/net/ipv4/tcp_ehash_entries").read())
        except (OSError, ValueError):
            mine = 0
        if how == "own" and mine > 0:
            hash_note = (f"its own TCP hash of {mine} buckets, the host's size "
                         f"(net.ipv4.tcp_child_ehash_entries), so only our sockets are walked")
        else:
            hash_note = ("the host's shared TCP hash: dumps also walk (and skip) every other "
                         "namespace's sockets")
        return ("private network namespace (unshare -n), lo up: the table holds only our "
                f"sockets; {hash_note}")
    if not allow:
        return "HOST network namespace (--no-netns): the table includes the host's own sockets"
    why = ""
    if os.geteuid() != 0:
        why = "not root"
    elif not shutil.which("unshare") or not shutil.which("ip"):
        why = "unshare or ip not found"
    elif subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        why = "unshare -n failed"
    if why:
        return f"HOST network namespace ({why}): the table includes the host's own sockets"
    try:
        host_ehash = abs(int(open("/proc/sys/net/ipv4/tcp_ehash_entries").read()))
    except (OSError, ValueError):
        host_ehash = 0
    if own_ehash and host_ehash:
        _reexec(argv, script, "outer", **{EHASH_ENV: str(host_ehash)})
    _reexec(argv, script, "1")
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- methods

class Floor:
    """benchmarks/floor.c compiled with gcc -O2 into a temp dir, run in serve mode;
    ``info``: its dumps ask for INET_DIAG_INFO and INET_DIAG_CONG (FLOOR_INFO=1)."""

    def __init__(self, info: bool = False):
        self.dir = tempfile.mkdtemp(prefix="tcpsnap-floor-")
        self.exe = os.path.join(self.dir, "floor")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", self.exe, str(HERE / "floor.c")], check=True)
        self.proc = subprocess.Popen([self.exe, "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=dict(os.environ, FLOOR_INFO="1" if info else "0"))
        atexit.register(self.close)

    def dumps(self, k: int) -> list[tuple[int, int, int]]:
        """k timed dumps: [(ns, rows, dump_intr)]."""
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        out = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("floor exited")
            if line.strip() == ".":
                return out
            ns, rows, intr = line.split()
            out.append((int(ns), int(rows), int(intr)))

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


_TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV",
}


def _proc_addr(h: str, family: int) -> str:
    b = bytes.fromhex(h)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, b[::-1])
    # four 32-bit words, each in host (little-endian) order
    return socket.inet_ntop(family, b"".join(b[i:i + 4][::-1] for i in range(0, 16, 4)))


def proc_net_tcp() -> list[tuple]:
    """What a user would write: read /proc/net/tcp{,6}, split, decode hex fields."""
    rows = []
    for path, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines[1:]:
            fields = line.split()
            laddr, lport = fields[1].split(":")
            raddr, rport = fields[2].split(":")
            rows.append((family, _proc_addr(laddr, family), int(lport, 16),
                         _proc_addr(raddr, family), int(rport, 16),
                         _TCP_STATES.get(int(fields[3], 16), "UNKNOWN")))
    return rows


def ss_tan() -> int:
    out = subprocess.run(["ss", "-tan"], capture_output=True, check=True).stdout
    return out.count(b"\n") - 1       # minus the header line


# --------------------------------------------------------------------------- timing

METHODS = ("floor", "take()", "psutil", "/proc parser", "ss -tan")


def run_size(n: int, rounds: int, per_slot: int, per_helper: int, floor: Floor, snap,
             psutil, baseline: int, log) -> dict:
    samples = {m: [] for m in METHODS}
    counts = {m: set() for m in METHODS}
    pairs = []                 # take_ns / floor_ns, i-th of adjacent blocks
    intr = 0

    flip = [False]

    def fast(k: int) -> None:
        """k floor dumps back to back (one request to the floor process) and k take()
        calls back to back, the two blocks in alternating order, so that each block
        starts just as cold (after a context switch or a slow method) as the other."""
        nonlocal intr
        tk = []

        def takes() -> None:
            for _ in range(k):
                t0 = time.perf_counter_ns()
                r = snap.take()
                t1 = time.perf_counter_ns()
                tk.append(t1 - t0)
                counts["take()"].add(len(r))

        flip[0] = not flip[0]
        if flip[0]:
            takes()
        fl = floor.dumps(k)
        if not flip[0]:
            takes()
        for (ns, rows, di), t in zip(fl, tk, strict=True):
            samples["floor"].append(ns)
            counts["floor"].add(rows)
            intr += di
            samples["take()"].append(t)
            pairs.append(t / ns)

    def slow(name: str) -> None:
        if name == "psutil":
            t0 = time.perf_counter_ns()
            r = psutil.net_connections("tcp")
            t1 = time.perf_counter_ns()
            c = len(r)
        elif name == "/proc parser":
            t0 = time.perf_counter_ns()
            r = proc_net_tcp()
            t1 = time.perf_counter_ns()
            c = len(r)
        else:
            t0 = time.perf_counter_ns()
            c = ss_tan()
            t1 = time.perf_counter_ns()
        r = None
        samples[name].append(t1 - t0)
        counts[name].add(c)

    slow_names = ["psutil", "/proc parser", "ss -tan"]
    t_setup = time.monotonic()
    with Connections(n, per_helper) as conns:
        setup_s = time.monotonic() - t_setup
        expected = baseline + conns.rows
        log(f"  {n} connections held by {conns.helpers} helper(s) "
            f"(listeners {', '.join(conns.listeners)}), set up in {setup_s:.1f} s; "
            f"expected rows {expected}")
        # warm-up: every method once, fast ones a few times
        for _ in range(5):
            snap.take()
        floor.dumps(3)
        for name in slow_names:
            slow(name)
        for m in METHODS:
            samples[m].clear()
            counts[m].clear()
        pairs.clear()
        t_run = time.monotonic()
        for rnd in range(rounds):
            order = slow_names[rnd % 3:] + slow_names[:rnd % 3]
            for name in order:
                fast(per_slot)
                slow(name)
        run_s = time.monotonic() - t_run
        load = os.getloadavg()
    # wait for the RSTs to empty the table before the next size
    deadline = time.monotonic() + 30
    left = len(snap.take())
    while left > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        left = len(snap.take())
    return {
        "n": n, "helpers": conns.helpers, "expected_rows": expected, "setup_s": setup_s,
        "run_s": run_s, "rounds": rounds, "loadavg": load, "dump_intr": intr,
        "rows_seen": {m: sorted(c) for m, c in counts.items()},
        "samples_ns": samples, "take_over_floor_pairs": pairs, "left_after": left,
    }


def summarize(res: dict) -> list[dict]:
    med = {m: statistics.median(s) for m, s in res["samples_ns"].items()}
    out = []
    for m in METHODS:
        s = res["samples_ns"][m]
        out.append({
            "method": m, "samples": len(s), "rows": res["rows_seen"][m],
            "rows_ok": res["rows_seen"][m] == [res["expected_rows"]],
            "median_ms": med[m] / 1e6, "min_ms": min(s) / 1e6,
            "vs_floor": med[m] / med["floor"], "vs_take": med[m] / med["take()"],
        })
    return out


def size_summary(res: dict, raw: bool) -> dict:
    """What the results file keeps of one size: the numbers markdown() prints."""
    p = res["take_over_floor_pairs"]
    q = statistics.quantiles(p, n=4)
    out = {k: res[k] for k in ("n", "helpers", "expected_rows", "setup_s", "run_s", "rounds",
                               "loadavg", "dump_intr", "left_after")}
    out["methods"] = summarize(res)
    out["take_over_floor_paired"] = {"median": statistics.median(p), "q1": q[0], "q3": q[2],
                                     "pairs": len(p)}
    if raw:
        out["samples_ns"] = res["samples_ns"]
        out["take_over_floor_pairs"] = p
    return out


def fmt_rows(rows: list[int], expected: int) -> str:
    if rows == [expected]:
        return f"{expected} ok"
    return f"{','.join(map(str, rows))} (expected {expected})"


def markdown(results: list[dict]) -> str:
    lines = []
    for res in results:
        n = res["n"]
        lines.append(f"### {n:,} connections ({res['expected_rows']:,} rows expected: "
                     f"2 x {n:,} + {res['helpers']} listener{'s' if res['helpers'] > 1 else ''})")
        lines.append("")
        lines.append("| method | rows seen | samples | median ms | min ms | x floor | x take() |")
        lines.append("|---|---|---:|---:|---:|---:|---:|")
        for r in summarize(res):
            lines.append(f"| {r['method']} | {fmt_rows(r['rows'], res['expected_rows'])} | "
                         f"{r['samples']} | {r['median_ms']:.3f} | {r['min_ms']:.3f} | "
                         f"{r['vs_floor']:.2f} | {r['vs_take']:.2f} |")
        p = sorted(res["take_over_floor_pairs"])
        q = statistics.quantiles(p, n=4)
        lines.append("")
        lines.append("take()/floor over matched samples (i-th of a take() block / i-th of "
                     f"the adjacent floor block): median {statistics.median(p):.3f}, "
                     f"quartiles {q[0]:.3f}-{q[2]:.3f} ({len(p)} pairs). "
                     f"Setup {res['setup_s']:.1f} s, timed run {res['run_s']:.1f} s, "
                     f"load average after {res['loadavg'][0]:.2f}, "
                     f"NLM_F_DUMP_INTR seen by the floor {res['dump_intr']} times.")
        lines.append("")
    return "\n".join(lines)


def targets(results: list[dict], alloc: dict | None, checks: list[dict] | None = None) -> str:
    """The targets as markdown; each one also appended to ``checks`` as a dict."""
    checks = [] if checks is None else checks
    lines = ["### Targets", ""]
    for res in results:
        s = {r["method"]: r for r in summarize(res)}
        ratio = s["take()"]["vs_floor"]
        pr = statistics.median(res["take_over_floor_pairs"])
        checks.append({"target": f"take() <= 1.15x floor at {res['n']}", "value": ratio, "met": ratio <= 1.15})
        ok = "MET" if ratio <= 1.15 else "NOT MET"
        lines.append(f"- take() <= 1.15x floor at {res['n']:,}: **{ok}** "
                     f"(medians {s['take()']['median_ms']:.3f} / {s['floor']['median_ms']:.3f} ms "
                     f"= {ratio:.3f}x; paired median {pr:.3f}x)")
    for res in results:
        if res["n"] == 10000:
            s = {r["method"]: r for r in summarize(res)}
            speed = s["psutil"]["vs_take"]
            checks.append({"target": "take() >= 15x faster than psutil at 10000", "value": speed,
                           "met": speed >= 15})
            ok = "MET" if speed >= 15 else "NOT MET"
            lines.append(f"- take() >= 15x faster than psutil.net_connections('tcp') at 10,000: "
                         f"**{ok}** ({s['psutil']['median_ms']:.1f} / "
                         f"{s['take()']['median_ms']:.3f} ms = {speed:.1f}x)")
    if alloc is not None:
        checks.append({"target": f"zero growth over {alloc['calls']} warm take() calls at {alloc['n']}",
                       "value": alloc["zero_growth"], "met": alloc["zero_growth"]})
        ok = "MET" if alloc["zero_growth"] else "NOT MET"
        lines.append(f"- zero growth over {alloc['calls']:,} warm take() calls at "
                     f"{alloc['n']:,} connections: **{ok}** (tracemalloc diff "
                     f"{alloc['tm_size_diff']:+d} B in {alloc['tm_count_diff']:+d} blocks; "
                     f"RSS {alloc['rss_diff_kib']:+d} KiB; allocated blocks "
                     f"{alloc['blocks_diff']:+d})")
    return "\n".join(lines)


def machine() -> str:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import psutil

    import tcpsnap
    return (f"nproc {os.cpu_count()} ({cpu}), kernel {platform.release()}, "
            f"Python {platform.python_version()}, numpy {numpy.__version__}, "
            f"psutil {psutil.__version__}, tcpsnap {getattr(tcpsnap, '__version__', '?')}, "
            f"{subprocess.run(['ss', '-V'], capture_output=True, text=True).stdout.strip()}")


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                    help="comma-separated connection counts (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="round-robin rounds per size (default: 60 / 40 / 20 for 1k / 10k / 50k)")
    ap.add_argument("--fast-per-slot", type=int, default=None,
                    help="floor and take() samples before each slow method (default: 20 / 8 / 4)")
    ap.add_argument("--per-helper", type=int, default=8000,
                    help="connections per helper process (2 fds each; default %(default)s)")
    ap.add_argument("--no-netns", action="store_true", help="run on the host network namespace")
    ap.add_argument("--shared-ehash", action="store_true",
                    help="in the private namespace, keep the host's shared TCP hash table")
    ap.add_argument("--no-alloc", action="store_true", help="skip the allocation check")
    ap.add_argument("--alloc-calls", type=int, default=10000)
    _results.add_json_argument(ap)
    ap.add_argument("--raw", action="store_true", help="the results file also holds every sample")
    ap.add_argument("--hold", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.hold is not None:
        hold_main(args.hold, args.host)
        return 0

    where = ensure_netns(argv, __file__, allow=not args.no_netns, own_ehash=not args.shared_ehash)
    run = _results.Run("bench_snapshot", args.json, argv)
    # Ctrl-C and SIGTERM unwind through the finally/with blocks that end our helpers
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.per_helper * 2 + 64 > resource.getrlimit(resource.RLIMIT_NOFILE)[1]:
        sys.exit(f"--per-helper {args.per_helper} needs more fds than the hard limit")

    import psutil

    import bench_alloc
    import tcpsnap

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"tcpsnap core capture benchmark: {where}")
    log(f"machine: {machine()}")
    log(f"command: python3 benchmarks/bench_snapshot.py {' '.join(argv)}".rstrip())
    t_all = time.monotonic()
    floor = Floor()
    results = []
    alloc = None
    with contextlib.closing(floor), tcpsnap.Snapshotter() as snap:
        baseline = len(snap.take())
        log(f"rows before any connection: {baseline}")
        for n in sizes:
            rounds = args.rounds or ROUNDS.get(n, 15)
            per_slot = args.fast_per_slot or FAST_PER_SLOT.get(n, 5)
            log(f"size {n}: {rounds} rounds x (3 slow methods + {3 * per_slot} floor/take pairs)")
            res = run_size(n, rounds, per_slot, args.per_helper, floor, snap, psutil,
                           baseline, log)
            results.append(res)
            log(markdown([res]))
            if res["left_after"] != baseline:
                log(f"  WARNING: {res['left_after']} rows left after teardown (baseline {baseline})")
        if not args.no_alloc:
            n_alloc = 1000
            log(f"allocation check: {args.alloc_calls} warm take() calls at {n_alloc} connections")
            with Connections(n_alloc, args.per_helper):
                alloc = bench_alloc.check(n_alloc, args.alloc_calls, log)
    log("")
    checks: list[dict] = []
    log(targets(results, alloc, checks))
    log(f"\ntotal wall time {time.monotonic() - t_all:.0f} s")
    run.write({"where": where, "baseline_rows": baseline,
               "sizes": [size_summary(r, args.raw) for r in results],
               "targets": checks, "alloc": alloc})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
