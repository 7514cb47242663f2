"""Every exception tcpsnap raises on purpose: one home, all exported from ``tcpsnap``.

Bad arguments raise the built-in ``ValueError``/``TypeError``; what goes wrong while
capturing or recording raises a subclass of :class:`TcpsnapError`.
"""

__all__ = ["TcpsnapError", "BackendUnavailable", "DumpInterrupted", "RecorderError",
           "RecorderLocked", "UnsafePath", "BadRecording", "FilterError", "UsageError", "ShipError",
           "NamespaceError", "ThriftError"]


class TcpsnapError(Exception):
    """Base class of tcpsnap's own errors."""


class BackendUnavailable(TcpsnapError, ImportError):
    """No capture backend exists for this platform, or its compiled module is missing."""


class DumpInterrupted(TcpsnapError, RuntimeError):
    """The kernel's table kept changing during the dump: no consistent snapshot."""


class RecorderError(TcpsnapError):
    """The recorder could not go on (disk full, folder not writable...). What was
    recorded before stays readable or recoverable."""


class RecorderLocked(RecorderError):
    """Another recorder holds the folder (one recorder per folder)."""


class UnsafePath(RecorderError):
    """A folder or file tcpsnap refuses to use: a symbolic link, another user's, or in a
    folder every user may write to without the sticky bit."""


class BadRecording(TcpsnapError):
    """A recording's file a reader cannot trust: unreadable or corrupt, not a tcpsnap
    file, a copy of another (a duplicate seq range), or of the other mode. The message
    names the file(s); ``skip_bad=True`` (``--skip-bad``) reads the rest."""


class FilterError(ValueError):
    """A filter (``tcpsnap.parse_filter``, ``where=``, ``filter=``, the filter options of
    every command) that cannot be read: one line naming the bad part. A ``ValueError``,
    as every bad argument; the command line prints it and exits 2."""


class UsageError(TcpsnapError, ValueError):
    """(The command line's own; not exported from ``tcpsnap``.) A command line that
    cannot work, found after parsing (a bin width too small for the range asked, two
    zones for one axis...): the command line exits 2 with one line saying what would
    work."""


class ShipError(TcpsnapError):
    """Shipping a recording to object storage could not go on (no credentials, a bucket
    that does not exist or refuses us, an object of the same name with other bytes): one
    line naming what and where. A passing network failure is retried, not raised."""


class NamespaceError(TcpsnapError):
    """A network namespace tcpsnap was asked to capture cannot be reached: no such
    namespace (``--netns NAME|PATH|PID``), or a capability missing (CAP_SYS_ADMIN to enter
    one, CAP_SYS_PTRACE to open another process's). The message is one line naming it."""


class ThriftError(ValueError):
    """Thrift compact-protocol bytes that do not decode (``tcpsnap.record.thrift``):
    truncated, over-long, nested too deep, trailing bytes, an unknown type. Recovery
    reads it as a damaged row-group log entry."""
