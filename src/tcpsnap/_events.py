"""The events of a changes recording: the ``event`` column's vocabulary, shared by the
capture side (``tcpsnap.record.changes``) and the rebuild (``tcpsnap.reading.changes``).

A changes recording (``tcpsnap record --mode changes``) has the columns of a full
recording plus ``event`` and ``seen_in_snapshot``:

=========== =================================================================================
event       meaning of the row
=========== =================================================================================
snapshot    one marker per ordinary snapshot: ``family`` 0, no connection; its ``timestamp``,
            ``seq`` and ``capture_ns`` are the snapshot's, ``inode`` the number of rows the
            snapshot's table holds (a check for the rebuild); state CLOSED, all else 0
keyframe    the marker of a keyframe snapshot (``family`` 0), and every row of that snapshot
            that did not change since the previous one (the rows that did carry their event)
opened      a connection not in the previous snapshot, as it is now
state       a connection whose state changed (other fields may have changed too), as it is now
changed     a connection any other field of which changed: pid, process, uid, addresses...
queues      a connection (with a cookie) of which only ``rx_queue`` / ``tx_queue`` changed: the
            event holds ``family``, ``state``, the queues and the ``cookie``; every other field
            is 0 (addresses ``0.0.0.0`` / ``::``, ``process`` null) and means "as before".
            Busy connections change their queues snapshot after snapshot; leaving out the
            fields that did not change keeps such events small. Never in a keyframe.
counters    (recorded with ``--tcp-info``) a connection of which only the tcp_info counters
            and/or the queues moved: a ``queues`` event plus the whole tcp_info columns, as
            now. Timer-like fields that move on every sample (``TCP_INFO_TIMERS``:
            ``last_data_sent``...) are not a change. With tcp_info, ``queues`` is not used;
            every other connection event carries its tcp_info columns whole. Never in a
            keyframe.
closed      a connection gone since the previous snapshot, as last seen (its last snapshot
            row), at the snapshot that found it gone or, when the kernel's socket-destroy
            feed reported it, at the wall time the report was read. ``seen_in_snapshot``
            false: a socket that lived and died between two snapshots, known only from the
            destroy feed (state as the kernel reports it then, normally CLOSED; no pid, no
            inode), of a connection the recording holds nothing else of (the rules below).
            With ``--tcp-info``: its tcp_info columns are the kernel's final ``struct
            tcp_info`` from the destroy report (its final byte counts, retransmits, rtt)
            where the feed reported it, else as last seen
=========== =================================================================================

The ``kind`` column (``tcpsnap._arrow``) names what a row is for readers that know none
of this: ``snapshot`` for the markers (``snapshot`` and ``keyframe`` rows of family 0),
``partial`` for ``queues`` and ``counters`` events, ``connection`` for every other event. The README has the
DuckDB query that rebuilds the table at a moment from them (tested against ``table_at``).

A connection's identity is its cookie, or where the cookie is 0 (Windows) its family,
addresses, ports and scope ids.

Gone, with the destroy feed: a socket missing from a snapshot's dump is closed when the feed
reported it destroyed or the kernel, asked about that one socket (``DestroyFeed.probe``),
no longer holds it, or holds it outside the recorder's filters. A dump can skip a live
socket: one the kernel still holds stays in the snapshot as the kernel reports it when asked
(pid carried over while the inode is the same), so the rebuilt snapshot can hold a row the
dump lacked (the marker's count includes it). Without the feed, missing is gone: a skipped
socket is closed, then opened again under the same cookie. The first snapshot of a
recording has no earlier table: a socket its dump skipped is opened in the next.

One connection, one identity, with the feed. The kernel gives a socket its cookie when first
asked, and hands it on to the TIME_WAIT or FIN_WAIT2 mini-socket that succeeds a full socket,
and from a request socket to the full socket it becomes, only if it had one by then. A
destroy report of a socket no snapshot held (and not found gone earlier: a late report,
dropped) is therefore:

- the predecessor of a mini-socket when its family, addresses, ports and scope ids are those
  of a TIME_WAIT or FIN_WAIT2 row recorded ``opened`` as such (or in the first table) and
  still in the table, or of a mini-socket the kernel holds when asked, which the next
  snapshot then records: the connection is the mini-socket's, the report is not written; a
  mini-socket takes one report, the latest;
- the full socket a request socket became when they are those of a SYN_RCVD row: the
  request's ``closed`` event gets the report's time (it waits while the request is still
  in the table; after, it is late);
- else an unseen ``closed`` event.

Left as two identities: a socket a dump gave its cookie while the kernel was already making
its successor (a ``closed`` and an ``opened`` in one snapshot, same addresses and ports;
about one connection in ten thousand at thousands a second), as in full mode.
"""

from __future__ import annotations

__all__ = ["EVENTS", "EV_SNAPSHOT", "EV_KEYFRAME", "EV_OPENED", "EV_STATE", "EV_CHANGED",
           "EV_CLOSED", "EV_QUEUES", "EV_COUNTERS", "QUEUES_FIELDS"]

#: The ``event`` column's dictionary, in code order (= ``_diff.event_code``).
EVENTS: tuple[str, ...] = ("snapshot", "keyframe", "opened", "state", "changed", "closed", "queues",
                           "counters")
EV_SNAPSHOT, EV_KEYFRAME, EV_OPENED, EV_STATE, EV_CHANGED, EV_CLOSED, EV_QUEUES, EV_COUNTERS = range(8)
#: What a ``queues`` event keeps of its row; every other field is 0 (``process`` null).
QUEUES_FIELDS = ("family", "state", "rx_queue", "tx_queue", "cookie")
