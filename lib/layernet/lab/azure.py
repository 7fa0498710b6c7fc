"""The lab's Azure account: subscription, tenant and the SDK connection a lab run uses on its jump box.

The lab's cloud (lab/cloud) answers under the real host names; what differs from a real site is only where the
names resolve (the jump box namespace, see jumpbox.py) and which CA is trusted (the lab CA). The credential is
a real azure-identity ClientSecretCredential against the lab's Entra stand-in, with the client id and secret the
cloud created in `<state>/cloud/entra.json` (mode 0600; read here, never passed on a command line or shown).
"""
from __future__ import annotations

import json
import uuid

from layernet.azure.clients import Arm
from layernet.lab import LabError, state_dir

LAB_NAMESPACE = uuid.UUID("6c61626e-6574-4c61-8200-000000000000")
OFFLINE_AFTER = 8      # seconds without a heartbeat from the egress level before ARM reports a cluster Offline
# how long ARM asks a client to wait between polls of a long-running operation. ARM says seconds; the lab's stand-ins
# finish an operation at the next poll, so a quarter second (sent as Retry-After-Ms, which the Azure SDK and CLI
# honour) walks the same polling code without a second's wait per resource
RETRY_AFTER = "0.25"


def subscription_id(site) -> str:
    return site.azure.subscription_id or str(uuid.uuid5(LAB_NAMESPACE, f"subscription/{site.name}"))


def tenant_id(site) -> str:
    return site.azure.tenant_id or str(uuid.uuid5(LAB_NAMESPACE, f"tenant/{site.name}"))


def ca_file(site) -> str:
    return str(state_dir(site) / "ca" / "ca.crt")


def entra_file(site):
    return state_dir(site) / "cloud" / "entra.json"


def arm(site, **extra) -> Arm:
    """The Arm connection of a lab run (valid inside the lab's jump box namespace, where the names resolve)."""
    from azure.identity import ClientSecretCredential

    path = entra_file(site)
    try:
        doc = json.loads(path.read_text())
        client_id, secret = next(iter(doc["clients"].items()))
    except (OSError, ValueError, KeyError, StopIteration):
        raise LabError(f"the lab's Entra stand-in has no client in {path}: is the lab's cloud running? "
                       f"(layernet lab up --site FILE)") from None
    cred = ClientSecretCredential(doc["tenant_id"], client_id, secret, connection_verify=ca_file(site))
    extra.setdefault("polling_interval", 0.5)
    return Arm(subscription_id(site), cred, None, ca_file(site), site.azure.cloud, extra)
