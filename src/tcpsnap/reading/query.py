"""Row selection every reader shares: the time range and ``filters`` as pyarrow
expressions, and rows back in snapshot order."""

from __future__ import annotations

from .timeforms import to_utc

__all__ = ["time_filter", "filter_expression", "where_expression", "in_seq_order"]


def time_filter(dataset, start, end):
    """The ``pyarrow.dataset`` expression for ``start <= timestamp < end`` (either may be
    None; both None: None). Whole files are left out by ``Recording`` (by the times in
    their names), never by ``date=`` folder: a file moved to another folder is still read."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    expr = None
    ts_type = pa.timestamp("ns", tz="UTC")
    if start is not None:
        expr = ds.field("timestamp") >= pa.scalar(to_utc(start).value, type=ts_type)
    if end is not None:
        e = ds.field("timestamp") < pa.scalar(to_utc(end).value, type=ts_type)
        expr = e if expr is None else expr & e
    return expr


def filter_expression(filters):
    """``read``'s ``filters`` (an expression, or ``(column, op, value)`` tuples as
    ``pandas.read_parquet`` takes them) as a ``pyarrow.dataset`` expression."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if isinstance(filters, ds.Expression):
        return filters
    try:
        dnf = isinstance(filters[0], list)
    except (TypeError, IndexError, KeyError):
        return pq.filters_to_expression(filters)       # let pyarrow say what is wrong
    clauses = [[_time_value(t) for t in c] for c in filters] if dnf else [_time_value(t) for t in filters]
    return pq.filters_to_expression(clauses)


def where_expression(where, filters=None):
    """``read``'s ``where`` (a ``tcpsnap.Filter``, its text such as ``"dport = :443"``, or
    a ``pyarrow`` expression) and ``filters`` as one ``pyarrow.dataset`` expression (None
    when both are None). FilterError (a ValueError) for text that does not parse."""
    import pyarrow.dataset as ds

    from ..filters import parse_filter

    out = None if filters is None else filter_expression(filters)
    if where is None:
        return out
    w = where if isinstance(where, ds.Expression) else parse_filter(where).expression()
    return w if out is None else out & w


def _time_value(term):
    """A ``(column, op, value)`` filter on ``timestamp`` with its value(s) through
    ``to_utc``: the same forms and zone rule as ``start``/``end``."""
    import pyarrow as pa

    if not (isinstance(term, tuple | list) and len(term) == 3 and term[0] == "timestamp"):
        return term
    col, op, value = term
    t = pa.timestamp("ns", tz="UTC")
    if op in ("in", "not in"):
        return (col, op, pa.array([to_utc(v).value for v in value], t))
    return (col, op, pa.scalar(to_utc(value).value, type=t))


def in_seq_order(df):
    """``df`` in snapshot order: files can come back out of order."""
    if "seq" in df and len(df) > 1:
        seq = df["seq"].to_numpy()
        if (seq[1:] < seq[:-1]).any():
            df = df.iloc[seq.argsort(kind="stable")].reset_index(drop=True)
    return df
