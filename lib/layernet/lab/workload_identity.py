"""Managed identities of a lab level's AIO extension, handed to the stand-ins that use them.

On a plant, the AIO dataflow gets Entra tokens for the extension's system-assigned identity (or a user-assigned
one) through the cluster's Arc identity service. In the lab, `write(site, level, records)` does that part: for
each Event Hubs endpoint of the level's records that authenticates with a managed identity it

- finds the identity: the system-assigned identity ARM reports on the level's AIO extension (the extension of
  type microsoft.iotoperations on the level's connected cluster, read from the ARM stand-in), or the
  user-assigned identity with the endpoint's client id (registered in the lab's Entra beforehand,
  `entra.register_identity(..., kind="UserAssigned")`);
- makes it known to the lab's Entra, which then issues tokens whose `oid` is that principal;
- writes the credentials the level holds to `<resources_dir>/<level>.identity.json` (mode 0600), which the
  dataflow stand-in reads (`--identity`) to ask Entra for tokens itself, from its level, through the proxies.

No secret leaves that file; errors name the extension or the client id, never a secret.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from layernet.resource_ids import rid
from layernet.lab import LabError, azure as lab_azure, state_dir
from layernet.lab.cloud import entra
from layernet.lab.cloud.arm.view import resources
from layernet.lab.telemetry_services import identity_path

EXTENSION_TYPE = "microsoft.iotoperations"
EXTENSIONS = "Microsoft.KubernetesConfiguration/extensions"
MI_METHODS = ("SystemAssignedManagedIdentity", "UserAssignedManagedIdentity")


def entra_file(site) -> Path:
    return state_dir(site) / "cloud" / "entra.json"


def store_file(site) -> Path:
    return state_dir(site) / "cloud" / "arm-store.json"


def cluster_id(site, level: str) -> str:
    return rid(lab_azure.subscription_id(site), site.azure.resource_group, "Microsoft.Kubernetes", "connectedClusters",
               site.aio.for_level(site, level).cluster)


def extension(site, level: str) -> Optional[dict]:
    """The level's AIO extension as ARM holds it (found by type on the level's connected cluster), or None."""
    prefix = cluster_id(site, level).lower() + "/providers/microsoft.kubernetesconfiguration/extensions/"
    try:
        found = resources(store_file(site), EXTENSIONS)
    except (OSError, ValueError):
        return None
    return next((e for e in found if str(e.get("id", "")).lower().startswith(prefix)
                 and str((e.get("properties") or {}).get("extensionType", "")).lower() == EXTENSION_TYPE), None)


def _mi_auths(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        props = (r.get("body") or {}).get("properties") or {}
        auth = (props.get("kafkaSettings") or {}).get("authentication") or {}
        if props.get("endpointType") == "Kafka" and auth.get("method") in MI_METHODS:
            out.append(auth)
    return out


def system_identity(site, level: str) -> dict:
    """Register the level's AIO extension identity with the lab's Entra; its credentials."""
    ext = extension(site, level)
    if ext is None:
        raise LabError(f"{level}: no {EXTENSION_TYPE} extension on connected cluster {cluster_id(site, level)} in ARM, "
                       f"so no system-assigned identity for the dataflow: run stage 03 (AIO) first")
    principal = (ext.get("identity") or {}).get("principalId")
    if not principal:
        raise LabError(f"{level}: the AIO extension {ext['id']} has no system-assigned identity (identity.principalId); "
                       "create it with identity type SystemAssigned")
    return entra.register_identity(entra_file(site), principal, ext["id"], "SystemAssigned")


def user_identity(site, client_id: str) -> dict:
    d = entra.Directory.load_or_create(entra_file(site))
    ident = d.identities.get(client_id.lower())
    if not ident or ident.get("kind") != "UserAssigned":
        raise LabError(f"no user-assigned identity with client id {client_id} in the lab's Entra: register it "
                       "(layernet.lab.cloud.entra.register_identity(..., kind='UserAssigned')) before the dataflow "
                       "uses it")
    return {"tenant_id": d.tenant_id, "client_id": client_id.lower(), "principal_id": ident["principal_id"],
            "secret": ident["secret"]}


def write(site, level: str, records: list[dict], resources_dir: Path) -> Optional[Path]:
    """The identities the level's Event Hubs endpoints authenticate with, registered and written (0600) for the
    level's dataflow; None (and no file) when no endpoint uses a managed identity."""
    path = identity_path(resources_dir, level)
    auths = _mi_auths(records)
    if not auths:
        path.unlink(missing_ok=True)
        return None
    doc: dict = {"tenant_id": entra.Directory.load_or_create(entra_file(site)).tenant_id,
                 "authority": entra.PUBLIC_AUTHORITY, "system": None, "user": {}}
    for auth in auths:
        if auth["method"] == "SystemAssignedManagedIdentity":
            cred = system_identity(site, level)
            doc["system"] = {"client_id": cred["client_id"], "principal_id": cred["principal_id"], "secret": cred["secret"]}
        else:
            cid = str((auth.get("userAssignedManagedIdentitySettings") or {}).get("clientId", ""))
            cred = user_identity(site, cid)
            doc["user"][cred["client_id"]] = {"principal_id": cred["principal_id"], "secret": cred["secret"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    tmp.replace(path)
    return path


def principals(path: Path) -> dict:
    """{"system": principal or None, "user": {client_id: principal}} of a written identity file (no secrets)."""
    doc = json.loads(Path(path).read_text())
    return {"system": (doc.get("system") or {}).get("principal_id"),
            "user": {cid: v.get("principal_id") for cid, v in (doc.get("user") or {}).items()}}
