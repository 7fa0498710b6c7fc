"""Renderers: pure, deterministic functions from a Site and its AllowList to per-level artifacts.

Same input, byte-identical output. `render_site` returns every artifact of every level for a target:

- lab:  envoy.yaml (proxy levels), Corefile + NodeHosts + custom/<key> per coredns-custom data key
        (DNS-override levels), nftables.nft and ip-allow-list.md (every level)
- kube: envoy.yaml + envoy-manifests.yaml (proxy levels), coredns-custom.yaml + coredns-external.yaml
        (DNS-override levels), nftables.nft and ip-allow-list.md (every level)

On the lab, the Corefile names NodeHosts and custom/ by absolute path under <state_dir>/<level>/, which is
where ``write_artifacts(artifacts, state_dir)`` puts them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from layernet.flows import proxy_ports
from layernet.render.dns import lab_coredns_files, render_coredns
from layernet.render.envoy import ENVOY_ARGS, render_envoy
from layernet.render.firewall import firewall_rows, render_allow_list_md, render_nftables
from layernet.render.manifests import render_envoy_manifests
from layernet.images import render_import

__all__ = ["Artifact", "render_site", "write_artifacts", "firewall_rows", "ENVOY_ARGS", "TARGETS"]

TARGETS = ("lab", "kube")


@dataclass(frozen=True)
class Artifact:
    level: str     # level name
    name: str      # file name, e.g. "envoy.yaml"
    kind: str      # "envoy" | "dns-lab" | "coredns" | "manifests" | "firewall" | "firewall-table"
    content: str


def render_site(site, allowlist, target: str = "lab", *, state_dir: Optional[Path] = None) -> list[Artifact]:
    """Every artifact of every level, in chain order (egress level first), for `target`."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    out: list[Artifact] = []
    for lv in site.chain:
        if lv.proxy:
            text = render_envoy(site, allowlist, lv, target=target, state_dir=state_dir)
            out.append(Artifact(lv.name, "envoy.yaml", "envoy", text))
            if target == "kube":
                out.append(Artifact(lv.name, "envoy-manifests.yaml", "manifests",
                                    render_envoy_manifests(site, lv, text, list(proxy_ports(site, allowlist)))))
        if lv.dns_override:
            if target == "lab":
                for name, content in lab_coredns_files(site, allowlist, lv, state_dir=state_dir):
                    out.append(Artifact(lv.name, name, "dns-lab", content))
            else:
                custom, external = render_coredns(site, allowlist, lv)
                out.append(Artifact(lv.name, "coredns-custom.yaml", "coredns", custom))
                out.append(Artifact(lv.name, "coredns-external.yaml", "coredns", external))
        out.append(Artifact(lv.name, "nftables.nft", "firewall", render_nftables(site, lv, allowlist)))
        out.append(Artifact(lv.name, "ip-allow-list.md", "firewall-table", render_allow_list_md(site, lv, allowlist)))
        if target == "kube" and site.images.mode_of(lv.name) == "import":  # air gap: archives to carry, import commands
            out.append(Artifact(lv.name, "images-import.md", "images", render_import(site, lv)))
    return out


def write_artifacts(artifacts: list[Artifact], out_dir: Path) -> list[Path]:
    """Write each artifact to out_dir/<level>/<name>; returns the written paths, sorted."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for art in artifacts:
        path = out_dir / art.level / art.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(art.content)
        paths.append(path)
    return sorted(paths)
