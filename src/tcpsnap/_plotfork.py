"""``tcpsnap plot --kind states`` on two processes: a child forked at the command's start
imports matplotlib and makes the figure while the parent counts, then draws the bins the
parent sends it and writes the file.

Why a process and not a thread: matplotlib's import is ~0.27 s of Python holding the GIL,
and the count (pyarrow decoding, numpy) needs the GIL back after each of its C calls, a few
dozen a row group: on threads the two overlapped only in part (benchmarks/RESULTS.md, "plot,
session 6"). Forked, each has its own interpreter and core; what the parent sends is a few
hundred bins (``reading.tally.StateBins``), pickled through a pipe.

Linux only (``fork`` after numpy's import: safe there, OpenBLAS's threads have their fork
handlers; macOS' frameworks are not fork-safe). Elsewhere, or where ``fork`` fails, the
caller draws on its own thread (:func:`start` returns None).

Errors: the child sends back the exception its drawing raised (pickled: an ``OSError``
writing the file keeps its ``filename`` and ``strerror``), the parent raises it, so the
command's one line is the one the same error gives in one process; the child's traceback
is a note on it (shown with ``TCPSNAP_DEBUG=1``). A child that dies without a word is a
``TcpsnapError`` naming its exit status.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import traceback
from typing import Any

from ._errors import TcpsnapError, UsageError

__all__ = ["Drawer", "start"]

_LEN = struct.Struct("<Q")


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LEN.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd: int) -> Any:
    """The next object sent on ``fd``; ``EOFError`` if the writer closed it first."""

    def exactly(n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            b = os.read(fd, min(n - got, 1 << 20))
            if not b:
                raise EOFError
            parts.append(b)
            got += len(b)
        return b"".join(parts)

    (n,) = _LEN.unpack(exactly(_LEN.size))
    return pickle.loads(exactly(n))


class Drawer:
    """The forked child (``pid``) and the parent's ends of its two pipes. ``ready``: a
    ``threading.Event`` set once the child has imported matplotlib and made the figure
    (or stopped): until then it keeps a core busy, and the parent counts on one thread."""

    def __init__(self, pid: int, to_child: int, from_child: int) -> None:
        import threading

        self.pid, self._to, self._from = pid, to_child, from_child
        self._done = False
        self.ready = threading.Event()
        self._first: list[Any] = []
        self._listener = threading.Thread(target=self._listen, name="tcpsnap-plot-ready", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        # the child's first word: "ready", or the error that stopped it before the figure
        try:
            self._first.append(_recv(self._from))
        except (EOFError, OSError):
            self._first.append(None)
        self.ready.set()

    def draw(self, bins: Any, freq: str, host: str, rng: tuple[int, int], tz: str | None, source: Any) -> None:
        """``plot.draw_state_bins(bins, freq, host, rng, tz=tz, source=source)`` saved to
        the output, in the child; returns when the file is written. Raises what the child
        raised (a ``UsageError`` for an output type matplotlib cannot write)."""
        self._listener.join()
        got = self._first[0]
        if got == "ready":
            try:
                _send(self._to, (bins, freq, host, rng, tz, source))
            except BrokenPipeError:
                pass                    # the child stopped: its reply says why
            try:
                got = _recv(self._from)
            except EOFError:
                got = None
        status = self._reap()
        if got is None:
            raise TcpsnapError(f"the process drawing the plot ended without writing it ({_status(status)})")
        if got != "ok":
            raise got

    def cancel(self) -> None:
        """Stop the child (the parent failed, or draws by itself after all)."""
        if not self._done:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap()

    def _reap(self) -> int:
        self._done = True
        status = os.waitpid(self.pid, 0)[1]
        # the child gone, its end of the pipe is closed: the listener has its EOF
        self._listener.join()
        for fd in (self._to, self._from):
            try:
                os.close(fd)
            except OSError:
                pass
        return status


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def start(output: str) -> Drawer | None:
    """Fork the child that will draw the states plot into ``output``; None where this
    platform draws on the caller's thread instead (not Linux, or ``fork`` failed)."""
    if sys.platform != "linux" or not hasattr(os, "fork"):
        return None
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()
    # what is buffered would be written twice, once by each process
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        pid = os.fork()
    except OSError:
        for fd in (down_r, down_w, up_r, up_w):
            os.close(fd)
        return None
    if pid == 0:                                        # pragma: no cover (the child)
        code = 0
        try:
            os.close(down_w)
            os.close(up_r)
            code = _child(output, down_r, up_w)
        finally:
            # never back into the caller's code (a test runner, atexit handlers, buffers)
            os._exit(code)
    os.close(down_r)
    os.close(up_w)
    return Drawer(pid, down_w, up_r)


def _child(output: str, down: int, up: int) -> int:  # pragma: no cover (runs in the child)
    # Ctrl-C reaches the whole process group: the parent reports it, the child just ends
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        from matplotlib.backend_bases import FigureCanvasBase

        from . import plot

        suffix = os.path.splitext(output)[1].lower().lstrip(".")
        if suffix not in FigureCanvasBase.get_supported_filetypes():
            raise UsageError(f"cannot tell the image type of {output}: name it .png, .svg or .pdf")
        # the figure and its axes while the parent counts
        ax = plot.new_figure().add_subplot()
        _send(up, "ready")
        try:
            job = _recv(down)
        except EOFError:
            return 0                                    # the parent draws by itself, or failed
        bins, freq, host, rng, tz, source = job
        fig = plot.draw_state_bins(bins, freq, host, rng, tz=tz, ax=ax, source=source)
        fig.savefig(output)
        reply: Any = "ok"
    except BaseException as e:      # noqa: BLE001 -- every error goes back to the parent
        e.add_note("in the process drawing the plot:\n" + "".join(traceback.format_exception(e)).rstrip())
        try:
            pickle.loads(pickle.dumps(e))
            reply = e
        except (pickle.PicklingError, TypeError, AttributeError, ValueError):
            # an exception that does not come through pickle whole: its class and text
            reply = RuntimeError(f"{type(e).__name__}: {e}")
    try:
        _send(up, reply)
    except OSError:
        return 1
    return 0
