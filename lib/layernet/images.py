"""Where each level's images come from: the static check against the allow list, and the air-gap alternative.

Pure functions of a `Site` (no network, no files):

- `level_images(site)`: every (level, role, image reference, mode) the site makes a level run;
- `unreachable(site, allowlist, level, ref)`: the hosts a level that pulls (``images.mode`` pull) cannot reach
  of those its registry sends a pull to, through the allow list (THE host-matching function,
  `layernet.allowlist.host_matches`) and on a port the proxies carry; a level with ``reaches_azure: false``
  reaches no registry and must import. The site's check (`layernet.site.images.check`, run by `load_site`)
  turns each into a `Problem` naming the level, the image and the missing hosts, before anything is applied;
- `import_plan(site)` / `render_import(site, level)`: for levels that import, the archives to carry and the
  exact ``k3s ctr images import`` commands per node.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from layernet.allowlist import AllowList, effective_allowlist, host_matches, is_wildcard

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

REGISTRY_PORT = 443
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

# The hosts a pull from a registry touches besides the registry host itself: token services, blob storage,
# CDNs that the registry redirects layer downloads to. Sources: Microsoft Artifact Registry's client
# firewall rules (mcr.microsoft.com + *.data.mcr.microsoft.com), Docker's allow list for Docker Hub
# (registry, auth, the Cloudflare and CloudFront CDNs, the R2 bucket anonymous pulls are redirected to), GitHub's
# container registry (blobs from pkg-containers.githubusercontent.com), Azure Container Registry without
# dedicated data endpoints (blobs from *.blob.core.windows.net). A site overrides a registry's list with
# images.registry_hosts (e.g. an ACR with dedicated data endpoints, or a plant mirror that redirects).
REGISTRY_HOSTS: dict[str, tuple[str, ...]] = {
    "mcr.microsoft.com": ("mcr.microsoft.com", "*.data.mcr.microsoft.com"),
    DOCKER_HUB: ("registry-1.docker.io", "auth.docker.io", "production.cloudflare.docker.com",
                 "production.cloudfront.docker.com",
                 "docker-images-prod.6aa30f8b08e16409b46e0173d6de2f56.r2.cloudflarestorage.com"),
    "ghcr.io": ("ghcr.io", "pkg-containers.githubusercontent.com"),
    "*.azurecr.io": ("*.blob.core.windows.net",),
}

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*", re.ASCII)      # every rule matches the whole text
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII)
# the distribution spec: clients limit host[:port]/repository to 255 characters (Docker's reference parser refuses more)
MAX_NAME = 255
MAX_REF = MAX_NAME + 1 + 128 + len("@sha256:") + 64      # name, ':' tag, '@' digest
_SPACE = re.compile(r"\s")


# ----------------------------------------------------------------------------------------------- references
@dataclass(frozen=True)
class ImageRef:
    text: str                 # as written in the site (or the default)
    registry: str             # registry host, lower case; docker.io when the reference names none
    port: Optional[int]       # registry port when written (host:port/...)
    repository: str           # path inside the registry (library/x for a bare Docker Hub name)
    tag: Optional[str]
    digest: Optional[str]

    @property
    def pull_port(self) -> int:
        return self.port or REGISTRY_PORT


def parse_ref(text) -> ImageRef:
    """Parse an image reference (``[host[:port]/]path[:tag][@sha256:digest]``). Raises ValueError(why)."""
    if not isinstance(text, str) or not text:
        raise ValueError("a text such as mcr.microsoft.com/oss/v2/envoyproxy/envoy:v1.34.10")
    if len(text) > MAX_REF:
        raise ValueError(f"a registry host and repository path of at most {MAX_NAME} characters together (the "
                         f"registry's limit) with a tag or digest; this reference has {len(text)}")
    if _SPACE.search(text):
        raise ValueError("no spaces")
    if "://" in text:
        raise ValueError(f"no scheme: drop {text.split('://')[0] + '://'!r}")
    name, digest = text, None
    if "@" in text:
        name, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise ValueError("a digest written as sha256: and 64 lower-case hex digits")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise ValueError(f"a tag of letters, digits, '_', '.', '-' (at most 128); {tag!r} is not one")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, _, port_text = first.partition(":")
        port = None
        if port_text:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ValueError(f"a registry port 1-65535; {port_text!r} is not one")
            port = int(port_text)
        host = host.lower()
        labels = host.split(".")
        if len(labels) < 2 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
            raise ValueError(f"a fully qualified registry host; {host!r} is not one (a node-local registry "
                             "is not reachable through the chain: import the image instead)")
        registry, repository = host, rest
    else:
        registry, port, repository = DOCKER_HUB, None, name if sep else f"library/{name}"
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    full = len(name if sep else f"{registry}/{repository}")
    if full > MAX_NAME:
        raise ValueError(f"a registry host and repository path of at most {MAX_NAME} characters together (the "
                         f"registry's limit); this one has {full}")
    if not _REPOSITORY.fullmatch(repository):
        raise ValueError(f"a repository path of lower-case letters, digits and separators; {repository[:80]!r} is not one")
    if tag is None and digest is None:
        raise ValueError("a pinned tag or digest (e.g. ...:v1.34.10): without one the node pulls 'latest', "
                         "which changes under you and cannot be carried to an air-gapped level")
    if tag == "latest" and digest is None:
        raise ValueError("a pinned tag or digest instead of 'latest', which changes under you")
    return ImageRef(text, registry, port, repository, tag, digest)


def registry_hosts(ref: ImageRef, site=None) -> list[str]:
    """Every host a pull of `ref` touches: the registry itself (its REST endpoint) plus its data endpoints."""
    own = {} if site is None else {k.lower(): v for k, v in site.images.registry_hosts.items()}
    if ref.registry in own:
        extra = tuple(own[ref.registry])
    elif ref.registry in REGISTRY_HOSTS:
        extra = REGISTRY_HOSTS[ref.registry]
    else:
        extra = next((hosts for pattern, hosts in REGISTRY_HOSTS.items()
                      if is_wildcard(pattern) and host_matches(pattern, ref.registry)), ())
    first = () if ref.registry == DOCKER_HUB else (ref.registry,)   # Docker Hub's REST host is registry-1
    out: list[str] = []
    for h in (*first, *extra):
        h = h.lower()
        if h not in out:
            out.append(h)
    return out


# ----------------------------------------------------------------------------------------------- per level
@dataclass(frozen=True)
class LevelImage:
    level: str
    role: str
    image: str     # the reference (the site's own, or the cloud's default)
    mode: str      # pull | import


def level_images(site) -> list[LevelImage]:
    """Every image each level runs, in chain order (egress level first), roles in `ROLES` order."""
    out = []
    for lv in site.chain:
        for role, who in ROLES.items():
            if who == "all" or (who == "proxy" and lv.proxy):
                out.append(LevelImage(lv.name, role, site.images.reference(role, site.azure.cloud),
                                      site.images.mode_of(lv.name)))
    return out


def _allowed(allowlist: AllowList, host: str, port: int) -> bool:
    """Does the allow list let a name under `host` through on `port`?

    An exact host must be allowed as it is. A wildcard host (a registry's data endpoints) is reachable when
    a wildcard entry covers its names, or when the site chose a narrower entry under it (e.g. the Arc
    gateway group's <region>.data.mcr.microsoft.com).
    """
    if not is_wildcard(host):
        return allowlist.allows(host, port)
    sample = "layernet-probe" + host[1:]
    return any(port in e.ports and (host_matches(e.host, sample) or host_matches(host, e.host))
               for e in allowlist.entries)


def unreachable(site, allowlist: AllowList, level: str, ref: ImageRef) -> tuple[list[str], str]:
    """(missing hosts, why and what to do) for pulling `ref` at `level`; ([], "") when every host is reachable."""
    lv = site.level(level)
    hosts = registry_hosts(ref, site)
    port = ref.pull_port
    carry = f"carry the image: images.mode.{level}: import"
    if lv.name != site.egress_level and not lv.reaches_azure:
        return hosts, (f"{level} reaches nothing outside the plant (reaches_azure: false), so it cannot pull from "
                       f"{ref.registry}; {carry}")
    if lv.name != site.egress_level and port not in site.proxied_ports():
        return hosts, (f"the proxies carry only ports {', '.join(map(str, site.proxied_ports()))}, not the "
                       f"registry's port {port}; use a registry on port 443 or {carry}")
    missing = [h for h in hosts if not _allowed(allowlist, h, port)]
    if not missing:
        return [], ""
    return missing, (f"{level} reaches registries only through the allow list, which does not let it reach "
                     f"{', '.join(missing)} on port {port}. Allow those hosts (allowlist.extra_hosts or a catalog "
                     f"group), use a registry the list allows ({_default_registry(site)}, or a plant mirror listed in "
                     f"allowlist.extra_hosts), or {carry}")


def _default_registry(site) -> str:
    return parse_ref(DEFAULTS.get(site.azure.cloud, DEFAULTS["public"])["envoy"]).registry


def image_rows(site) -> list[dict]:
    """One row per level and image for reports: level, role, image, mode, hosts (what a pull needs), ok."""
    al = effective_allowlist(site)
    rows = []
    for li in level_images(site):
        try:
            ref = parse_ref(li.image)
        except ValueError as exc:
            rows.append({"level": li.level, "role": li.role, "image": li.image, "mode": li.mode, "hosts": "",
                         "ok": False, "note": str(exc)})
            continue
        hosts = registry_hosts(ref, site)
        if li.mode == "import":
            ok, note = True, f"imported from {archive_name(li.image)} (no pull)"
        else:
            missing, why = unreachable(site, al, li.level, ref)
            ok, note = not missing, why or "reachable through the allow list"
        rows.append({"level": li.level, "role": li.role, "image": li.image, "mode": li.mode,
                     "hosts": ", ".join(hosts), "ok": ok, "note": note})
    return rows


# ----------------------------------------------------------------------------------------------- air gap
@dataclass(frozen=True)
class ImportStep:
    level: str
    node: str        # the level's node address
    role: str
    image: str
    archive: str     # file name of the archive
    path: str        # where the archive goes on the node
    command: str     # the import command, run as root on the node


def archive_name(image: str) -> str:
    """A file name for the archive of `image`: the reference with every character outside [A-Za-z0-9._-] as '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", image) + ".tar"


def import_plan(site, level: Optional[str] = None) -> list[ImportStep]:
    """The import steps of every level whose images.mode is import (or of `level` only), in chain order."""
    steps = []
    for li in level_images(site):
        if li.mode != "import" or (level is not None and li.level != level):
            continue
        archive = archive_name(li.image)
        path = f"{site.images.archive_dir.rstrip('/')}/{archive}"
        steps.append(ImportStep(li.level, str(site.level(li.level).node_ip), li.role, li.image, archive, path,
                                f"sudo k3s ctr images import {path}"))
    return steps


def import_levels(site) -> list[str]:
    return [lv.name for lv in site.chain if site.images.mode_of(lv.name) == "import"]


def render_import(site, level) -> str:
    """The hand-over sheet of one importing level: archives to build and carry, the commands per node."""
    name = level if isinstance(level, str) else level.name
    steps = import_plan(site, name)
    node = str(site.level(name).node_ip)
    platform = site.images.platform
    lines = [
        f"# Images for {name} (images.mode: import)",
        "",
        f"{name} does not pull images: every image it runs is built into an archive on a machine with registry",
        "access, carried to the node and imported there before the stage that runs it. The Kubernetes objects",
        f"for {name} use imagePullPolicy: Never, so a missing import fails at once (ErrImageNeverPull) instead",
        "of waiting on a pull that cannot work.",
        "",
        "## 1. Build the archives (on a machine with registry access, e.g. the jump box)",
        "",
        "```",
    ]
    seen: set[str] = set()
    for s in steps:
        if s.image in seen:
            continue
        seen.add(s.image)
        lines += [f"docker pull --platform {platform} {s.image}", f"docker save -o {s.archive} {s.image}"]
    lines += [
        "```",
        "",
        f"## 2. Carry them to node {node} ({name}), into {site.images.archive_dir}/",
        "",
        "| archive | image | used by |",
        "|---|---|---|",
    ]
    for s in steps:
        lines.append(f"| {s.archive} | {s.image} | {s.role} |")
    lines += [
        "",
        f"## 3. Import them on node {node} ({name})",
        "",
        "```",
    ]
    for s in steps:
        lines.append(s.command)
    for s in steps:
        lines.append(f"sudo k3s crictl inspecti {s.image} > /dev/null && echo '{s.image}: present'")
    lines += ["```", ""]
    return "\n".join(lines)


def render_import_all(site) -> str:
    """Every importing level's sheet, in chain order ("" when every level pulls)."""
    return "\n".join(render_import(site, name) for name in import_levels(site))
