"""tcpsnap top: the view over scripted snapshots (headless, Textual's Pilot), a replay of a
recording with known changes, the 80x24 layout against a stored capture."""

import asyncio
import functools
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("textual")

from _changes_util import row  # noqa: E402
from _recordings import NAMES  # noqa: E402
from tcpsnap import ROW_DTYPE  # noqa: E402
from tcpsnap import TcpState as S  # noqa: E402
from tcpsnap.top.app import TopApp  # noqa: E402
from tcpsnap.top.model import MARK_CHANGED, MARK_CLOSED, MARK_NEW, MARK_NONE, Frame  # noqa: E402

EXPECTED = Path(__file__).resolve().parent / "fixtures" / "top_80x24.txt"

LISTEN = row(S.LISTEN, "0.0.0.0", 22, "0.0.0.0", 0, 1, pid=100)
SSH = row(S.ESTABLISHED, "10.0.0.1", 22, "10.0.0.2", 50000, 2, pid=101)
SSH_Q = row(S.ESTABLISHED, "10.0.0.1", 22, "10.0.0.2", 50000, 2, pid=101, rxq=5)
WEB = row(S.ESTABLISHED, "::1", 8080, "::1", 40000, 3, pid=200, family=6)
CURL = row(S.SYN_SENT, "10.0.0.1", 40001, "93.184.216.34", 443, 4, pid=300)


def tables():
    t = [[LISTEN, SSH, WEB], [LISTEN, SSH_Q, WEB, CURL], [LISTEN, SSH_Q, CURL], [LISTEN, SSH_Q, CURL]]
    return [np.array(x, ROW_DTYPE) for x in t]


class Scripted:
    """A live source the test drives: ``send(rows)`` delivers a frame."""

    recording = None
    error = None

    def start(self, deliver):
        self.deliver = deliver

    def stop(self):
        self.stopped = True

    def send(self, rows):
        self.deliver(Frame.of(rows, NAMES, wall_ns=1_795_000_000 * 10**9, capture_ns=1_500_000))


def sync(f):
    """An async test run to its end on its own event loop (no pytest plugin needed)."""
    @functools.wraps(f)
    def run(*a, **kw):
        return asyncio.run(f(*a, **kw))
    return run


def shown(app):
    """(cookie, mark) of each line, in display order."""
    m = app.model
    return [(int(m.rows["cookie"][m.order[i]]), m.mark(i)) for i in range(m.nrows)]


async def _settle(pilot, app, n):
    for _ in range(50):
        await pilot.pause()
        if app.refreshes >= n:
            return
    raise AssertionError(f"{app.refreshes} refreshes, not {n}")


@sync
async def test_marks_last_one_refresh():
    src = Scripted()
    app = TopApp(src)
    async with app.run_test(size=(100, 30)) as pilot:
        t = tables()
        src.send(t[0])
        await _settle(pilot, app, 1)
        # the first table: nothing is new (it was there before the view)
        assert shown(app) == [(1, MARK_NONE), (2, MARK_NONE), (3, MARK_NONE)]
        src.send(t[1])
        await _settle(pilot, app, 2)
        # sorted by local address; curl is new (after the others: stable order), ssh's queue changed
        assert shown(app) == [(1, MARK_NONE), (2, MARK_CHANGED), (3, MARK_NONE), (4, MARK_NEW)]
        src.send(t[2])
        await _settle(pilot, app, 3)
        assert shown(app) == [(1, MARK_NONE), (2, MARK_NONE), (3, MARK_CLOSED), (4, MARK_NONE)]
        src.send(t[3])
        await _settle(pilot, app, 4)
        assert shown(app) == [(1, MARK_NONE), (2, MARK_NONE), (4, MARK_NONE)]
        assert app.model.state_counts() == {"LISTEN": 1, "ESTAB": 1, "SYN-SENT": 1}
        await pilot.press("q")
    assert src.stopped


@sync
async def test_stable_sort_keeps_places():
    src = Scripted()
    app = TopApp(src)
    async with app.run_test(size=(100, 30)) as pilot:
        a = row(S.ESTABLISHED, "10.0.0.1", 5000, "10.0.0.9", 80, 10, rxq=1)
        b = row(S.ESTABLISHED, "10.0.0.1", 5001, "10.0.0.9", 80, 11, rxq=2)
        src.send(np.array([a, b], ROW_DTYPE))
        await _settle(pilot, app, 1)
        app.model.set_sort("recvq", reverse=True)          # b (2) then a (1)
        assert [c for c, _ in shown(app)] == [11, 10]
        a2 = a.copy()
        a2["rx_queue"] = 9
        c = row(S.ESTABLISHED, "10.0.0.1", 5002, "10.0.0.9", 80, 12, rxq=50)
        src.send(np.array([a2, b, c], ROW_DTYPE))
        await _settle(pilot, app, 2)
        # stable: a stays below b though its queue is now larger; c (new) comes last
        assert shown(app) == [(11, MARK_NONE), (10, MARK_CHANGED), (12, MARK_NEW)]
        await pilot.press("o")                            # stable off: sorted now and every refresh
        assert [c for c, _ in shown(app)] == [12, 10, 11]
        await pilot.press("o")
        src.send(np.array([a, b, c], ROW_DTYPE))
        await _settle(pilot, app, 3)
        assert [c for c, _ in shown(app)] == [12, 10, 11]


@sync
async def test_filter_bar_and_pause():
    src = Scripted()
    app = TopApp(src)
    async with app.run_test(size=(100, 30)) as pilot:
        t = tables()
        src.send(t[1])
        await _settle(pilot, app, 1)
        await pilot.press("slash")
        for ch in "sport = :22":
            await pilot.press("space" if ch == " " else "colon" if ch == ":" else "equals_sign" if ch == "=" else ch)
        await pilot.press("enter")
        assert [c for c, _ in shown(app)] == [1, 2]
        assert app.filter_text == "sport = :22"
        # a filter that does not parse: said, and the filter kept
        app.query_one("#filter").value = "sport = :nope"
        await pilot.press("slash")
        app.query_one("#filter").value = "sport = :nope"
        await pilot.press("enter")
        assert app.filter_text == "sport = :22"
        await pilot.press("escape")
        await pilot.press("space")                         # pause: frames are not shown
        assert app.paused
        src.send(t[3])
        for _ in range(5):
            await pilot.pause()
        assert app.refreshes == 1
        await pilot.press("space")
        src.send(t[3])
        await _settle(pilot, app, 2)
        assert shown(app) == [(1, MARK_NONE), (2, MARK_NONE)]


@sync
async def test_group_by_process():
    src = Scripted()
    app = TopApp(src)
    async with app.run_test(size=(100, 30)) as pilot:
        t = tables()
        src.send(t[0])
        await _settle(pilot, app, 1)
        src.send(t[1])
        await _settle(pilot, app, 2)
        await pilot.press("g")
        m = app.model
        got = sorted((m.cells(i)[0], m.cells(i)[1], m.cells(i)[2], m.mark(i)) for i in range(m.nrows))
        assert got == [("100", "sshd", "1", MARK_NONE), ("101", "sshd", "1", MARK_CHANGED),
                       ("200", "python3", "1", MARK_NONE), ("300", "curl", "1", MARK_NEW)]
