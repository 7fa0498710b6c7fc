"""The telemetry report's charts, built from an `Analysis` (layernet.telemetry.verify)."""
from __future__ import annotations


def sankey(analysis, title: str = "Messages per hop"):
    """Messages flowing hop to hop per route; what did not arrive goes to a 'lost before <hop>' node."""
    import plotly.graph_objects as go

    labels: list[str] = []
    index: dict[str, int] = {}

    def node(name: str) -> int:
        if name not in index:
            index[name] = len(labels)
            labels.append(name)
        return index[name]

    src, dst, val, text = [], [], [], []
    df = analysis.hops
    for route, rows in df.groupby("route", sort=True):
        rows = rows.sort_values("hop")
        prev = None
        for _, row in rows.iterrows():
            here = node(row["name"])
            if prev is not None:
                passed = int(row["judged"] - row["lost"])
                if passed:
                    src.append(prev), dst.append(here), val.append(passed), text.append(f"{route} via {row['via']}")
                if row["lost_here"]:
                    src.append(prev), dst.append(node(f"lost before {row['name']}")), val.append(int(row["lost_here"]))
                    text.append(f"{route}: lost")
            prev = here
    fig = go.Figure(go.Sankey(node={"label": labels, "pad": 18}, link={"source": src, "target": dst, "value": val,
                                                                        "customdata": text,
                                                                        "hovertemplate": "%{customdata}: %{value}<extra></extra>"}))
    fig.update_layout(title=title, height=360)
    return fig


def latency(analysis, title: str = "Latency per hop and end to end (ms)"):
    """A box per segment (hop to hop, and end to end from the OPC UA source timestamp)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    df = analysis.latency
    order = list(dict.fromkeys(df["segment"])) if len(df) else []
    for seg in order:
        fig.add_trace(go.Box(y=df.loc[df["segment"] == seg, "ms"], name=seg, boxpoints=False))
    fig.update_layout(title=title, yaxis_title="ms", showlegend=False, height=420)
    return fig
