"""Arc stand-ins: the configuration data plane (with the agents' heartbeat), identity (HIS), the notification
service, the relay websocket, MCR, and the hook that gives connected clusters their connectivity status.

- data plane, ``{region}.dp.kubernetesconfiguration.azure.com``:
  ``POST /azure-arc-k8sagents/healthCheck`` -> 200 ``{"status": "Healthy"}``;
  ``POST /azure-arc-k8sagents/GetHelmSettings`` -> ``{"repositoryPath", "helmValuesContent"}``;
  ``POST /azure-arc-k8sagents/heartbeat`` ``{"clusterResourceId", "agentVersion"?}`` records the heartbeat with
  its true peer and answers the connectivity status ARM now reports for that cluster.
- connected clusters (hook for ``Microsoft.Kubernetes/connectedClusters``): after the PUT the cluster is
  ``Connecting``; it is ``Connected`` while heartbeats arrive from the egress level's node address
  (`ArmSettings.egress_ip`; any address when empty), with lastConnectivityTime and agentVersion from the
  latest one; ``Offline`` once the last such heartbeat is older than `offline_after` seconds. A heartbeat
  from any other address (a path that skipped the egress proxy) never makes a cluster Connected.
- identity (HIS), ``gbl.his.arc.azure.com`` and ``*.his.arc.azure.com``: the agents prove they hold the private
  key whose public half the connected-cluster PUT carried (``agentPublicKeyCertificate``, base64 of the PKCS#1
  RSAPublicKey DER): ``POST /agents/register`` ``{"clusterResourceId", "timestamp", "signature"}``, the signature
  RSA PKCS#1 v1.5 SHA-256 over ``proof_message(clusterResourceId, timestamp)``, the timestamp within
  `PROOF_WINDOW` seconds. 200 ``{"identity": "verified", ...}``; 401 ``InvalidProof`` for another key or a stale
  proof, 404 for an unknown cluster. Any other path (discovery) gets 200 ``{"service", "host", "path", "peer"}``.
- notification, ``guestnotificationservice.azure.com`` and ``*.guestnotificationservice.azure.com``: every request
  gets 200 ``{"service", "host", "path", "peer"}`` (the agents' calls are evidence, their content is not modelled).
- relay, ``*.servicebus.windows.net`` on 443: a websocket on any path; the server first sends
  ``{"service": "relay", "host", "path", "peer"}``, then echoes every message. Plain HTTP gets the same JSON.
- MCR, ``mcr.microsoft.com``: ``/v2/`` and ``/v2/<repo>/manifests/<ref>`` (an OCI manifest made up for any
  repository, one config and one layer blob), ``/v2/<repo>/blobs/<digest>`` redirects (307) to
  ``{region}.data.mcr.microsoft.com``, which serves the blob bytes.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from layernet.lab.cloud.arm import hooks
from layernet.lab.cloud.arm.service import _now_iso

CONNECTED_CLUSTERS = "Microsoft.Kubernetes/connectedClusters"
AGENT_VERSION = "1.21.10"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# ----------------------------------------------------------------------------------------------- heartbeats
def record_heartbeat(store, cluster_id: str, peer_ip: str, agent_version: str, egress_ip: str,
                     now: Optional[float] = None) -> dict:
    now = time.time() if now is None else now
    beat = {"time": now, "peer": peer_ip, "agentVersion": agent_version or AGENT_VERSION}
    with store.lock:
        rec = store.data["heartbeats"].setdefault(cluster_id.lower(), {})
        rec["last"] = beat
        if not egress_ip or peer_ip == egress_ip:
            rec["last_egress"] = beat
        store.save()
        return dict(rec)


class ConnectedClusterHook(hooks.Hook):
    """Connecting after the PUT; Connected / Offline from the heartbeats (see the module docstring).
    `on_accepted(ctx)`, when given, runs after each accepted PUT (e.g. to start the level's agent service)."""

    def __init__(self, on_accepted=None):
        self.on_accepted = on_accepted

    def on_put(self, ctx: hooks.HookContext) -> None:
        p = ctx.resource.setdefault("properties", {})
        p["connectivityStatus"] = "Connecting"
        p.setdefault("agentVersion", None)
        p.setdefault("kubernetesVersion", None)
        p.setdefault("totalNodeCount", None)
        if self.on_accepted:
            self.on_accepted(ctx)

    def on_get(self, ctx: hooks.HookContext) -> None:
        settings = ctx.settings
        rec = ctx.store.data["heartbeats"].get(ctx.resource["id"].lower()) or {}
        beat = rec.get("last_egress")
        p = ctx.resource.setdefault("properties", {})
        if not beat:
            return
        age = time.time() - beat["time"]
        p["connectivityStatus"] = "Connected" if age <= getattr(settings, "offline_after", 60.0) else "Offline"
        p["lastConnectivityTime"] = _now_iso(beat["time"])
        p["agentVersion"] = beat["agentVersion"]
        p.setdefault("arcAgentProfile", {})["agentState"] = "Succeeded"


def connectivity(store, settings, cluster_id: str) -> str:
    with store.lock:
        res = store.snapshot("resources", cluster_id)
        if res is None:
            return "NotFound"
        ConnectedClusterHook().on_get(hooks.HookContext(store=store, resource=res, settings=settings))
    return res.get("properties", {}).get("connectivityStatus", "")


# ----------------------------------------------------------------------------------------------- apps
def _peer(request) -> str:
    return getattr(request.state, "peer", "")


def dataplane_app(store, settings) -> Starlette:
    async def health(request: Request):
        return JSONResponse({"status": "Healthy"})

    async def helm(request: Request):
        return JSONResponse({
            "repositoryPath": f"mcr.microsoft.com/azurearck8s/batch1/stable/v2/azure-arc-k8sagents:{AGENT_VERSION}",
            "helmValuesContent": {"global.location": settings.location, "systemDefaultValues.azureArcAgents.autoUpdate": "false"},
        })

    async def heartbeat(request: Request):
        try:
            body = json.loads(await request.body() or b"{}")
            cluster_id = str(body["clusterResourceId"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": {"code": "BadRequest", "message": "expected JSON {clusterResourceId, agentVersion?}"}},
                                status_code=400)
        if store.snapshot("resources", cluster_id) is None:
            return JSONResponse({"error": {"code": "ResourceNotFound", "message": f"no connected cluster {cluster_id}"}},
                                status_code=404)
        peer_ip = getattr(request.state, "peer_ip", "")
        record_heartbeat(store, cluster_id, peer_ip, str(body.get("agentVersion") or ""), settings.egress_ip)
        return JSONResponse({"clusterResourceId": cluster_id, "peer": _peer(request),
                             "connectivityStatus": connectivity(store, settings, cluster_id)})

    return Starlette(routes=[
        Route("/azure-arc-k8sagents/healthCheck", health, methods=["POST", "GET"]),
        Route("/azure-arc-k8sagents/GetHelmSettings", helm, methods=["POST"]),
        Route("/azure-arc-k8sagents/heartbeat", heartbeat, methods=["POST"]),
    ])


PROOF_WINDOW = 300.0


def proof_message(cluster_id: str, timestamp: str) -> bytes:
    """What the agents sign to prove they hold the connected cluster's private key."""
    return f"{cluster_id.lower()}|{timestamp}".encode()


def public_key_of(agent_public_key_certificate: str):
    """The RSA public key of an agentPublicKeyCertificate (base64 of the PKCS#1 RSAPublicKey DER)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    der = base64.b64decode(agent_public_key_certificate, validate=True)
    pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
    return serialization.load_pem_public_key(pem)


def check_proof(store, body: dict, now: Optional[float] = None) -> tuple[int, str, str]:
    """(status, code, message) for an agent's proof of possession (see the module docstring)."""
    import base64

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        cid, ts, sig = str(body["clusterResourceId"]), str(body["timestamp"]), str(body["signature"])
        age = abs((time.time() if now is None else now) - float(ts))
    except (KeyError, TypeError, ValueError):
        return 400, "BadRequest", "expected JSON {clusterResourceId, timestamp, signature}"
    res = store.snapshot("resources", cid)
    if res is None:
        return 404, "ResourceNotFound", f"no connected cluster {cid}"
    cert = (res.get("properties") or {}).get("agentPublicKeyCertificate") or ""
    if age > PROOF_WINDOW:
        return 401, "InvalidProof", f"the proof's timestamp is {age:.0f} s away from now (at most {PROOF_WINDOW:.0f})"
    try:
        public_key_of(cert).verify(base64.b64decode(sig), proof_message(cid, ts), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return 401, "InvalidProof", "the signature was not made with the private key of this connected cluster"
    except ValueError:
        return 401, "InvalidProof", "the connected cluster's agentPublicKeyCertificate is not an RSA public key"
    return 200, "", "verified"


def identity_app(store) -> Starlette:
    async def register(request: Request):
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        status, code, msg = check_proof(store, body if isinstance(body, dict) else {})
        if status != 200:
            return JSONResponse({"error": {"code": code, "message": msg}}, status_code=status)
        return JSONResponse({"service": "his", "identity": "verified", "clusterResourceId": body["clusterResourceId"],
                             "host": request.headers.get("host", ""), "path": request.url.path, "peer": _peer(request)})

    async def any_path(request: Request):
        return JSONResponse({"service": "his", "host": request.headers.get("host", ""), "path": request.url.path,
                             "peer": _peer(request)})

    return Starlette(routes=[Route("/agents/register", register, methods=["POST"]),
                             Route("/{path:path}", any_path, methods=["GET", "POST"])])


def generic_app(service: str) -> Starlette:
    async def any_path(request: Request):
        return JSONResponse({"service": service, "host": request.headers.get("host", ""), "path": request.url.path,
                             "peer": _peer(request)})

    return Starlette(routes=[Route("/{path:path}", any_path, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])


def relay_app() -> Starlette:
    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_json({"service": "relay", "host": websocket.headers.get("host", ""),
                                   "path": websocket.url.path, "peer": websocket.scope.get("state", {}).get("peer", "")})
        try:
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("text") is not None:
                    await websocket.send_text(msg["text"])
                elif msg.get("bytes") is not None:
                    await websocket.send_bytes(msg["bytes"])
        except WebSocketDisconnect:
            return

    async def http(request: Request):
        return JSONResponse({"service": "relay", "host": request.headers.get("host", ""), "path": request.url.path,
                             "peer": _peer(request)})

    return Starlette(routes=[WebSocketRoute("/{path:path}", ws), Route("/{path:path}", http, methods=["GET", "POST"])])


class Registry:
    """Made-up images for any repository and tag: deterministic config and layer blobs."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _add(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._lock:
            self.blobs[digest] = data
        return digest

    def manifest(self, repo: str, ref: str) -> bytes:
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Labels": {"layernet.lab.image": f"{repo}:{ref}"}},
                             "rootfs": {"type": "layers", "diff_ids": []}}, sort_keys=True).encode()
        layer = f"layernet lab layer of {repo}:{ref}\n".encode()
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self._add(config), "size": len(config)},
               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": self._add(layer), "size": len(layer)}]}
        return json.dumps(doc, sort_keys=True).encode()


def mcr_app(registry: Registry, data_host: str) -> Starlette:
    async def base(request: Request):
        return JSONResponse({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def v2(request: Request):
        rest = request.path_params["rest"]
        if "/manifests/" in rest:
            repo, _, ref = rest.rpartition("/manifests/")
            body = registry.manifest(repo, ref)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            headers = {"Docker-Content-Digest": digest, "Docker-Distribution-API-Version": "registry/2.0"}
            if request.method == "HEAD":
                return Response(status_code=200, media_type=OCI_MANIFEST, headers={**headers, "Content-Length": str(len(body))})
            return Response(body, media_type=OCI_MANIFEST, headers=headers)
        if "/blobs/" in rest:
            repo, _, digest = rest.rpartition("/blobs/")
            if digest not in registry.blobs:
                return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": digest}]},
                                    status_code=404)
            return RedirectResponse(f"https://{data_host}/blobs/{digest}", status_code=307)
        return JSONResponse({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]},
                            status_code=404)

    return Starlette(routes=[Route("/v2/", base), Route("/v2/{rest:path}", v2, methods=["GET", "HEAD"])])


def mcr_data_app(registry: Registry) -> Starlette:
    async def blob(request: Request):
        data = registry.blobs.get(request.path_params["digest"])
        if data is None:
            return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}, status_code=404)
        return Response(data, media_type="application/octet-stream",
                        headers={"Docker-Content-Digest": request.path_params["digest"]})

    return Starlette(routes=[Route("/blobs/{digest}", blob, methods=["GET", "HEAD"])])
