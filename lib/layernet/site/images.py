"""Site section `images`: where every container layernet deploys comes from, and how each level gets it.

A role (``envoy``, ``probe``; a new container is one more field and one line in `layernet.images.ROLES`) names the image
reference a level runs. Left at null, a role uses the default of the site's cloud: a Microsoft Container
Registry reference, which the catalog's ``arc-core`` group already allows (``mcr.microsoft.com`` and its
data endpoints ``*.data.mcr.microsoft.com``), so the default is reachable through the proxy chain.

`mode` says per level whether the level pulls its images through the chain (``pull``, the default) or
imports archives carried to its node (``import``: the air-gap alternative, `layernet.images.import_plan`).
The static check that every pulled image comes from a registry the level can reach is `check` (below), one of
the site's checks: `load_site` runs it (`checks.images`).
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator

from layernet.allowlist import AllowList, effective_allowlist
from layernet.images import DEFAULTS, ROLES, ImageRef, level_images, parse_ref, unreachable
from layernet.site.base import Strict
from layernet.site.names import check_host
from layernet.site.problems import Problem, SiteError

Mode = Literal["pull", "import"]
# a folder the rendered `k3s ctr images import <dir>/<archive>` commands can carry without quoting: absolute, path
# segments of letters, digits, '.', '_', '-' not starting with '.' or '-' (no '..', globs, '~', spaces, quotes, '$')
_ARCHIVE_DIR = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9._-]{0,63})+/?", re.ASCII)

class Images(Strict):
    envoy: Optional[str] = None          # null: DEFAULTS[azure.cloud]["envoy"]
    probe: Optional[str] = None          # null: DEFAULTS[azure.cloud]["probe"]
    default_mode: Mode = "pull"          # how a level not listed in `mode` gets its images
    mode: dict[str, Mode] = {}           # level name -> pull | import
    # the hosts a registry sends pulls to besides itself (token service, blob storage, CDN), by registry host;
    # replaces the built-in list of layernet.images.REGISTRY_HOSTS for that registry
    registry_hosts: dict[str, list[str]] = {}
    platform: str = Field(default="linux/amd64", pattern=r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
    archive_dir: str = "/var/lib/layernet/images"

    @field_validator("archive_dir")
    @classmethod
    def _archive_dir(cls, value: str) -> str:
        if len(value) > 200 or not _ARCHIVE_DIR.fullmatch(value):
            raise ValueError("an absolute folder of at most 200 characters whose parts are letters, digits, '.', '_' "
                             "and '-', not starting with '.' or '-' (the import commands use it unquoted: no spaces, "
                             "quotes, '$', '~', globs or '..'), e.g. /var/lib/layernet/images")
        return value

    def reference(self, role: str, cloud: str = "public") -> str:
        """The image reference of `role`: the site's own, else the default of `cloud`."""
        if role not in ROLES:
            raise KeyError(f"no image role {role!r} (roles: {', '.join(ROLES)})")
        return getattr(self, role) or DEFAULTS.get(cloud, DEFAULTS["public"])[role]

    def mode_of(self, level: str) -> str:
        return self.mode.get(level, self.default_mode)


def check(site, file: str = "<site>", allowlist: Optional[AllowList] = None) -> list:
    """Every problem of the `images` section: bad references, unknown levels, images a level cannot fetch."""
    problems: list = []
    im = site.images
    refs: dict[str, Optional[ImageRef]] = {}
    for role in ROLES:
        text = im.reference(role, site.azure.cloud)
        try:
            refs[role] = parse_ref(text)
        except ValueError as exc:
            refs[role] = None
            problems.append(Problem(file, f"images.{role}", text,
                                    f"an image reference like {DEFAULTS['public'][role]}: {exc}"))
    names = [lv.name for lv in site.levels]
    for key, value in im.mode.items():
        if key not in names:
            problems.append(Problem(file, f"images.mode.{key}", value, f"a key that names a level ({', '.join(names)})"))
    for reg, hosts in im.registry_hosts.items():
        for i, h in enumerate(hosts):
            why = check_host(h)
            if why:
                problems.append(Problem(file, f"images.registry_hosts.{reg}[{i}]", h, why))
    if problems:
        return problems
    al = allowlist if allowlist is not None else effective_allowlist(site)
    for li in level_images(site):
        ref = refs[li.role]
        if li.mode != "pull" or ref is None:
            continue
        missing, why = unreachable(site, al, li.level, ref)
        if missing:
            problems.append(Problem(file, f"images.{li.role}", li.image, f"an image {li.level} can fetch: {why}"))
    return problems


def require(site, file: str = "<site>") -> None:
    """Raise SiteError (exit 2) listing every image problem; for stage plans that get a Site object."""
    problems = check(site, file)
    if problems:
        raise SiteError(problems)
