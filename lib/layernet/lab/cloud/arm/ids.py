"""ARM resource ids: parse a request path into scope, provider namespace, types and names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Rid:
    """A resource (`name` set) or a collection of one type (`name` None) under `scope`.

    /subscriptions/S/resourceGroups/RG/providers/NS/T1/N1/T2/N2 -> scope /subscriptions/S/resourceGroups/RG,
    namespace NS, pairs ((T1, N1), (T2, N2)). Extension resources have a resource id as scope.
    """
    subscription: str
    resource_group: Optional[str]
    scope: str
    namespace: str
    pairs: tuple                      # ((type, name), ...); the last name is None for a collection

    @property
    def name(self) -> Optional[str]:
        return self.pairs[-1][1]

    @property
    def is_collection(self) -> bool:
        return self.name is None

    @property
    def type(self) -> str:
        return "/".join([self.namespace] + [t for t, _ in self.pairs])

    @property
    def id(self) -> str:
        parts = [self.scope, "providers", self.namespace]
        for t, n in self.pairs:
            parts.append(t)
            if n is not None:
                parts.append(n)
        return "/".join(parts)

    @property
    def key(self) -> str:
        return self.id.lower()

    @property
    def parent_id(self) -> Optional[str]:
        """The id of the enclosing resource: the parent of a child type, or the scope of an extension resource."""
        if len(self.pairs) > 1:
            return Rid(self.subscription, self.resource_group, self.scope, self.namespace, self.pairs[:-1]).id
        if "/providers/" in self.scope.lower():
            return self.scope
        return None

    def collection(self) -> "Rid":
        return Rid(self.subscription, self.resource_group, self.scope, self.namespace,
                   self.pairs[:-1] + ((self.pairs[-1][0], None),))


def segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def parse(path: str) -> Optional[Rid]:
    """A resource or collection id under /subscriptions/S[/resourceGroups/RG]/.../providers/NS/..., else None."""
    segs = segments(path)
    if len(segs) < 4 or segs[0].lower() != "subscriptions":
        return None
    idx = max((i for i, s in enumerate(segs) if s.lower() == "providers" and i >= 2), default=None)
    if idx is None or idx + 2 >= len(segs):
        return None
    rest = segs[idx + 2:]
    pairs = tuple((rest[i], rest[i + 1] if i + 1 < len(rest) else None) for i in range(0, len(rest), 2))
    rg = segs[3] if len(segs) > 3 and segs[2].lower() == "resourcegroups" else None
    return Rid(segs[1], rg, "/" + "/".join(segs[:idx]), segs[idx + 1], pairs)
