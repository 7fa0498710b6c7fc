"""KubeApiDouble: a TEST DOUBLE of a Kubernetes API server, for tests only.

No API server can run on this machine, so the kube target is tested against this small HTTP server on
127.0.0.1. It records every request (method, path, query, content type, body) and keeps objects in a dict by
REST path. It is not Kubernetes: apply stores the sent object (plus a few server-set fields, so tests prove
they are ignored), a strategic-merge patch deep-merges, a dry-run apply (`dryRun=All`) stores nothing, a changed Deployment
selector is refused as the API server refuses it (422, field is immutable), Deployments always report a finished rollout unless a
test stores a different status, and a created Job gets one pod whose log comes from `on_job`.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, urlsplit

import yaml


@dataclass
class Request:
    method: str
    path: str
    query: dict
    content_type: Optional[str]
    body: Any
    authorization: Optional[str] = None

    def short(self) -> tuple:
        return (self.method, self.path, self.query)


def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


class KubeApiDouble:
    def __init__(self, on_job: Optional[Callable[[dict, dict], tuple[str, bool]]] = None):
        self.objects: dict[str, dict] = {}
        self.logs: dict[str, str] = {}              # pod path -> log text
        self.requests: list[Request] = []
        self.stuck_rollouts: set[str] = set()       # Deployment paths whose new pods never become available
        self.on_job = on_job                        # (job, its configmap) -> (log text, succeeded)
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _do(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                ctype = self.headers.get("Content-Type") if raw else None
                body = (yaml.safe_load(raw) if "yaml" in (ctype or "") else json.loads(raw)) if raw else None
                req = Request(self.command, url.path, dict(parse_qsl(url.query)), ctype, body,
                              self.headers.get("Authorization"))
                with double._lock:
                    double.requests.append(req)
                    status, payload = double.handle(req)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _do

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def configuration(self):
        from kubernetes.client import Configuration

        cfg = Configuration()
        cfg.host = self.host
        cfg.api_key = {"authorization": "Bearer test-token"}
        return cfg

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------------------- behaviour
    def handle(self, req: Request) -> tuple[int, Any]:
        p = req.path
        if req.method == "GET":
            if p.endswith("/log"):
                return 200, self.logs.get(p[: -len("/log")], "")
            if p in self.objects:
                return 200, self.objects[p]
            if p.endswith("/pods"):
                want = dict(kv.split("=", 1) for kv in req.query.get("labelSelector", "").split(",") if kv)
                items = [o for k, o in self.objects.items() if k.startswith(p + "/")
                         and want.items() <= (o["metadata"].get("labels") or {}).items()]
                return 200, {"kind": "PodList", "items": items}
            return 404, {"kind": "Status", "code": 404, "message": f"{p} not found"}
        if req.method == "PATCH":
            if req.content_type == "application/apply-patch+yaml":
                obj = dict(req.body)
                created = p not in self.objects
            elif p in self.objects:
                obj, created = _merge(self.objects[p], req.body), False
            else:
                return 404, {"kind": "Status", "code": 404}
            refused = self._immutable(p, obj)
            if refused:
                return 422, refused
            if req.query.get("dryRun") == "All":      # validated and answered, nothing stored
                return (201 if created else 200), obj
            self.store(p, obj)
            return (201 if created else 200), self.objects[p]
        if req.method == "POST":
            name = req.body["metadata"]["name"]
            self.store(f"{p}/{name}", dict(req.body))
            if req.body["kind"] == "Job":
                self._run_job(req.body)
            return 201, self.objects[f"{p}/{name}"]
        if req.method == "DELETE":
            return (200, {"kind": "Status", "status": "Success"}) if self.objects.pop(p, None) else (404, {})
        return 405, {}

    def _immutable(self, path: str, obj: dict) -> Optional[dict]:
        """The API server's 422 for a changed Deployment selector (immutable in apps/v1), else None."""
        old = self.objects.get(path)
        if not old or obj.get("kind") != "Deployment":
            return None
        want = (obj.get("spec") or {}).get("selector")
        if want is None or want == (old.get("spec") or {}).get("selector"):
            return None
        cause = {"reason": "FieldValueInvalid", "field": "spec.selector",
                 "message": f"Invalid value: {json.dumps(want)}: field is immutable"}
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                "message": f"Deployment.apps {obj['metadata']['name']!r} is invalid: spec.selector: {cause['message']}",
                "details": {"name": obj["metadata"]["name"], "group": "apps", "kind": "Deployment", "causes": [cause]}}

    def store(self, path: str, obj: dict) -> None:
        """Keep `obj` as the live object, with the fields a real server adds (tests prove they are ignored)."""
        old = self.objects.get(path, {})
        meta = dict(obj.get("metadata") or {})
        meta.setdefault("uid", f"uid-{len(self.objects)}")
        meta["resourceVersion"] = str(len(self.requests))
        meta["generation"] = (old.get("metadata") or {}).get("generation", 0) + 1
        meta["managedFields"] = [{"manager": "layernet", "operation": "Apply"}]
        obj = dict(obj, metadata=meta)
        if obj.get("kind") == "Deployment":
            n = (obj.get("spec") or {}).get("replicas", 1)
            done = 0 if path in self.stuck_rollouts else n
            obj["status"] = {"observedGeneration": meta["generation"], "replicas": n, "updatedReplicas": done,
                             "availableReplicas": done}
        if obj.get("kind") == "Service":
            obj["spec"] = dict(obj.get("spec") or {}, clusterIP="10.43.0.99")
        self.objects[path] = obj

    def _run_job(self, job: dict) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        cm_name = job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        cm = self.objects.get(f"/api/v1/namespaces/{ns}/configmaps/{cm_name}", {})
        log, ok = self.on_job(job, cm) if self.on_job else ("", True)
        pod = f"/api/v1/namespaces/{ns}/pods/{name}-x7k2p"
        self.objects[pod] = {"kind": "Pod", "metadata": {"name": f"{name}-x7k2p", "namespace": ns,
                                                         "labels": {"job-name": name}}}
        self.logs[pod] = log
        self.objects[f"/apis/batch/v1/namespaces/{ns}/jobs/{name}"]["status"] = {"succeeded" if ok else "failed": 1}
