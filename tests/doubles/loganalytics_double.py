"""LogAnalyticsDouble: a TEST DOUBLE of the Azure Monitor Logs query API over HTTPS on 127.0.0.1, for tests only.

It is not Log Analytics and runs no KQL. It answers ``POST /v1/workspaces/{id}/query`` (the request
azure-monitor-query's LogsQueryClient.query_workspace sends) with a canned table chosen by the query's first
line (the audit's queries start with ``// layernet audit of site S: NAME``), in the API's shape
``{"tables": [{"name": "PrimaryResult", "columns": [{"name", "type"}], "rows": [...]}]}``. Every request is
recorded (method, path, query string, JSON body, Authorization header) so tests pin the exact request; a request
that is not JSON, has no bearer token or names another workspace gets the API's error shape.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

from https_double import HttpsServer, read_body, send


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: Any
    authorization: Optional[str]
    content_type: Optional[str]


_NAME = re.compile(r"^// layernet audit of site [^:]+: (\w+)")


class LogAnalyticsDouble:
    def __init__(self, tmp: Path, workspace_id: str):
        self.tmp = Path(tmp)
        self.workspace_id = workspace_id
        self.tables: dict[str, dict] = {}            # query name -> {"columns": [(name, type)], "rows": [...]}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.https = HttpsServer(self.tmp, self._handler())
        self.ca, self.url = self.https.ca, self.https.url

    def close(self) -> None:
        self.https.close()

    def table(self, name: str, columns: list[tuple[str, str]], rows: list[list]) -> None:
        """The canned answer to the query NAME: columns as (name, Kusto type), rows as JSON values."""
        self.tables[name] = {"columns": columns, "rows": rows}

    def answer(self, path: str, body: Any, authorization: Optional[str]) -> tuple[int, dict]:
        if not authorization or not authorization.startswith("Bearer ") or len(authorization) <= len("Bearer "):
            return 401, {"error": {"code": "AuthorizationRequiredError", "message": "no bearer token"}}
        m = re.fullmatch(r"/v1/workspaces/([^/]+)/query", path)
        if not m:
            return 404, {"error": {"code": "PathNotFoundError", "message": path}}
        if m.group(1) != self.workspace_id:
            return 404, {"error": {"code": "WorkspaceNotFoundError", "message": m.group(1)}}
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return 400, {"error": {"code": "BadArgumentError", "message": "body.query"}}
        name = _NAME.match(body["query"])
        if not name or name.group(1) not in self.tables:
            return 400, {"error": {"code": "SemanticError", "message": "no canned table for this query"}}
        t = self.tables[name.group(1)]
        return 200, {"tables": [{"name": "PrimaryResult",
                                 "columns": [{"name": n, "type": ty} for n, ty in t["columns"]],
                                 "rows": t["rows"]}]}

    def _handler(self):
        double = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                u = urlsplit(self.path)
                body = read_body(self)
                auth = self.headers.get("Authorization")
                with double.lock:
                    double.requests.append(Request("POST", u.path, dict(parse_qsl(u.query)), body, auth,
                                                   self.headers.get("Content-Type")))
                status, out = double.answer(u.path, body, auth)
                send(self, status, json.dumps(out).encode())

        return H
