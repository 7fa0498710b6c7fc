"""The lab's X.509 material for the MQTT hops between levels, and the cluster objects a plant's operator makes of it.

On a plant the operator creates, in the AIO namespace of every level's cluster, what the X.509 records name: the
Secret with the dataflow's client certificate and key, the ConfigMap with the CA that signed the brokers' server
certificates and the clients' certificates, and the cert-manager Issuer of the listener certificates. The lab plays
the operator: one client certificate from the lab CA (`<state>/mqtt-pki/client.crt`, `.key`), the lab CA as the
trusted CA, and `objects()` gives the Kubernetes objects that hold them, named by the site (telemetry.mqtt).
The lab's telemetry stand-ins and the stage's taps present the same certificate the Secret holds.
"""
from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from layernet.lab import layout
from layernet.lab import pki

DIR = "mqtt-pki"
CLIENT_CN = "layernet-mqtt-client"
ISSUER_CA_SECRET_SUFFIX = "-ca"       # the Issuer's CA key pair: Secret <issuer>-ca


@dataclass(frozen=True)
class Material:
    ca: str          # the trusted CA (the lab CA)
    cert: str        # the client certificate (CA appended)
    key: str         # its key (mode 0600)


def paths(site) -> Material:
    """Where the material is (whether or not it exists yet)."""
    d = layout.state_dir(site) / DIR
    return Material(str(layout.ca_cert_path(site)), str(d / "client.crt"), str(d / "client.key"))


def ensure(site) -> Material:
    """The material, the client certificate issued from the lab CA when missing or expiring within a day."""
    from cryptography import x509
    m = paths(site)
    cert = Path(m.cert)
    if cert.exists() and Path(m.key).exists():
        try:
            c = x509.load_pem_x509_certificate(cert.read_bytes())
            if c.not_valid_after_utc > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1):
                return m
        except ValueError:
            pass
    pki.issue_cert(layout.state_dir(site) / "ca", cert.parent, "client", CLIENT_CN, server=False, client=True)
    return m


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def objects(site, refs: list[tuple[str, str, str]]) -> list[dict]:
    """The Kubernetes objects that hold the material for `refs` ([(kind, namespace, name)]): a Namespace for each
    namespace, a `kubernetes.io/tls` Secret (tls.crt, tls.key, ca.crt), a ConfigMap (ca.crt), an Issuer of kind
    CA (cert-manager.io/v1) with its CA key pair in the Secret `<issuer>-ca`. Material is made when missing."""
    m = ensure(site)
    ca = Path(m.ca).read_bytes()
    out: list[dict] = []
    for ns in dict.fromkeys(ns for _, ns, _ in refs):
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for kind, ns, name in refs:
        meta = {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "layernet-lab"}}
        if kind == "Secret":
            out.append({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "kubernetes.io/tls",
                        "data": {"tls.crt": _b64(Path(m.cert).read_bytes()), "tls.key": _b64(Path(m.key).read_bytes()),
                                 "ca.crt": _b64(ca)}})
        elif kind == "ConfigMap":
            out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"ca.crt": ca.decode()}})
        elif kind == "Issuer":
            key = (layout.state_dir(site) / "ca" / pki.CA_KEY).read_bytes()
            secret = name + ISSUER_CA_SECRET_SUFFIX
            out.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                        "metadata": {**meta, "name": secret}, "data": {"tls.crt": _b64(ca), "tls.key": _b64(key)}})
            out.append({"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": meta,
                        "spec": {"ca": {"secretName": secret}}})
    return out
