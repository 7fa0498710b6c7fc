"""Who may use the site's Event Hubs, by Azure RBAC: the roles, the operator's identity and the receiver
assignment stage 04 plans for it.

The AIO extension's managed identity sends (`Azure Event Hubs Data Sender`, rendered with the dataflows by
`layernet.render.telemetry`). The stage's verify consumer reads the hub as the operator, with the identity the
stage's Azure calls use (DefaultAzureCredential on a plant; the lab's service principal on the lab), so the
operator needs `Azure Event Hubs Data Receiver` (or Data Owner) on the namespace: `receiver_record` is that
assignment. The operator's object id is the `oid` of a token its credential gets (what `az ad signed-in-user show`
or the service principal's object id gives).
"""
from __future__ import annotations

from typing import Any, Optional

from layernet.apiversions import api_version
from layernet import rbac
from layernet.rbac import RECEIVER, role_name, role_of, scope_of  # noqa: F401  (role_of, scope_of: for callers)

AUTHORIZATION_API = api_version("Microsoft.Authorization/roleAssignments")
ASSIGN_RECEIVER = "assign Azure Event Hubs Data Receiver"


def token_claims(token: str) -> dict:
    """The claims of an access token, read without verifying it (it is our own, from our credential)."""
    import jwt

    return jwt.decode(token, options={"verify_signature": False, "verify_aud": False, "verify_exp": False})


def operator(arm) -> dict:
    """{"principal", "type", "name"} of the identity the stage's Azure calls run as ({"error"} when its token
    says nothing about it): the `oid` of an ARM token of `arm`'s credential."""
    try:
        claims = token_claims(arm.cred().get_token(arm.url + "/.default").token)
    except Exception as exc:  # noqa: BLE001 - said in the plan, never fatal there
        return {"error": f"no token for the operator: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
    oid = claims.get("oid")
    if not oid:
        return {"error": "the operator's token carries no oid claim"}
    kind = "User" if claims.get("idtyp") == "user" or claims.get("upn") or claims.get("scp") else "ServicePrincipal"
    return {"principal": str(oid), "type": kind,
            "name": claims.get("upn") or claims.get("unique_name") or claims.get("appid") or str(oid)}


def receiver_record(sub: str, scope: str, principal: str, principal_type: str = "ServicePrincipal") -> dict:
    """The operator's `Azure Event Hubs Data Receiver` assignment on `scope` (the namespace)."""
    a = rbac.assignment(sub, scope, RECEIVER, principal, principal_type=principal_type)
    return {"id": a["id"], "apiVersion": AUTHORIZATION_API, "body": a["body"]}


def missing_text(role_id: str, scope: str, who: str) -> str:
    """One sentence naming the role, the scope and the principal that needs it."""
    return f"{who} needs {role_name(role_id)} on {scope}"


def assign_command(role_id: str, scope: str, principal: Optional[str]) -> str:
    who = principal or "<your object id>"
    return f"az role assignment create --role \"{role_name(role_id)}\" --assignee-object-id {who} --scope {scope}"


def describe(records: list[dict], lives: dict[str, Any]) -> list[str]:
    """For role assignment records whose live state is missing: "<role> for <principal> on <scope>"."""
    out = []
    for r in records:
        if lives.get(r["id"]) is None and "/roleAssignments/" in r["id"]:
            p = (r["body"].get("properties") or {}).get("principalId", "?")
            out.append(f"{role_name(role_of(r['body']))} for {p} on {scope_of(r['id'])}")
    return out
