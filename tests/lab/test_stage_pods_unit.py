"""What the lab installs in its clusters, without a lab: K3s's CoreDNS add-on, the stand-ins' Deployments (namespace,
image, command, a Secret for what the environment adds), the node's ServiceLB and how the node resolves a
container's environment."""
from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

from layernet.lab import LabError, services
from layernet.lab.clusters import addons, images, node, servicelb
from layernet.site import load_site
from layernet.site.aio import AIO_NAMESPACE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site():
    return load_site(ROOT / "params" / "lab.yaml")


# ------------------------------------------------------------------------------------------------ the add-on
def test_k3s_coredns_reads_its_files_at_k3s_paths_and_answers_readiness_on_the_node(site):
    level = site.level("level3")
    objs = {o["kind"]: o for o in addons.coredns_objects(site, level)}
    corefile = objs["ConfigMap"]["data"]["Corefile"]
    assert "hosts /etc/coredns/NodeHosts" in corefile and "import /etc/coredns/custom/*.server" in corefile
    assert f"ready {level.node_ip}:{addons.READY_PORT}" in corefile
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["port"] == addons.READY_PORT
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["custom-config-volume"]["configMap"] == {"name": "coredns-custom", "optional": True}
    assert not images.must_pull(container) and images.known(container)      # K3s's bundled image, on the node
    assert objs["Service"]["spec"]["clusterIP"] == addons.KUBE_DNS_IP


# ------------------------------------------------------------------------------------------------ stand-ins
def test_a_stand_in_is_a_deployment_of_the_image_it_plays_in_its_namespace(site):
    argv = [sys.executable, "-m", "layernet.lab.dataflow", "--name", "df-level4"]
    objs = services._objects(site, "level4", "telemetry-dataflow", AIO_NAMESPACE,
                             services.PLACES["telemetry-dataflow"][1], argv, {})
    assert [o["kind"] for o in objs] == ["Namespace", "Deployment"]           # nothing to keep secret: no Secret
    dep = objs[-1]
    assert dep["metadata"]["namespace"] == AIO_NAMESPACE
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python3", "-m", "layernet.lab.dataflow", "--name", "df-level4"]
    assert container["image"].startswith("mcr.microsoft.com/azureiotoperations/dataflow:")
    assert dep["spec"]["selector"]["matchLabels"] == {services.LABEL: "telemetry-dataflow"}
    assert "env" not in container and "envFrom" not in container


def test_what_the_environment_adds_goes_in_a_secret_the_pod_reads_never_in_the_deployment(site):
    secret = "Endpoint=sb://x/;SharedAccessKey=not-in-the-deployment"
    objs = services._objects(site, "level4", "telemetry-dataflow", AIO_NAMESPACE, "img", ["python3"],
                             {"EH_CONNECTION": secret})
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Namespace", "Secret", "Deployment"]
    assert objs[1]["stringData"] == {"EH_CONNECTION": secret}
    dep = objs[2]
    assert secret not in str(dep)
    assert dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "telemetry-dataflow-env"}}]


def test_every_stand_in_has_a_place_and_an_image_the_node_runs(site):
    assert services.PLACES["arc-agent"][0] == "azure-arc"
    for short, (ns, image) in services.PLACES.items():
        assert images.known({"image": image}), image
        assert ns in ("azure-arc", AIO_NAMESPACE)
    with pytest.raises(LabError, match="PLACES"):
        services._place("level2/unknown-service")


def test_an_air_gapped_level_never_pulls_its_stand_ins(site):
    gapped = load_site(ROOT / "params" / "lab.yaml", ["images.mode={level2: import}"])
    dep = services._objects(gapped, "level2", "arc-agent", "azure-arc", "img", ["python3"], {})[-1]
    assert dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    dep = services._objects(site, "level2", "arc-agent", "azure-arc", "img", ["python3"], {})[-1]
    assert dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


# ------------------------------------------------------------------------------------------------ ServiceLB
def _svc(name: str, kind: str, ingress=None) -> dict:
    out = {"metadata": {"name": name, "namespace": "ns"}, "spec": {"type": kind}}
    if ingress is not None:
        out["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return out


def test_servicelb_gives_every_load_balancer_the_node_address_and_nothing_else():
    ip = "192.168.103.10"
    patches = servicelb.ingress_patches([_svc("a", "LoadBalancer"), _svc("b", "ClusterIP"),
                                         _svc("c", "LoadBalancer", [ip]), _svc("d", "LoadBalancer", ["10.0.0.9"])], ip)
    assert [p for p, _ in patches] == ["/api/v1/namespaces/ns/services/a/status", "/api/v1/namespaces/ns/services/d/status"]
    assert patches[0][1] == {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}}


# ------------------------------------------------------------------------------------------------ environment
class _Objects:
    """The API's objects by path, as a node reads them (GET); every path asked is recorded."""

    def __init__(self, objects: dict):
        self.objects, self.asked = objects, []

    def get(self, path: str):
        self.asked.append(path)
        return self.objects.get(path)


def test_the_node_resolves_env_from_secrets_and_config_maps_as_a_kubelet(tmp_path):
    agent = node.Agent(tmp_path, "level4", "127.0.0.1", "", "ca.crt")
    enc = base64.b64encode(b"s3cret").decode()
    agent.api = _Objects({"/api/v1/namespaces/ns/secrets/env": {"data": {"A": enc, "B": enc}},
                          "/api/v1/namespaces/ns/configmaps/cm": {"data": {"C": "plain"}}})
    pod = node.Pod(agent, {"metadata": {"namespace": "ns", "name": "p", "uid": "u" * 8},
                           "spec": {"containers": [{"name": "c", "image": "x"}]}})
    spec = {"envFrom": [{"secretRef": {"name": "env"}}],
            "env": [{"name": "B", "value": "overrides"}, {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "C"}}},
                    {"name": "E", "valueFrom": {"secretKeyRef": {"name": "env", "key": "A"}}}]}
    assert agent.environment(pod, spec) == {"A": "s3cret", "B": "overrides", "D": "plain", "E": "s3cret"}
    with pytest.raises(RuntimeError, match='secret "gone" not found'):
        agent.environment(pod, {"envFrom": [{"secretRef": {"name": "gone"}}]})
    with pytest.raises(RuntimeError, match="couldn't find key Z in secret ns/env"):
        agent.environment(pod, {"env": [{"name": "Z", "valueFrom": {"secretKeyRef": {"name": "env", "key": "Z"}}}]})
    optional = {"envFrom": [{"secretRef": {"name": "gone", "optional": True}}],
                "env": [{"name": "Z", "valueFrom": {"secretKeyRef": {"name": "env", "key": "Z", "optional": True}}}]}
    assert agent.environment(pod, optional) == {}                  # optional: absent is nothing, not an error


def test_a_pod_whose_env_secret_is_missing_waits_in_create_container_config_error(tmp_path):
    """As a kubelet: the container never starts, and the pod says which object is missing."""
    agent = node.Agent(tmp_path, "level4", "127.0.0.1", "", "ca.crt")
    agent.api = _Objects({})
    agent.event = lambda *a, **k: None
    reported = []
    agent.report = lambda pod, key=None: reported.append((pod.waiting, key))
    pod = node.Pod(agent, {"metadata": {"namespace": "ns", "name": "p", "uid": "u" * 8},
                           "spec": {"containers": [{"name": "c", "image": "python:3.12", "imagePullPolicy": "Never",
                                                    "command": ["python3", "-c", "pass"],
                                                    "envFrom": [{"secretRef": {"name": "gone"}}]}]}})
    agent.step(pod)
    assert reported[-1] == ({"reason": "CreateContainerConfigError", "message": 'secret "gone" not found'}, "config")
    assert pod.containers[0].proc is None
