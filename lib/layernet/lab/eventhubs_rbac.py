"""The lab's Event Hubs authorization: the role assignments ARM holds, as the Kafka broker's ACLs.

Event Hubs authorizes an Entra principal by Azure RBAC on the namespace (or a parent scope, or one event hub):

    Azure Event Hubs Data Sender    2b629674-e913-4c01-ae53-ef4638d8f975   produce
    Azure Event Hubs Data Receiver  a638d3c7-ab3a-418d-83e6-5f17a39d4fde   consume
    Azure Event Hubs Data Owner     f526a384-b230-433a-b45c-95f59c4a2dec   both

The lab's broker (`layernet.lab.kafka`) validates OAUTHBEARER tokens with Kafka's own validator and names the
principal `User:<oid>` (the token's object id, the principal a role assignment names); its StandardAuthorizer
allows nobody but the connection string's `$ConnectionString` (the namespace's root key) and the loopback
listeners without an ACL. This module turns assignments into ACLs on that principal:

    Data Sender    topic (every hub, or the one hub)   WRITE, DESCRIBE
    Data Receiver  topic                                READ, DESCRIBE; every consumer group: READ, DESCRIBE
    Data Owner     topic                                ALL; every consumer group: ALL

and keeps them in step: `python -m layernet.lab.eventhubs_rbac` runs beside the broker in the cloud namespace,
reads the ARM stand-in's store (`arm.view.role_assignments`) whenever the file changes, and creates and deletes
ACLs through the broker's loopback listener until they equal the assignments. Every change is one line of its
output (`<state>/kafka/rbac.out`).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from layernet.apiversions import api_version as _api_version
from layernet import rbac
from layernet.rbac import OWNER, RECEIVER, SENDER

ROLE_ASSIGNMENT_API = _api_version("Microsoft.Authorization/roleAssignments")

TOPIC_OPS = {SENDER: ("WRITE", "DESCRIBE"), RECEIVER: ("READ", "DESCRIBE"), OWNER: ("ALL",)}
GROUP_OPS = {RECEIVER: ("READ", "DESCRIBE"), OWNER: ("ALL",)}
WILDCARD = "*"
READY_LINE = "eventhubs-rbac: in step"

Acl = tuple  # (principal, resource type, resource name, operation)


def covers(scope: str, namespace_id: str) -> Optional[str]:
    """The topics an assignment's scope reaches in the namespace: "*" (the namespace or a parent scope: the
    subscription, the resource group), the hub's name (an event hub of the namespace), or None."""
    scope, ns = scope.lower().rstrip("/"), namespace_id.lower().rstrip("/")
    if ns == scope or ns.startswith(scope + "/"):
        return WILDCARD
    prefix = ns + "/eventhubs/"
    if scope.startswith(prefix) and "/" not in scope[len(prefix):]:
        return scope[len(prefix):]
    return None


def desired_acls(assignments: list[dict], namespace_id: str) -> set:
    """The ACLs the assignments grant on the namespace (assignments of other roles or scopes grant nothing)."""
    out = set()
    for a in assignments:
        topic = covers(a["scope"], namespace_id)
        role = a["role"].lower()
        if topic is None or role not in TOPIC_OPS:
            continue
        principal = f"User:{a['principal'].lower()}"
        out |= {(principal, "TOPIC", topic, op) for op in TOPIC_OPS[role]}
        out |= {(principal, "GROUP", WILDCARD, op) for op in GROUP_OPS.get(role, ())}
    return out


# ----------------------------------------------------------------------------------------------- the broker side
def _binding(acl: Acl):
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    principal, rtype, name, op = acl
    return AclBinding(ResourceType[rtype], name, ResourcePatternType.LITERAL, principal, "*", AclOperation[op],
                      AclPermissionType.ALLOW)


def current_acls(admin) -> set:
    from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, \
        ResourceType

    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                           AclPermissionType.ANY)
    return {(b.principal, b.restype.name, b.name, b.operation.name)
            for b in admin.describe_acls(flt, request_timeout=10).result()}


def apply_acls(admin, want: set, have: set) -> tuple[list, list]:
    """Create the missing ACLs, delete the ones no assignment grants; returns (added, removed)."""
    from confluent_kafka.admin import AclBindingFilter

    add, drop = sorted(want - have), sorted(have - want)
    if add:
        for fut in admin.create_acls([_binding(a) for a in add], request_timeout=10).values():
            fut.result()
    if drop:
        filters = []
        for a in drop:
            b = _binding(a)
            filters.append(AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                            b.operation, b.permission_type))
        for fut in admin.delete_acls(filters, request_timeout=10).values():
            fut.result()
    return add, drop


def sync_once(admin, store: Path, namespace_id: str) -> tuple[list, list]:
    from layernet.lab.cloud.arm.view import role_assignments

    try:
        assignments = role_assignments(store)
    except FileNotFoundError:
        assignments = []
    return apply_acls(admin, desired_acls(assignments, namespace_id), current_acls(admin))


def run(store: Path, bootstrap: str, namespace_id: str, interval: float = 0.1,
        stop: Optional[threading.Event] = None, out=sys.stdout) -> None:
    """Keep the broker's ACLs equal to the assignments until `stop` (re-read when the store file changes)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    stop = stop or threading.Event()
    seen, first = None, True
    while not stop.is_set():
        try:
            st = store.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != seen or first:
            try:
                added, removed = sync_once(admin, store, namespace_id)
            except Exception as exc:  # noqa: BLE001 - a store being replaced or the broker busy: try again
                print(f"eventhubs-rbac: retrying: {type(exc).__name__}: {exc}", file=out, flush=True)
                stop.wait(0.5)
                continue
            seen = stamp
            for a in added:
                print(f"eventhubs-rbac: allow {a[0]} {a[3]} on {a[1].lower()} {a[2]}", file=out, flush=True)
            for a in removed:
                print(f"eventhubs-rbac: revoke {a[0]} {a[3]} on {a[1].lower()} {a[2]}", file=out, flush=True)
            if first:
                print(READY_LINE, file=out, flush=True)
                first = False
        stop.wait(interval)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m layernet.lab.eventhubs_rbac", description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="the ARM stand-in's store (arm-store.json)")
    ap.add_argument("--bootstrap", required=True, help="the broker's loopback listener (host:port)")
    ap.add_argument("--namespace-id", required=True, help="the Event Hubs namespace's ARM id")
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    run(Path(args.store), args.bootstrap, args.namespace_id, stop=stop)
    return 0


def put_assignment(site, scope: str, role: str, principal: str, api_version: str = ROLE_ASSIGNMENT_API) -> str:
    """Assign `role` (a GUID) to `principal` on `scope` through ARM, as an operator does (`az role assignment
    create`), from where the lab's Azure calls run; returns the assignment's id."""
    from layernet.lab import azure as lab_azure

    arm = lab_azure.arm(site)
    a = rbac.assignment(arm.subscription_id, scope, role, principal)
    arm.resources().resources.begin_create_or_update_by_id(a["id"], api_version=api_version,
                                                           parameters=a["body"]).result()
    return a["id"]


def delete_assignment(site, assignment_id: str, api_version: str = ROLE_ASSIGNMENT_API) -> bool:
    """Delete a role assignment through ARM, as an operator does (`az role assignment delete --ids ID`): the lab's
    rehearsals call it where the lab's Azure calls run (`AzureSide.call("layernet.lab.eventhubs_rbac:
    delete_assignment", assignment_id=...)`). True when it existed."""
    from azure.core.exceptions import ResourceNotFoundError

    from layernet.lab import azure as lab_azure

    client = lab_azure.arm(site).resources()
    try:
        client.resources.get_by_id(assignment_id, api_version=api_version)
    except ResourceNotFoundError:
        return False
    client.resources.begin_delete_by_id(assignment_id, api_version=api_version).result()
    return True


if __name__ == "__main__":
    sys.exit(main())
