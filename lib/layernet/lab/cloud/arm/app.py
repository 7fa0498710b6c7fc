"""The ARM stand-in as a starlette app (management.azure.com): bearer-token check, then `Arm.handle`."""
from __future__ import annotations

import json
from typing import Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layernet.lab.cloud.arm.service import Arm, Reply, error

AUDIENCES = ["https://management.azure.com", "https://management.azure.com/", "https://management.core.windows.net",
             "https://management.core.windows.net/"]
METHODS = ["GET", "PUT", "PATCH", "DELETE", "POST", "HEAD"]


def _reply(r: Reply) -> Response:
    headers = dict(r.headers)
    if r.body is None:
        return Response(status_code=r.status, headers=headers)
    return JSONResponse(r.body, status_code=r.status, headers=headers)


def build(arm: Arm, signer=None, tenant_id: str = "") -> Starlette:
    """`signer` (entra.Signer) checks the bearer token on every call except /metadata/endpoints; None: no check."""

    def unauthorized(why: str) -> Response:
        r = error(401, "AuthenticationFailed" if "missing" in why else "InvalidAuthenticationToken", why)
        r.headers["WWW-Authenticate"] = (f'Bearer authorization_uri="https://login.microsoftonline.com/{tenant_id}", '
                                         f'error="invalid_token", error_description="{why}"')
        return _reply(r)

    async def endpoint(request: Request) -> Response:
        path = request.url.path
        if signer is not None and path.rstrip("/").lower() != "/metadata/endpoints":
            auth = request.headers.get("authorization", "")
            if not auth.lower().startswith("bearer "):
                return unauthorized("Authentication failed. The 'Authorization' header is missing.")
            try:
                claims = signer.verify(auth[7:].strip(), AUDIENCES)
            except Exception as exc:  # noqa: BLE001 - any token problem is a 401 naming it
                return unauthorized(f"The access token is invalid: {type(exc).__name__}.")
            request.state.log_note = f"appid {claims.get('appid', '')}"
        body: Optional[object] = None
        raw = await request.body()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return _reply(error(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."))
        base = f"https://{request.headers.get('host', 'management.azure.com')}"
        reply = arm.handle(request.method, path, dict(request.query_params), body, base, getattr(request.state, "peer", ""))
        return _reply(reply)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=METHODS)])
