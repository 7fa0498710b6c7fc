"""Every level's resolved AIO names, defaults included (`Aio.for_level` derives them from the cluster names), on the
validated site: each is a valid name, and no two levels share an instance, custom location, ADR namespace or schema
registry (one resource group holds them all), or a blob container of one storage account."""
from __future__ import annotations

from layernet.site import names
from layernet.site.aio import CONTAINER, AioLevel
from layernet.site.checks.doc import Doc
from layernet.site.problems import Problem

# the resolved names of a level: field path under aio.levels.<level>, the rule's name, and how the default is derived
RESOLVED_NAMES = (
    ("instance", "instance", "AIO instance", "<cluster>-ops"),
    ("custom_location", "custom_location", "custom location", "<cluster>-cl"),
    ("adr_namespace", "adr_namespace", "ADR namespace", "<cluster>-ns"),
    ("registry", "schema_registry.name", "schema registry", "<cluster>-sr"),
    ("registry_namespace", "schema_registry.namespace", "registry namespace", "the registry name"),
)


def check(doc: Doc) -> list[Problem]:
    site, fname = doc.site, doc.file
    out: list[Problem] = []
    seen: dict[tuple, str] = {}
    if "aio" not in site.model_fields_set:      # a site without an aio section does not deploy AIO (yet)
        return out
    container = ("container", "schema_registry.container", "blob container", "<cluster>-schemas")
    for lv in site.arc_levels():
        r = site.aio.for_level(site, lv.name)
        cfg = site.aio.levels.get(lv.name) or AioLevel()
        for attr, path, kind, how in RESOLVED_NAMES + (container,):
            value = getattr(r, attr)
            given = _given(cfg, path)
            where = f"aio.levels.{lv.name}.{path}"
            shown = where if given else f"{where} (not set: {how}, from azure.clusters.{lv.name} {r.cluster!r})"
            why = (names.check_aio_name(value, kind) if attr != "container"
                   else None if CONTAINER.fullmatch(value) else
                   "a blob container name of 3-63 lowercase letters, digits and single inner hyphens")
            if why:
                out.append(Problem(fname, where, value, why + ("" if given else f"; set {where} or change "
                                                             f"azure.clusters.{lv.name}")))
                continue
            key = (attr, r.storage_account if attr == "container" else "", value.lower())
            if key in seen:
                out.append(Problem(fname, where, value, f"a name no other level uses: {seen[key]} has it too "
                                   f"(two levels cannot share one {kind}); set {where}"))
            else:
                seen[key] = shown
    return out


def _given(cfg: "AioLevel", path: str) -> bool:
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj is not None
