"""Site section `images`: where every container layernet deploys comes from, and how each level gets it.

A role (``envoy``, ``probe``; a new container is one more field and one line in `ROLES`) names the image
reference a level runs. Left at null, a role uses the default of the site's cloud: a Microsoft Container
Registry reference, which the catalog's ``arc-core`` group already allows (``mcr.microsoft.com`` and its
data endpoints ``*.data.mcr.microsoft.com``), so the default is reachable through the proxy chain.

`mode` says per level whether the level pulls its images through the chain (``pull``, the default) or
imports archives carried to its node (``import``: the air-gap alternative, `layernet.images.import_plan`).
The static check that every pulled image comes from a registry the level can reach is `layernet.images.check`.
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator

from layernet.site.base import Strict

Mode = Literal["pull", "import"]
# a folder the rendered `k3s ctr images import <dir>/<archive>` commands can carry without quoting: absolute, path
# segments of letters, digits, '.', '_', '-' not starting with '.' or '-' (no '..', globs, '~', spaces, quotes, '$')
_ARCHIVE_DIR = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9._-]{0,63})+/?", re.ASCII)

# role -> which levels run it: "proxy" (levels with proxy: true) or "all" (every level of the chain)
ROLES: dict[str, str] = {
    "envoy": "proxy",   # the SNI proxy Deployment (render/manifests.py)
    "probe": "all",     # the probe Job's Python image (targets/kube.py runs layernet.probe in it)
}

# Defaults per cloud. Both tags were checked against public evidence of published tags (see the README,
# "Images on air-gapped levels"); pin your own with images.<role> after checking the registry.
DEFAULTS: dict[str, dict[str, str]] = {
    "public": {
        "envoy": "mcr.microsoft.com/oss/v2/envoyproxy/envoy:v1.34.10",
        "probe": "mcr.microsoft.com/azurelinux/base/python:3.12",
    },
}
DEFAULTS["usgov"] = dict(DEFAULTS["public"])   # MCR and its data endpoints serve Azure Government too
# Azure China reaches Microsoft's images through the mcr.azk8s.cn mirror (the catalog's arc-core entry)
DEFAULTS["china"] = {k: v.replace("mcr.microsoft.com/", "mcr.azk8s.cn/", 1) for k, v in DEFAULTS["public"].items()}


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


def check(site, fname: str = "<site>") -> list:
    """Cross-checks of the `images` section against the whole site (a valid `Site`): see layernet.images.check."""
    from layernet.images import check as check_images   # late: layernet.images needs the allow list

    return check_images(site, fname)
