"""Connections per container and pod (``tcpsnap.analysis.by_container``)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd

from ._timeline import prepare

__all__ = ["by_container", "CONTAINER_COLUMNS"]

#: The columns ``by_container`` uses.
CONTAINER_COLUMNS = ["seq", "host", "boot_id", "state", "local_port", "remote_addr", "cookie", "process",
                     "container", "pod_uid", "netns"]


def _peer(addr: str) -> str:
    # IPv4-mapped peers as their IPv4 form, as analysis.top_remotes counts them
    if addr.startswith("::ffff:"):
        try:
            m = ipaddress.IPv6Address(addr).ipv4_mapped
        except ValueError:
            return addr
        return str(m) if m is not None else addr
    return addr


def by_container(df: pd.DataFrame) -> pd.DataFrame:
    """Per container (and Kubernetes pod): ``connections`` (distinct connections, listeners
    excluded: a connection is (host, boot_id, cookie), so a TIME_WAIT row counts with the
    connection it ends), ``listening`` (local ports listened on, comma-separated),
    ``remotes`` (distinct peers), ``processes`` (owning process names seen, comma-separated;
    empty without pids), ``netns`` (distinct network namespaces). Index: (``container``,
    ``pod_uid``); connections in no container are under container None. Needs schema
    version 3 (``container``, ``pod_uid``: ``tcpsnap read`` of a recording made by
    tcpsnap >= 0.3); works on full and changes recordings alike."""
    df, _ = prepare(df, None)
    cols = ["container", "pod_uid", "connections", "listening", "remotes", "processes", "netns"]
    if len(df) == 0 or "container" not in df:
        return pd.DataFrame(columns=cols).set_index(["container", "pod_uid"])
    key = [c for c in ("host", "boot_id") if c in df] + ["cookie"]
    listen = df["state"].astype(str).to_numpy() == "LISTEN"
    work = pd.DataFrame({
        "container": df["container"].astype(object).fillna("").to_numpy(),
        "pod_uid": df["pod_uid"].astype(object).fillna("").to_numpy(),
        "listen": listen,
        "port": df["local_port"].to_numpy(),
        "peer": df["remote_addr"].astype(str).map(_peer).to_numpy(),
        "process": (df["process"].astype(object).fillna("").to_numpy() if "process" in df
                    else np.full(len(df), "", object)),
        "netns": df["netns"].to_numpy() if "netns" in df else np.zeros(len(df), np.uint64),
        "conn": pd.util.hash_pandas_object(df[key], index=False).to_numpy(),
    })
    rows = []
    for (cont, pod), g in work.groupby(["container", "pod_uid"], sort=True):
        conns = g[~g["listen"]]
        rows.append({
            "container": cont or None, "pod_uid": pod or None,
            "connections": conns["conn"].nunique(),
            "listening": ",".join(str(p) for p in sorted(set(g.loc[g["listen"], "port"].tolist()))),
            "remotes": conns.loc[~conns["peer"].isin({"0.0.0.0", "::", ""}), "peer"].nunique(),
            "processes": ",".join(sorted(p for p in set(g["process"]) if p)),
            "netns": g["netns"].nunique(),
        })
    return pd.DataFrame(rows, columns=cols).set_index(["container", "pod_uid"]).sort_values(
        "connections", ascending=False)
