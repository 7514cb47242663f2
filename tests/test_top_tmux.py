"""``tcpsnap top`` in a real terminal (tmux, its own server on a private ``-L`` socket)
over a private network namespace with churn: green (opened) and red (closed) rows are seen
in ``capture-pane -e``, and once the churn stops the rows shown are those ``ss`` lists."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from _sockets import kill_pidfd, pidfd

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.netns

_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _xterm(n):
    """An xterm-256 colour index as RGB."""
    base = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
            (192, 192, 192), (128, 128, 128), (255, 0, 0), (0, 255, 0), (255, 255, 0), (0, 0, 255),
            (255, 0, 255), (0, 255, 255), (255, 255, 255)]
    if n < 16:
        return base[n]
    if n < 232:
        n -= 16
        lv = [0, 95, 135, 175, 215, 255]
        return lv[n // 36], lv[n // 6 % 6], lv[n % 6]
    g = 8 + (n - 232) * 10
    return g, g, g


def _bg_of(params, bg):
    p = [int(x) if x else 0 for x in params.split(";")] if params else [0]
    i = 0
    while i < len(p):
        c = p[i]
        if c in (0, 49):
            bg = None
        elif 40 <= c <= 47:
            bg = _xterm(c - 40)
        elif 100 <= c <= 107:
            bg = _xterm(c - 92)
        elif c == 48 and i + 2 < len(p) and p[i + 1] == 5:
            bg, i = _xterm(p[i + 2]), i + 2
        elif c == 48 and i + 4 < len(p) and p[i + 1] == 2:
            bg, i = tuple(p[i + 2:i + 5]), i + 4
        i += 1
    return bg


def marked_lines(capture):
    """(mark character, background RGB or None) of every line of a ``capture-pane -e``."""
    out = []
    bg = None
    for line in capture.split("\n"):
        text, first_bg, pos = "", None, 0
        for m in _SGR.finditer(line):
            chunk = line[pos:m.start()]
            if chunk and not text:
                first_bg = bg
            text += chunk
            bg = _bg_of(m.group(1), bg)
            pos = m.end()
        chunk = line[pos:]
        if chunk and not text:
            first_bg = bg
        text += chunk
        if text[:1] in "+-~" and text[1:2] == " " and " TCP" in text[:8]:
            out.append((text[0], first_bg, text))
    return out


def _colour(rgb):
    if rgb is None:
        return None
    r, g, b = rgb
    if g > r + 60 and g > b + 60:
        return "green"
    if r > g + 60 and r > b + 60:
        return "red"
    if r > b + 60 and g > b + 60:
        return "yellow"
    return None


def _rows(capture_text):
    """(local, remote, state) of each row of the view shown without a mark."""
    out = set()
    for line in capture_text.split("\n"):
        f = line.split()
        if len(f) >= 4 and f[0] in ("TCP", "TCP6"):
            out.add((f[1], f[2], f[3]))
    return out


@pytest.mark.parametrize("no_color", [False, True], ids=["colours", "NO_COLOR"])
def test_live_colours_in_tmux_and_rows_as_ss_lists(tmp_path, no_color):
    """Green and red rows seen; under NO_COLOR no colour at all, the marks + and - instead."""
    if shutil.which("tmux") is None or shutil.which("ss") is None or shutil.which("nsenter") is None:
        pytest.skip("needs tmux, ss and nsenter")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a network namespace here (unshare -n: root needed)")
    sock = f"tcpsnap-top-{os.getpid()}-{no_color}"
    pidfile = tmp_path / "churn.pid"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    py = sys.executable
    inner = (f"ip link set lo up; {py} {HERE / '_top_churn.py'} 14 {pidfile} & "
             f"exec {py} -m tcpsnap.cli top --interval 0.25")
    env = dict(os.environ, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "45", "unshare", "-n", "sh", "-c", inner],
                   check=True, env=env)
    server = pidfd(int(subprocess.run([*tmux, "display", "-p", "#{pid}"], capture_output=True, text=True,
                                      check=True).stdout))
    churn = None
    try:
        pane = int(subprocess.run([*tmux, "display", "-p", "#{pane_pid}"], capture_output=True, text=True,
                                  check=True).stdout)
        seen = set()
        deadline = time.monotonic() + 20
        want_seen = {"+", "-"} if no_color else {"green", "red"}
        while time.monotonic() < deadline and not want_seen <= seen:
            cap = subprocess.run([*tmux, "capture-pane", "-p", "-e"], capture_output=True, text=True).stdout
            for mark, bg, _ in marked_lines(cap):
                c = _colour(bg)
                if no_color:
                    assert c is None, (mark, bg)
                    seen.add(mark)
                else:
                    assert c == {"+": "green", "-": "red", "~": "yellow"}[mark], (mark, bg)
                    seen.add(c)
            time.sleep(0.1)
        assert want_seen <= seen, seen
        if pidfile.exists() and pidfile.read_text() and not Path(f"{pidfile}.done").exists():
            churn = pidfd(int(pidfile.read_text()))      # while it surely runs
        # the churn stops after 14 connections (it says so: 4.2 s, or more on a loaded
        # machine): then, within a few refreshes, the view and ss agree
        done = Path(f"{pidfile}.done")
        deadline = time.monotonic() + 120             # hang detectors, not timings
        while not done.exists():
            assert time.monotonic() < deadline, "the churn never finished"
            time.sleep(0.1)
        for _ in range(200):
            cap = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True).stdout
            ss = subprocess.run(["nsenter", "-t", str(pane), "-n", "ss", "-tanH"], capture_output=True,
                                text=True, check=True).stdout
            want = {(f[3], f[4], f[0]) for f in (x.split() for x in ss.splitlines()) if f}
            if "~ TCP" not in cap and "+ TCP" not in cap and "- TCP" not in cap and _rows(cap) == want:
                break
            time.sleep(0.3)
        assert _rows(cap) == want
        assert ("127.0.0.1:7000", "0.0.0.0:*", "LISTEN") in want and len(want) >= 9
        subprocess.run([*tmux, "send-keys", "q"], check=True)
        for _ in range(50):                       # q: top exits, the pane and the session with it
            if subprocess.run([*tmux, "has-session"], capture_output=True).returncode != 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("top did not quit on q")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        kill_pidfd(server)
        kill_pidfd(churn)


@pytest.mark.parametrize("how", ["q", "SIGINT", "SIGHUP", "SIGTERM"])
def test_quits_cleanly_and_restores_the_terminal(tmp_path, how):
    """q, or a signal to top: it exits 0 and the terminal is as before (canonical mode,
    echo, the main screen)."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    sock = f"tcpsnap-top-q-{os.getpid()}-{how}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    pf = tmp_path / "top.pid"
    inner = (f"sh -c 'echo $$ > {pf}; exec {sys.executable} -m tcpsnap.cli top --no-pids --interval 0.5'; "
             f"echo RESTORED $?; stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo; sleep 60")
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30", "sh", "-c", inner], check=True,
                   env=dict(os.environ, TERM="xterm-256color"))
    server = pidfd(int(subprocess.run([*tmux, "display", "-p", "#{pid}"], capture_output=True, text=True,
                                      check=True).stdout))
    try:
        for _ in range(100):                              # the view is up
            cap = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True).stdout
            if "LIVE" in cap and "Local Address" in cap:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"top did not start: {cap!r}")
        if how == "q":
            subprocess.run([*tmux, "send-keys", "q"], check=True)
        else:
            os.kill(int(pf.read_text()), getattr(signal, how))
        for _ in range(100):
            cap = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True).stdout
            if "RESTORED" in cap and "echo" in cap:
                break
            time.sleep(0.1)
        lines = [x for x in cap.split("\n") if x.strip()]
        # the main screen again (the view's lines gone), the exit status, the tty's modes back
        assert lines == ["RESTORED 0", "icanon", "echo"], cap
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        kill_pidfd(server)
