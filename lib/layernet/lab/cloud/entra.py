"""Entra ID stand-in: OIDC discovery, instance discovery, JWKS and the client-credentials token.

Served for login.microsoftonline.com, {region}.login.microsoft.com, login.windows.net and sts.windows.net.
Enough for azure-identity's ClientSecretCredential (MSAL) with the lab tenant:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (and the v1 ``/{tenant}/.well-known/...``);
- ``GET /common/discovery/instance`` (MSAL's instance discovery);
- ``GET /{tenant}/discovery/v2.0/keys``;
- ``POST /{tenant}/oauth2/v2.0/token`` (and v1 ``/oauth2/token``) with ``grant_type=client_credentials``:
  a JWT (ES256, the lab signing key) whose audience is the scope's resource, e.g. https://management.azure.com.

Clients: `<state>/cloud/entra.json` ``{"tenant_id", "clients": {client_id: secret}}``, mode 0600, made at
first start with one client. A wrong secret is 401 invalid_client (AADSTS7000215), an unknown tenant 400
(AADSTS90002), as Entra answers. Secrets never appear in logs or errors.
"""
from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PUBLIC_AUTHORITY = "login.microsoftonline.com"
TOKEN_SECONDS = 3599


def _b64u(n: int, length: int = 32) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(length, "big")).rstrip(b"=").decode()


@dataclass
class Directory:
    tenant_id: str
    clients: dict = field(default_factory=dict)        # client_id -> secret

    @classmethod
    def load_or_create(cls, path: Path, tenant_id: Optional[str] = None) -> "Directory":
        if path.exists():
            doc = json.loads(path.read_text())
            d = cls(doc["tenant_id"], dict(doc.get("clients") or {}))
            if tenant_id and tenant_id.lower() != d.tenant_id.lower():
                d.tenant_id = tenant_id
                d.save(path)
            return d
        d = cls(tenant_id or str(uuid.uuid4()), {str(uuid.uuid4()): secrets.token_urlsafe(24)})
        d.save(path)
        return d

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"tenant_id": self.tenant_id, "clients": self.clients}, f, indent=1)
        os.chmod(path, 0o600)


class Signer:
    """The lab's token signing key (EC P-256), kept in `<state>/cloud/token-signing.key` (0600)."""

    def __init__(self, key_path: Optional[Path] = None):
        if key_path and key_path.exists():
            self.key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
            if key_path:
                key_path.parent.mkdir(parents=True, exist_ok=True)
                data = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
        nums = self.key.public_key().public_numbers()
        self.kid = base64.urlsafe_b64encode(
            self.key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)[-20:]
        ).rstrip(b"=").decode()
        self.jwk = {"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
                    "x": _b64u(nums.x), "y": _b64u(nums.y)}

    def issue(self, tenant: str, client_id: str, audience: str, seconds: int = TOKEN_SECONDS) -> str:
        now = int(time.time())
        claims = {"aud": audience, "iss": f"https://sts.windows.net/{tenant}/", "iat": now, "nbf": now - 5,
                  "exp": now + seconds, "appid": client_id, "azp": client_id, "oid": str(uuid.uuid5(uuid.NAMESPACE_OID, client_id)),
                  "sub": str(uuid.uuid5(uuid.NAMESPACE_OID, client_id)), "tid": tenant, "idtyp": "app", "ver": "1.0"}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def verify(self, token: str, audiences: list) -> dict:
        """The claims of a valid token for one of `audiences`; raises jwt.InvalidTokenError."""
        return jwt.decode(token, self.key.public_key(), algorithms=["ES256"], audience=audiences,
                          options={"require": ["exp", "aud", "iss"]})


def _resource_of(scope: str) -> str:
    first = (scope or "").split()[0] if scope else ""
    for suffix in ("/.default", ".default"):
        if first.endswith(suffix):
            return first[: -len(suffix)].rstrip("/")
    return first.rstrip("/")


def _aad_error(status: int, err: str, code: int, text: str) -> JSONResponse:
    return JSONResponse({"error": err, "error_description": f"AADSTS{code}: {text}", "error_codes": [code],
                         "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                         "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}, status_code=status)


def build(directory: Directory, signer: Signer) -> Starlette:
    def known(tenant: str) -> bool:
        return tenant.lower() in (directory.tenant_id.lower(), "common", "organizations")

    def base(request: Request) -> str:
        host = request.headers.get("host", PUBLIC_AUTHORITY)
        return f"https://{host}"

    async def openid(request: Request):
        tenant = request.path_params["tenant"]
        if not known(tenant):
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        tid = directory.tenant_id
        b = base(request)
        v2 = request.url.path.find("/v2.0/") >= 0
        suffix = "/v2.0" if v2 else ""
        return JSONResponse({
            "issuer": f"https://{PUBLIC_AUTHORITY}/{tid}/v2.0" if v2 else f"https://sts.windows.net/{tid}/",
            "authorization_endpoint": f"{b}/{tenant}/oauth2{suffix}/authorize",
            "token_endpoint": f"{b}/{tenant}/oauth2{suffix}/token",
            "device_authorization_endpoint": f"{b}/{tenant}/oauth2{suffix}/devicecode",
            "jwks_uri": f"{b}/{tenant}/discovery{suffix}/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"], "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
        })

    async def instance(request: Request):
        host = request.headers.get("host", PUBLIC_AUTHORITY).split(":")[0]
        auth = request.query_params.get("authorization_endpoint", "")
        tenant = auth.split("/")[3] if auth.count("/") >= 4 else "common"
        return JSONResponse({
            "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": PUBLIC_AUTHORITY, "preferred_cache": "login.windows.net",
                          "aliases": [PUBLIC_AUTHORITY, "login.windows.net", "login.microsoft.com", "sts.windows.net"]}],
        })

    async def keys(request: Request):
        return JSONResponse({"keys": [signer.jwk]})

    async def token(request: Request):
        tenant = request.path_params["tenant"]
        if not known(tenant):
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                pass
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", 70003, "The lab supports the client_credentials grant only.")
        want = directory.clients.get(client_id)
        if want is None:
            return _aad_error(400, "unauthorized_client", 700016,
                              f"Application with identifier '{client_id}' was not found in the directory.")
        if not hmac.compare_digest(str(secret), str(want)):
            return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        resource = _resource_of(form.get("scope") or form.get("resource", ""))
        if not resource:
            return _aad_error(400, "invalid_scope", 1002012, "The provided value for scope is not valid.")
        access = signer.issue(directory.tenant_id, client_id, resource)
        request.state.log_note = f"token for {client_id} aud {resource}"
        return JSONResponse({"token_type": "Bearer", "expires_in": TOKEN_SECONDS, "ext_expires_in": TOKEN_SECONDS,
                             "access_token": access})

    return Starlette(routes=[
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid),
        Route("/{tenant}/.well-known/openid-configuration", openid),
        Route("/common/discovery/instance", instance),
        Route("/{tenant}/discovery/v2.0/keys", keys),
        Route("/{tenant}/discovery/keys", keys),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route("/{tenant}/oauth2/token", token, methods=["POST"]),
    ])
