"""The site's topology as a picture (inline SVG: renders offline, in reports and in JupyterLab)."""
from __future__ import annotations

from html import escape

from layernet import flows as flows_model
from layernet.allowlist import effective_allowlist
from layernet.site import Site

W, BOX_W, BOX_H, GAP, TOP = 900, 430, 92, 74, 120
X0 = 60


def describe(site: Site) -> str:
    """The picture's text alternative: the chain from the lowest level to the internet."""
    chain = " -> ".join(f"{lv.name} {lv.node_ip}" for lv in reversed(site.chain))
    return f"Topology of site {site.name}: {chain} -> internet; only the proxied ports cross a level"


def site_picture(site: Site) -> str:
    """The site's picture as the reports show it: the topology with the size of its allow list."""
    return topology_svg(site, allowed_names=len(effective_allowlist(site).entries))


def topology_svg(site: Site, allowed_names: int | None = None) -> str:
    """Levels from the internet down, node IPs, proxy/DNS roles, the allowed hops and where the internet is."""
    chain = site.chain
    hops = {(h["from"], h["to"]): h["labels"] for h in flows_model.hops(site)}
    h = TOP + len(chain) * (BOX_H + GAP) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" '
           'font-family="Segoe UI, Roboto, Helvetica, Arial, sans-serif" role="img">',
           f"<title>Topology of site {escape(site.name)}</title>",
           '<defs><marker id="arr" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           '<path d="M0,0 L10,5 L0,10 z" fill="#1a7f37"/></marker>'
           '<marker id="arrg" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           '<path d="M0,0 L10,5 L0,10 z" fill="#8c959f"/></marker></defs>',
           f'<rect x="0" y="0" width="{W}" height="{h}" fill="#ffffff"/>']
    # the internet / Azure
    cx = X0 + BOX_W / 2
    cloud_label = f"Internet / Azure ({site.azure.cloud}, {site.azure.location})"
    out.append(f'<ellipse cx="{cx}" cy="48" rx="210" ry="34" fill="#ddf4ff" stroke="#0969da" stroke-width="2"/>')
    out.append(f'<text x="{cx}" y="54" text-anchor="middle" font-size="16" font-weight="600" fill="#0a3069">{escape(cloud_label)}</text>')
    # jump box at the right
    jx, jy = X0 + BOX_W + 170, TOP + 10
    out.append(f'<rect x="{jx}" y="{jy}" width="210" height="64" rx="8" fill="#f6f8fa" stroke="#57606a" stroke-dasharray="5 3"/>')
    out.append(f'<text x="{jx + 105}" y="{jy + 26}" text-anchor="middle" font-size="14" font-weight="600">Jump box (admin)</text>')
    out.append(f'<text x="{jx + 105}" y="{jy + 46}" text-anchor="middle" font-size="12" fill="#57606a">'
               f'{site.admin.jump_box_ip} · {site.admin.network}</text>')

    for i, lv in enumerate(chain):
        y = TOP + i * (BOX_H + GAP)
        egress = lv.name == site.egress_level
        fill = "#fff8c5" if egress else "#f6f8fa"
        out.append(f'<rect x="{X0}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="10" fill="{fill}" stroke="#1f2328" stroke-width="1.5"/>')
        out.append(f'<text x="{X0 + 14}" y="{y + 26}" font-size="17" font-weight="700">{escape(lv.name)} '
                   f'<tspan font-weight="400" fill="#57606a">· Purdue level {lv.number}</tspan></text>')
        out.append(f'<text x="{X0 + 14}" y="{y + 50}" font-size="13">node {lv.node_ip} · network {lv.network} · pods {lv.pod_cidr}</text>')
        bx = X0 + 14
        badges = []
        if lv.proxy:
            badges.append(("Envoy: SNI allow list" + (f" ({allowed_names} names)" if allowed_names else ""), "#dafbe1", "#1a7f37"))
        if lv.dns_override:
            parent = site.parent(lv)
            badges.append((f"DNS override → {parent.node_ip if parent else '?'}", "#ddf4ff", "#0969da"))
        if egress:
            badges.append(("internet egress", "#fff1e5", "#bc4c00"))
        if not lv.reaches_azure:
            badges.append(("no Azure access", "#f6f8fa", "#57606a"))
        for text, bg, fg in badges:
            wdt = 8 + 6.6 * len(text)
            out.append(f'<rect x="{bx}" y="{y + 62}" width="{wdt:.0f}" height="22" rx="11" fill="{bg}" stroke="{fg}"/>')
            out.append(f'<text x="{bx + wdt / 2:.0f}" y="{y + 77}" text-anchor="middle" font-size="12" fill="{fg}">{escape(text)}</text>')
            bx += wdt + 8
        # admin line
        out.append(f'<line x1="{X0 + BOX_W}" y1="{y + BOX_H / 2}" x2="{jx}" y2="{jy + 32}" stroke="#8c959f" '
                   'stroke-dasharray="4 4" marker-start="url(#arrg)"/>')
        admin = " · ".join(flows_model.admin_labels(site, lv.name))
        out.append(f'<text x="{X0 + BOX_W + 8}" y="{y + BOX_H / 2 - 6:.0f}" font-size="11" fill="#57606a">'
                   f'{escape(admin)}</text>')
        # hop up: the crossing flows of this level (layernet.flows), one label per kind
        hop = hops.get((lv.name, "internet" if egress else site.parent(lv).name), [])
        text = " · ".join(hop) if hop else "nothing crosses"
        if egress:
            out.append(f'<line x1="{cx}" y1="{y}" x2="{cx}" y2="84" stroke="#1a7f37" stroke-width="3" marker-end="url(#arr)"/>')
            out.append(f'<text x="{cx + 10}" y="{(y + 84) / 2 + 4:.0f}" font-size="12" fill="#1a7f37">{escape(text)}</text>')
        else:
            parent_y = y - GAP
            out.append(f'<line x1="{cx}" y1="{y}" x2="{cx}" y2="{parent_y}" stroke="#1a7f37" stroke-width="3" marker-end="url(#arr)"/>')
            label = f"to {site.parent(lv).name}: {text} only"
            out.append(f'<text x="{cx + 10}" y="{y - GAP / 2 + 4:.0f}" font-size="12" fill="#1a7f37">{escape(label)}</text>')
            # blocked direct path to the internet
            bxp = X0 - 30
            out.append(f'<line x1="{X0}" y1="{y + 20}" x2="{bxp}" y2="{y + 20}" stroke="#cf222e" stroke-width="2"/>')
            out.append(f'<text x="{bxp - 4}" y="{y + 25}" text-anchor="end" font-size="16" fill="#cf222e" font-weight="700">✕</text>')
    legend_y = h - 18
    out.append(f'<text x="{X0}" y="{legend_y}" font-size="12" fill="#57606a">Green: the only hops allowed (from the flows model). '
               '✕: no direct internet path. Dashed: admin network (jump box).</text>')
    out.append("</svg>")
    return "\n".join(out)
