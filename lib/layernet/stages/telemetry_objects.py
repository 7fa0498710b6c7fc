"""Stage 04's cluster objects: what the X.509 records name must exist in each level's cluster.

With `telemetry.mqtt.mode: x509` the rendered records name a cert-manager Issuer (the listener certificate), a
ConfigMap with the trusted CA (the broker authentication and the MQTT endpoint's TLS) and a Secret with the
dataflow's client certificate (`layernet.render.telemetry.x509_references`), all in the AIO namespace. On a plant the
operator creates them; the plan reads each one through the level's Kubernetes API and names a missing one with
the command that creates it, and verify fails on it. The lab plays the operator: its cluster side gives the objects
(`Target.x509_objects`, from the lab CA) and apply puts them in place with server-side apply.

The taps of the message proof present the client certificate the Secret holds (`tap_tls`).
"""
from __future__ import annotations

import atexit
import base64
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from layernet.evidence import evidence
from layernet.lab.dataflow import MqttTls
from layernet.plan import Step
from layernet.render.telemetry import render, x509_references
from layernet.site.aio import AIO_NAMESPACE

KINDS = {"Secret": ("v1", "secrets"), "ConfigMap": ("v1", "configmaps"), "Issuer": ("cert-manager.io/v1", "issuers")}
WAVE = 1               # before the listeners (wave 2), which the brokers read them for


def action(kind: str) -> str:
    return f"create {kind}"


ACTIONS = tuple(action(k) for k in KINDS)


@dataclass(frozen=True)
class Ref:
    level: str
    kind: str
    namespace: str
    name: str
    named_by: str            # the record and field that names it

    @property
    def key(self) -> str:
        return f"{self.level}/{self.namespace}/{self.kind}/{self.name}"

    @property
    def path(self) -> str:
        api, plural = KINDS[self.kind]
        base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
        return f"{base}/namespaces/{self.namespace}/{plural}/{self.name}"

    def what(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def references(site) -> list[Ref]:
    """Every object the level's X.509 records name, per level (egress first); none in anonymous mode."""
    if not site.telemetry.mqtt.tls:
        return []
    return [Ref(level, kind, AIO_NAMESPACE, name, why)
            for level, recs in render(site).items() for kind, name, why in x509_references(recs)]


def context_of(site, level: str) -> str:
    lv = site.level(level)
    return lv.kube_context or site.azure.clusters.get(level) or level


def fix(site, ref: Ref) -> str:
    """The command that creates a missing object on a plant."""
    ctx = f"kubectl --context {context_of(site, ref.level)} -n {ref.namespace}"
    if ref.kind == "Secret":
        return (f"{ctx} create secret tls {ref.name} --cert=<client certificate, signed by the CA of the trusted CA "
                f"config map> --key=<its key>")
    if ref.kind == "ConfigMap":
        return f"{ctx} create configmap {ref.name} --from-file=ca.crt=<the CA that signs the brokers' and clients' certificates>"
    return (f"{ctx} apply -f <a cert-manager Issuer named {ref.name} (e.g. kind CA with your CA's key pair) that "
            f"signs the broker listener's certificate>")


# ----------------------------------------------------------------------------------------------- observe
def observe(site, cluster) -> dict:
    """{ref.key: "exists" | "missing" | "no api: <why>" | "error: <why>"} through each level's Kubernetes API."""
    out: dict[str, str] = {}
    apis: dict = {}
    for ref in references(site):
        if ref.level not in apis:
            try:
                apis[ref.level] = cluster.api(ref.level) or cluster.no_api(ref.level)
            except Exception as exc:  # noqa: BLE001 - the plan shows why the cluster could not be read
                apis[ref.level] = f"error: cannot reach the cluster: {' '.join(str(exc).split())[:300]}"
        api = apis[ref.level]
        if isinstance(api, str):
            out[ref.key] = api if api.startswith("error: ") else f"no api: {api}"
            continue
        try:
            status, data = api.request("GET", ref.path)
        except Exception as exc:  # noqa: BLE001
            out[ref.key] = f"error: {' '.join(str(exc).split())[:300]}"
            continue
        if status == 200:
            out[ref.key] = "exists"
        elif status == 404:
            out[ref.key] = "missing"
        else:
            msg = data.get("message") if isinstance(data, dict) else data
            out[ref.key] = f"error: GET {ref.path} answered HTTP {status}: {str(msg)[:200]}"
    return out


def missing_text(site, ref: Ref) -> str:
    return (f"MISSING: {ref.level}: {ref.what()} (named by {ref.named_by}) does not exist in the level's cluster "
            f"({context_of(site, ref.level)}); create it: {fix(site, ref)}")


def steps(site, state: dict, creates: bool) -> list[Step]:
    """One step per referenced object: a change where it is missing and the cluster side makes it (the lab), else a
    skip saying it exists, is missing (with the command), or cannot be read (no API on the lab site)."""
    out = []
    for ref in references(site):
        got = state.get(ref.key, "missing")
        detail = f"{ref.what()} in {context_of(site, ref.level)}, named by {ref.named_by}"
        if got == "exists":
            skip, why = True, "exists"
        elif got == "missing" and creates:
            skip, why = False, "missing: the lab creates it from its CA (a plant's operator does)"
        elif got == "missing":
            skip, why = True, missing_text(site, ref)
        elif got.startswith("no api: "):
            skip, why = True, got.removeprefix("no api: ")
        else:
            skip, why = True, f"cannot tell whether it exists ({got.removeprefix('error: ')})"
        out.append(Step(ref.level, action(ref.kind), ref.name, detail, skip=skip, reason=why))
    return out


# ----------------------------------------------------------------------------------------------- apply
def apply_steps(site, cluster, todo: list[Step], progress) -> list[dict]:
    """Create the planned objects (server-side apply of the cluster side's objects, per level); rows like the stage's."""
    import time

    from layernet.targets.kube import APPLY, FIELD_MANAGER, object_path

    refs = {(r.level, action(r.kind), r.name): r for r in references(site)}
    rows = []
    for level in dict.fromkeys(s.level for s in todo):
        mine = [refs[(s.level, s.action, s.target)] for s in todo if s.level == level]
        t0 = time.monotonic()
        try:
            api = cluster.api(level)
            objs = cluster.x509_objects([(r.kind, r.namespace, r.name) for r in mine])
            for obj in objs:
                api.call("PATCH", object_path(obj), body=obj, content_type=APPLY,
                         query={"fieldManager": FIELD_MANAGER, "force": "true"})
            ok, note = True, f"{len(objs)} object(s) applied"
        except Exception as exc:  # noqa: BLE001 - the step's outcome
            ok, note = False, " ".join(str(exc).split())[:400]
        for r in mine:
            progress(f"{level}: {action(r.kind)} {r.namespace}/{r.name} " + ("done" if ok else f"FAILED: {note}"))
            rows.append({"level": level, "action": action(r.kind), "target": r.name, "ok": ok,
                         "state": "Succeeded" if ok else "Failed", "seconds": round(time.monotonic() - t0, 3),
                         "output": note, "file": ""})
    return rows


# ----------------------------------------------------------------------------------------------- verify
def rows(site, cluster) -> list[dict]:
    """Evidence per referenced object where the level has an API: it exists (a missing one fails, naming level,
    kind, namespace, name and the command that creates it)."""
    state = observe(site, cluster)
    out = []
    for ref in references(site):
        got = state.get(ref.key, "missing")
        if got.startswith("no api: "):
            continue
        out.append(evidence(ref.level, f"{ref.kind} {ref.namespace}/{ref.name}", "exists", got, got == "exists",
                            hint=missing_text(site, ref) if got == "missing" else
                            f"{ref.what()} could not be read: {got.removeprefix('error: ')}"))
    return out


# ----------------------------------------------------------------------------------------------- taps
_TAP_DIRS: list[str] = []


def _cleanup() -> None:
    for d in _TAP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def tap_tls(site, cluster):
    """TLS for the proof's MQTT taps (None in anonymous mode): the client certificate and key of the Secret the
    X.509 records name and the CA of their trusted CA ConfigMap, read from a level's cluster (kept in a private
    temporary folder for this process)."""
    if not site.telemetry.mqtt.tls:
        return None
    refs = references(site)
    secret = next((r for r in refs if r.kind == "Secret"), None)
    if secret is None:
        return None
    cm = next((r for r in refs if r.kind == "ConfigMap" and r.level == secret.level), None)
    api = cluster.api(secret.level)
    if api is None:
        raise RuntimeError(f"{secret.level}: no Kubernetes API to read {secret.what()} from")
    s = api.get(secret.path)
    if s is None:
        raise RuntimeError(missing_text(site, secret))
    data = {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
    ca = b""
    if cm is not None:
        c = api.get(cm.path)
        if c is None:
            raise RuntimeError(missing_text(site, cm))
        ca = "".join((c.get("data") or {}).values()).encode()
    ca = ca or data.get("ca.crt", b"")
    if not data.get("tls.crt") or not data.get("tls.key") or not ca:
        raise RuntimeError(f"{secret.level}: {secret.what()} needs tls.crt and tls.key, and a CA (ca.crt or the "
                           "trusted CA config map)")
    if not _TAP_DIRS:
        atexit.register(_cleanup)
    d = Path(tempfile.mkdtemp(prefix="layernet-mqtt-tap-"))
    _TAP_DIRS.append(str(d))
    paths = {"ca": d / "ca.crt", "cert": d / "tls.crt", "key": d / "tls.key"}
    for name, content in (("ca", ca), ("cert", data["tls.crt"]), ("key", data["tls.key"])):
        paths[name].touch(mode=0o600)
        paths[name].write_bytes(content)
    return MqttTls(str(paths["ca"]), str(paths["cert"]), str(paths["key"]))


def creates(cluster) -> bool:
    """The cluster side makes the objects itself (the lab plays the operator); a plant's operator makes them."""
    return cluster.makes_x509_objects
