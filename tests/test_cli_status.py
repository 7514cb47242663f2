"""``tcpsnap record``'s status line in a real terminal emulator (tmux, on a private
server socket this test starts and kills): at 80 and 200 columns it is one line that
fits (no wrapped line left behind by the redraws), its byte counter grows as the journal
does, and it never names the file in progress (which does not exist under its name
yet); piped, ``record`` says one start line and one summary line."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tcpsnap._cmd_record import fit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("tmux") is None,
                                reason="needs tmux and Linux capture")


class Tmux:
    """One tmux server of our own (its own -L socket), one pane of ``width`` columns."""

    def __init__(self, width):
        self.sock = f"tcpsnap-test-{os.getpid()}-{width}"
        self.width = width

    def run(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args], capture_output=True,
                              text=True, timeout=30, check=check)

    def start(self, command):
        self.run("new-session", "-d", "-x", str(self.width), "-y", "24", command)

    def rows(self):
        """The pane's lines from the start of its history, wrapped ones joined (-J): on a
        loaded machine the recorder's warnings (overruns, writer behind) scroll the start
        line out of the 24 visible rows, and a long one wraps at 80 columns."""
        return self.run("capture-pane", "-p", "-J", "-S", "-").stdout.rstrip("\n").split("\n")

    def kill(self):
        self.run("kill-server", check=False)


def status_rows(rows):
    return [r for r in rows if "rows/s" in r]


BYTES = re.compile(r"  ([0-9.]+) (B|KiB|MiB)  ")


def nbytes(row):
    m = BYTES.search(row)
    return float(m.group(1)) * {"B": 1, "KiB": 1024, "MiB": 1 << 20}[m.group(2)] if m else None


@pytest.mark.parametrize("width", [80, 200])
def test_status_line_fits_and_counts_the_journal(tmp_path, width):
    rec = tmp_path / "rec"
    cmd = (f"{sys.executable} -m tcpsnap record {rec} --interval 50ms --flush 0.2s --no-pids --duration 20s; "
           f"sleep 60")
    t = Tmux(width)
    try:
        t.start(cmd)
        seen = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(seen) < 6:
            time.sleep(0.7)
            rows = t.rows()
            st = status_rows(rows)
            if not st or nbytes(st[0]) is None:
                continue
            # one status row, whatever the redraws before: nothing wrapped, nothing left behind
            assert len(st) == 1, rows
            assert len(st[0].rstrip()) <= width - 1, st[0]
            assert ".parquet" not in st[0] and "date=" not in st[0], st[0]
            seen.append((st[0], nbytes(st[0])))
        assert len(seen) >= 4, t.rows()
        sizes = [b for _, b in seen]
        # the open file's bytes count its journal: never "4 B" for a file, and growing between
        # row groups (a row group written replaces a longer journal: the total may then fall,
        # as it did once in 12 runs, 507 -> 333 KiB)
        assert all(b >= 1024 for b in sizes) and any(b > a for a, b in zip(sizes, sizes[1:])), seen
        # every other line (wrapped ones joined): a log line (the start line among them),
        # never a piece of an earlier status line
        start = f"tcpsnap: recording the TCP table every 50ms for 20s into {rec} (full mode); stop with Ctrl-C or SIGTERM"
        others = [r.rstrip() for r in t.rows() if r.strip() and "rows/s" not in r]
        assert start in others, others
        for r in others:
            assert r.startswith("tcpsnap: "), others
        if width == 200:
            assert "…" not in seen[-1][0] and seen[-1][0].rstrip().endswith("0 files + 1 open"), seen[-1][0]
        else:
            assert seen[-1][0].rstrip().endswith("…") or len(seen[-1][0].rstrip()) <= 79
    finally:
        t.kill()


def test_fit():
    assert fit("x" * 79, 80) == "x" * 79
    assert fit("x" * 100, 80) == "x" * 78 + "…"
    assert len(fit("x" * 100, 80)) == 79


def test_piped_one_start_and_one_summary_line(tmp_path):
    rec = tmp_path / "rec"
    p = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(rec), "--interval", "50ms", "--duration",
                        "1s", "--no-pids"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout == "", p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ": warning: overrun:" not in ln]   # a busy machine
    assert len(lines) == 2, p.stderr
    assert lines[0] == (f"tcpsnap: recording the TCP table every 50ms for 1s into {rec} (full mode); "
                        "stop with Ctrl-C or SIGTERM")
    assert re.fullmatch(rf"tcpsnap: recorded [\d,]+ snapshots \([\d,]+ rows?, [0-9.]+ KiB\) into 1 file in "
                        rf"{re.escape(str(rec))} in \d+\.\d s; \d+ overruns?", lines[1]), lines[1]   # how long: a loaded machine's
    q = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(rec), "--interval", "50ms", "--duration",
                        "0.3s", "--no-pids", "-q"], capture_output=True, text=True, timeout=120)
    assert q.returncode == 0 and q.stderr == "" and q.stdout == ""
