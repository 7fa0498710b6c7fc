"""Stage 00: is the site valid, what does it look like, which tools are here, what will be allowed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pandas as pd

from layernet import context, session
from layernet import paths
from layernet.allowlist import missing_required
from layernet.htmltable import show
from layernet.site import Site, SiteError, load_site
from layernet.topology import describe, site_picture


def resolve_site_path(site_path: str = "") -> Path:
    """The site a notebook uses: its parameter, else the JupyterLab session's (`make jupyter`), else
    $LAYERNET_SITE, else the lab site."""
    given = session.site_args(site_path)
    return Path(site_path or (given and given[0]) or os.environ.get(session.SITE_ENV) or paths.params() / "lab.yaml").resolve()


def open_site(site_path: str = "", overrides: Optional[list[str]] = None) -> Site:
    """The site with its overrides: the notebook's parameters, else those the JupyterLab session was started with."""
    given = session.site_args(site_path, overrides)
    if given:
        return load_site(Path(given[0]).resolve(), given[1])
    return load_site(resolve_site_path(site_path), overrides or [])


def open_context(site_path: str = "", overrides: Optional[list[str]] = None) -> context.Context:
    """The notebook's Context, built once: the site (as `open_site` finds it), its allow list, its target, its
    clusters' own side and its Azure side. Every stage call of the notebook takes it."""
    return context.build(open_site(site_path, overrides))


def validation(site_path: str = "", overrides: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per problem (empty frame when valid)."""
    try:
        open_site(site_path, overrides)
    except SiteError as exc:
        return pd.DataFrame([{"file": p.file, "field": p.path, "value": str(p.value), "expected": p.expected}
                             for p in exc.problems])
    return pd.DataFrame(columns=["file", "field", "value", "expected"])


def validation_view(site_path: str = "", overrides: Optional[list[str]] = None):
    """What the report shows of the site check: every problem in one table, or one line naming the valid file."""
    from IPython.display import Markdown

    problems = validation(site_path, overrides)
    if len(problems):
        return show(problems)
    return Markdown(f"**Valid site file** `{resolve_site_path(site_path)}`")


def levels_table(site) -> pd.DataFrame:
    ctx = context.of(site)
    site, target = ctx.site, ctx.target
    rows = []
    for lv in site.chain:
        parent = site.parent(lv)
        rows.append({"level": lv.name, "purdue": lv.number, "parent": parent.name if parent else "(internet)",
                     "network": str(lv.network), "node_ip": str(lv.node_ip), "pod_cidr": str(lv.pod_cidr),
                     "proxy": "yes" if lv.proxy else "", "dns_override": "yes" if lv.dns_override else "",
                     "egress": "yes" if lv.name == site.egress_level else "",
                     "kube_context": target.context_label(lv)})
    return pd.DataFrame(rows)


def tools(site) -> pd.DataFrame:
    """The tools this site's target needs, found or not, with their versions and what to do when missing."""
    df = pd.DataFrame(context.of(site).target.requirements(), columns=["tool", "needed_for", "found", "version", "fix"])
    df["found"] = df["found"].map({True: "yes", False: "MISSING"})
    return df


def allowlist_table(site) -> pd.DataFrame:
    return context.of(site).allowlist.to_frame()


def summary(site) -> dict:
    ctx = context.of(site)
    site, al = ctx.site, ctx.allowlist
    return {"levels": len(site.levels), "proxy_levels": sum(l.proxy for l in site.levels),
            "dns_levels": sum(l.dns_override for l in site.levels), "allowlist_entries": len(al.entries),
            "target": site.target,
            "required_hosts_dropped": [f"{n.label()} ({n.role})" for n in missing_required(site, al)]}


def require_tools(table: pd.DataFrame) -> None:
    """Fail the stage when a needed tool is missing, naming the fix."""
    missing = table[table["found"] == "MISSING"]
    if len(missing):
        fixes = "; ".join(f"{r.tool}: {r.fix}" for r in missing.itertuples())
        raise RuntimeError(f"{len(missing)} tool(s) missing - {fixes}")


def topology_picture(site) -> str:
    return site_picture(context.site_of(site))


def topology_display(site: Site):
    """The topology picture for a notebook, with a text alternative that the HTML report carries."""
    from IPython.display import SVG

    return SVG(topology_picture(site), metadata={"alt": describe(context.site_of(site))})


def summary_text(site) -> str:
    s = summary(site)
    site = context.site_of(site)
    return (f"**Preflight passed** for site `{site.name}` (target `{s['target']}`): {s['levels']} levels, "
            f"{s['proxy_levels']} proxy level(s), {s['dns_levels']} DNS override level(s), "
            f"{s['allowlist_entries']} allow-list entries."
            + (f" **Required by a role but not on the allow list:** {', '.join(s['required_hosts_dropped'])}: the "
               "stage of that role fails at every level behind a proxy (allowlist.drop_hosts)."
               if s["required_hosts_dropped"] else ""))
