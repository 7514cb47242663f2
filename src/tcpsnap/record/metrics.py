"""Health metrics of a running recorder, for Prometheus: served over HTTP
(``--metrics 127.0.0.1:9464``) or written as a node_exporter textfile
(``--metrics-textfile PATH``).

>>> with Recorder("rec") as rec, MetricsExporter(rec, listen="127.0.0.1:9464"):
...     rec.run(duration="1h")

Needs ``prometheus_client`` (the ``metrics`` extra: ``pip install 'tcpsnap[metrics]'``);
without it :class:`MetricsExporter` raises ``ImportError`` saying so. Nothing else in
tcpsnap imports it.

Cost: nothing is counted for the metrics' sake on the capture path but the capture-time
histogram's bucket (a ``bisect`` over 13 bounds and two additions per snapshot, done by
the capture thread whether metrics are served or not). Every other value is read from
the recorder's own counters when Prometheus scrapes (or the textfile is written), by
:class:`RecorderCollector`. A scrape costs ~1 ms of CPU on the serving thread (most of it
prometheus_client's OpenMetrics rendering and http.server), a textfile write ~0.8 ms:
at Prometheus' 15 s period under 0.01% of the recorder's CPU
(``benchmarks/bench_metrics.py``; RESULTS.md "Metrics cost (session 7)"). The HTTP
server keeps a scraper's connection open (see ``_http_server``): a new connection per
scrape would be a new socket for the recorder to attribute, a /proc walk each time (each
accepted connection is claimed as the recorder's own, ``Recorder.claim_socket``, so the
server's end of one never is). At most ``HTTP_MAX_CONNECTIONS`` (8) are open at once, one
idle for ``HTTP_IDLE_TIMEOUT_S`` (90 s) is closed: a thread each, bounded.

The metrics (counters end in ``_total``):

- ``tcpsnap_snapshots_total``, ``tcpsnap_rows_total``, ``tcpsnap_overruns_total``
  (schedule slots missed), ``tcpsnap_capture_seconds`` (histogram of one snapshot's
  capture time, buckets 100us .. 1s);
- ``tcpsnap_writer_queue_batches`` (batches waiting for the writer),
  ``tcpsnap_writer_waits_total`` (times capture waited for a free buffer),
  ``tcpsnap_written_bytes_total``, ``tcpsnap_files_finished_total``,
  ``tcpsnap_last_file_closed_timestamp_seconds`` (absent until a file is finished; with
  ``tcpsnap_start_time_seconds``, alert on ``time() - max(...) > 2 * rotate``);
- ``tcpsnap_dump_retries_total`` (dumps redone because the table changed mid-dump; only
  with a snapshotter that counts them), ``tcpsnap_pid_unreadable_processes`` (processes
  whose ``/proc/<pid>/fd`` the last walk could not read; only with pids),
  ``tcpsnap_destroy_feed_drops_total`` (changes mode with the destroy feed only);
- with retention: ``tcpsnap_retention_deleted_files_total``,
  ``tcpsnap_retention_deleted_bytes_total``, ``tcpsnap_retention_errors_total``,
  ``tcpsnap_recording_bytes`` (as of the last retention pass);
- ``tcpsnap_upload_backlog_files`` (finished files not shipped yet; always 0 without
  ``record --ship``); with ``--ship`` also ``tcpsnap_uploaded_files_total``,
  ``tcpsnap_upload_failures_total``, ``tcpsnap_upload_cpu_seconds_total`` and
  ``tcpsnap_upload_last_success_timestamp_seconds``
  (absent until a first file is shipped: alert on its age);
- ``tcpsnap_info{version, mode}`` 1; over HTTP also prometheus_client's ``process_*``
  (CPU, memory, open fds). The textfile leaves those out: node_exporter has its own
  ``process_*`` and would reject the duplicates.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["MetricsExporter", "RecorderCollector", "parse_listen", "require_prometheus",
           "CAPTURE_BUCKETS_NS", "EXTRA_HINT"]

log = logging.getLogger("tcpsnap.recorder")

#: Upper bounds (ns) of the capture-time histogram's buckets: 100us .. 1s, 1-2.5-5 steps.
CAPTURE_BUCKETS_NS = (100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
                      25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000,
                      1_000_000_000)

EXTRA_HINT = "pip install 'tcpsnap[metrics]'"


def require_prometheus() -> Any:
    """The ``prometheus_client`` module, or ``ImportError`` naming the extra."""
    try:
        import prometheus_client
    except ImportError:
        raise ImportError(f"metrics need the prometheus_client package: {EXTRA_HINT}") from None
    return prometheus_client


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``"0.0.0.0:9464"`` -> (host, port). The
    host is required: nothing listens beyond loopback unless asked by name. Port 0: any
    free port (logged). Raises ``ValueError``."""
    text = str(text).strip()
    host, sep, port_s = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad address {text!r}: not an IPv6 address in [...]") from None
    elif ":" in host:
        raise ValueError(f"bad address {text!r}: write an IPv6 address as [::1]:9464")
    if not sep or not host:
        raise ValueError(f"bad address {text!r}: give the address to listen on with the port, "
                         f"e.g. 127.0.0.1:9464 (0.0.0.0:9464 for every interface)")
    if not port_s.isdigit() or int(port_s) > 65535:
        raise ValueError(f"bad address {text!r}: the port must be 0..65535")
    return host, int(port_s)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RecorderCollector:
    """A prometheus_client collector reading a :class:`~tcpsnap.Recorder`'s counters
    at each scrape (nothing is counted per snapshot for it)."""

    def __init__(self, rec: Any) -> None:
        self.rec = rec
        self.start_time = time.time()
        self._bytes = 0  # written bytes never go down, even mid-rotation

    def describe(self) -> list:
        return []  # the metrics vary (pids, changes mode, retention): nothing to check

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        rec = self.rec
        cap, writer = rec._capture, rec._writer

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"tcpsnap_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"tcpsnap_{name}", doc, value=value)

        from .._version import __version__

        yield InfoMetricFamily("tcpsnap", "The recorder's version and mode.",
                               value={"version": __version__, "mode": str(rec.mode)})
        yield gauge("start_time_seconds", "When the recorder started (UNIX time).",
                    self.start_time)
        yield counter("snapshots", "Snapshots taken.", rec.snapshots)
        yield counter("rows", "Rows recorded.", rec.rows)
        yield counter("overruns", "Snapshot slots missed (a snapshot could not start on time).",
                      rec.overruns)
        hist = list(cap.cap_hist) if cap is not None else [0] * (len(CAPTURE_BUCKETS_NS) + 1)
        sum_ns = cap.cap_sum_ns if cap is not None else 0
        buckets, acc = [], 0
        for le_ns, n in zip(CAPTURE_BUCKETS_NS, hist, strict=False):
            acc += n
            buckets.append((_go_float(le_ns / 1e9), acc))
        buckets.append(("+Inf", acc + hist[-1]))
        yield HistogramMetricFamily("tcpsnap_capture_seconds", "Time one snapshot took.",
                                    buckets=buckets, sum_value=sum_ns / 1e9)
        yield gauge("writer_queue_batches", "Batches waiting for the writer thread.",
                    writer.queue_depth if writer is not None else 0)
        yield counter("writer_waits", "Times capture waited for a free buffer (writer behind).",
                      rec.writer_waits)
        self._bytes = max(self._bytes, rec.bytes_written)
        yield counter("written_bytes", "Parquet bytes written (finished files and the row "
                      "groups of the file in progress).", self._bytes)
        yield counter("files_finished", "Files finished by this recorder.",
                      len(writer.files) if writer is not None else 0)
        closed = getattr(writer, "closed_at", None)
        if closed is not None:
            yield gauge("last_file_closed_timestamp_seconds",
                        "When the recorder last finished a file (UNIX time).", closed)
        # the capture thread's snapshotter: still there (closed, counters intact) when the
        # recorder is closed and the textfile written a last time
        snap = getattr(cap, "_snap", None) if cap is not None else rec._snap
        sstats = getattr(snap, "stats", None)
        if isinstance(sstats, dict) and "retries" in sstats:
            yield counter("dump_retries", "Dumps redone because the table changed during one.",
                          sstats["retries"])
        if rec.pids_enabled:
            pstats = getattr(snap, "pid_stats", None)
            if isinstance(pstats, dict) and "denied" in pstats:
                yield gauge("pid_unreadable_processes", "Processes whose /proc/<pid>/fd the "
                            "last pid walk could not read (their sockets show pid 0).",
                            pstats["denied"])
        tracker = rec._tracker
        if tracker is not None and getattr(tracker, "feed", None) is not None:
            yield counter("destroy_feed_drops", "Socket-destroy notifications the kernel "
                          "dropped (buffer overrun).", tracker.stats.get("destroy_drops", 0))
        ret = getattr(rec, "retention", None)
        if ret is not None:
            yield counter("retention_deleted_files", "Files deleted by retention.",
                          ret.deleted_files)
            yield counter("retention_deleted_bytes", "Bytes deleted by retention.",
                          ret.deleted_bytes)
            yield counter("retention_errors", "Retention failures (a file that could not be "
                          "deleted, a failed pass).", ret.errors)
            yield gauge("recording_bytes", "Bytes of the recording as of the last retention "
                        "pass (finished files and the file in progress).", ret.bytes)
        # record --ship (tcpsnap.ship.Shipper); without it: 0 files waiting, no success
        sh = getattr(rec, "shipper", None)
        st = sh.stats if sh is not None else None
        yield gauge("upload_backlog_files", "Finished files not shipped yet (record --ship; "
                    "0 without it).", st.pending_files if st is not None else 0)
        if st is not None:
            yield counter("upload_failures", "Failed shipping passes (each retried with "
                          "backoff).", st.failures)
            yield counter("uploaded_files", "Files shipped and confirmed.", st.shipped_files)
            yield counter("upload_cpu_seconds", "CPU time of the shipping thread (time.thread_time): "
                          "what shipping costs beside the recording.", st.cpu_s)
            if st.last_success is not None:
                yield gauge("upload_last_success_timestamp_seconds", "When a file was last "
                            "shipped and confirmed (UNIX time): alert on its age.", st.last_success)


def _go_float(v: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(v))


#: Seconds an idle kept-alive HTTP connection stays open: over the common scrape periods
#: (Prometheus' default 1 min, often 15-30 s), so a scraper keeps its one connection, and
#: well under Prometheus' own idle timeout (5 min), so a client that went quiet does not
#: hold a thread for long.
HTTP_IDLE_TIMEOUT_S = 90.0

#: Connections served at once. A scraper needs one (two for a pair of Prometheus
#: replicas); past this, see ``_http_server``.
HTTP_MAX_CONNECTIONS = 8


def _http_server(host: str, port: int, registry: Any,
                 on_accept: Callable[[int], object] | None = None) -> Any:
    """An HTTP/1.1 server on (host, port), bound (``OSError`` if not), not yet serving,
    answering every request with prometheus_client's WSGI app for ``registry`` (its
    content negotiation, OpenMetrics, gzip, OPTIONS). ``on_accept(fd)`` is called with
    each accepted connection's descriptor before it is served (the recorder claims the
    socket as its own: its pid without a /proc walk, ``Recorder.claim_socket``).

    Why not prometheus_client's ``start_http_server``: wsgiref answers HTTP/1.0 and closes
    the connection, so each scrape is a new TCP connection, a new thread, and a socket
    that the recorder, recording its own host, must attribute to a process: a /proc walk
    per scrape, ~5x the scrape itself. Prometheus keeps its connection open between
    scrapes (HTTP keep-alive); served as HTTP/1.1 with a Content-Length, one connection
    and one thread serve every scrape. ``close_connections()`` ends the kept ones.

    Bounded: each connection has a thread, so at most ``HTTP_MAX_CONNECTIONS`` are open
    at once and one idle for ``HTTP_IDLE_TIMEOUT_S`` is closed. A new connection past the
    cap closes the connection idle the longest (waiting for its next request), not the
    new one: refusing new ones would let any local process that opens a few idle
    connections lock the real scraper out until they time out, while a scraper whose
    kept connection was closed just opens a new one at its next scrape. Only when every
    connection is in the middle of a request is the new one refused (closed at once).
    ``stats``: ``closed_idle`` (closed for a newcomer), ``refused``."""
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import make_wsgi_app

    app = make_wsgi_app(registry)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = HTTP_IDLE_TIMEOUT_S
        server: Server

        def parse_request(self) -> bool:
            self.server.mark(self.connection, busy=True)  # a request line came in
            return bool(super().parse_request())

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            finally:
                self.server.mark(self.connection, busy=False)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_OPTIONS(self) -> None:
            self._answer("OPTIONS")

        def do_POST(self) -> None:
            # and close: a body we did not read would be taken for the next request
            self._answer(self.command, close=True)

        do_PUT = do_DELETE = do_PATCH = do_POST

        def _answer(self, method: str, close: bool = False) -> None:
            path, _, query = self.path.partition("?")
            environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                       "HTTP_ACCEPT": self.headers.get("Accept"),
                       "HTTP_ACCEPT_ENCODING": self.headers.get("Accept-Encoding")}
            got: list = []
            body = b"".join(app(environ, lambda status, headers, exc=None: got.extend(
                (status, headers))))
            self.send_response(int(got[0].split()[0]))
            for k, v in got[1]:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")  # http.server then closes it
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape is not news

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def __init__(self) -> None:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            self.address_family = info[0][0]
            # each open connection: [when it last finished a request (monotonic), busy]
            self.conns: dict[socket.socket, list] = {}
            self.conns_lock = threading.Lock()
            self.stats = {"closed_idle": 0, "refused": 0}
            self.stopping, self.stopped = threading.Event(), threading.Event()
            self.wake_w: int | None = None
            super().__init__((str(info[0][4][0]), int(info[0][4][1])), Handler)
            self.timeout = 0.0  # handle_request: never waits (the selector said it is readable)

        def serve_until_stopped(self) -> None:
            """Accept until ``stop()``, asleep in between (socketserver's
            ``serve_forever`` wakes every half second to look for a shutdown: two
            wake-ups a second for as long as the recorder runs)."""
            import selectors

            self.wake_r, self.wake_w = os.pipe()
            with selectors.DefaultSelector() as sel:
                sel.register(self, selectors.EVENT_READ)
                sel.register(self.wake_r, selectors.EVENT_READ)
                while not self.stopping.is_set():
                    ready = sel.select()
                    if self.stopping.is_set():
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        self.handle_request()  # readable: accepts without waiting
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.stopped.set()

        def stop(self) -> None:
            """Make ``serve_until_stopped`` return, and wait for it."""
            self.stopping.set()
            if self.wake_w is not None and not self.stopped.is_set():
                with contextlib.suppress(OSError):
                    os.write(self.wake_w, b"x")
            self.stopped.wait()

        def mark(self, conn: socket.socket, busy: bool) -> None:
            with self.conns_lock:
                st = self.conns.get(conn)
                if st is not None:
                    st[0], st[1] = time.monotonic(), busy

        def process_request(self, request: Any, client_address: Any) -> None:
            refuse = False
            with self.conns_lock:
                if len(self.conns) >= HTTP_MAX_CONNECTIONS:
                    idle = [(st[0], i, c) for i, (c, st) in enumerate(self.conns.items()) if not st[1]]
                    refuse = not idle
                    if idle:
                        oldest = min(idle)[2]
                        del self.conns[oldest]
                        self.stats["closed_idle"] += 1
                        with contextlib.suppress(OSError):
                            oldest.shutdown(socket.SHUT_RDWR)  # its thread's read ends, it closes it
                    else:
                        self.stats["refused"] += 1
                if not refuse:
                    self.conns[request] = [time.monotonic(), False]
            if refuse:
                log.info("metrics: %d connections busy: refused one from %s",
                         HTTP_MAX_CONNECTIONS, client_address)
                self.shutdown_request(request)
                return
            super().process_request(request, client_address)

        def get_request(self) -> Any:
            got = super().get_request()
            # claimed as soon as accepted: a snapshot taken before the claim lands sees
            # the socket without an owner (pid 0, as any new socket) and the next one
            # has our pid, with no walk unless one was due at that very snapshot
            if on_accept is not None:
                try:
                    on_accept(got[0].fileno())
                except Exception:  # the claim is an optimisation: never a reason to drop a scrape
                    log.debug("metrics: claiming a connection failed", exc_info=True)
            return got

        def shutdown_request(self, request: Any) -> None:
            with self.conns_lock:
                self.conns.pop(request, None)
            super().shutdown_request(request)

        def handle_error(self, request: Any, client_address: Any) -> None:
            # a scraper that went away mid-request: nothing to print (socketserver would
            # print a traceback on stderr)
            log.debug("metrics: request from %s failed", client_address, exc_info=True)

        def close_connections(self) -> None:
            with self.conns_lock:
                conns = list(self.conns)
            for c in conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)  # its thread's read ends, it closes it

    return Server()


class MetricsExporter:
    """Publishes a recorder's metrics while it runs: over HTTP on ``listen``
    (``"host:port"`` or ``(host, port)``; HTTP/1.1 with keep-alive, prometheus_client's
    app, on daemon threads: see ``_http_server``) and/or into the node_exporter textfile
    ``textfile`` (rewritten atomically, temp file and rename, every ``textfile_interval``
    seconds and at ``close``).

    ``start()`` binds (``OSError`` when it cannot, e.g. the port is taken; ``port``
    then says which port, useful with port 0). Use it as a context manager or call
    ``close()`` after the recorder is closed, so the textfile holds the final counts.
    """

    def __init__(self, rec: Any, *, listen: str | tuple[str, int] | None = None,
                 textfile: str | os.PathLike | None = None, textfile_interval: float = 15.0) -> None:
        prom = require_prometheus()
        if listen is None and textfile is None:
            raise ValueError("MetricsExporter needs listen or textfile")
        self.rec = rec
        self.listen = parse_listen(listen) if isinstance(listen, str) else listen
        self.textfile = Path(textfile) if textfile is not None else None
        self.textfile_interval = float(textfile_interval)
        if self.textfile_interval <= 0:
            raise ValueError("textfile_interval must be more than 0")
        collector = RecorderCollector(rec)
        self._http_registry: Any = None
        self._file_registry: Any = None
        if self.listen is not None:
            self._http_registry = prom.CollectorRegistry()
            self._http_registry.register(collector)
            prom.ProcessCollector(registry=self._http_registry)
        if self.textfile is not None:
            self._file_registry = prom.CollectorRegistry()
            self._file_registry.register(collector)
        self._server: Any = None
        self._dir: Any = None  # the textfile's folder (SafeDir: files never through a link)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_failing = False
        self._write_lock = threading.Lock()  # one temp file name: one writer at a time
        self.port: int | None = None
        self.writes = 0

    def __enter__(self) -> MetricsExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str | None:
        if self.listen is None or self.port is None:
            return None
        host = self.listen[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/metrics"

    def start(self) -> MetricsExporter:
        from .safedir import SafeDir

        if self.textfile is not None:
            folder = self.textfile.parent
            try:
                fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                             | getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                raise OSError(f"cannot write the metrics textfile in {folder}: "
                              f"{e.strerror or e}") from None
            self._dir = SafeDir(fd, folder)
            if not self.textfile.name.endswith(".prom"):
                log.warning("metrics textfile %s: node_exporter's textfile collector reads "
                            "only *.prom files", self.textfile)
        if self.listen is not None:
            self._start_http(*self.listen)
        if self.textfile is not None:
            self.write_textfile()
            self._thread = threading.Thread(target=self._loop, name="tcpsnap-metrics-textfile",
                                            daemon=True)
            self._thread.start()
        return self

    def _start_http(self, host: str, port: int) -> None:
        try:
            self._server = _http_server(host, port, self._http_registry,
                                        getattr(self.rec, "claim_socket", None))
        except OSError as e:
            self.close()
            raise OSError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from None
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_until_stopped, name="tcpsnap-metrics-http",
                         daemon=True).start()
        level = logging.WARNING if port == 0 else logging.INFO  # port 0: say which one
        log.log(level, "metrics: serving %s%s", self.url,
                "" if _is_loopback(host) else " (not loopback: no authentication)")

    def _loop(self) -> None:
        while not self._stop.wait(self.textfile_interval):
            self.write_textfile()

    def write_textfile(self) -> bool:
        """Write the textfile now (temp file, fsync, rename over the old one). Returns
        False, with a warning the first time, when it cannot. Thread-safe."""
        with self._write_lock:
            return self._write_textfile()

    def _write_textfile(self) -> bool:
        if self._dir is None or self.textfile is None or self._file_registry is None:
            return False
        from prometheus_client import generate_latest

        from .layout import pwrite_all

        d, name = self._dir, self.textfile.name
        tmp = f".{name}.{os.getpid()}.tmp"  # not *.prom: node_exporter never reads it
        try:
            data = generate_latest(self._file_registry)
            d.unlink(tmp)  # left by a crash: a name, never followed
            fd = d.create(tmp)
            try:
                pwrite_all(fd, data, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=d.fd, dst_dir_fd=d.fd)  # replaces a link itself
        except OSError as e:
            with contextlib.suppress(OSError):
                d.unlink(tmp)
            if not self._write_failing:
                log.warning("cannot write the metrics textfile %s: %s", self.textfile,
                            e.strerror or e)
            self._write_failing = True
            return False
        self._write_failing = False
        self.writes += 1
        return True

    def close(self) -> None:
        """Stop serving; write the textfile a last time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.write_textfile()
        with self._write_lock:
            if self._dir is not None:
                self._dir.close()
                self._dir = None
        if self._server is not None:
            self._server.stop()
            self._server.server_close()
            self._server.close_connections()
            self._server = None
