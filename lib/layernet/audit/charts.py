"""Plotly figures built from the connection table, and `show` to embed them so a report renders offline.

`show(fig)` returns an IPython HTML object: the first figure of the process carries plotly.js inline (about
4 MB, once per notebook), later ones only their data. Nothing is loaded from the network.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from layernet.audit.findings import _tab, source_class

BIN_CHOICES_S = [1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400]
MAX_BINS = 200
COLOURS = {"allowed": "#1a7f37", "refused": "#cf222e", "upstream failure": "#9a6700"}
_plotly_included = False


def bin_seconds(span_ms: int) -> int:
    """The smallest bin of BIN_CHOICES_S that cuts the window into at most MAX_BINS bins."""
    for s in BIN_CHOICES_S:
        if span_ms / (s * 1000) <= MAX_BINS:
            return s
    return BIN_CHOICES_S[-1]


def over_time(data, since=None, until=None) -> go.Figure:
    """Connections per time bin, one line per level and outcome (allowed / refused). The bin comes from the
    window (`since`..`until`, else the first and last connection); every bin of the window is drawn, with
    markers, so a window with one busy bin still shows. `data`: a Parsed or a connection DataFrame."""
    fig = go.Figure()
    fig.update_layout(title="Connections over time per level", xaxis_title="time (UTC)",
                      yaxis_title="connections per bin", template="plotly_white", height=420)
    t = _tab(data)
    lo, hi = t.rows(f"SELECT min(epoch_ms(time)), max(epoch_ms(time)) FROM {t.name}")[0]
    if lo is None:
        return fig
    start = int(pd.Timestamp(since).value // 1_000_000) if since is not None else int(lo)
    end = int(pd.Timestamp(until).value // 1_000_000) if until is not None else int(hi)
    start, end = min(start, int(lo)), max(end, int(hi))
    width = bin_seconds(end - start) * 1000
    start -= start % width                               # bins on round times
    nbins = int((end - start) // width) + 1
    counts = t.rows(f"""SELECT level, verdict IN ('refused-name', 'refused-source') AS refused,
                           (epoch_ms(time) - ?) // ? AS b, count(*) FROM {t.name} GROUP BY ALL""", [start, width])
    x = pd.to_datetime(start + np.arange(nbins, dtype=np.int64) * width, unit="ms", utc=True)
    by = {}
    for level, refused, b, n in counts:
        by.setdefault((level, bool(refused)), np.zeros(nbins, dtype=np.int64))[int(b)] += n
    levels = sorted({k[0] for k in by})
    for level in levels:
        for label, refused in (("allowed", False), ("refused", True)):
            y = by.get((level, refused))
            if y is None:
                y = np.zeros(nbins, dtype=np.int64)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{level} {label}",
                                     line={"dash": "solid" if label == "allowed" else "dot"}))
    fig.update_layout(xaxis_title=f"time (UTC), bins of {width // 1000} s")
    return fig


def top_destinations(df: pd.DataFrame, n: int = 15) -> go.Figure:
    """The n most frequent server names, stacked by outcome."""
    fig = go.Figure()
    fig.update_layout(title=f"Top {n} destinations (server names)", barmode="stack", template="plotly_white",
                      xaxis_title="connections", height=max(300, 26 * n + 120))
    if df.empty:
        return fig
    outcome = pd.Categorical.from_codes(
        np.asarray([0, 1, 1, 2], dtype=np.int8)[df["verdict"].cat.codes.to_numpy()],
        categories=["allowed", "refused", "upstream failure"])
    tab = pd.DataFrame({"sni": df["sni"], "outcome": outcome}).groupby(["sni", "outcome"], observed=True).size()
    tab = tab.unstack(fill_value=0)
    tab.index = [str(x) or "(no name)" for x in tab.index]
    tab = tab.loc[tab.sum(axis=1).sort_values(ascending=False).index[:n]][::-1]
    for label in ("allowed", "refused", "upstream failure"):
        if label in tab:
            fig.add_trace(go.Bar(y=tab.index, x=tab[label], orientation="h", name=label,
                                 marker_color=COLOURS[label]))
    return fig


def flows(df: pd.DataFrame, site) -> pd.DataFrame:
    """Links of the Sankey: source -> target with a connection count. A connection's source is the child
    proxy (a level name), or the network it came from; it ends refused, failed upstream, or (at the egress
    level) in the internet; an allowed connection below the egress continues as the upper level's source."""
    if df.empty:
        return pd.DataFrame(columns=["source", "target", "connections"])
    cls = source_class(df, site)
    level = df["level"]
    child = {lv.name: (site.child(lv).name if site.child(lv) is not None else "") for lv in site.levels}
    counted = pd.DataFrame({"level": level, "cls": cls}).groupby(["level", "cls"], observed=True).size()
    counted = counted.rename("connections").reset_index()
    counted = counted[counted["connections"] > 0]

    def label(lv: str, c: str) -> str:
        return {"child proxy": child.get(lv, ""), "child network": f"{child.get(lv, '')} network",
                "own network": f"{lv} network", "pods": f"{lv} pods"}.get(c, "other sources")
    links = pd.DataFrame({"source": [label(str(l), str(c)) for l, c in zip(counted["level"], counted["cls"])],
                          "target": counted["level"].astype(str), "connections": counted["connections"]})
    ends = pd.DataFrame({"level": level, "verdict": df["verdict"]}).groupby(["level", "verdict"], observed=True).size()
    ends = ends[ends > 0].rename("connections").reset_index()
    names = {"refused-name": "refused: name", "refused-source": "refused: source",
             "upstream-failure": "upstream failure", "allowed": "internet"}
    ends["target"] = [names[str(v)] for v in ends["verdict"]]
    ends["source"] = ends["level"].astype(str)
    ends = ends[(ends["verdict"].astype(str) != "allowed") | (ends["source"] == site.egress_level)]
    ends = ends[["source", "target", "connections"]]
    links = pd.concat([links, ends], ignore_index=True)
    return links.groupby(["source", "target"], sort=False, as_index=False)["connections"].sum()


def sankey(df: pd.DataFrame, site) -> go.Figure:
    """Flows between the levels and out to the internet (or refused)."""
    links = flows(df, site)
    nodes = list(dict.fromkeys(list(links["source"]) + list(links["target"])))
    colour = {n: ("#cf222e" if n.startswith("refused") else "#9a6700" if n == "upstream failure"
                  else "#1a7f37" if n == "internet" else "#0969da") for n in nodes}
    fig = go.Figure(go.Sankey(
        node={"label": nodes, "color": [colour[n] for n in nodes], "pad": 18},
        link={"source": [nodes.index(s) for s in links["source"]], "target": [nodes.index(t) for t in links["target"]],
              "value": links["connections"].tolist()}))
    fig.update_layout(title="Flows between levels", height=420)
    return fig


def to_html(fig: go.Figure, include_plotlyjs: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=bool(include_plotlyjs), config={"displaylogo": False})


def show(fig: go.Figure):
    """The figure as inline HTML; plotly.js goes with the first figure of this process."""
    global _plotly_included
    from IPython.display import HTML

    html = to_html(fig, include_plotlyjs=not _plotly_included)
    _plotly_included = True
    return HTML(html)
