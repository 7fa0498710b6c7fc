"""Stage 04's cluster objects in X.509 mode: what the records name (Issuer, trusted CA ConfigMap, client certificate
Secret) is read through each level's Kubernetes API (here KubeApiDouble, the kube target's test double): a missing
one is planned as MISSING with the command that creates it and fails verify naming level, kind, namespace and name;
present ones are skips and passing rows; the proof's taps present the Secret's certificate."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from kube_double import KubeApiDouble

from layernet import context
from layernet.site import load_site  # noqa: E402
from layernet.stages import telemetry_objects as objects  # noqa: E402
from layernet.targets.kube import KubeTarget  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NS = "azure-iot-operations"


@pytest.fixture
def api():
    d = KubeApiDouble()
    yield d
    d.close()


def plant(mode: str = "x509"):
    return load_site(ROOT / "params" / "site-example.yaml", [f"telemetry.mqtt.mode={mode}"])


def test_the_x509_records_name_an_issuer_a_ca_config_map_and_a_client_secret_per_level():
    site = plant()
    refs = {(r.level, r.kind, r.namespace, r.name) for r in objects.references(site)}
    mq = site.telemetry.mqtt
    senders = {f.level for f in site.telemetry.dataflows if f.destination == "parent"}
    assert senders and all((lv, "Secret", NS, mq.client_cert_secret) in refs for lv in senders)
    assert all((lv.name, "ConfigMap", NS, mq.trusted_ca_configmap) in refs and (lv.name, "Issuer", NS, mq.issuer) in refs
               for lv in site.chain if any(r[0] == lv.name for r in refs))
    assert not any(r[1] == "Secret" and r[0] not in senders for r in refs)
    assert objects.references(plant("anonymous")) == []


def test_a_missing_object_is_named_with_its_fix_and_fails_verify(api):
    site = plant()
    cluster = context.build(site, KubeTarget(site, configuration=api.configuration())).cluster
    state = objects.observe(site, cluster)
    assert set(state.values()) == {"missing"}
    steps = objects.steps(site, state, objects.creates(cluster))
    assert steps and all(s.skip for s in steps)                  # a plant's operator creates them, not the stage
    secret = next(s for s in steps if s.action == "create Secret")
    assert secret.reason.startswith(f"MISSING: {secret.level}: Secret {NS}/{site.telemetry.mqtt.client_cert_secret}")
    assert f"-n {NS} create secret tls {site.telemetry.mqtt.client_cert_secret} --cert=" in secret.reason
    rows = objects.rows(site, cluster)
    assert rows and not any(r["ok"] for r in rows)
    bad = next(r for r in rows if r["check"] == f"ConfigMap {NS}/{site.telemetry.mqtt.trusted_ca_configmap}")
    assert bad["observed"] == "missing" and f"create configmap {site.telemetry.mqtt.trusted_ca_configmap}" in bad["hint"]
    assert "GET" in {r.method for r in api.requests} and {r.method for r in api.requests} == {"GET"}   # read only


def test_present_objects_are_skips_and_the_taps_present_the_secrets_certificate(api, tmp_path):
    site = plant()
    cluster = context.build(site, KubeTarget(site, configuration=api.configuration())).cluster
    mq = site.telemetry.mqtt
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    for ref in objects.references(site):
        obj = {"kind": ref.kind, "metadata": {"name": ref.name, "namespace": NS}}
        if ref.kind == "Secret":
            obj["data"] = {"tls.crt": b64(b"CERT"), "tls.key": b64(b"KEY")}
        if ref.kind == "ConfigMap":
            obj["data"] = {"ca.crt": "CA PEM"}
        api.objects[ref.path] = obj
    assert set(objects.observe(site, cluster).values()) == {"exists"}
    assert all(s.skip and s.reason == "exists" for s in objects.steps(site, objects.observe(site, cluster), False))
    assert all(r["ok"] for r in objects.rows(site, cluster))
    tls = objects.tap_tls(site, cluster)
    assert (Path(tls.ca).read_text(), Path(tls.cert).read_bytes(), Path(tls.key).read_bytes()) == ("CA PEM", b"CERT", b"KEY")
    assert os.stat(tls.key).st_mode & 0o077 == 0
    assert mq.client_cert_secret in {r.path.rsplit("/", 1)[1] for r in api.requests if "/secrets/" in r.path}
    assert objects.tap_tls(plant("anonymous"), cluster) is None
