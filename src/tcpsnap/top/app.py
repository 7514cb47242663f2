"""The terminal view of ``tcpsnap top`` (Textual). The table is a virtual one: a
``ScrollView`` that draws only the lines on screen (``render_line``) from the model's numpy
rows, since Textual's ``DataTable`` took 11-14 s per refresh at 10k rows (issue 17)."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from ..filters import parse_filter
from .model import COLUMNS, MARK_CHANGED, MARK_CLOSED, MARK_NEW, Frame, TopModel

__all__ = ["TopApp"]

# as RGB: Textual maps the 16 named ANSI colours through its theme (its "yellow" is orange)
_MARK_STYLES = {MARK_NEW: Style(color="#000000", bgcolor="#00af00"),
                MARK_CHANGED: Style(color="#000000", bgcolor="#d7d700"),
                MARK_CLOSED: Style(color="#ffffff", bgcolor="#d70000")}
_HEAD_STYLE = Style(bold=True, reverse=True)
_SORT_KEYS = [c[0] for c in COLUMNS]


class TableView(ScrollView, can_focus=True):
    """The rows of a :class:`TopModel`, its column titles on the first line (kept when
    scrolling down, scrolled sideways with the rows)."""

    def __init__(self, model: TopModel, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = model

    def changed(self) -> None:
        self.virtual_size = Size(self.model.width, self.model.nrows + 1)
        self.refresh()

    # replay: left/right step through the snapshots (the rows fit; sideways is for live)
    def action_scroll_right(self) -> None:
        if getattr(self.app, "replay", False):
            self.app.action_step(1)    # type: ignore[attr-defined]
        else:
            super().action_scroll_right()

    def action_scroll_left(self) -> None:
        if getattr(self.app, "replay", False):
            self.app.action_step(-1)   # type: ignore[attr-defined]
        else:
            super().action_scroll_left()

    def action_scroll_home(self) -> None:
        if getattr(self.app, "replay", False):
            self.app.action_jump(0)    # type: ignore[attr-defined]
        else:
            super().action_scroll_home()

    def action_scroll_end(self) -> None:
        if getattr(self.app, "replay", False):
            self.app.action_jump(-1)   # type: ignore[attr-defined]
        else:
            super().action_scroll_end()

    def render_line(self, y: int) -> Strip:
        m = self.model
        sx, sy = self.scroll_offset
        w = self.size.width
        if y == 0:
            text, style = m.header(), _HEAD_STYLE
        else:
            i = sy + y - 1
            if i >= m.nrows:
                return Strip.blank(w, Style())    # a style: NO_COLOR's filter needs one
            text = m.line(i)
            style = _MARK_STYLES.get(m.mark(i), Style())
        text = text.ljust(max(m.width, sx + w))
        return Strip([Segment(text, style)]).crop(sx, sx + w)


class FrameReady(Message):
    """A new frame from the capture thread (None: the thread stopped on an error)."""

    def __init__(self, frame: Frame | None) -> None:
        super().__init__()
        self.frame = frame


class TopApp(App):
    """``tcpsnap top``. ``source``: a ``LiveSource`` (started here, stopped on exit) or a
    ``ReplaySource`` (``at``: the index of the snapshot shown first)."""

    CSS = """
    #head { height: 2; }
    #table { height: 1fr; }
    #keys { height: 1; }
    #filter { height: 1; border: none; padding: 0; display: none; }
    #filter.shown { display: block; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"), Binding("ctrl+c", "quit", show=False),
        Binding("space", "pause", "pause"), Binding("p", "pause", show=False),
        Binding("slash", "filter", "filter"), Binding("f", "filter", show=False),
        Binding("s", "sort_next", "sort"), Binding("r", "reverse", "reverse"),
        Binding("o", "stable", "stable"), Binding("g", "group", "group"),
        Binding("right,n", "step(1)", "next"), Binding("left,b", "step(-1)", "prev"),
        Binding("home", "jump(0)", show=False), Binding("end", "jump(-1)", show=False),
        Binding("t", "goto_time", "time"),
    ]

    def __init__(self, source: Any, *, replay: bool = False, at: int | None = None,
                 filter_text: str = "") -> None:
        super().__init__()
        self.model = TopModel()
        self.source = source
        self.replay = replay
        self.paused = False
        self.index = at if at is not None else (len(source) - 1 if replay else 0)
        self.filter_text = filter_text
        self.error: BaseException | None = None
        self._input_mode = "filter"
        self.refreshes = 0

    def compose(self) -> ComposeResult:
        yield Static(id="head")
        yield Input(id="filter", placeholder="filter, as 'show' takes it (Enter applies, Esc cancels)")
        yield TableView(self.model, id="table")
        yield Static(self._keys(), id="keys")

    def _keys(self) -> str:
        step = " ←/→ step  t time " if self.replay else " "
        return f"q quit  space pause  / filter  s sort  r rev  o stable  g group{step}"

    def on_mount(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            # a closed terminal or a kill: leave as q does, so the terminal is restored
            loop.add_signal_handler(sig, self.exit)
        self.query_one(TableView).focus()
        if self.replay:
            self._show_index()
        else:
            self.source.start(lambda fr: self.post_message(FrameReady(fr)))
        self._draw_head()

    def _handle_exception(self, error: Exception) -> None:
        # An error in the view (a bug): Textual would print its traceback with locals after
        # restoring the terminal. Keep it for the command to report in one line as every
        # command does (cli.main); TCPSNAP_DEBUG keeps Textual's traceback. Overrides a
        # private Textual hook (textual 0.x..2.x): the only place every handler's error passes.
        if os.environ.get("TCPSNAP_DEBUG", "") not in ("", "0"):
            super()._handle_exception(error)
            return
        if self.error is None:
            self.error = error
        self._return_code = 1
        self._close_messages_no_wait()    # the normal shutdown: the terminal is restored

    def on_unmount(self) -> None:
        if not self.replay:
            self.source.stop()

    # ------------------------------------------------------------ frames
    def on_frame_ready(self, msg: FrameReady) -> None:
        if msg.frame is None:
            self.error = self.source.error
            self.exit(return_code=1)
            return
        if self.paused:
            return
        self.push_frame(msg.frame)

    def push_frame(self, frame: Frame) -> None:
        """Show the next live frame (what changed since the last one shown)."""
        self.model.update(frame)
        self._changed()

    def _show_index(self) -> None:
        src = self.source
        k = self.index
        prev = src.frame(k - 1) if k > 0 else None
        self.model.show(prev, src.frame(k))
        self._changed()

    def _changed(self) -> None:
        self.refreshes += 1
        self.query_one(TableView).changed()
        self._draw_head()

    def _draw_head(self) -> None:
        m = self.model
        fr = m.frame
        states = " ".join(f"{k} {v}" for k, v in m.state_counts().items()) or "no connection"
        new, chg, gone = m.counts()
        when = (datetime.fromtimestamp(fr.wall_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
                if fr is not None and fr.wall_ns else "-")
        if self.replay:
            mode = f"REPLAY {self.index + 1}/{len(self.source)} seq {fr.seq if fr else '-'}"
        else:
            mode = "PAUSED" if self.paused else "LIVE"
            rec = getattr(self.source, "recording", None)
            if rec:
                mode += f" rec {rec}"
        cost = (f"capture {fr.capture_ns / 1e6:.1f} ms  view {m.refresh_ns / 1e6:.1f} ms" if fr else "")
        flt = f"  filter: {self.filter_text}" if self.filter_text else ""
        line1 = f"{mode}  {when} UTC  {len(m.order) - gone} rows  +{new} ~{chg} -{gone}  {cost}"
        line2 = f"{states}{flt}"
        self.query_one("#head", Static).update(f"{line1}\n{line2}")

    # ------------------------------------------------------------ actions
    def action_pause(self) -> None:
        if not self.replay:
            self.paused = not self.paused
            self._draw_head()

    def action_sort_next(self) -> None:
        keys = [c[0] for c in self.model.columns]
        i = keys.index(self.model.sort) if self.model.sort in keys else -1
        self.model.set_sort(keys[(i + 1) % len(keys)], reverse=False)
        self._changed_view()

    def action_reverse(self) -> None:
        self.model.set_sort(self.model.sort, reverse=not self.model.reverse)
        self._changed_view()

    def action_stable(self) -> None:
        self.model.stable = not self.model.stable
        self.notify("stable order " + ("on: rows keep their place" if self.model.stable else
                                       "off: sorted at every refresh"), timeout=2)
        self.model.resort()
        self._changed_view()

    def action_group(self) -> None:
        self.model.group = not self.model.group
        self.model.reorder()
        self._changed_view()

    def _changed_view(self) -> None:
        self.query_one(TableView).changed()
        self._draw_head()

    def action_step(self, by: int) -> None:
        if self.replay:
            k = min(max(self.index + by, 0), len(self.source) - 1)
            if k != self.index:
                self.index = k
                self._show_index()

    def action_jump(self, k: int) -> None:
        if self.replay:
            self.index = k % len(self.source)
            self._show_index()

    def action_filter(self) -> None:
        self._open_input("filter", self.filter_text)

    def action_goto_time(self) -> None:
        if self.replay:
            self._open_input("time", "")

    def _open_input(self, mode: str, value: str) -> None:
        self._input_mode = mode
        inp = self.query_one("#filter", Input)
        inp.placeholder = ("a time: 2026-11-29 03:12, @EPOCH, now-5m (Enter jumps, Esc cancels)"
                           if mode == "time" else "filter, as 'show' takes it (Enter applies, Esc cancels)")
        inp.value = value
        inp.add_class("shown")
        inp.focus()

    def on_input_submitted(self, ev: Input.Submitted) -> None:
        text = ev.value.strip()
        try:
            if self._input_mode == "time":
                self.index = self.source.index_at(text)
                self._show_index()
            else:
                self.apply_filter(text)
        except (ValueError, LookupError) as e:
            self.notify(" ".join(str(e).split()), severity="error", timeout=4)
            return
        self._close_input()

    def apply_filter(self, text: str) -> None:
        """Filter the view with ``text`` (the language of ``tcpsnap show``; "" for none).
        ``FilterError`` (a ValueError) when it does not parse; the filter is then unchanged."""
        f = parse_filter(text) if text else None
        self.filter_text = text
        self.model.set_filter(f)
        self._changed_view()

    def key_escape(self) -> None:
        self._close_input()

    def _close_input(self) -> None:
        inp = self.query_one("#filter", Input)
        inp.remove_class("shown")
        self.query_one(TableView).focus()

