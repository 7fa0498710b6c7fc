"""ArmDouble: a TEST DOUBLE of Azure Resource Manager over HTTPS on 127.0.0.1, for tests only.

It is not ARM. It is the smallest server the real SDK clients accept: TLS with a throw-away CA (passed to the
clients as `connection_verify`), `api-version` required on every call, ARM's error shape, long-running PUTs as
201 + Azure-AsyncOperation (+ Retry-After: 0) with a status URL and a final GET, provider registration, resource
groups (HEAD/PUT/GET), deployments with what-if (202 + Location). Every request is recorded (method, path,
query, body, authorization) so tests pin exact requests.

Hooks: `on_put[type_suffix] = fn(resource_dict)` adjusts a stored resource after its PUT completes (e.g.
connectivityStatus Connected); `fail(method, path_fragment, status, code, times)` injects errors.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo

from https_double import HttpsServer, read_body, send


class StaticToken:
    """A TokenCredential that hands out a fixed bearer token (the double does not check it beyond presence)."""

    def get_token(self, *scopes, **kw) -> AccessToken:
        self.scopes = scopes
        return AccessToken("test-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes, options=None) -> AccessTokenInfo:
        self.scopes = scopes
        return AccessTokenInfo("test-token", int(time.time()) + 3600)


COLLECTIONS = {"extensions", "listeners", "dataflowendpoints", "dataflowprofiles", "deployments", "roleassignments"}


class RawBody(bytes):
    """A response body sent as is (not JSON-encoded)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: Any
    authorization: Optional[str]


class ArmDouble:
    def __init__(self, tmp: Path, lro_polls: int = 1):
        self.tmp = Path(tmp)
        self.requests: list[Request] = []
        self.store: dict[str, dict] = {}
        self.providers: dict[str, str] = {}
        self.ops: dict[str, dict] = {}
        self.on_put: dict[str, Callable[[dict], None]] = {}
        self.files: dict[str, bytes] = {}          # static files served by path (templates to fetch)
        self.lro_polls = lro_polls
        self._fail: list[dict] = []
        self.lock = threading.Lock()
        self.https = HttpsServer(self.tmp, self._handler())
        self.ca, self.url = self.https.ca, self.https.url

    def close(self) -> None:
        self.https.close()

    def fail(self, method: str, fragment: str, status: int, code: str, message: str = "injected", times: int = 1):
        self._fail.append({"method": method, "fragment": fragment.lower(), "status": status, "code": code,
                           "message": message, "times": times})

    def put_resource(self, path: str, resource: dict) -> None:
        self.store[path.lower()] = resource

    def calls(self, method: Optional[str] = None, fragment: str = "") -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and fragment.lower() in r.path.lower()]

    # ---------------------------------------------------------------- request handling
    def _handler(self):
        double = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, status: int, body: Any = None, headers: Optional[dict] = None):
                data = b"" if body is None else body if isinstance(body, RawBody) else json.dumps(body).encode()
                send(self, status, data, headers)

            def _handle(self):
                u = urlsplit(self.path)
                query = dict(parse_qsl(u.query))
                body = read_body(self)
                with double.lock:
                    double.requests.append(Request(self.command, u.path, query, body,
                                                   self.headers.get("Authorization")))
                status, out, headers = double.route(self.command, u.path, query, body)
                self._send(status, out, headers)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _handle

        return H

    def _err(self, status: int, code: str, message: str):
        return status, {"error": {"code": code, "message": message}}, {}

    def route(self, method: str, path: str, query: dict, body: Any):
        low = path.lower()
        for f in self._fail:
            if f["times"] > 0 and f["method"] == method and f["fragment"] in low:
                f["times"] -= 1
                return self._err(f["status"], f["code"], f["message"])
        if method == "GET" and path in self.files:
            return 200, RawBody(self.files[path]), {}
        if "operationstatuses" in low or low.startswith("/ops/"):
            return self._op(low)
        if "api-version" not in query:
            return self._err(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        m = re.match(r"^/subscriptions/[^/]+/providers/([^/]+)(/register)?$", path, re.I)
        if m:
            ns = m.group(1)
            if m.group(2) and method == "POST":
                self.providers[ns.lower()] = "Registered"
            state = self.providers.get(ns.lower(), "NotRegistered")
            return 200, {"id": path.rsplit("/register", 1)[0], "namespace": ns, "registrationState": state}, {}
        m = re.match(r"^/subscriptions/[^/]+/resourcegroups/[^/]+$", low)
        if m:
            if method == "HEAD":
                return (204 if low in self.store else 404), None, {}
            if method == "PUT":
                name = path.rsplit("/", 1)[1]
                res = {"id": path, "name": name, "location": (body or {}).get("location"),
                       "properties": {"provisioningState": "Succeeded"}}
                created = low not in self.store
                self.store[low] = res
                return (201 if created else 200), res, {}
        m = re.match(r"^(.*/providers/microsoft\.resources/deployments/[^/]+)/whatif$", low)
        if m and method == "POST":
            op = self._new_op({"status": "Succeeded", "properties": {"changes": self._what_if(m.group(1), body)}},
                              result=True)
            return 202, None, {"Location": f"{self.url}/ops/{op}", "Retry-After": "0"}
        if method == "GET":
            res = self.store.get(low)
            if res is None and low.rsplit("/", 1)[-1] in COLLECTIONS:
                items = [v for k, v in self.store.items() if k.startswith(low + "/") and "/" not in k[len(low) + 1:]]
                return 200, {"value": items, "nextLink": None}, {}
            if res is None:
                return self._err(404, "ResourceNotFound", f"The Resource '{path}' was not found.")
            return 200, res, {}
        if method == "PUT":
            name = path.rsplit("/", 1)[1]
            res = dict(body or {})
            res.update({"id": path, "name": name})
            res.setdefault("properties", {})
            res["properties"] = dict(res["properties"], provisioningState="Accepted")
            self.store[low] = res
            op = self._new_op({"status": "InProgress"}, resource=low)
            headers = {"Azure-AsyncOperation": f"{self.url}{path}/operationStatuses/{op}?api-version=x",
                       "Retry-After": "0"}
            return 201, res, headers
        if method == "DELETE":
            self.store.pop(low, None)
            return 200, None, {}
        return self._err(405, "MethodNotAllowed", f"{method} {path}")

    def _what_if(self, deployment: str, body: Any) -> list[dict]:
        """NoChange when the same template and parameters were deployed under this name, else Create per resource."""
        have = self.store.get(deployment)
        want = (body or {}).get("properties") or {}
        if have and all(have["properties"].get(k) == want.get(k) for k in ("template", "parameters")):
            return [{"resourceId": deployment, "changeType": "NoChange"}]
        return [{"resourceId": f"{r.get('type')}/{r.get('name')}", "changeType": "Create"}
                for r in (want.get("template") or {}).get("resources") or []]

    def _new_op(self, state: dict, resource: Optional[str] = None, result: bool = False) -> str:
        op = uuid.uuid4().hex[:12]
        self.ops[op] = {"state": state, "resource": resource, "polls": 0, "result": result}
        return op

    def _op(self, low: str):
        op_id = low.rstrip("/").rsplit("/", 1)[1]
        op = self.ops.get(op_id)
        if op is None:
            return self._err(404, "NotFound", "no such operation")
        if op["result"]:
            return 200, op["state"], {}
        op["polls"] += 1
        if op["polls"] <= self.lro_polls:
            return 200, {"status": "InProgress"}, {"Retry-After": "0"}
        res = self.store.get(op["resource"])
        if res is not None:
            res["properties"]["provisioningState"] = "Succeeded"
            for suffix, hook in self.on_put.items():
                if op["resource"].rsplit("/", 1)[0].endswith(suffix.lower()):
                    hook(res)
            state = res["properties"].get("provisioningState")
            if state == "Failed":
                return 200, {"status": "Failed", "error": res["properties"].get("error") or
                             {"code": "Failed", "message": "failed"}}, {}
        return 200, {"status": "Succeeded"}, {}
