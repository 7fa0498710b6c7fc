"""Kubernetes manifests for Envoy and CoreDNS, validated offline against the Kubernetes schema (kubernetes-validate,
which `make setup` installs into a folder of its own: see the Makefile)."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import yaml

VALIDATE = Path(__file__).resolve().parents[2] / ".tools" / "kubernetes-validate"
if not (VALIDATE / ".installed").exists():
    raise RuntimeError(f"kubernetes-validate is not installed in {VALIDATE}: run `make setup`")
sys.path.append(str(VALIDATE))          # after the environment's own packages: only what they lack comes from it
import kubernetes_validate  # noqa: E402

from layernet.render import render_site
from layernet.images import parse_ref
from layernet.render.envoy import ADMIN_PORT
from layernet.render.manifests import CONFIG_ANNOTATION, render_envoy_manifests
from layernet.site import Site
from layernet.images import DEFAULTS

K8S_VERSION = "1.33.0"


def _docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("kind", ["manifests", "coredns"])
def test_manifests_pass_the_kubernetes_schema(site, allowlist, kind):
    arts = [a for a in render_site(site, allowlist, "kube") if a.kind == kind]
    assert arts
    for a in arts:
        for doc in _docs(a.content):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_is_real():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "one", "selector": {}, "template": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_envoy_objects(site, allowlist):
    arts = {(a.level, a.name): a.content for a in render_site(site, allowlist, "kube")}
    envoy_yaml = arts[("level3", "envoy.yaml")]
    ns, cm, deploy, svc = _docs(arts[("level3", "envoy-manifests.yaml")])
    assert [d["kind"] for d in (ns, cm, deploy, svc)] == ["Namespace", "ConfigMap", "Deployment", "Service"]
    assert cm["data"]["envoy.yaml"] == envoy_yaml
    pod = deploy["spec"]["template"]
    assert pod["metadata"]["annotations"][CONFIG_ANNOTATION] == hashlib.sha256(envoy_yaml.encode()).hexdigest()
    c = pod["spec"]["containers"][0]
    # the image comes from the site: the lab leaves images.envoy at null, so the public cloud's MCR default
    assert c["image"] == site.images.reference("envoy", site.azure.cloud) == DEFAULTS["public"]["envoy"]
    ref = parse_ref(c["image"])
    assert ref.registry == "mcr.microsoft.com" and ref.tag and ref.tag != "latest"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert "--disable-hot-restart" in c["args"]
    assert c["args"][:2] == ["-c", "/etc/envoy/envoy.yaml"]
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["externalTrafficPolicy"] == "Local"
    ports = [p["port"] for p in svc["spec"]["ports"]]
    assert ports == [443, 8084, 9093] and ADMIN_PORT not in ports
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_changed_config_changes_the_pod_template(site):
    lv = site.level("level3")
    a = _docs(render_envoy_manifests(site, lv, "admin: {}\n", [443]))[2]
    b = _docs(render_envoy_manifests(site, lv, "admin: {} # changed\n", [443]))[2]
    ann = lambda d: d["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION]  # noqa: E731
    assert ann(a) != ann(b)
    assert ann(a) == ann(_docs(render_envoy_manifests(site, lv, "admin: {}\n", [443]))[2])


def _site_with_images(site, **images):
    raw = site.model_dump(mode="json")
    raw["images"] = {**raw["images"], **images}
    return Site.model_validate(raw)


def test_image_and_pull_policy_follow_the_site(site):
    mirror = "registry.plant.example/envoyproxy/envoy:v1.34.10"
    other = _site_with_images(site, envoy=mirror, mode={"level3": "import"})
    containers = {}
    for lv in ("level4", "level3"):
        deploy = _docs(render_envoy_manifests(other, other.level(lv), "admin: {}\n", [443]))[2]
        kubernetes_validate.validate(deploy, K8S_VERSION, strict=True)
        containers[lv] = deploy["spec"]["template"]["spec"]["containers"][0]
    assert containers["level4"]["image"] == containers["level3"]["image"] == mirror
    assert containers["level4"]["imagePullPolicy"] == "IfNotPresent"
    # an importing level never pulls: a missing import fails at once instead of waiting on the chain
    assert containers["level3"]["imagePullPolicy"] == "Never"
