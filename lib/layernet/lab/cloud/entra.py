"""Entra ID stand-in: OIDC discovery, instance discovery, JWKS and the client-credentials token.

Served for login.microsoftonline.com, {region}.login.microsoft.com, login.windows.net and sts.windows.net.
Enough for azure-identity's ClientSecretCredential (MSAL) with the lab tenant:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (and the v1 ``/{tenant}/.well-known/...``);
- ``GET /common/discovery/instance`` (MSAL's instance discovery);
- ``GET /{tenant}/discovery/v2.0/keys`` (and ``/{tenant}/discovery/keys``, ``/common/discovery/keys``): the
  JWKS, one RSA key with its ``kid``/``x5t``;
- ``POST /{tenant}/oauth2/v2.0/token`` (and v1 ``/oauth2/token``) with ``grant_type=client_credentials``:
  an Entra v1 access token (RS256, the ``kid`` of the JWKS; ``iss`` ``https://sts.windows.net/<tenant>/``,
  ``aud`` the scope's resource such as ``https://<ns>.servicebus.windows.net``, ``oid``/``sub``/``tid``/
  ``appid``, ``ver`` 1.0, ``iat``/``nbf``/``exp``).

Callers: `<state>/cloud/entra.json` ``{"tenant_id", "clients": {client_id: secret}, "identities": {...}}``,
mode 0600, made at first start with one client (a service principal: its tokens carry its own object id).
``identities`` are managed identities (`register_identity`): a system-assigned identity of a resource (the AIO
extension: its principal is the one ARM reports on the extension) or a user-assigned one, each with the client
id its tokens carry as ``appid``, the principal as ``oid``/``sub`` and the resource as ``xms_mirid``. The lab
hands a managed identity's credential to the stand-in that uses it (a real cluster's Arc identity service
does that part); the token is Entra's, from this authority. The directory is read again when the file changes.
A wrong secret is 401 invalid_client (AADSTS7000215), an unknown tenant 400 (AADSTS90002), as Entra answers.
Secrets never appear in logs or errors.

Rehearsal: `set_clock_offset(state, seconds, client_ids)` makes the lab's Entra stamp the tokens of those
clients (all when None) as if its clock were `seconds` off (`<state>/entra-rehearsal.json`), e.g. already
expired when they arrive; `set_clock_offset(state, 0)` ends it.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PUBLIC_AUTHORITY = "login.microsoftonline.com"
TOKEN_SECONDS = 3599
ALGORITHM = "RS256"
IDENTITY_NAMESPACE = uuid.UUID("6c6e6574-656e-7472-612d-6d692d636c69")   # managed identity client ids


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64u(n: int) -> str:
    return _b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def issuer(tenant: str) -> str:
    """The issuer of Entra's v1 access tokens (what managed identities and service principals get for Event Hubs)."""
    return f"https://sts.windows.net/{tenant}/"


def jwks_url(tenant: str) -> str:
    """Where Entra publishes the tenant's signing keys (the discovery document's jwks_uri)."""
    return f"https://{PUBLIC_AUTHORITY}/{tenant}/discovery/v2.0/keys"


def service_principal_oid(client_id: str) -> str:
    """The object id of the lab's service principal for an application (client) id."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, client_id))


def identity_client_id(principal_id: str) -> str:
    """The client (application) id Entra pairs with a managed identity's principal in the lab."""
    return str(uuid.uuid5(IDENTITY_NAMESPACE, principal_id.lower()))


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Directory:
    tenant_id: str
    clients: dict = field(default_factory=dict)        # client_id -> secret (service principals)
    identities: dict = field(default_factory=dict)     # client_id -> {"secret", "principal_id", "resource_id", "kind"}
    path: Optional[Path] = field(default=None, repr=False, compare=False)
    _mtime: float = field(default=0.0, repr=False, compare=False)

    @classmethod
    def load_or_create(cls, path: Path, tenant_id: Optional[str] = None) -> "Directory":
        if path.exists():
            doc = json.loads(path.read_text())
            d = cls(doc["tenant_id"], dict(doc.get("clients") or {}), dict(doc.get("identities") or {}), path)
            d._mtime = path.stat().st_mtime
            if tenant_id and tenant_id.lower() != d.tenant_id.lower():
                d.tenant_id = tenant_id
                d.save(path)
            return d
        d = cls(tenant_id or str(uuid.uuid4()), {str(uuid.uuid4()): secrets.token_urlsafe(24)}, {}, path)
        d.save(path)
        return d

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"tenant_id": self.tenant_id, "clients": self.clients, "identities": self.identities}, f, indent=1)
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        self.path, self._mtime = path, path.stat().st_mtime

    def refresh(self) -> None:
        """Read the file again when another process (the lab registering an identity) changed it."""
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        self.clients = dict(doc.get("clients") or {})
        self.identities = dict(doc.get("identities") or {})
        self._mtime = mtime


REHEARSAL_FILE = "entra-rehearsal.json"


def set_clock_offset(state: Path, seconds: int, client_ids: Optional[list[str]] = None) -> None:
    """Rehearsal: stamp the tokens of `client_ids` (every client when None) `seconds` off the real time; 0 ends it."""
    path = Path(state) / REHEARSAL_FILE
    if not seconds:
        path.unlink(missing_ok=True)
        return
    path.write_text(json.dumps({"clock_offset_s": int(seconds),
                                "clients": [c.lower() for c in client_ids] if client_ids is not None else None}))


class Rehearsal:
    """The rehearsal settings next to the directory file, read again when they change."""

    def __init__(self, path: Optional[Path]):
        self.path, self._stamp, self.doc = path, None, {}

    def offset(self, client_id: str) -> int:
        if self.path is None:
            return 0
        try:
            stamp = self.path.stat().st_mtime_ns
        except OSError:
            self._stamp, self.doc = None, {}
            return 0
        if stamp != self._stamp:
            try:
                self.doc = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.doc = {}
            self._stamp = stamp
        clients = self.doc.get("clients")
        if clients is not None and client_id.lower() not in clients:
            return 0
        return int(self.doc.get("clock_offset_s") or 0)


def register_identity(path: Path, principal_id: str, resource_id: str, kind: str = "SystemAssigned",
                      client_id: Optional[str] = None) -> dict:
    """Make a managed identity known to the lab's Entra (idempotent): `principal_id` is its object id (for a
    system-assigned identity, the one ARM reports on the resource), `client_id` its application id (derived
    when None). Returns {"tenant_id", "client_id", "principal_id", "secret"} for the stand-in that uses it."""
    if kind not in ("SystemAssigned", "UserAssigned"):
        raise ValueError(f"identity kind {kind!r}: SystemAssigned or UserAssigned")
    client_id = (client_id or identity_client_id(principal_id)).lower()
    with _file_lock(path):
        d = Directory.load_or_create(path)
        have = d.identities.get(client_id)
        if have is None or have.get("principal_id", "").lower() != principal_id.lower():
            have = {"secret": secrets.token_urlsafe(24), "principal_id": principal_id.lower(),
                    "resource_id": resource_id, "kind": kind}
            d.identities[client_id] = have
            d.save(path)
    return {"tenant_id": d.tenant_id, "client_id": client_id, "principal_id": have["principal_id"],
            "secret": have["secret"]}


class Signer:
    """The lab's token signing key (RSA 2048, RS256 as Entra signs), kept in `<state>/cloud/token-signing.key`
    (0600). Its `kid` (and `x5t`) is the base64url SHA-1 thumbprint of the public key."""

    def __init__(self, key_path: Optional[Path] = None):
        key = None
        if key_path and key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):          # none yet (or an older lab's EC key): a new RSA key
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if key_path:
                key_path.parent.mkdir(parents=True, exist_ok=True)
                data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
        self.key = key
        pub = key.public_key()
        nums = pub.public_numbers()
        der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64u(hashlib.sha1(der).digest())
        self.jwk = {"kty": "RSA", "use": "sig", "alg": ALGORITHM, "kid": self.kid, "x5t": self.kid,
                    "n": _int_b64u(nums.n), "e": _int_b64u(nums.e)}

    def issue(self, tenant: str, client_id: str, audience: str, seconds: int = TOKEN_SECONDS,
              principal_id: Optional[str] = None, extra: Optional[dict] = None, now: Optional[int] = None) -> str:
        """An Entra v1 access token: `principal_id` is the caller's object id (a managed identity's principal;
        default the service principal of `client_id`)."""
        now = int(time.time()) if now is None else now
        oid = principal_id or service_principal_oid(client_id)
        claims = {"aud": audience, "iss": issuer(tenant), "iat": now, "nbf": now - 5,
                  "exp": now + seconds, "appid": client_id, "appidacr": "1", "azp": client_id, "oid": oid,
                  "sub": oid, "tid": tenant, "idtyp": "app", "ver": "1.0", "uti": _b64u(secrets.token_bytes(16))}
        claims.update(extra or {})
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid, "x5t": self.kid})

    def verify(self, token: str, audiences: list) -> dict:
        """The claims of a valid token for one of `audiences`; raises jwt.InvalidTokenError."""
        return jwt.decode(token, self.key.public_key(), algorithms=[ALGORITHM], audience=audiences,
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
    rehearsal = Rehearsal(directory.path.with_name(REHEARSAL_FILE) if directory.path else None)
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
            "subject_types_supported": ["pairwise"], "id_token_signing_alg_values_supported": [ALGORITHM],
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
        tenant = request.path_params["tenant"]
        if not known(tenant):
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
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
        directory.refresh()
        ident = directory.identities.get(client_id.lower())
        want = directory.clients.get(client_id) if ident is None else ident.get("secret")
        if want is None:
            return _aad_error(400, "unauthorized_client", 700016,
                              f"Application with identifier '{client_id}' was not found in the directory.")
        if not hmac.compare_digest(str(secret), str(want)):
            return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        resource = _resource_of(form.get("scope") or form.get("resource", ""))
        if not resource:
            return _aad_error(400, "invalid_scope", 1002012, "The provided value for scope is not valid.")
        now = int(time.time()) + rehearsal.offset(client_id)
        if ident is None:
            access = signer.issue(directory.tenant_id, client_id, resource, now=now)
        else:
            access = signer.issue(directory.tenant_id, client_id.lower(), resource, principal_id=ident["principal_id"],
                                  extra={"xms_mirid": ident.get("resource_id", "")}, now=now)
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
