"""The Arc agents of one level's cluster, as a lab service: they must reach Azure through the proxy chain.

A real `az connectedk8s connect` PUTs the connected cluster, then installs the agents (namespace azure-arc)
in the cluster. From inside the cluster, with the level's DNS (CoreDNS: Azure names -> the parent's proxy) and
no other route out, the agents call, in this order:

  identity      gbl.his.arc.azure.com, then the regional <region>.his.arc.azure.com, proving with the private key
                made for the connected cluster (its public half is the PUT's agentPublicKeyCertificate) that
                these agents are that cluster's (`az connectedk8s connect` hands the key to the agents)
  tokens        login.microsoftonline.com (OIDC discovery)
  config        <region>.dp.kubernetesconfiguration.azure.com: healthCheck, GetHelmSettings
  notification  guestnotificationservice.azure.com
  relay         <something>.servicebus.windows.net over a websocket (cluster connect)
  images        mcr.microsoft.com /v2/ and a manifest, the layer from <region>.data.mcr.microsoft.com
  connect       <region>.obo.arc.azure.com:8084 (cluster connect on-behalf-of)
  required      every other host the allow-list catalog marks required for the Arc agents (role arc-agents:
                ARM, the other token hosts, sts.windows.net, the regional notification hosts): a TLS connection
                by name, answered by the cloud's front (lab/reach.py)
  heartbeat     <region>.dp.kubernetesconfiguration.azure.com, every `interval` seconds, for ever

This stand-in makes exactly those calls by name from the level's namespace (so `ip netns exec` gives it the
level's resolv.conf), trusting only the lab CA. A call that fails is retried until `deadline`; the first call
that cannot get through names its host in the status file, and the agent keeps retrying it (a real agent
does the same), so fixing the allow list lets it finish. ARM reports the cluster Connected only when the
heartbeats arrive from the egress level's node, i.e. after crossing every proxy (see lab/cloud/arc.py).

Status: `<level state>/arc-agent.json`: {"cluster", "phase": starting|blocked|heartbeating, "calls": [{step,
host, port, ok, observed, peer, seconds}], "blocked_on": host or null, "heartbeats": n, "last_heartbeat"}.

Run: python -m layernet.lab.arcagent CONFIG.json   (see `config()` for the keys).
"""
from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Optional

AGENT_VERSION = "1.21.10"
ROLE = "arc-agents"                      # the catalog's role of these agents (lib/layernet/data/endpoints.yaml)
STATUS_FILE = "arc-agent.json"
CONFIG_FILE = "arc-agent-config.json"
KEY_FILE = "arc-agent-key.pem"           # the connected cluster's private key (mode 0600), the agents' identity
FEATURES_FILE = "arc-agent-features.json"   # the features the agents' settings enable (helm values on a cluster)


def save_key(state_dir: Path, key_pem: bytes) -> Path:
    """Keep the agents' private key where only they read it (mode 0600, written before its content)."""
    path = Path(state_dir) / KEY_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    return path


def enable_features(state_dir: Path, features: list[str]) -> list[str]:
    """Turn agent features on (what `az connectedk8s enable-features` sets in the agents' values); returns all
    enabled ones."""
    have = set(read_features(state_dir) or [])
    out = sorted(have | set(features))
    path = Path(state_dir) / FEATURES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)
    return out


def read_features(state_dir: Path) -> Optional[list[str]]:
    """The features enabled in the agents' settings ([] when the agents run with none; None: no agents)."""
    try:
        return sorted(json.loads((Path(state_dir) / FEATURES_FILE).read_text()))
    except FileNotFoundError:
        return [] if (Path(state_dir) / CONFIG_FILE).exists() else None
    except (OSError, ValueError):
        return None


def proof(cluster_id: str, key_pem: bytes, now: Optional[float] = None) -> dict:
    """The identity service's proof of possession: the cluster id and a timestamp signed with the agents' key."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from layernet.lab.cloud.arc import proof_message

    ts = f"{time.time() if now is None else now:.3f}"
    key = serialization.load_pem_private_key(key_pem, password=None)
    sig = key.sign(proof_message(cluster_id, ts), padding.PKCS1v15(), hashes.SHA256())
    return {"clusterResourceId": cluster_id, "timestamp": ts, "signature": base64.b64encode(sig).decode()}


def config(site, level: str, cluster_id: str, ca_file: str, state_dir: Path, interval: float = 2.0,
           call_timeout: float = 3.0) -> dict:
    from layernet.lab import reach

    region = site.azure.location
    return {"level": level, "cluster_id": cluster_id, "region": region, "ca_file": str(ca_file),
            "key_file": str(state_dir / KEY_FILE),
            "tenant": site.azure.tenant_id or "organizations", "status": str(state_dir / STATUS_FILE),
            "interval": interval, "call_timeout": call_timeout, "relay_namespace": f"azgnrelay-{region}-l1",
            "required": reach.targets(site, ROLE)}


def calls(cfg: dict) -> list[dict]:
    """The agents' start-up calls, in order (see the module docstring): their own, then one by name to every
    other host their role requires."""
    from layernet.lab import reach

    own = _own_calls(cfg)
    return own + reach.reach_calls(cfg.get("required", []), [_call_host(c) for c in own])


def _own_calls(cfg: dict) -> list[dict]:
    r = cfg["region"]
    dp = f"https://{r}.dp.kubernetesconfiguration.azure.com/azure-arc-k8sagents"
    body = {"clusterResourceId": cfg["cluster_id"], "agentVersion": AGENT_VERSION}
    return [
        {"step": "identity (global)", "method": "POST", "url": "https://gbl.his.arc.azure.com/discovery", "json": body},
        {"step": "identity (regional)", "method": "POST", "url": f"https://{r}.his.arc.azure.com/agents/register",
         "json": body, "proof": True},
        {"step": "tokens", "method": "GET",
         "url": f"https://login.microsoftonline.com/{cfg['tenant']}/v2.0/.well-known/openid-configuration"},
        {"step": "config: healthCheck", "method": "POST", "url": f"{dp}/healthCheck", "json": body},
        {"step": "config: GetHelmSettings", "method": "POST", "url": f"{dp}/GetHelmSettings", "json": body},
        {"step": "notification", "method": "GET", "url": "https://guestnotificationservice.azure.com/api/health"},
        {"step": "relay websocket", "method": "WS",
         "url": f"wss://{cfg['relay_namespace']}.servicebus.windows.net/$hc/{cfg['level']}"},
        {"step": "images: registry", "method": "GET", "url": "https://mcr.microsoft.com/v2/"},
        {"step": "images: manifest", "method": "GET",
         "url": "https://mcr.microsoft.com/v2/azurearck8s/agent/manifests/" + AGENT_VERSION},
        {"step": "images: layer", "method": "BLOB", "via": f"{r}.data.mcr.microsoft.com",
         "url": "https://mcr.microsoft.com/v2/azurearck8s/agent/manifests/" + AGENT_VERSION},
        {"step": "cluster connect", "method": "TLS", "url": f"{r}.obo.arc.azure.com:8084"},
    ]


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.partition(":")
    return host, int(port) if port else 443


def _call_host(call: dict) -> tuple[str, int]:
    """The (host, port) a call is about: its URL's, or for a blob the data host MCR redirects it to."""
    if call.get("via"):
        return call["via"], 443
    return _host_port(call["url"] if "://" in call["url"] else "tls://" + call["url"])


class Agent:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.status_path = Path(cfg["status"])
        self.status = {"cluster": cfg["cluster_id"], "level": cfg["level"], "phase": "starting", "calls": [],
                       "blocked_on": None, "heartbeats": 0, "last_heartbeat": None, "pid": os.getpid()}
        import requests

        self.http = requests.Session()
        self.http.trust_env = False          # no proxy or CA bundle from the environment: the lab CA only
        self.http.verify = cfg["ca_file"]
        # one connection per call, as each agent start-up call is: a proxy logs a connection when it closes
        self.http.headers["Connection"] = "close"
        self.ctx = ssl.create_default_context(cafile=cfg["ca_file"])

    def save(self) -> None:
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status, indent=1))
        tmp.replace(self.status_path)

    # ---- one call
    def _do(self, call: dict) -> tuple[bool, str, Optional[str]]:
        t = self.cfg["call_timeout"]
        m = call["method"]
        if m == "REACH":
            from layernet.lab import reach

            host, port = _host_port("tls://" + call["url"])
            return reach.echo(host, port, self.cfg["ca_file"], t)
        if m == "TLS":
            host, port = _host_port("tls://" + call["url"])
            with socket.create_connection((host, port), timeout=t) as raw:
                with self.ctx.wrap_socket(raw, server_hostname=host) as tls:
                    tls.settimeout(t)
                    line = tls.recv(4096).decode("utf-8", "replace").strip()
            info = json.loads(line) if line.startswith("{") else {}
            return True, "TLS handshake verified", info.get("peer")
        if m == "WS":
            from websockets.sync.client import connect

            with connect(call["url"], ssl=self.ctx, open_timeout=t, close_timeout=t) as ws:
                hello = json.loads(ws.recv(timeout=t))
                ws.send("ping")
                echoed = ws.recv(timeout=t)
            return echoed == "ping", f"websocket open, echo {'ok' if echoed == 'ping' else 'wrong'}", hello.get("peer")
        if m == "BLOB":     # the manifest's first layer: MCR redirects the blob to its data host
            manifest = self.http.get(call["url"], timeout=t)
            manifest.raise_for_status()
            digest = manifest.json()["layers"][0]["digest"]
            blob = self.http.get(call["url"].split("/manifests/")[0] + f"/blobs/{digest}", timeout=t)
            hops = [_host_port(r.url)[0] for r in blob.history + [blob]]
            if blob.ok and call.get("via") and hops[-1].lower() != call["via"].lower():
                return False, f"HTTP {blob.status_code} from {hops[-1]}, not {call['via']}", None
            return blob.ok, f"HTTP {blob.status_code} via {' -> '.join(hops)}", None
        payload = call.get("json")
        if call.get("proof"):
            try:
                key_pem = Path(self.cfg["key_file"]).read_bytes()
            except (OSError, KeyError):
                return False, "no private key for this cluster (the agents cannot prove their identity)", None
            payload = {**(payload or {}), **proof(self.cfg["cluster_id"], key_pem)}
        resp = self.http.request(m, call["url"], json=payload, timeout=t)
        peer, code = None, ""
        try:
            doc = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
            peer = doc.get("peer")
            code = ((doc.get("error") or {}).get("code") or "") if not resp.ok else ""
        except (ValueError, AttributeError):
            pass
        return resp.ok, f"HTTP {resp.status_code}" + (f" {code}" if code else ""), peer

    def attempt(self, call: dict) -> dict:
        host, port = _call_host(call)
        t0 = time.monotonic()
        try:
            ok, observed, peer = self._do(call)
        except Exception as exc:  # noqa: BLE001 - every failure is evidence, named by host
            ok, observed, peer = False, describe_failure(exc), None
        return {"step": call["step"], "host": host, "port": port, "ok": ok, "observed": observed, "peer": peer,
                "seconds": round(time.monotonic() - t0, 3), "time": time.time()}

    def attempt_within(self, call: dict, limit: float) -> dict:
        """attempt(), but a call that has not ended after `limit` seconds (a connection the network left half-open,
        whose close waits on a peer that never answers) is a failed attempt, and the agent goes on retrying, as
        the real agents do, instead of hanging in it."""
        done: dict = {}
        worker = threading.Thread(target=lambda: done.setdefault("row", self.attempt(call)), daemon=True)
        worker.start()
        worker.join(limit)
        if "row" in done:
            return done["row"]
        host, port = _call_host(call)
        return {"step": call["step"], "host": host, "port": port, "ok": False, "observed": f"no end within {limit:g} s",
                "peer": None, "seconds": limit, "time": time.time()}

    # ---- life
    def start_up(self) -> None:
        limit = 4 * self.cfg["call_timeout"]
        for call in calls(self.cfg):
            while True:
                row = self.attempt_within(call, limit)
                self.status["calls"] = [c for c in self.status["calls"] if c["step"] != call["step"]] + [row]
                if row["ok"]:
                    self.status["blocked_on"] = None
                    self.save()
                    break
                self.status["phase"] = "blocked"
                self.status["blocked_on"] = f"{row['host']}:{row['port']} ({row['observed']})"
                self.save()
                time.sleep(min(1.0, self.cfg["interval"]))

    def heartbeat_forever(self) -> None:
        r = self.cfg["region"]
        url = f"https://{r}.dp.kubernetesconfiguration.azure.com/azure-arc-k8sagents/heartbeat"
        body = {"clusterResourceId": self.cfg["cluster_id"], "agentVersion": AGENT_VERSION}
        self.status["phase"] = "heartbeating"
        while True:
            try:
                resp = self.http.post(url, json=body, timeout=self.cfg["call_timeout"])
                if resp.ok:
                    self.status["heartbeats"] += 1
                    self.status["last_heartbeat"] = time.time()
                    self.status["connectivity"] = resp.json().get("connectivityStatus")
                    self.status["heartbeat_error"] = None
                else:
                    self.status["heartbeat_error"] = f"HTTP {resp.status_code}"
            except Exception as exc:  # noqa: BLE001
                self.status["heartbeat_error"] = describe_failure(exc)
            self.save()
            time.sleep(self.cfg["interval"])


def describe_failure(exc: BaseException) -> str:
    """Why a call made by name from inside a level failed: no DNS answer, reset by a proxy, timeout, ..."""
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if "name or service not known" in low or "nodename nor servname" in low or "temporary failure in name" in low \
            or "no address associated" in low or "failed to resolve" in low:
        return "no DNS answer (the level's DNS does not know this name)"
    if "connection reset" in low or "eof occurred" in low or "unexpected_eof" in low or "connection aborted" in low:
        return "reset by a proxy (the name is not on its allow list)"
    if "timed out" in low or "timeout" in low:
        return "timeout"
    if "refused" in low:
        return "connection refused"
    return text[:200]


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = json.loads(Path(argv[0]).read_text())
    agent = Agent(cfg)
    agent.save()
    agent.start_up()
    agent.heartbeat_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
