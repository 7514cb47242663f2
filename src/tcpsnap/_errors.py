"""Exceptions tcpsnap raises on purpose."""

__all__ = ["TcpsnapError", "BackendUnavailable", "DumpInterrupted"]


class TcpsnapError(Exception):
    """Base class of tcpsnap's own errors."""


class BackendUnavailable(TcpsnapError, ImportError):
    """No capture backend exists for this platform, or its compiled module is missing."""


class DumpInterrupted(TcpsnapError, RuntimeError):
    """The kernel's table kept changing during the dump: no consistent snapshot."""
