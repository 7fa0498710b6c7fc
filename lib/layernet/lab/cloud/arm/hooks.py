"""Per-type behaviour of the generic resource store.

A hook is registered for one resource type (case-insensitive, e.g. ``Microsoft.Kubernetes/connectedClusters``
or a child type ``Microsoft.IoTOperations/instances/brokers``) and decides what the generic store cannot:

- `on_put(ctx)`: after a PUT was accepted; set the properties the service adds (``connectivityStatus:
  Connecting``), start lab services;
- `on_poll(ctx)`: each time the long-running operation's status URL is read; return ``IN_PROGRESS``,
  ``SUCCEEDED`` or ``Failed(code, message)``. The default finishes on the second poll (the first one sees
  InProgress, as on Azure);
- `on_get(ctx)`: before a resource is returned (GET, list): refresh properties that change over time
  (``Connected`` while an agent heartbeats, ``Offline`` when it stops);
- `on_delete(ctx)`: when a delete completes;
- `action(ctx, name, body)`: a POST ``{id}/{name}``; return (status, json) or None for 404.

`ctx` is a HookContext: the store, the resource dict (edit it in place), the operation (on_poll), the
request's true peer, and the cloud settings. A hook with ``synchronous = True`` makes PUT answer at once
(201/200 with the resource, provisioningState Succeeded, no operation): role assignments and blob containers
are registered that way here. A hook with ``accepted = True`` answers the PUT of a new resource as the Storage
resource provider does: 202 without a body and a ``Location`` to poll (202 while in progress, then 200 with the
resource); a PUT of an existing one answers 200 at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

IN_PROGRESS, SUCCEEDED = "InProgress", "Succeeded"


@dataclass(frozen=True)
class Failed:
    code: str
    message: str


@dataclass
class HookContext:
    store: Any
    resource: dict
    op: Optional[dict] = None
    peer: str = ""
    settings: Any = None
    extra: dict = field(default_factory=dict)


class Hook:
    polls_to_finish = 2

    def on_put(self, ctx: HookContext) -> None:
        return None

    def on_poll(self, ctx: HookContext):
        return SUCCEEDED if ctx.op and ctx.op.get("polls", 0) >= self.polls_to_finish else IN_PROGRESS

    def on_get(self, ctx: HookContext) -> None:
        return None

    def on_delete(self, ctx: HookContext) -> None:
        return None

    def action(self, ctx: HookContext, name: str, body: Any):
        return None


DEFAULT = Hook()
_REGISTRY: dict[str, Hook] = {}


def register(resource_type: str, hook: Hook) -> Hook:
    """Make `hook` decide for `resource_type`; returns the hook it replaced (DEFAULT when none)."""
    old = _REGISTRY.get(resource_type.lower(), DEFAULT)
    _REGISTRY[resource_type.lower()] = hook
    return old


def unregister(resource_type: str) -> None:
    _REGISTRY.pop(resource_type.lower(), None)


def hook_for(resource_type: str) -> Hook:
    return _REGISTRY.get(resource_type.lower(), DEFAULT)


def registered() -> list[str]:
    return sorted(_REGISTRY)


class Synchronous(Hook):
    """A type whose PUT completes at once on Azure (201/200 with the resource, no operation to poll)."""
    synchronous = True


class RoleAssignment(Synchronous):
    """A role assignment carries its scope (read-only, set by the service), as ARM returns it: clients compare it
    (`az role assignment list --scope` keeps the assignments whose scope is the one asked for)."""

    def on_put(self, ctx: HookContext) -> None:
        rid = ctx.resource["id"]
        cut = rid.lower().rfind("/providers/microsoft.authorization/roleassignments/")
        ctx.resource.setdefault("properties", {})["scope"] = rid[:cut] if cut > 0 else "/"


# built-in: the types the stages write that are not long-running on Azure
register("Microsoft.Authorization/roleAssignments", RoleAssignment())
register("Microsoft.Storage/storageAccounts/blobServices/containers", Synchronous())
