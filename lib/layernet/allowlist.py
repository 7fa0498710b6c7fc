"""The allow list of a site (the endpoint catalog of layernet.data, expanded) and THE host-matching function.

`host_matches(pattern, name)` is the only place that decides whether a server name matches an allow-list
host. Renderers, probes and the audit all call it, and it follows Envoy's `server_names` semantics.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from layernet import data

if TYPE_CHECKING:  # pragma: no cover
    from layernet.site import Site


# ----------------------------------------------------------------------------------------------- matching
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MAX_SNI_BYTES = 255   # longer server names make Envoy's TLS library reject the whole ClientHello


def host_matches(pattern: str, name: Optional[str]) -> bool:
    """Does server name `name` match allow-list host `pattern`, as Envoy's filter-chain `server_names` does?

    - exact names match themselves, case-insensitively (ASCII letters only: Envoy folds A-Z and nothing
      else, so a KELVIN SIGN is no "k");
    - ``*.example.com`` matches any name that ends with ``.example.com`` and never ``example.com`` itself;
      only the suffix is compared, so the part left of it may be anything, even empty or a single dot
      (``.example.com`` and ``..example.com`` match: Envoy keeps a wildcard as its ``.example.com`` key);
    - a name with a trailing dot is a different name (Envoy does not strip it), so it matches nothing
      that is written without one; an empty or missing name matches nothing;
    - a name Envoy never sees matches nothing: longer than 255 bytes or holding a NUL byte, the ClientHello
      is rejected before any filter chain is chosen.
    The lab's differential test (tests/harden) checks these rules against the real Envoy.
    """
    if not name or not pattern:
        return False
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_SNI_BYTES or b"\x00" in raw:
        return False
    name = name.translate(_ASCII_LOWER)
    pattern = pattern.translate(_ASCII_LOWER)
    if not pattern.startswith("*."):
        return name == pattern
    return name.endswith(pattern[1:])


def is_wildcard(host: str) -> bool:
    return host.startswith("*.")


# ----------------------------------------------------------------------------------------------- catalog
@dataclass(frozen=True)
class Endpoint:
    host: str
    ports: tuple[int, ...]
    group: str
    purpose: str
    clouds: tuple[str, ...] = ("public",)
    needs: tuple[tuple[str, str], ...] = field(default=(), compare=False)   # (role, "required"/"optional"[ on P])

    def sample_name(self) -> str:
        """A concrete name to probe: the host itself, or a fixed label under a wildcard."""
        return "layernet-probe" + self.host[1:] if is_wildcard(self.host) else self.host


def catalog_groups() -> list[str]:
    return list(data.groups())



def role_descriptions() -> dict[str, str]:
    """Role (who needs hosts of the catalog: arc-agents, aio-extensions, ...) -> who it is."""
    return data.roles()


_NEED = re.compile(r"(required|optional)(?: on (\d+(?:, ?\d+)*))?")


def parse_need(text: str, ports: tuple[int, ...], where: str = "endpoints.yaml") -> tuple[bool, tuple[int, ...]]:
    """`required` / `optional`, maybe `... on 9093`: (required?, the entry's ports the role uses)."""
    m = _NEED.fullmatch(str(text))
    if not m:
        raise ValueError(f"{where}: need {text!r}: write required or optional, maybe followed by 'on PORT'")
    used = tuple(int(p) for p in m.group(2).split(",")) if m.group(2) else tuple(ports)
    if not set(used) <= set(ports):
        raise ValueError(f"{where}: need {text!r} names ports the entry does not list ({list(ports)})")
    return m.group(1) == "required", tuple(sorted(used))


def catalog() -> list[Endpoint]:
    roles = data.roles()
    out = []
    for e in data.endpoints():
        needs = tuple((str(r), str(v)) for r, v in (e.get("needs") or {}).items())
        for role, need in needs:
            where = f"endpoints.yaml: {e['host']} ({e['group']}) needs.{role}"
            if role not in roles:
                raise ValueError(f"{where}: unknown role; the roles are {', '.join(roles)}")
            parse_need(need, tuple(e["ports"]), where)
        out.append(Endpoint(e["host"], tuple(e["ports"]), e["group"], e["purpose"], tuple(e.get("clouds", ["public"])),
                            needs))
    return out


@dataclass(frozen=True)
class AllowList:
    """The effective allow list of a site: catalog ∩ selection, placeholders expanded, extras and drops applied."""

    entries: tuple[Endpoint, ...]
    notes: tuple[str, ...] = field(default=())

    def hosts_for_port(self, port: int) -> list[str]:
        return sorted({e.host for e in self.entries if port in e.ports})

    def ports(self) -> list[int]:
        return sorted({p for e in self.entries for p in e.ports})

    def match(self, name: Optional[str], port: Optional[int] = None) -> Optional[Endpoint]:
        """The entry a server name uses: an exact entry wins over a wildcard, longer wildcards over shorter."""
        best: Optional[Endpoint] = None
        for e in self.entries:
            if port is not None and port not in e.ports:
                continue
            if host_matches(e.host, name):
                if best is None or _specificity(e.host) > _specificity(best.host):
                    best = e
        return best

    def allows(self, name: Optional[str], port: int) -> bool:
        return self.match(name, port) is not None

    def match_many(self, pairs) -> dict:
        """{(name, port): entry host} for the pairs that match an entry (`match` decides each). A name whose
        folded form neither equals an exact entry nor ends with a wildcard's suffix cannot match (the comparison
        `host_matches` makes), so only the others are tried: an audit of a million distinct names stays quick."""
        exact = {e.host.translate(_ASCII_LOWER) for e in self.entries if not is_wildcard(e.host)}
        suffixes = tuple({e.host[1:].translate(_ASCII_LOWER) for e in self.entries if is_wildcard(e.host)})
        out = {}
        for name, port in pairs:
            folded = (name or "").translate(_ASCII_LOWER)
            if folded in exact or folded.endswith(suffixes):
                e = self.match(name or None, port)
                if e:
                    out[(name, port)] = e.host
        return out

    def rows(self) -> list[dict]:
        return [
            {"host": e.host, "ports": ", ".join(str(p) for p in e.ports), "group": e.group, "purpose": e.purpose,
             "needed by": needed_by(e)}
            for e in self.entries
        ]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=["host", "ports", "group", "purpose", "needed by"])


def _specificity(host: str) -> tuple[int, int]:
    return (0 if is_wildcard(host) else 1, len(host))


def needed_by(e: Endpoint) -> str:
    """The table's "needed by" cell: `required: arc-agents, jump-box; optional: ...` (empty: no role needs it)."""
    parts = []
    for kind in ("required", "optional"):
        roles = [r + (f" ({need[len(kind) + 4:]})" if need != kind else "")    # "required on 9093": "role (9093)"
                 for r, need in e.needs if need.startswith(kind)]
        if roles:
            parts.append(f"{kind}: {', '.join(roles)}")
    return "; ".join(parts)


def _selected(site: "Site") -> tuple[list[tuple[Endpoint, str]], list[str]]:
    """The catalog entries of the site's groups and cloud, each with its host expanded for the site (placeholders
    filled, lower case); notes for the entries left out because a placeholder has no value."""
    az = site.azure
    values = {
        "<region>": az.location,
        "<eventhubs_namespace>": az.eventhubs_namespace,
        "<storage_account>": az.schema_registry_storage,
        "<gateway_prefix>": None,
    }
    arc = getattr(site, "arc", None)
    groups = arc.allow_groups(list(site.allowlist.groups)) if arc is not None else list(site.allowlist.groups)
    gateway = getattr(arc, "gateway_endpoint", None)
    if gateway:
        values["<gateway_prefix>"] = gateway.split(".", 1)[0]
    notes: list[str] = []
    out: list[tuple[Endpoint, str]] = []
    for e in catalog():
        if e.group not in groups or az.cloud not in e.clouds:
            continue
        host = e.host
        missing = [ph for ph, v in values.items() if ph in host and not v]
        if missing:
            notes.append(f"{host} left out: set the site value for {', '.join(missing)}")
            continue
        for ph, v in values.items():
            if v:
                host = host.replace(ph, v)
        out.append((e, host.lower()))
    return out, notes


def effective_allowlist(site: "Site") -> AllowList:
    """Expand the catalog for `site`: its cloud, region, groups, extra hosts and dropped hosts."""
    az = site.azure
    selected, notes = _selected(site)
    merged: dict[str, Endpoint] = {}

    def add(e: Endpoint) -> None:
        key = e.host.lower()
        if key in merged:  # same host from two groups: union of ports and needs, first group/purpose kept
            old = merged[key]
            needs = old.needs + tuple(n for n in e.needs if n[0] not in {r for r, _ in old.needs})
            merged[key] = Endpoint(old.host, tuple(sorted(set(old.ports) | set(e.ports))), old.group, old.purpose,
                                   old.clouds, needs)
        else:
            merged[key] = e

    for e, host in selected:
        add(Endpoint(host, tuple(sorted(e.ports)), e.group, e.purpose, e.clouds, e.needs))
    for x in site.allowlist.extra_hosts:
        add(Endpoint(x.host.lower(), tuple(sorted(x.ports)), "site-extra", x.purpose, (az.cloud,)))
    drops = {d.lower() for d in site.allowlist.drop_hosts}
    for d in sorted(drops):
        if d not in merged:
            notes.append(f"drop_hosts: {d} was not in the list (nothing dropped)")
    entries = tuple(sorted((e for k, e in merged.items() if k not in drops), key=lambda e: (e.group, e.host)))
    return AllowList(entries, tuple(notes))



# ----------------------------------------------------------------------------------------------- roles
@dataclass(frozen=True)
class Need:
    """A host a role needs on a site: the catalog's entry expanded for the site, the ports the role uses."""
    role: str
    host: str
    ports: tuple[int, ...]
    required: bool
    group: str
    purpose: str

    def sample_name(self) -> str:
        return "layernet-probe" + self.host[1:] if is_wildcard(self.host) else self.host

    def label(self) -> str:
        return f"{self.host}:{','.join(str(p) for p in self.ports)}"


def role_needs(site: "Site", role: Optional[str] = None, required_only: bool = False) -> list[Need]:
    """What each role needs on `site` (or only `role`): the catalog entries of the site's groups and cloud whose
    `needs` name the role, expanded as the allow list expands them, before the site's drops. One Need per role
    and host (the same host from two groups: the union of ports)."""
    selected, _ = _selected(site)
    out: dict[tuple[str, str], Need] = {}
    for e, host in selected:
        for r, text in e.needs:
            if role is not None and r != role:
                continue
            required, ports = parse_need(text, tuple(e.ports))
            if required_only and not required:
                continue
            key = (r, host)
            old = out.get(key)
            if old is not None:
                ports = tuple(sorted(set(old.ports) | set(ports)))
                required = old.required or required
            out[key] = Need(r, host, ports, required, e.group, e.purpose)
    return sorted(out.values(), key=lambda n: (n.role, n.host))


def missing_required(site: "Site", allowlist: Optional[AllowList] = None) -> list[Need]:
    """The hosts a role requires that the site's effective allow list does not let through on every port the role
    uses (the site dropped them: allowlist.drop_hosts). Only the site's selected groups count (role_needs)."""
    al = allowlist if allowlist is not None else effective_allowlist(site)
    return [n for n in role_needs(site, required_only=True)
            if not all(al.allows(n.sample_name(), p) for p in n.ports)]
