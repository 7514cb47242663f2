"""The one grammar of times every reader and command takes (``start``, ``end``, ``when``,
``filters`` on ``timestamp``, ``--start``/``--end``): no zone means UTC."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

__all__ = ["TIME_FORMS", "to_utc", "utc_range", "one_line"]


def one_line(e: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


#: What every time argument takes (``start``/``end``/``when``, ``filters`` on
#: ``timestamp``, and the CLI's ``--start``/``--end``), said in every error about one.
TIME_FORMS = ("a datetime, an int of epoch ns, or a string such as '2026-11-26 10:00' (UTC unless "
              "it has a zone), 'now-5m' or '@1795000000' (epoch seconds)")
_NOW_RE = re.compile(r"^now\s*(?:([+-])\s*(\S.*))?$", re.IGNORECASE)
_EPOCH_RE = re.compile(r"^@\s*(-?\d+(?:\.\d{0,9})?)$")
# strings pandas would read in the local time zone or the local date: refused
_LOCAL_RE = re.compile(r"^(?:today|tomorrow|yesterday|\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?)$", re.IGNORECASE)


def to_utc(when: Any):
    """Any time argument of tcpsnap's readers as a UTC ``pandas.Timestamp``: the one
    parser behind ``start``, ``end``, ``table_at``'s ``when``, ``filters`` on
    ``timestamp`` and the CLI's ``--start``/``--end``.

    - a ``datetime``, ``date``, ``pandas.Timestamp`` or ``numpy.datetime64``;
    - an integer (Python or numpy): nanoseconds since the epoch;
    - a string: ISO 8601 as pandas reads it (``"2026-11-26 10:00"``,
      ``"2026-11-26T10:00:00.123456789Z"``, ``"2026-11-26 11:00+01:00"``); ``"now"``,
      ``"now-5m"``, ``"now+1h30m"`` (durations as everywhere: ``tcpsnap._units``);
      ``"@1795000000.25"``, seconds since the epoch.

    The zone rule: a time without a zone (naive datetimes, strings without an offset)
    is UTC, never the local zone. A float (seconds? nanoseconds?), a bool, a time of day
    without a date and ``"today"`` are refused: ``ValueError`` (``TypeError`` for what is
    no time at all)."""
    import numbers
    import time as _time
    from decimal import Decimal

    import numpy as np
    import pandas as pd

    if when is None or isinstance(when, (bool, np.bool_)):
        raise TypeError(f"not a time: {when!r} (give {TIME_FORMS})")
    if isinstance(when, numbers.Integral):
        return pd.Timestamp(int(when), unit="ns", tz="UTC")
    if isinstance(when, numbers.Real):
        raise ValueError(f"not a time: {when!r}: a float is ambiguous (seconds? nanoseconds?); "
                         f"give {TIME_FORMS}")
    if isinstance(when, str):
        text = when.strip()
        m = _NOW_RE.match(text)
        if m:
            ns = _time.time_ns()
            if m.group(1):
                from .._units import parse_duration

                try:
                    d = round(parse_duration(m.group(2)) * 1e9)
                except ValueError:
                    raise ValueError(f"not a time: {when!r} (give {TIME_FORMS})") from None
                ns += d if m.group(1) == "+" else -d
            return pd.Timestamp(ns, unit="ns", tz="UTC")
        m = _EPOCH_RE.match(text)
        if m:
            return pd.Timestamp(int(Decimal(m.group(1)) * 10**9), unit="ns", tz="UTC")
        if not text:
            raise ValueError(f"not a time: {when!r} (give {TIME_FORMS})")
        if _LOCAL_RE.match(text):
            raise ValueError(f"not a time: {when!r}: give the date too; {TIME_FORMS}")
    elif not isinstance(when, (_dt.date, np.datetime64)):
        raise TypeError(f"not a time: {type(when).__name__} {when!r} (give {TIME_FORMS})")
    try:
        ts = pd.Timestamp(when)
    except (ValueError, OverflowError, TypeError) as e:
        raise ValueError(f"not a time: {when!r} ({one_line(e)}); give {TIME_FORMS}") from None
    if ts is pd.NaT:
        raise ValueError(f"not a time: {when!r} (give {TIME_FORMS})")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def utc_range(start: Any, end: Any) -> tuple[Any, Any]:
    """``start`` and ``end`` through ``to_utc`` once (None stays None), so that ``"now"``
    is one instant for every use of them in a call."""
    return (None if start is None else to_utc(start)), (None if end is None else to_utc(end))


