"""Which connections crossed which hops during a stage: the proxies' access logs, joined into paths.

A stage's own traffic (the Arc agents, the AIO extension pulling images, ...) leaves its level through the proxy
above it, and every proxy on the way logs it. `paths(site, target, since)` reads each proxy level's log from
`since` on (the same `Target.logs` on a real site and in the lab), and follows every connection that started
in a level upward. Which record at the level above continues a record is the audit's hop join (`hops.link`:
the child proxy's `upstream_local` is the parent's record's source, nearest in time when a port is reused); a
record that continues none is where a connection entered the chain. One row per connection:

    source (level it came from), host (SNI), port, hops ("level3 ✓ → level4 ✓"), outcome ("reached Azure",
    "refused at level3", "forwarded by level3, no record at level4"), time

`refused(site, paths)` gives {level: [hosts]} for a stage's failure hint; `summary` counts per (source, host);
`picture` draws the hops per source level and host as an SVG grid (green forwarded, red refused).
"""
from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from html import escape
from typing import Optional

from layernet import hops

COLUMNS = ["time", "source", "host", "port", "hops", "outcome", "reached", "refused_at"]


def _ip_port(text: str) -> tuple[str, str]:
    text = text or ""
    ip, _, port = text.rpartition(":")
    return (ip, port) if ip else (text, "")


def _level_of(site, ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "unknown"
    for lv in site.levels:
        if addr in lv.network:
            return lv.name
    if addr in site.admin.network:
        return "admin"
    return "outside"


def _forwarded(rec: dict) -> bool:
    flags = rec.get("response_flags") or "-"
    return bool(rec.get("upstream_host")) and rec.get("upstream_host") != "-" and flags in ("-", "")


def read(site, target, since: Optional[datetime] = None) -> dict[str, list[dict]]:
    """{proxy level: [records]} from the target's access logs (lines that are not JSON are skipped here; the
    audit counts them)."""
    out: dict[str, list[dict]] = {}
    for lv in site.chain:
        if not lv.proxy:
            continue
        recs = []
        for line in target.logs(lv.name, since=since):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                rec["level"] = lv.name
                recs.append(rec)
        out[lv.name] = recs
    return out


def _links(site, records: list[dict]) -> dict[int, int]:
    """{index of a record: index of the record it caused at the level above}, by the hop join (`hops.link`) over
    the records in a throwaway DuckDB table (each record its own group)."""
    if not records:
        return {}
    import duckdb
    import pandas as pd

    def text(r: dict, key: str) -> str:
        v = r.get(key)
        return "" if v is None else str(v)

    frame = pd.DataFrame({
        "id": range(len(records)), "time": [text(r, "time") for r in records],
        "level": [text(r, "level") for r in records], "source": [text(r, "source") for r in records],
        "source_ip": [_ip_port(text(r, "source"))[0].strip("[]") for r in records],
        "upstream_local": [text(r, "upstream_local") for r in records], "sni": [text(r, "sni") for r in records],
        "listener_port": [text(r, "listener_port") for r in records],
        "verdict": [hops.verdict_of(text(r, "filter_chain"), text(r, "response_flags")) for r in records]},
        columns=["id", "time", "level", "source", "source_ip", "upstream_local", "sni", "listener_port", "verdict"])
    db = duckdb.connect()
    try:
        db.execute("SET TimeZone = 'UTC'")
        db.register("_records", frame)
        db.execute("""CREATE TEMP TABLE _rows AS SELECT id, epoch_ms(try_cast(time AS TIMESTAMPTZ)) AS t,
                        CAST(id AS UBIGINT) AS g, hash(source) AS sk,
                        CASE WHEN upstream_local <> '' THEN hash(upstream_local) END AS uk FROM _records""")
        db.execute("""CREATE TEMP TABLE _groups AS SELECT CAST(id AS UBIGINT) AS g, level, source_ip, sni,
                        try_cast(listener_port AS INTEGER) AS listener_port, verdict FROM _records""")
        db.unregister("_records")
        hops.link(db, site, "_rows", "_groups")
        return dict(db.execute("SELECT id, next_id FROM _next").fetchall())
    finally:
        db.close()


def join(site, logs: dict[str, list[dict]]) -> list[dict]:
    """Connections followed from where they entered the chain up to where they left or were refused."""
    records = [(lv.name, r) for lv in reversed(site.chain) for r in logs.get(lv.name, [])]
    nxt = _links(site, [dict(r, level=lvl) for lvl, r in records])
    continued = set(nxt.values())
    rows = []
    for start, (lvl, r) in enumerate(records):
        if start in continued:
            continue
        steps, cur, cur_level = [], start, lvl
        outcome, refused_at, reached = "", "", False
        while True:
            ok = _forwarded(records[cur][1])
            steps.append(f"{cur_level} {'✓' if ok else '✕'}")
            if not ok:
                outcome, refused_at = f"refused at {cur_level}", cur_level
                break
            parent = site.parent(cur_level)
            if parent is None or cur_level == site.egress_level:
                outcome, reached = "reached Azure", True
                break
            if cur not in nxt:
                outcome = f"forwarded by {cur_level}, no record at {parent.name}"
                break
            cur = nxt[cur]
            cur_level = records[cur][0]
        src_ip, _ = _ip_port(r.get("source", ""))
        rows.append({"time": r.get("time", ""), "source": _level_of(site, src_ip), "host": r.get("sni") or "(no SNI)",
                     "port": int(r["listener_port"]) if str(r.get("listener_port", "")).isdigit() else None,
                     "hops": " → ".join(steps), "outcome": outcome, "reached": reached, "refused_at": refused_at})
    rows.sort(key=lambda x: x["time"])
    return rows


def paths(site, target, since: Optional[datetime] = None):
    import pandas as pd

    return pd.DataFrame(join(site, read(site, target, since)), columns=COLUMNS)


def refused(site, df) -> dict[str, list[str]]:
    """{level where it was refused: [hosts]} (for a stage's failure hint)."""
    out: dict[str, list[str]] = {}
    for _, r in df[df["refused_at"] != ""].iterrows():
        hosts = out.setdefault(r["refused_at"], [])
        label = f"{r['host']}:{r['port']} (from {r['source']})"
        if label not in hosts:
            hosts.append(label)
    return out


def summary(df):
    """Connections per (source level, host, port, outcome)."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(columns=["source", "host", "port", "hops", "outcome", "connections"])
    g = df.groupby(["source", "host", "port", "hops", "outcome"], dropna=False).size().reset_index(name="connections")
    return g.sort_values(["source", "outcome", "host"]).reset_index(drop=True)


def picture(site, df, hosts: Optional[list[str]] = None, title: str = "") -> str:
    """SVG: for every source level, one row per host and one column per hop up to Azure; a cell is green when
    that proxy forwarded the host's connections, red when it refused them, grey when none got there."""
    s = summary(df)
    if hosts is not None:
        s = s[s["host"].isin(hosts)]
    chain = [lv.name for lv in reversed(site.chain)]
    rows = []
    for src in chain:
        part = s[s["source"] == src]
        for host in sorted(part["host"].unique()):
            hp = part[part["host"] == host]
            cells = {}
            for _, r in hp.iterrows():
                for hop in str(r["hops"]).split(" → "):
                    name, _, mark = hop.rpartition(" ")
                    prev = cells.get(name)
                    cells[name] = "✕" if mark == "✕" or prev == "✕" else "✓"
            rows.append((src, host, cells, int(hp["connections"].sum())))
    proxies = [lv for lv in chain if site.level(lv).proxy]
    cw, lw, rh, top = 120, 330, 22, 56
    w = lw + cw * (len(proxies) + 1) + 70
    h = top + rh * max(1, len(rows)) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           'font-family="Segoe UI, Roboto, Helvetica, Arial, sans-serif" font-size="12" role="img">',
           f"<title>{escape(title or 'Connections per hop')}</title>",
           f'<rect width="{w}" height="{h}" fill="#fff"/>']
    if title:
        out.append(f'<text x="8" y="18" font-size="14" font-weight="600">{escape(title)}</text>')
    for i, p in enumerate(proxies + ["Azure"]):
        out.append(f'<text x="{lw + i * cw + cw / 2}" y="{top - 10}" text-anchor="middle" font-weight="600">'
                   f'{escape(p if p == "Azure" else p + " proxy")}</text>')
    for j, (src, host, cells, n) in enumerate(rows):
        y = top + j * rh
        out.append(f'<text x="8" y="{y + 15}">{escape(src)} · {escape(host)}</text>')
        reached = bool(cells) and all(v == "✓" for v in cells.values()) and site.egress_level in cells
        for i, p in enumerate(proxies + ["Azure"]):
            mark = ("✓" if reached else None) if p == "Azure" else cells.get(p)
            fill = {"✓": "#dafbe1", "✕": "#ffebe9"}.get(mark, "#f6f8fa")
            stroke = {"✓": "#1a7f37", "✕": "#cf222e"}.get(mark, "#d0d7de")
            out.append(f'<rect x="{lw + i * cw + 4}" y="{y + 2}" width="{cw - 8}" height="{rh - 4}" rx="4" '
                       f'fill="{fill}" stroke="{stroke}"/>')
            if mark:
                out.append(f'<text x="{lw + i * cw + cw / 2}" y="{y + 15}" text-anchor="middle" fill="{stroke}">'
                           f'{mark}</text>')
        out.append(f'<text x="{lw + (len(proxies) + 1) * cw + 6}" y="{y + 15}" fill="#57606a">{n}</text>')
    if not rows:
        out.append(f'<text x="8" y="{top + 15}" fill="#57606a">(no connection crossed a proxy in this window)</text>')
    out.append("</svg>")
    return "\n".join(out)
