"""A real S3 server for the shipping tests: moto's server on 127.0.0.1 (a port it chooses),
started and stopped by pid, and a TCP relay in front of it that a test can take down and
bring back (the server "down" while its buckets survive)."""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

BUCKET = "fleet"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


class Moto:
    def __init__(self, log=None):
        """``log``: a file the server writes its request log to (one line per request,
        ``"GET /bucket/key HTTP/1.1" 200``), to count what a reader fetched."""
        pytest.importorskip("moto.server")
        self._tmp = None
        if log is None:     # its log still says which port it took
            fd, self._tmp = tempfile.mkstemp(prefix="tcpsnap-moto-", suffix=".log")
            os.close(fd)
        self.log = log or self._tmp
        self._logf = open(self.log, "ab")
        start = self._logf.tell()
        # port 0, the one it took read from its log ("Running on http://127.0.0.1:N"): a port
        # found free first may be taken by another process (a connect() of any program on
        # a busy host) in the seconds before moto binds it
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                     stdout=subprocess.DEVNULL, stderr=self._logf, env={**os.environ, **CREDS})
        deadline = time.monotonic() + 120            # a hang detector, not a timing
        self.port = 0
        while not self.port:
            with open(self.log, "rb") as f:
                f.seek(start)
                m = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", f.read())
            if m is not None:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("moto server did not start")
            else:
                time.sleep(0.1)
        self.url = f"http://127.0.0.1:{self.port}"
        socket.create_connection(("127.0.0.1", self.port), 10).close()   # it listens (before it says so)

    def requests(self, since=0):
        """(method, path) of every request logged after byte ``since`` of the log."""
        import re
        from urllib.parse import unquote

        with open(self.log, "rb") as f:
            f.seek(since)
            text = re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode(errors="replace"))  # werkzeug's colours
        return [(meth, unquote(p)) for meth, p in re.findall(r'"([A-Z]+) (/[^ ?"]*)[^ "]* HTTP/', text)]

    def log_size(self):
        return os.path.getsize(self.log)

    def client(self, url=None):
        import boto3

        return boto3.client("s3", endpoint_url=url or self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._logf.close()
        if self._tmp is not None:
            os.unlink(self._tmp)


class Relay:
    """127.0.0.1:port -> target port, byte for byte; ``down()`` closes the listener and
    every connection (connection refused), ``up()`` listens again on the same port.

    The port stays ours while down: a socket bound to it (SO_REUSEPORT, never listening,
    so connections are refused) holds it, or another process's connect() could take it
    as its local port in the meantime and ``up()`` could not bind it again."""

    def __init__(self, target_port):
        self.target = target_port
        self._hold = socket.socket()
        self._hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._hold.bind(("127.0.0.1", 0))
        self.port = self._hold.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns = []
        self.lsock = None
        self.up()

    def up(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self.lsock = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self):
        ls, self.lsock = self.lsock, None
        if ls is not None:
            ls.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.conns = []

    def _accept(self, ls):
        while True:
            try:
                a, _ = ls.accept()
            except OSError:
                return
            if self.lsock is not ls:
                a.close()
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(x, y):
        try:
            while data := x.recv(65536):
                y.sendall(data)
        except OSError:
            pass
        finally:
            try:
                y.shutdown(socket.SHUT_WR)
            except OSError:
                pass


__all__ = ["BUCKET", "CREDS", "Moto", "Relay"]
