"""The site file: one plant described in YAML, validated into a `Site` model.

`load_site(path, overrides)` either returns a valid `Site` or raises `SiteError` listing every problem
found, each with the file, the field path (``levels[1].node_ip``), the bad value and what was expected.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from layernet.site.aio import Aio
from layernet.site.arc import Arc
from layernet.site.base import Strict
from layernet.site.images import Images
from layernet.site.telemetry import Telemetry

PROXIED_PORTS_DEFAULT = (443, 8084)
CLOUDS = ("public", "usgov", "china")


# ----------------------------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        shown = "(missing)" if self.value is _MISSING else repr(self.value)
        return f"{self.file}: {self.path}: got {shown}; {self.expected}"


class SiteError(ValueError):
    """Every problem of a site file at once. Nothing was changed."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        head = f"{len(problems)} problem(s) in site file {problems[0].file}:" if problems else "invalid site"
        super().__init__("\n".join([head] + [f"  - {p}" for p in problems]))


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING = _Missing()


# ----------------------------------------------------------------------------------------------- model
_Strict = Strict


class Level(_Strict):
    name: str
    number: int = Field(ge=0, le=5, strict=True)
    parent: Optional[str] = None
    network: ipaddress.IPv4Network
    node_ip: ipaddress.IPv4Address
    pod_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.42.0.0/16")
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.43.0.0/16")
    proxy: bool = Field(default=False, strict=True)
    dns_override: bool = Field(default=False, strict=True)
    reaches_azure: bool = Field(default=True, strict=True)
    dns_upstream: list[ipaddress.IPv4Address] = []
    kube_context: Optional[str] = None


class Admin(_Strict):
    network: ipaddress.IPv4Network
    jump_box_ip: ipaddress.IPv4Address


class Azure(_Strict):
    cloud: Literal["public", "usgov", "china"] = "public"
    location: str
    subscription_id: Optional[str] = None
    tenant_id: Optional[str] = None
    resource_group: str
    clusters: dict[str, str] = {}
    eventhubs_namespace: Optional[str] = None
    schema_registry_storage: Optional[str] = None


class ExtraHost(_Strict):
    host: str
    ports: list[int] = [443]
    purpose: str = "site-specific"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"host": value} if isinstance(value, str) else value


class AllowSelection(_Strict):
    groups: list[str] = ["arc-core", "arc-cluster-connect", "aio"]
    extra_hosts: list[ExtraHost] = []
    drop_hosts: list[str] = []


class LabSettings(_Strict):
    prefix: str = Field(default="ln", pattern=r"^[a-z][a-z0-9]{0,5}$")
    cloud_network: ipaddress.IPv4Network = ipaddress.IPv4Network("198.51.100.0/24")
    refused_hosts: list[str] = ["evil.example", "exfil.example.net", "management.azure.com.evil.example"]


class Site(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    target: Literal["lab", "kube"]
    egress_level: str
    admin: Admin
    levels: list[Level]
    azure: Azure
    allowlist: AllowSelection = AllowSelection()
    telemetry: Telemetry = Telemetry()
    arc: Arc = Arc()
    aio: Aio = Aio()
    images: Images = Images()
    lab: LabSettings = LabSettings()

    # ---- navigation helpers (the site is a chain from the egress level downward)
    def level(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(f"no level named {name!r} (levels: {', '.join(l.name for l in self.levels)})")

    @property
    def egress(self) -> Level:
        return self.level(self.egress_level)

    def parent(self, level: Level | str) -> Optional[Level]:
        lv = self.level(level) if isinstance(level, str) else level
        return self.level(lv.parent) if lv.parent else None

    def child(self, level: Level | str) -> Optional[Level]:
        name = level if isinstance(level, str) else level.name
        for lv in self.levels:
            if lv.parent == name:
                return lv
        return None

    @property
    def chain(self) -> list[Level]:
        """Levels from the egress level down to the lowest one."""
        out, cur = [], self.egress
        while cur is not None:
            out.append(cur)
            cur = self.child(cur)
        return out

    def proxied_ports(self) -> tuple[int, ...]:
        """Listener ports: 443 and 8084 always, 9093 when a level below egress sends to Event Hubs."""
        ports = set(PROXIED_PORTS_DEFAULT)
        if any(lv.name != self.egress_level and lv.name in self.telemetry_eventhubs_levels() for lv in self.levels):
            ports.add(9093)
        return tuple(sorted(ports))

    def telemetry_eventhubs_levels(self) -> list[str]:
        return list(self.telemetry.eventhubs_from_levels)


# ----------------------------------------------------------------------------------------------- loading
def load_site(path: str | Path, overrides: Optional[list[str] | dict[str, Any]] = None) -> Site:
    """Read, override and validate a site file. Raises SiteError listing every problem."""
    path = Path(path)
    fname = str(path)
    if not path.is_file():
        raise SiteError([Problem(fname, "(file)", _MISSING, "the site file must exist; pass --site params/lab.yaml or a copy of params/site-example.yaml")])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise SiteError([Problem(fname, where, str(getattr(exc, "problem", exc)), "valid YAML")]) from None
    if not isinstance(raw, dict):
        raise SiteError([Problem(fname, "(top level)", raw, "a mapping with keys name, target, egress_level, admin, levels, azure")])
    problems: list[Problem] = []
    for key, value in _normalise_overrides(overrides):
        err = _apply_override(raw, key, value)
        if err:
            problems.append(Problem(fname, key or "(override)", value, err))
    if problems:
        raise SiteError(problems)
    return validate_site(raw, fname)


def validate_site(raw: dict, fname: str = "<site>") -> Site:
    problems: list[Problem] = []
    site: Optional[Site] = None
    try:
        site = Site.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(Problem(fname, _loc(err["loc"]), _value_at(raw, err["loc"]), _expected(err)))
    problems += _semantic_checks(raw, fname)
    # a field can be reported twice (type error + semantic); keep the first per path+message
    seen, unique = set(), []
    for p in problems:
        key = (p.path, p.expected)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if unique:
        raise SiteError(unique)
    assert site is not None
    return site


def _normalise_overrides(overrides) -> list[tuple[str, Any]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    out = []
    for item in overrides:
        if "=" not in item:
            out.append((item, _MISSING))
            continue
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = _BadValue(text)
        out.append((key.strip(), value))
    return out


@dataclass(frozen=True)
class _BadValue:
    text: str

    def __repr__(self) -> str:
        return repr(self.text)


_SEG = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _split_path(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, idx in _SEG.findall(key):
        parts.append(int(idx) if idx else name)
    return parts


def _apply_override(raw: dict, key: str, value: Any) -> Optional[str]:
    """Set raw[key.path] = value. `levels.level3.proxy` addresses a level by name. Returns an error text."""
    if value is _MISSING:
        return "an override must look like key.path=value, e.g. -p azure.location=westeurope"
    if isinstance(value, _BadValue):
        return "a YAML value after '=' (quote text that holds ':', '[', '{' or '#', e.g. -p 'description=\"a: b\"')"
    parts = _split_path(key)
    if not parts:
        return "an override needs a field path, e.g. -p azure.location=westeurope"
    cur: Any = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(cur, list) and isinstance(part, str):
            match = [x for x in cur if isinstance(x, dict) and x.get("name") == part]
            if not match:
                return f"no list item named {part!r}; use an index like levels[0] or an existing level name"
            cur = match[0]
            continue
        if isinstance(part, int):
            if not isinstance(cur, list) or part >= len(cur):
                return f"index [{part}] does not exist"
            cur = cur[part]
            continue
        if not isinstance(cur, dict):
            return f"{part!r} cannot be set inside a {type(cur).__name__}"
        if part not in cur or cur[part] is None:
            cur[part] = [] if isinstance(nxt, int) else {}
        cur = cur[part]
    last = parts[-1]
    if isinstance(cur, list) and isinstance(last, int):
        if last >= len(cur):
            return f"index [{last}] does not exist"
        cur[last] = value
    elif isinstance(cur, dict) and isinstance(last, str):
        cur[last] = value
    else:
        return "this path does not lead to a settable field"
    return None


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _value_at(raw: Any, loc: tuple) -> Any:
    cur = raw
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return cur


def _expected(err: dict) -> str:
    typ = err["type"]
    if typ == "extra_forbidden":
        hint = _spelling_hint(err["loc"])
        return f"unknown key: remove it or fix its spelling{hint} (unknown keys are rejected so a typo is never ignored)"
    if typ == "bool_type":
        return "true or false (unquoted)"
    if typ in ("int_type", "int_parsing"):
        return "a whole number (unquoted), e.g. 3"
    if typ == "ip_v4_address":
        return "an IPv4 address such as 192.168.103.10"
    if typ == "ip_v4_network":
        return "an IPv4 network in CIDR form such as 192.168.103.0/24 (host bits zero)"
    if typ == "missing":
        return "this field is required"
    if typ == "literal_error":
        return f"expected {err['ctx'].get('expected', 'one of the allowed values')}"
    return err["msg"]


def _spelling_hint(loc: tuple) -> str:
    """' (did you mean 'node_ip'?)' for an unknown key close to a field of the model at that place."""
    import difflib

    model: Any = Site
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        for arg in (ann, *getattr(ann, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
        else:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(getattr(model, "model_fields", {})), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------------------------- semantics
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


def check_host(host: Any) -> Optional[str]:
    """Return why `host` is not a valid allow-list host name, or None when it is."""
    if not isinstance(host, str) or not host:
        return "a host name such as management.azure.com"
    if "://" in host:
        return f"a bare host name without a scheme: drop {host.split('://')[0] + '://'!r}"
    if "/" in host:
        return f"a bare host name without a path or trailing slash: use {host.split('/')[0]!r}"
    if ":" in host:
        return "a bare host name without a port: list ports in the entry's 'ports' field"
    if host.endswith("."):
        return "a host name without a trailing dot"
    if len(host) > 253:
        return "a host name of at most 253 characters"
    labels = host.split(".")
    if "*" in host:
        if labels[0] != "*" or "*" in ".".join(labels[1:]) or len(labels) < 3:
            return "a wildcard only as a whole leading label followed by at least two labels, e.g. *.blob.core.windows.net"
        labels = labels[1:]
    if len(labels) < 2:
        return "a fully qualified name with at least two labels"
    for label in labels:
        if not _LABEL.match(label):
            return f"labels of letters, digits and inner hyphens (1-63 characters); {label!r} is not"
    return None


def _net(value: Any) -> Optional[ipaddress.IPv4Network]:
    try:
        return ipaddress.IPv4Network(str(value))
    except (ValueError, TypeError):
        return None


def _ip(value: Any) -> Optional[ipaddress.IPv4Address]:
    try:
        return ipaddress.IPv4Address(str(value))
    except (ValueError, TypeError):
        return None


def known_locations(cloud: str) -> list[str]:
    text = resources.files("layernet.data").joinpath("locations.yaml").read_text()
    return list(yaml.safe_load(text).get(cloud, []))


def _semantic_checks(raw: dict, fname: str) -> list[Problem]:
    P: list[Problem] = []

    def add(path: str, value: Any, expected: str) -> None:
        P.append(Problem(fname, path, value, expected))

    levels = raw.get("levels")
    if isinstance(levels, list) and not levels:
        add("levels", levels, "at least one level")
    have_levels = isinstance(levels, list) and bool(levels)
    if not isinstance(levels, list):
        levels = []
    good = [(i, lv) for i, lv in enumerate(levels) if isinstance(lv, dict)]
    names: dict[str, int] = {}
    numbers: dict[Any, int] = {}
    duplicates: set[int] = set()
    for i, lv in good:
        n = lv.get("name")
        if isinstance(n, str):
            if n in names:
                add(f"levels[{i}].name", n, f"a unique level name; levels[{names[n]}] already uses it")
                duplicates.add(i)
            else:
                names[n] = i
        num = lv.get("number")
        if isinstance(num, int) and not isinstance(num, bool):
            if num in numbers:
                add(f"levels[{i}].number", num, f"a unique Purdue number; levels[{numbers[num]}] already uses it")
            else:
                numbers[num] = i
    # a level whose name is already taken is reported above and kept out of the chain checks
    good = [(i, lv) for i, lv in good if i not in duplicates]
    by_name = {lv.get("name"): (i, lv) for i, lv in good if isinstance(lv.get("name"), str)}

    # parents exist, one chain ending at the egress level
    egress = raw.get("egress_level")
    if have_levels and isinstance(egress, str) and egress not in by_name:
        add("egress_level", egress, f"the name of a level ({', '.join(by_name) or 'none defined'})")
    children: dict[str, list[int]] = {}
    for i, lv in good:
        parent = lv.get("parent")
        if lv.get("name") == egress:
            if parent is not None:  # reported once, below; the egress level's parent is not a chain link
                add(f"levels[{i}].parent", parent, f"no parent: {egress} is the egress level, the top of the chain")
            continue
        if parent is None:
            if isinstance(egress, str) and egress in by_name:
                add(f"levels[{i}].parent", parent, f"a parent level: only the egress level ({egress}) may have none")
            continue
        if parent not in by_name:
            add(f"levels[{i}].parent", parent, f"the name of another level ({', '.join(by_name)})")
            continue
        if parent == lv.get("name"):
            add(f"levels[{i}].parent", parent, "a level other than itself")
            continue
        children.setdefault(parent, []).append(i)
    for parent, kids in children.items():
        if len(kids) > 1:
            i = kids[1]
            add(f"levels[{i}].parent", parent, f"one child per level (the levels form one chain); levels[{kids[0]}] already has parent {parent}")
    # every level reaches the egress level by following parents, without cycles
    on_chain: set[int] = set()
    cycle_reported = False
    for i, lv in good:
        seen, cur = set(), lv
        while (isinstance(cur, dict) and cur.get("name") != egress and cur.get("parent") in by_name
               and cur.get("parent") != cur.get("name") and cur.get("name") not in seen):
            seen.add(cur.get("name"))
            cur = by_name[cur["parent"]][1]
        if isinstance(cur, dict) and cur.get("name") == egress:
            on_chain.add(i)
        elif isinstance(cur, dict) and cur.get("name") in seen and not cycle_reported:
            add(f"levels[{i}].parent", lv.get("parent"), "a chain without cycles that ends at the egress level")
            cycle_reported = True
    chain = [(i, lv) for i, lv in good if i in on_chain]
    # Purdue numbers grow towards the egress level
    for i, lv in chain:
        p = by_name.get(lv.get("parent")) if lv.get("name") != egress else None
        if p and isinstance(lv.get("number"), int) and isinstance(p[1].get("number"), int):
            if p[1]["number"] <= lv["number"]:
                add(f"levels[{i}].number", lv["number"], f"a Purdue number below its parent's ({p[1]['number']})")

    # addresses
    admin = raw.get("admin") if isinstance(raw.get("admin"), dict) else {}
    nets: list[tuple[str, ipaddress.IPv4Network]] = []
    anet = _net(admin.get("network"))
    if anet:
        nets.append(("admin.network", anet))
        jb = _ip(admin.get("jump_box_ip"))
        if jb and jb not in anet:
            add("admin.jump_box_ip", str(jb), f"an address inside admin.network {anet}")
    cluster_nets: list[tuple[str, ipaddress.IPv4Network]] = []
    for i, lv in enumerate(levels):
        if not isinstance(lv, dict):
            continue
        net, ip = _net(lv.get("network")), _ip(lv.get("node_ip"))
        if net:
            nets.append((f"levels[{i}].network", net))
        if net and ip:
            if ip not in net:
                add(f"levels[{i}].node_ip", str(ip), f"an address inside the level's network {net}")
            elif net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
                add(f"levels[{i}].node_ip", str(ip), f"a host address of {net}, not its network or broadcast address")
        pod = _net(lv.get("pod_cidr", "10.42.0.0/16"))
        svc = _net(lv.get("service_cidr", "10.43.0.0/16"))
        if pod:
            cluster_nets.append((f"levels[{i}].pod_cidr", pod))
        if svc:
            cluster_nets.append((f"levels[{i}].service_cidr", svc))
        if pod and svc and pod.overlaps(svc):
            add(f"levels[{i}].service_cidr", str(svc), f"a service network that does not overlap the level's pod network {pod}")
    for a in range(len(nets)):
        for b in range(a + 1, len(nets)):
            if nets[a][1].overlaps(nets[b][1]):
                add(nets[b][0], str(nets[b][1]), f"a network that does not overlap {nets[a][0]} ({nets[a][1]})")
    # pod and service networks live inside each cluster (every cluster may use the same ones), but must not
    # hide a level or admin network: traffic to it would stay inside the cluster
    for cpath, cnet in cluster_nets:
        for npath, nnet in nets:
            if cnet.overlaps(nnet):
                what = "pod" if cpath.endswith("pod_cidr") else "service"
                own = npath == cpath.rsplit(".", 1)[0] + ".network"
                where = f"its own level network ({nnet})" if own else f"{npath} ({nnet})"
                add(cpath, str(cnet), f"a {what} network that does not overlap {where}")

    # roles (levels on the chain only): a level below egress reaching Azure needs DNS override and a proxy
    # on every level above it
    for i, lv in chain:
        name = lv.get("name")
        if name == egress:
            if lv.get("dns_override"):
                add(f"levels[{i}].dns_override", True, "false at the egress level: it resolves Azure names with its own (enterprise) DNS")
            continue
        parent = by_name.get(lv.get("parent"))
        if not parent:
            continue
        pi, plv = parent
        needs = bool(lv.get("reaches_azure", True)) or bool(lv.get("proxy"))
        if needs and not plv.get("proxy"):
            why = "runs a proxy" if lv.get("proxy") else "reaches Azure"
            add(f"levels[{pi}].proxy", plv.get("proxy", False), f"true: {name} {why} through {plv.get('name')}, so {plv.get('name')} must run a proxy (or set levels[{i}].reaches_azure: false)")
        if lv.get("reaches_azure", True) and not lv.get("dns_override"):
            add(f"levels[{i}].dns_override", lv.get("dns_override", False), f"true: {name} reaches Azure, so its DNS must point Azure names at {plv.get('name')}'s proxy (or set reaches_azure: false)")
    if egress in by_name:
        ei, elv = by_name[egress]
        ups = elv.get("dns_upstream") or []
        if elv.get("proxy") and not ups:
            add(f"levels[{ei}].dns_upstream", ups, "at least one resolver address: the egress proxy resolves Azure names with it (Envoy must not guess from /etc/resolv.conf)")

    # kube target needs a context per level; clusters name known levels
    if raw.get("target") == "kube":
        for i, lv in good:
            if not lv.get("kube_context"):
                add(f"levels[{i}].kube_context", lv.get("kube_context", _MISSING), "the kubectl context of this level's cluster (target: kube)")
    azure = raw.get("azure") if isinstance(raw.get("azure"), dict) else {}
    clusters = azure.get("clusters") or {}
    if isinstance(clusters, dict) and by_name:
        for k in clusters:
            if k not in by_name:
                add(f"azure.clusters.{k}", clusters[k], f"a key that names a level ({', '.join(by_name)})")
    cloud = azure.get("cloud", "public")
    loc = azure.get("location")
    if cloud in CLOUDS and isinstance(loc, str):
        known = known_locations(cloud)
        if loc not in known:
            close = [k for k in known if k.startswith(loc[:4])][:5]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            other = [c for c in CLOUDS if c != cloud and loc in known_locations(c)]
            if other:
                hint = f" ({loc} is a location of the {other[0]} cloud: set azure.cloud: {other[0]})"
            add("azure.location", loc, f"an Azure location of the {cloud} cloud, lowercase without spaces{hint}")
    for key, what in (("subscription_id", "subscription"), ("tenant_id", "tenant")):
        guid = azure.get(key)
        if guid is not None and not _GUID.match(str(guid)):
            add(f"azure.{key}", guid, f"a {what} GUID like 00000000-0000-0000-0000-000000000000")

    # allow-list selection
    sel = raw.get("allowlist") if isinstance(raw.get("allowlist"), dict) else {}
    from layernet.allowlist import catalog_groups  # late import: allowlist imports this module

    groups = sel.get("groups")
    if isinstance(groups, list):
        known_groups = catalog_groups()
        for j, g in enumerate(groups):
            if g not in known_groups:
                add(f"allowlist.groups[{j}]", g, f"a catalog group ({', '.join(known_groups)})")
    for j, e in enumerate(sel.get("extra_hosts") or []):
        host = e.get("host") if isinstance(e, dict) else e
        field = f"allowlist.extra_hosts[{j}].host" if isinstance(e, dict) else f"allowlist.extra_hosts[{j}]"
        why = check_host(host)
        if why:
            add(field, host, why)
        if isinstance(e, dict):
            for k, port in enumerate(e.get("ports") or []):
                if not isinstance(port, int) or not 1 <= port <= 65535:
                    add(f"allowlist.extra_hosts[{j}].ports[{k}]", port, "a TCP port number 1-65535")
    for j, h in enumerate(sel.get("drop_hosts") or []):
        why = check_host(h)
        if why:
            add(f"allowlist.drop_hosts[{j}]", h, why)

    # telemetry (stage 04): levels, topics, destinations, no secrets in the file
    from layernet.site.telemetry import check_raw as telemetry_checks

    for path, value, expected in telemetry_checks(raw):
        add(path, value, expected)
    return P
