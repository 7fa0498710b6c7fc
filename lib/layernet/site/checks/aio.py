"""The aio section as written, against the whole site: per-level keys that name levels, a schema registry storage
account for every level that reaches Azure, and the pinned release's templates for the arm executor."""
from __future__ import annotations

from layernet.site.checks.doc import Doc
from layernet.site.problems import Problem


def check(doc: Doc) -> list[Problem]:
    raw, fname = doc.raw, doc.file
    out: list[Problem] = []
    aio = raw.get("aio") if isinstance(raw.get("aio"), dict) else {}
    levels = [lv for lv in (raw.get("levels") or []) if isinstance(lv, dict)]
    names = [lv.get("name") for lv in levels if isinstance(lv.get("name"), str)]
    per = aio.get("levels") or {}
    if isinstance(per, dict) and names:
        for key in per:
            if key not in names:
                out.append(Problem(fname, f"aio.levels.{key}", per[key], f"a key that names a level ({', '.join(names)})"))
    azure = raw.get("azure") if isinstance(raw.get("azure"), dict) else {}
    default_sa = azure.get("schema_registry_storage")
    for lv in levels if "aio" in raw else []:     # a site without an aio section does not deploy AIO yet
        name = lv.get("name")
        if not isinstance(name, str) or not lv.get("reaches_azure", True):
            continue
        cfg = per.get(name) if isinstance(per, dict) and isinstance(per.get(name), dict) else {}
        sr = cfg.get("schema_registry") if isinstance(cfg.get("schema_registry"), dict) else {}
        if not sr.get("storage_account") and not default_sa:
            out.append(Problem(fname, f"aio.levels.{name}.schema_registry.storage_account", None,
                               "a storage account for the schema registry (or set azure.schema_registry_storage)"))
    if aio.get("executor") == "arm":
        tpl = aio.get("templates") if isinstance(aio.get("templates"), dict) else {}
        for kind in ("enablement", "instance"):
            if not aio.get("release_tag") and not tpl.get(f"{kind}_url"):
                out.append(Problem(fname, f"aio.templates.{kind}_url", None,
                                   "the pinned release's template URL, or aio.release_tag (e.g. v1.2.36) to use its "
                                   "release assets (executor: arm)"))
    return out
