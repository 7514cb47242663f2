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
closed      a connection gone since the previous snapshot, as last seen (its last snapshot
            row), at the snapshot that found it gone or, when the kernel's socket-destroy
            feed reported it, at the wall time the report was read. ``seen_in_snapshot``
            false: a socket that lived and died between two snapshots, known only from the
            destroy feed (state as the kernel reports it then, normally CLOSED; no pid, no
            inode)
=========== =================================================================================

The ``kind`` column (``tcpsnap._arrow``) names what a row is for readers that know none
of this: ``snapshot`` for the markers (``snapshot`` and ``keyframe`` rows of family 0),
``partial`` for ``queues`` events, ``connection`` for every other event. The README has the
DuckDB query that rebuilds the table at a moment from them (tested against ``table_at``).

A connection's identity is its cookie, or where the cookie is 0 (Windows) its family,
addresses, ports and scope ids.
"""

from __future__ import annotations

__all__ = ["EVENTS", "EV_SNAPSHOT", "EV_KEYFRAME", "EV_OPENED", "EV_STATE", "EV_CHANGED",
           "EV_CLOSED", "EV_QUEUES", "QUEUES_FIELDS"]

#: The ``event`` column's dictionary, in code order (= ``_diff.event_code``).
EVENTS: tuple[str, ...] = ("snapshot", "keyframe", "opened", "state", "changed", "closed", "queues")
EV_SNAPSHOT, EV_KEYFRAME, EV_OPENED, EV_STATE, EV_CHANGED, EV_CLOSED, EV_QUEUES = range(7)
#: What a ``queues`` event keeps of its row; every other field is 0 (``process`` null).
QUEUES_FIELDS = ("family", "state", "rx_queue", "tx_queue", "cookie")
