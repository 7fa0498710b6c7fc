"""The arc section against the whole site: onboarding timeouts keyed by level names, and an Arc connected-cluster
name for every level that reaches Azure."""
from __future__ import annotations

from layernet.site.checks.doc import Doc
from layernet.site.problems import Problem


def check(doc: Doc) -> list[Problem]:
    raw, fname = doc.raw, doc.file
    out: list = []
    arc = raw.get("arc") if isinstance(raw.get("arc"), dict) else {}
    levels = [lv for lv in (raw.get("levels") or []) if isinstance(lv, dict)]
    names = [lv.get("name") for lv in levels if isinstance(lv.get("name"), str)]
    timeouts = arc.get("onboarding_timeout") or {}
    if isinstance(timeouts, dict) and names:
        for key, value in timeouts.items():
            if key not in names:
                out.append(Problem(fname, f"arc.onboarding_timeout.{key}", value,
                                   f"a key that names a level ({', '.join(names)})"))
    azure = raw.get("azure") if isinstance(raw.get("azure"), dict) else {}
    clusters = azure.get("clusters") or {}
    if isinstance(clusters, dict):
        for lv in levels:
            if lv.get("reaches_azure", True) and isinstance(lv.get("name"), str) and lv["name"] not in clusters:
                out.append(Problem(fname, f"azure.clusters.{lv['name']}", None,
                                   f"the Arc connected-cluster name of level {lv['name']} (it reaches Azure, so stage 02 connects it)"))
    return out
