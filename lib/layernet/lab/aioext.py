"""The AIO extensions of one level's cluster, as a lab service: images through the proxy chain, then the broker.

On a real cluster the Arc extension manager installs each extension's Helm chart; its pods pull their images from
mcr.microsoft.com (blobs from <region>.data.mcr.microsoft.com) through the level's DNS and proxies, and the
manager reports the install state to the configuration data plane, which is what ARM shows. Then the AIO
operator turns the broker listener resources into the MQTT broker's services.

This stand-in does the same from the level's namespace (so `ip netns exec` gives it the level's resolv.conf and
firewall), trusting only the lab CA:

  for every extension in `extensions.json` (written by the stage when the extension's PUT is accepted):
    report Installing; reach, by name through the proxies, every other host the allow-list catalog marks
    required for the AIO extensions (role aio-extensions: linuxgeneva-microsoft.azurecr.io, the schema
    registry's storage account; lab/reach.py), failing the install naming the first that cannot be reached
    after `pull_deadline`; pull each of the extension's images (registry /v2/, manifest, first layer: the blob
    redirect goes to the data host), retrying until `pull_deadline`;
    report Installed, or Failed naming the image and the host that could not be reached (cert-manager, on a lab
    with clusters: once its CRD for Issuers is applied to the level's API and Established)
    (POST https://<region>.dp.kubernetesconfiguration.azure.com/azure-arc-k8sagents/extensionStatus)
  once microsoft.iotoperations is installed and `listeners.json` (the broker's listener and authentication
  resources read back from ARM) exists: run a real mosquitto bound to the level's node address, one listener per
  listener port, configured from those resources (`listener_ports`, `mosquitto_conf`): TLS with a lab-CA
  certificate (the cert-manager stand-in) when the port asks for it; a port without `authenticationRef` takes
  anonymous clients; a port whose authentication has the X509 method requires a client certificate signed by the
  CA in the ConfigMap `x509Settings.trustedClientCaCert` names, read from the level's Kubernetes API in the AIO
  namespace. A missing
  authentication or ConfigMap keeps the broker down, named in the status. A changed listeners file (or CA)
  restarts mosquitto with the new configuration.

The Kubernetes service-account-token authentication (stage 03's default listener) is not modelled: such a port
takes no client at all (it does not take anonymous ones, as on a plant; nothing on the lab holds a token for it).

Status: `<level state>/aio-extension.json`: {"level", "phase": starting|installing|blocked|installed|failed|
broker, "extensions": {id: {"type", "state", "message", "images": [...]}}, "blocked_on", "broker": {"pid",
"listeners": [{"name", "port", "tls"}], "error"}}.

Run: python -m layernet.lab.aioext CONFIG.json   (see `config()`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from layernet.lab import layout, pki
from layernet.lab import reach
from layernet.site.aio import AIO_NAMESPACE     # where the AIO operator reads the ConfigMaps the resources name

CONFIG_FILE = "aio-extension-config.json"
CERT_MANAGER_TYPES = ("microsoft.certmanagement", "microsoft.iotoperations.platform")   # the releases' cert-manager
CERT_MANAGER_CRDS = [{   # what the lab's listener certificates need of cert-manager: its Issuer kind
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "issuers.cert-manager.io"},
    "spec": {"group": "cert-manager.io", "scope": "Namespaced",
             "names": {"kind": "Issuer", "listKind": "IssuerList", "plural": "issuers", "singular": "issuer"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}]
STATUS_FILE = "aio-extension.json"
EXTENSIONS_FILE = "aio-extensions.json"
LISTENERS_FILE = "aio-listeners.json"
BROKER_CONF = "aio-mosquitto.conf"
IOT_OPERATIONS = "microsoft.iotoperations"
ROLE = "aio-extensions"                  # the catalog's role of these extensions (lib/layernet/data/endpoints.yaml)
IMAGES = {   # extension type -> the images its pods pull (MCR repositories, pinned tags)
    "microsoft.certmanagement": ["azureiotoperations/cert-manager-controller:1.16.5",
                                 "azureiotoperations/trust-manager:0.16.0"],
    "microsoft.azure.secretstore": ["azurearck8s/secrets-store-sync-controller:1.1.0"],
    IOT_OPERATIONS: ["azureiotoperations/aio-operator:1.2.36", "azureiotoperations/mqttbroker/frontend-server:1.2.36",
                     "azureiotoperations/dataflow:1.2.36"],
}


def config(site, level: str, cluster_id: str, ca_dir: Path, state_dir: Path, pull_deadline: float = 6.0,
           call_timeout: float = 2.0) -> dict:
    node = str(site.level(level).node_ip)
    # the level's API, as the admin (the AIO operator's service account on a plant)
    from layernet.lab.clusters import controlplane

    d = controlplane.cluster_dir(site, level) / "pki"
    kube = {"server": controlplane.api_url(site, level), "cert": str(d / "admin.crt"), "key": str(d / "admin.key")}
    return {"level": level, "kube": kube, "cluster_id": cluster_id, "region": site.azure.location.lower(), "node_ip": node,
            "ca_dir": str(ca_dir), "ca_file": str(Path(ca_dir) / "ca.crt"), "state_dir": str(state_dir),
            "status": str(state_dir / STATUS_FILE), "extensions": str(state_dir / EXTENSIONS_FILE),
            "listeners": str(state_dir / LISTENERS_FILE), "pull_deadline": pull_deadline,
            "call_timeout": call_timeout, "mosquitto": shutil.which("mosquitto") or "/usr/sbin/mosquitto",
            "required": reach.targets(site, ROLE)}


def own_hosts(cfg: dict) -> list[tuple[str, int]]:
    """The hosts the stand-in's pulls and status reports contact (`pull`, `report`)."""
    r = cfg["region"]
    return [("mcr.microsoft.com", 443), (f"{r}.data.mcr.microsoft.com", 443), (f"{r}.dp.kubernetesconfiguration.azure.com", 443)]


def contacts(cfg: dict) -> list[tuple[str, int]]:
    """Every (host, port) the stand-in contacts before it reports an extension Installed: its own, then the other
    required hosts by name."""
    return own_hosts(cfg) + [_host_port(c["url"]) for c in reach.reach_calls(cfg.get("required", []), own_hosts(cfg))]


def _host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def listener_ports(listeners: list[dict], authentications: list[dict] = ()) -> list[dict]:
    """[{"name", "port", "tls", "auth", "trusted_ca"}] from broker listener and authentication resources (ARM
    JSON), sorted by port. `auth`: "anonymous" (no authenticationRef), "x509" (the authentication has the X509
    method; `trusted_ca` is its trustedClientCaCert ConfigMap), "unmodelled" (only methods the lab does not check,
    e.g. ServiceAccountToken: no client gets in); a reference to an authentication that does not exist raises
    ValueError."""
    by_name = {a.get("name", ""): a for a in authentications}
    out = []
    for res in listeners:
        props = res.get("properties") or {}
        for port in props.get("ports") or []:
            tls = port.get("tls") or {}
            row = {"name": res.get("name", ""), "port": int(port["port"]),
                   "tls": bool(tls) and tls.get("mode", "Automatic") != "Disabled", "auth": "anonymous",
                   "trusted_ca": None}
            ref = port.get("authenticationRef")
            if ref:
                if ref not in by_name:
                    raise ValueError(f"listener {row['name']} port {row['port']}: authenticationRef {ref!r} names no "
                                     f"broker authentication (have: {', '.join(sorted(by_name)) or 'none'})")
                methods = (by_name[ref].get("properties") or {}).get("authenticationMethods") or []
                x509 = next((m for m in methods if m.get("method") == "X509"), None)
                if x509 is not None:
                    ca = (x509.get("x509Settings") or {}).get("trustedClientCaCert")
                    if not ca:
                        raise ValueError(f"broker authentication {ref}: X509 without x509Settings.trustedClientCaCert")
                    if not row["tls"]:
                        raise ValueError(f"listener {row['name']} port {row['port']}: X509 authentication needs TLS")
                    row.update(auth="x509", trusted_ca=ca)
                else:
                    row["auth"] = "unmodelled"
            out.append(row)
    return sorted(out, key=lambda p: p["port"])


def from_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(listeners, authentications) as ARM gives them back, from a level's rendered records (render/telemetry)."""
    def res(kind: str) -> list[dict]:
        return [{"name": r["id"].rsplit("/", 1)[1], "properties": r["body"]["properties"]} for r in records
                if r["id"].rstrip("/").split("/")[-2] == kind]

    return res("listeners"), res("authentications")


def mosquitto_conf(node_ip: str, ports: list[dict], cert: Optional[str], key: Optional[str], log: Optional[str],
                   trusted: Optional[dict] = None, extra: tuple = ()) -> str:
    """One listener block per port: TLS where the port asks for it; anonymous clients only on a port without
    authentication; X509: a client certificate signed by the CA file `trusted[<config map>]` required. `log`:
    a file (None: stdout); `extra`: more global settings."""
    lines = ["per_listener_settings true", "user root", "persistence false",
             f"log_dest file {log}" if log else "log_dest stdout",
             "log_type error", "log_type warning", "log_type notice", "set_tcp_nodelay true", *extra]
    for p in ports:
        lines += ["", f"# listener {p['name']} ({p.get('auth', 'anonymous')})", f"listener {p['port']} {node_ip}"]
        if p.get("auth") == "x509":
            lines += ["allow_anonymous false", "require_certificate true", "use_identity_as_username true",
                      f"cafile {(trusted or {})[p['trusted_ca']]}"]
        elif p.get("auth") == "unmodelled":     # e.g. ServiceAccountToken: not anonymous, and no credential checked
            lines += ["allow_anonymous false"]
        else:
            lines += ["allow_anonymous true"]
        if p["tls"]:
            lines += [f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
    return "\n".join(lines) + "\n"


def _describe(exc: BaseException) -> str:
    """Why a call from inside the level failed, in the words of the layered network (arcagent.describe_failure)."""
    from layernet.lab.arcagent import describe_failure

    return describe_failure(exc)


class Extension:
    def __init__(self, cfg: dict):
        import requests

        self.cfg = cfg
        self.http = requests.Session()
        self.http.trust_env = False            # only the lab CA; no proxy or CA bundle from the environment
        self.http.verify = cfg["ca_file"]
        self.status: dict = {"level": cfg["level"], "cluster": cfg["cluster_id"], "phase": "starting",
                             "extensions": {}, "blocked_on": None, "broker": None, "pid": os.getpid()}
        self.done: dict[str, float] = {}       # extension id -> generation installed (or failed)
        self.reached: set[str] = set()         # required hosts (catalog patterns) already reached
        self.broker: Optional[subprocess.Popen] = None
        self.broker_key: Optional[str] = None
        self._retry_at, self._last_input = 0.0, None
        self._kill_leftover_broker()

    # ---- files
    def save(self) -> None:
        path = Path(self.cfg["status"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status, indent=1))
        tmp.replace(path)

    @staticmethod
    def _read(path: str):
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None

    def note_call(self, step: str, host: str, port: int, ok: bool, observed: str,
                  seconds: Optional[float] = None) -> None:
        """The last call to each (host, port), for the role's evidence (lab/reach.py row)."""
        calls = [c for c in self.status.get("calls", []) if (c["host"], c["port"]) != (host, port)]
        self.status["calls"] = calls + [{"step": step, "host": host, "port": port, "ok": ok, "observed": observed,
                                         "seconds": seconds, "time": time.time()}]

    # ---- the other hosts the role requires
    def reach_required(self) -> Optional[str]:
        """Reach every required host the pulls and reports do not use (TLS by name, the front's echo), each retried
        until `pull_deadline`: None, or the first that could not be reached."""
        for call in reach.reach_calls(self.cfg.get("required", []), own_hosts(self.cfg)):
            if call["need"] in self.reached:
                continue
            host, port = _host_port(call["url"])
            end = time.monotonic() + self.cfg["pull_deadline"]
            while True:
                t0 = time.monotonic()
                try:
                    ok, observed, _ = reach.echo(host, port, self.cfg["ca_file"], self.cfg["call_timeout"])
                except Exception as exc:  # noqa: BLE001 - named in the status file
                    ok, observed = False, _describe(exc)
                self.note_call(call["step"], host, port, ok, observed, round(time.monotonic() - t0, 3))
                if ok or time.monotonic() >= end:
                    break
                self.status["phase"], self.status["blocked_on"] = "blocked", f"{host}:{port} ({observed})"
                self.save()
                time.sleep(0.3)
            if not ok:
                return f"{host}:{port} ({observed})"
            self.reached.add(call["need"])
        return None

    # ---- the data plane report
    def report(self, ext: dict, state: str, message: str, images: list) -> Optional[str]:
        url = f"https://{self.cfg['region']}.dp.kubernetesconfiguration.azure.com/azure-arc-k8sagents/extensionStatus"
        body = {"extensionResourceId": ext["id"], "clusterResourceId": self.cfg["cluster_id"], "status": state,
                "message": message, "images": images}
        end = time.monotonic() + self.cfg["pull_deadline"]
        while True:
            try:
                resp = self.http.post(url, json=body, timeout=self.cfg["call_timeout"])
                if resp.ok:
                    self.note_call("extension status", url.split("/")[2], 443, True, f"HTTP {resp.status_code}")
                    return None
                err = f"HTTP {resp.status_code}"
            except Exception as exc:  # noqa: BLE001 - named in the status file
                err = _describe(exc)
            if time.monotonic() >= end:
                self.note_call("extension status", url.split("/")[2], 443, False, err)
                return f"{url.split('/')[2]}:443 ({err})"
            time.sleep(0.3)

    # ---- images
    def pull(self, image: str) -> tuple[bool, str]:
        repo, _, tag = image.rpartition(":")
        base = f"https://mcr.microsoft.com/v2/{repo}"
        t = self.cfg["call_timeout"]
        host = "mcr.microsoft.com"
        try:
            r = self.http.get("https://mcr.microsoft.com/v2/", timeout=t)
            if r.status_code not in (200, 401):
                return False, f"{host}:443 answered HTTP {r.status_code}"
            m = self.http.get(f"{base}/manifests/{tag}", timeout=t,
                              headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            m.raise_for_status()
            digest = m.json()["layers"][0]["digest"]
            host = f"{self.cfg['region']}.data.mcr.microsoft.com"
            blob = self.http.get(f"{base}/blobs/{digest}", timeout=t)
            if not blob.ok:
                return False, f"{host}:443 answered HTTP {blob.status_code}"
            return True, " -> ".join(h.url.split("/")[2] for h in blob.history + [blob])
        except Exception as exc:  # noqa: BLE001 - every failure is evidence, named by host
            import requests

            if isinstance(exc, requests.RequestException) and exc.request is not None and exc.request.url:
                host = exc.request.url.split("/")[2]
            return False, f"{host}:443 ({_describe(exc)})"

    def install(self, ext: dict) -> None:
        st = {"type": ext["type"], "name": ext["name"], "state": "Installing", "message": "", "images": []}
        self.status["extensions"][ext["id"]] = st
        self.status["phase"] = "installing"
        self.save()
        self.report(ext, "Installing", "pulling images", [])
        unreachable = self.reach_required()
        for image in [] if unreachable else IMAGES.get(ext["type"], []):
            end = time.monotonic() + self.cfg["pull_deadline"]
            while True:
                ok, how = self.pull(image)
                if ok or time.monotonic() >= end:
                    break
                self.status["phase"], self.status["blocked_on"] = "blocked", how
                self.save()
                time.sleep(0.3)
            st["images"].append({"image": f"mcr.microsoft.com/{image}", "ok": ok, "via": how})
            if ok:
                for h in how.split(" -> "):
                    self.note_call("image pull", h, 443, True, f"pulled mcr.microsoft.com/{image}")
            else:
                self.note_call("image pull", how.split(":443", 1)[0], 443, False, how)
            if not ok:
                st["state"] = "Failed"
                st["message"] = (f"image pull failed for mcr.microsoft.com/{image} after "
                                 f"{self.cfg['pull_deadline']:g} s: {how}")
                break
        else:
            st["state"], st["message"] = "Installed", f"{len(st['images'])} image(s) pulled"
            self.status["blocked_on"] = None
            if ext["type"] in CERT_MANAGER_TYPES and self.cfg.get("kube") and not unreachable:
                try:
                    st["message"] += "; " + self.apply_crds(CERT_MANAGER_CRDS)
                except Exception as exc:  # noqa: BLE001 - the install fails, and says why
                    st["state"], st["message"] = "Failed", f"cert-manager's CRDs could not be applied: {_describe(exc)}"
        if unreachable:
            st["state"] = "Failed"
            st["message"] = (f"{unreachable}: a host the allow list marks required for the AIO extensions "
                             f"({ROLE}) could not be reached after {self.cfg['pull_deadline']:g} s")
            self.status["blocked_on"] = unreachable
        self.status["phase"] = "installed" if st["state"] == "Installed" else "failed"
        self.save()
        err = self.report(ext, st["state"], st["message"], st["images"])
        st["reported"] = err is None
        if err:
            st["report_error"] = f"the install state could not be reported: {err}"
        self.save()

    # ---- broker
    def _kill_leftover_broker(self) -> None:
        old = self._read(self.cfg["status"]) or {}
        pid = (old.get("broker") or {}).get("pid")
        conf = str(Path(self.cfg["state_dir"]) / BROKER_CONF)
        if pid:
            try:
                if conf in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(pid, signal.SIGTERM)
                    time.sleep(0.2)
            except OSError:
                pass

    def stop_broker(self) -> None:
        if self.broker and self.broker.poll() is None:
            self.broker.terminate()
            try:
                self.broker.wait(3)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait(3)
        self.broker = None

    def apply_crds(self, crds: list[dict], timeout: float = 15.0) -> str:
        """Server-side apply the extension's CustomResourceDefinitions to the level's API and wait until each is
        Established (what the extension's Helm chart does on a plant)."""
        kube = self.cfg["kube"]
        base = kube["server"] + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
        for crd in crds:
            r = self.http.patch(base + crd["metadata"]["name"], data=json.dumps(crd), cert=(kube["cert"], kube["key"]),
                                params={"fieldManager": "cert-manager", "force": "true"},
                                headers={"Content-Type": "application/apply-patch+yaml"}, timeout=self.cfg["call_timeout"])
            if r.status_code not in (200, 201):
                raise RuntimeError(f"CRD {crd['metadata']['name']}: HTTP {r.status_code} {r.text[:200]}")
        end = time.monotonic() + timeout
        for crd in crds:
            while True:
                got = self.http.get(base + crd["metadata"]["name"], cert=(kube["cert"], kube["key"]),
                                    timeout=self.cfg["call_timeout"]).json()
                if any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in (got.get("status") or {}).get("conditions") or []):
                    break
                if time.monotonic() > end:
                    raise RuntimeError(f"CRD {crd['metadata']['name']} not Established after {timeout:g} s")
                time.sleep(0.2)
        return f"CRDs {', '.join(c['metadata']['name'] for c in crds)} established"

    def sync_services(self, listeners: list[dict]) -> None:
        """The broker's Services, one per listener (its serviceName, type and ports), as AIO's operator keeps them;
        they select this stand-in's pod, which runs the broker (the node gives a LoadBalancer its address, as K3s's
        ServiceLB does)."""
        kube = self.cfg["kube"]
        for res in listeners:
            props = res.get("properties") or {}
            name = props.get("serviceName") or "aio-broker"
            kind = "LoadBalancer" if str(props.get("serviceType", "")).lower() == "loadbalancer" else "ClusterIP"
            svc = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": name, "namespace": AIO_NAMESPACE,
                                "labels": {"app.kubernetes.io/managed-by": "aio-operator", "listener": res.get("name", "")}},
                   "spec": {"type": kind, "selector": {"app.kubernetes.io/name": "aio-extension"},
                            "ports": [{"name": f"mqtt-{p['port']}", "port": int(p["port"]), "targetPort": int(p["port"]),
                                       "protocol": "TCP"} for p in props.get("ports") or []]}}
            url = f"{kube['server']}/api/v1/namespaces/{AIO_NAMESPACE}/services/{name}"
            r = self.http.patch(url, data=json.dumps(svc), cert=(kube["cert"], kube["key"]),
                                params={"fieldManager": "aio-operator", "force": "true"},
                                headers={"Content-Type": "application/apply-patch+yaml"}, timeout=self.cfg["call_timeout"])
            if r.status_code not in (200, 201):
                raise RuntimeError(f"service {name}: HTTP {r.status_code} {r.text[:200]}")

    def trusted_ca(self, name: str) -> str:
        """The PEM text of the ConfigMap `name` in the AIO namespace of the level's cluster (every value, as the
        broker reads a CA bundle)."""
        kube = self.cfg["kube"]
        path = f"/api/v1/namespaces/{AIO_NAMESPACE}/configmaps/{name}"
        r = self.http.get(kube["server"] + path, cert=(kube["cert"], kube["key"]), timeout=self.cfg["call_timeout"])
        if r.status_code == 404:
            raise LookupError(f"the trusted CA config map {AIO_NAMESPACE}/{name} does not "
                              f"exist in {self.cfg['level']}'s cluster")
        r.raise_for_status()
        pem = "".join(v for v in (r.json().get("data") or {}).values() if "BEGIN CERTIFICATE" in v)
        if not pem:
            raise LookupError(f"the config map {name} holds no PEM certificate")
        return pem

    def ensure_broker(self) -> None:
        installed = any(e["type"] == IOT_OPERATIONS and e["state"] == "Installed"
                        for e in self.status["extensions"].values())
        got = self._read(self.cfg["listeners"])
        if not installed or not got:
            return
        listeners, auths = (got, []) if isinstance(got, list) else (got.get("listeners") or [],
                                                                     got.get("authentications") or [])
        now = time.monotonic()
        alive = self.broker is not None and self.broker.poll() is None
        if now < self._retry_at and (alive or self.broker_key is None) and got == self._last_input:
            return      # the ConfigMaps (or a failed configuration) are read again at most every 2 s
        self._last_input = got
        d = Path(self.cfg["state_dir"])
        ports: list = []
        try:
            ports = listener_ports(listeners, auths)
            trusted_pem = {p["trusted_ca"]: self.trusted_ca(p["trusted_ca"]) for p in ports if p["auth"] == "x509"}
            self._retry_at = now + 2.0 if trusted_pem else 0.0
        except Exception as exc:  # noqa: BLE001 - the broker stays down, and says why
            self._retry_at = now + 2.0
            why = exc if isinstance(exc, (ValueError, LookupError)) else _describe(exc)
            running = self.status.get("broker") or {}
            if alive and ports and running.get("listeners") == ports:
                # the same listeners, a CA that cannot be read now: the running broker keeps the CA it has
                running["note"] = f"trusted CA not read again: {why}"
                self.save()
                return
            self.stop_broker()
            self.broker_key = None
            self.status["broker"] = {"pid": None, "listeners": [], "error": f"not started: {why}"}
            self.save()
            return
        key = json.dumps([ports, trusted_pem], sort_keys=True)
        if key == self.broker_key and alive:
            return
        trusted = {}
        for name, pem in trusted_pem.items():
            path = d / "aio-broker-pki" / f"trusted-{name}.crt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(pem)
            trusted[name] = str(path)
        cert = keyf = None
        if any(p["tls"] for p in ports):
            c, k = pki.issue_server_cert(Path(self.cfg["ca_dir"]), d / "aio-broker-pki",
                                         ["aio-broker", "aio-broker.azure-iot-operations"], ips=[self.cfg["node_ip"]],
                                         stem="aio-broker")
            cert, keyf = str(c), str(k)
        conf = d / BROKER_CONF
        log = d / "aio-mosquitto.log"
        conf.write_text(mosquitto_conf(self.cfg["node_ip"], ports, cert, keyf, str(log), trusted))
        self.stop_broker()
        out = open(d / "aio-mosquitto.out", "ab")
        self.broker = subprocess.Popen([self.cfg["mosquitto"], "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        out.close()
        self.broker_key = key
        err = None
        if not _wait_ports(self.cfg["node_ip"], [p["port"] for p in ports], 5.0):
            err = f"mosquitto does not listen on {self.cfg['node_ip']} {[p['port'] for p in ports]}"
            if self.broker.poll() is not None:
                err += f" (exited {self.broker.returncode}; see {log})"
        if err is None:
            try:
                self.sync_services(listeners)
            except Exception as exc:  # noqa: BLE001 - a Service the API refuses is the broker's error
                err = f"the broker's Services: {_describe(exc)}"
        self.status["broker"] = {"pid": self.broker.pid, "listeners": ports, "conf": str(conf), "error": err,
                                 "started": time.time()}
        self.status["phase"] = "broker"
        self.save()

    # ---- life
    def loop(self) -> None:
        while True:
            wanted = self._read(self.cfg["extensions"]) or []
            for ext in wanted:
                if self.done.get(ext["id"]) != ext.get("generation"):
                    self.install(ext)
                    self.done[ext["id"]] = ext.get("generation")
            try:
                self.ensure_broker()
            except Exception as exc:  # noqa: BLE001 - the broker's failure is evidence
                self.status["broker"] = {"pid": None, "listeners": [], "error": _describe(exc)}
                self.save()
            time.sleep(0.2)


def _wait_ports(host: str, ports: list[int], timeout: float) -> bool:
    import socket

    end = time.monotonic() + timeout
    todo = set(ports)
    while todo and time.monotonic() < end:
        for p in list(todo):
            try:
                with socket.create_connection((host, p), timeout=0.5):
                    todo.discard(p)
            except OSError:
                pass
        if todo:
            time.sleep(0.05)
    return not todo


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = json.loads(Path(argv[0]).read_text())
    ext = Extension(cfg)

    def stop(signum, frame):
        ext.stop_broker()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ext.save()
    ext.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------------------------- the stage's side
_INSTALL_LOCK = __import__("threading").Lock()     # the stage PUTs extensions of several levels at once


def install(site, level: str, cluster_id: str, extension: dict, pull_deadline: float = 6.0) -> str:
    """Ask the level's extension stand-in to install `extension` ({"id", "name", "type"}); starts the stand-in
    when it does not run. Called when the extension's PUT was accepted."""
    with _INSTALL_LOCK:
        return _install(site, level, cluster_id, extension, pull_deadline)


def _install(site, level: str, cluster_id: str, extension: dict, pull_deadline: float) -> str:
    from layernet.lab import procs, services

    d = layout.level_dir(site, level)
    d.mkdir(parents=True, exist_ok=True)
    path = d / EXTENSIONS_FILE
    try:
        wanted = [e for e in json.loads(path.read_text()) if e["id"].lower() != extension["id"].lower()]
    except (OSError, ValueError):
        wanted = []
    wanted.append({**extension, "generation": time.time()})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(wanted, indent=1))
    tmp.replace(path)
    name = f"{level}/aio-extension"
    running = services.table(site).get(name)
    if running is not None and procs.alive(running):
        return f"{extension['type']}: handed to the extension stand-in of {level} (pid {running.pid})"
    cfg = config(site, level, cluster_id, layout.state_dir(site) / "ca", d, pull_deadline=pull_deadline)
    cfg_path = d / CONFIG_FILE
    cfg_path.write_text(json.dumps(cfg, indent=1))
    p = services.start(site, name, level, [sys.executable, "-m", "layernet.lab.aioext", str(cfg_path)])
    return f"{extension['type']}: extension stand-in of {level} started (pid {p.pid}) in {layout.namespace(site, level)}"


def set_listeners(site, level: str, listeners: list[dict], authentications: list[dict] = ()) -> str:
    """Hand the broker listener and authentication resources (as read back from ARM) to the level's stand-in."""
    path = layout.level_dir(site, level) / LISTENERS_FILE
    # a level's listeners are provisioned side by side: one temporary file per writer
    tmp = path.with_suffix(f".{os.getpid()}.{__import__('threading').get_ident()}.tmp")
    tmp.write_text(json.dumps({"listeners": listeners, "authentications": list(authentications)}, indent=1,
                              sort_keys=True))
    tmp.replace(path)
    return (f"{len(listeners)} listener(s) and {len(authentications)} authentication(s) handed to the broker of "
            f"{level}")


def status(site, level: str) -> Optional[dict]:
    try:
        return json.loads((layout.level_dir(site, level) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def note(site, level: str) -> str:
    """What the stand-in knows beyond ARM: a blocked pull, a failed report, a broker that did not start."""
    st = status(site, level)
    if st is None:
        return f"the AIO extension stand-in of {level} never started"
    parts = []
    for e in st.get("extensions", {}).values():
        if e.get("state") != "Installed":
            parts.append(f"{e['type']} is {e['state']}" + (f": {e['message']}" if e.get("message") else ""))
        if e.get("report_error"):
            parts.append(e["report_error"])
    if st.get("blocked_on") and not parts:
        parts.append(f"image pulls blocked on {st['blocked_on']}")
    if (st.get("broker") or {}).get("error"):
        parts.append(f"broker: {st['broker']['error']}")
    return "; ".join(parts)


def mqtt_refuses_anonymous(host: str, port: int, ca_file: Optional[str] = None,
                           timeout: float = 5.0) -> tuple[bool, str]:
    """Connect without credentials (over TLS with `ca_file`): (True, what was seen) when the broker answers with a
    refusing CONNACK, (False, ...) when it lets the client in or does not answer."""
    import threading

    seen: dict = {}
    done = threading.Event()

    def on_connect(client, userdata, flags, rc, props=None):
        seen["rc"] = rc
        done.set()

    with _verify_session(host, port, ca_file, on_connect=on_connect) as (_, failed):
        if failed:
            return False, failed
        if not done.wait(timeout):
            return False, f"no CONNACK within {timeout:g} s"
        rc = seen["rc"]
        if rc.is_failure:
            return True, f"anonymous client refused (CONNACK {rc})" + (" over TLS" if ca_file else "")
        return False, "an anonymous client was let in"


@contextmanager
def _verify_session(host: str, port: int, ca_file: Optional[str], **callbacks):
    """A fresh paho client for one check (a client id of its own; TLS trusting `ca_file` when given) with
    `callbacks` set, connecting to host:port with its network loop running: yields (client, None), or
    (None, what went wrong) when the connect failed at once; disconnects and stops the loop on the way out."""
    import uuid

    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"layernet-verify-{uuid.uuid4().hex[:8]}")
    if ca_file:
        c.tls_set(ca_certs=ca_file)
    for name, fn in callbacks.items():
        setattr(c, name, fn)
    try:
        c.connect(host, port, keepalive=10)
    except Exception as exc:  # noqa: BLE001 - the observed outcome
        yield None, _describe(exc)
        return
    c.loop_start()
    try:
        yield c, None
    finally:
        c.disconnect()
        c.loop_stop()


def mqtt_round_trip(host: str, port: int, ca_file: Optional[str] = None, timeout: float = 5.0) -> tuple[bool, str]:
    """Connect, subscribe to a fresh topic, publish to it and wait for the message (paho-mqtt, MQTT 3.1.1)."""
    import threading
    import uuid

    topic = f"layernet/verify/{uuid.uuid4().hex[:12]}"
    payload = uuid.uuid4().hex.encode()
    got, subscribed, connected = threading.Event(), threading.Event(), threading.Event()
    result: dict = {}

    def on_connect(client, userdata, flags, rc, props=None):
        result["connack"] = str(rc)
        if not rc.is_failure:
            connected.set()
            client.subscribe(topic, qos=1)

    def on_subscribe(client, userdata, mid, rcs, props=None):
        subscribed.set()

    def on_message(client, userdata, msg):
        if msg.payload == payload:
            got.set()

    t0 = time.monotonic()
    with _verify_session(host, port, ca_file, on_connect=on_connect, on_subscribe=on_subscribe,
                         on_message=on_message) as (c, failed):
        if failed:
            return False, failed
        if not connected.wait(timeout):
            return False, f"no CONNACK within {timeout:g} s" + (f" ({result['connack']})" if "connack" in result else "")
        if not subscribed.wait(timeout):
            return False, "no SUBACK"
        c.publish(topic, payload, qos=1)
        if not got.wait(timeout):
            return False, "published, message not delivered back"
        return True, f"round trip in {1000 * (time.monotonic() - t0):.0f} ms" + (" over TLS" if ca_file else "")
