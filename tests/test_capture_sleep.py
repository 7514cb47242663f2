"""The capture thread's wait between snapshots: to the deadline, never before it, in one
wake-up where select() can wait on its descriptors (poll's whole milliseconds needed a
second one), and ended at once by ``Waker.wake()``; the destroy feed read while waiting."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tcpsnap.record.capture import Waker
from tcpsnap.record.changes import ChangeTracker

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/thread-self/status"), reason="needs /proc")


def switches() -> int:
    """This thread's voluntary context switches (each time it blocked)."""
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


class PipeFeed:
    """What ChangeTracker.sleep asks of a destroy feed: a descriptor and drain()."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.drains = 0

    def fileno(self) -> int:
        return self.r

    def drain(self) -> int:
        self.drains += 1
        try:
            os.read(self.r, 4096)
        except BlockingIOError:
            pass
        return 0

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_waker_sleeps_to_its_deadline_in_one_wake_up():
    w = Waker()
    try:
        for _ in range(3):
            s0 = switches()
            t0 = time.monotonic_ns()
            w.sleep(0.0205)                  # 20.5 ms: poll's milliseconds would need two
            assert time.monotonic_ns() - t0 >= 20_500_000
            assert switches() - s0 == 1
    finally:
        w.close()


def test_waker_wake_ends_the_sleep_and_is_consumed():
    w = Waker()
    try:
        w.wake()
        t0 = time.monotonic()
        w.sleep(30.0)                        # returns at once: the byte is there
        assert time.monotonic() - t0 < 29.0
        s0 = switches()
        t0 = time.monotonic_ns()
        w.sleep(0.0105)                      # the byte was consumed: a whole sleep
        assert time.monotonic_ns() - t0 >= 10_500_000
        assert switches() - s0 == 1
    finally:
        w.close()


def test_tracker_sleep_one_wake_up_reads_the_feed_and_ends_on_wake():
    feed = PipeFeed()
    tr = ChangeTracker(60 * 10**9, feed=feed)
    w = Waker()
    try:
        s0 = switches()
        t0 = time.monotonic_ns()
        tr.sleep(w, 20_500_000)
        assert time.monotonic_ns() - t0 >= 20_500_000
        assert switches() - s0 == 1
        assert feed.drains == 0
        os.write(feed.w, b"x")               # a report waiting: read, and the sleep goes on
        t0 = time.monotonic_ns()
        tr.sleep(w, 20_500_000)
        assert time.monotonic_ns() - t0 >= 20_500_000
        assert feed.drains == 1
        threading.Timer(0.05, w.wake).start()
        t0 = time.monotonic()
        tr.sleep(w, 30 * 10**9)              # ended by wake(), the byte consumed
        assert time.monotonic() - t0 < 29.0
        s0 = switches()
        tr.sleep(w, 10_500_000)
        assert switches() - s0 == 1
    finally:
        w.close()
        feed.close()


def test_large_descriptors_fall_back_to_poll():
    assert Waker.selectable(3, 1023)
    assert not Waker.selectable(3, 1024)
    assert not Waker.selectable(-1)
