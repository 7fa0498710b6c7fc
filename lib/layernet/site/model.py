"""The site file: one plant described in YAML, validated into a `Site` model.

`load_site(path, overrides)` either returns a valid `Site` or raises `SiteError` listing every problem
found, each with the file, the field path (``levels[1].node_ip``), the bad value and what was expected.
"""
from __future__ import annotations

import ipaddress
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from layernet.allowlist import effective_allowlist
from layernet.data import groups as catalog_groups
from layernet.site import names
from layernet.site.aio import Aio
from layernet.site.arc import Arc
from layernet.site.base import Strict
from layernet.site.defaults import with_target_defaults
from layernet.site.images import Images, check as check_images
from layernet.site.monitor import Monitor
from layernet.site.load import load_yaml_file, parse_value
from layernet.site.names import check_host
from layernet.site.problems import HIDDEN, MISSING, Problem, SiteError
from layernet.site.secrets import contains_secret, find_secrets, is_secret_key, looks_secret
from layernet.site.telemetry import Telemetry

PROXIED_PORTS_DEFAULT = (443, 8084)
DNS_PORT = 53             # a level's DNS override answers on its node
KUBE_API_PORT = 6443      # K3s's API port on every level's node
LAB_NAMESPACES = ("cloud", "rtr", "jumpbox")   # the lab's own namespaces beside one per level
# the lab cloud's addresses, as host numbers in lab.cloud_network (lab.netns.topology places them): its TLS front,
# and its internet DNS when the egress level names no upstream inside the cloud network
LAB_CLOUD_TLS_HOST, LAB_CLOUD_DNS_HOST = 10, 53
MAX_HOSTS = 2000          # extra or dropped allow-list hosts
MAX_PROBLEMS = 200        # pydantic errors turned into problems; the rest are counted
CLOUDS = ("public", "usgov", "china")


# ----------------------------------------------------------------------------------------------- model
def _text_only(expected: str):
    """A field parsed from text only: YAML's integers, booleans, lists and mappings are type errors, so
    `node_ip: 1` is never 0.0.0.1."""
    def check(value: Any) -> Any:
        if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv4Network)):
            return value
        if not isinstance(value, str):
            raise PydanticCustomError("layernet_text", expected)
        return value
    return BeforeValidator(check)


IPv4 = Annotated[ipaddress.IPv4Address, _text_only("an IPv4 address such as 192.168.103.10 (text, not a number)")]
IPv4Net = Annotated[ipaddress.IPv4Network, _text_only("an IPv4 network in CIDR form such as 192.168.103.0/24")]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]


class Level(Strict):
    name: str
    number: int = Field(ge=0, le=5, strict=True)
    parent: Optional[str] = None
    network: IPv4Net
    node_ip: IPv4
    pod_cidr: IPv4Net = ipaddress.IPv4Network("10.42.0.0/16")
    service_cidr: IPv4Net = ipaddress.IPv4Network("10.43.0.0/16")
    proxy: bool = Field(default=False, strict=True)
    dns_override: bool = Field(default=False, strict=True)
    reaches_azure: bool = Field(default=True, strict=True)
    dns_upstream: list[IPv4] = Field(default=[], max_length=8)
    kube_context: Optional[str] = None


class Admin(Strict):
    network: IPv4Net
    jump_box_ip: IPv4


class Azure(Strict):
    cloud: Literal["public", "usgov", "china"] = "public"
    location: str
    subscription_id: Optional[str] = None
    tenant_id: Optional[str] = None
    resource_group: str
    clusters: dict[str, str] = Field(default={}, max_length=6)
    eventhubs_namespace: Optional[str] = None
    schema_registry_storage: Optional[str] = None


class ExtraHost(Strict):
    host: str
    ports: list[Port] = [443]
    purpose: str = "site-specific"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"host": value} if isinstance(value, str) else value


class AllowSelection(Strict):
    groups: list[str] = Field(default=["arc-core", "arc-cluster-connect", "aio"], max_length=32)
    extra_hosts: list[ExtraHost] = Field(default=[], max_length=MAX_HOSTS)
    drop_hosts: list[str] = Field(default=[], max_length=MAX_HOSTS)


class LabSettings(Strict):
    prefix: str = Field(default="ln", pattern=r"^[a-z][a-z0-9]{0,5}$")
    cloud_network: IPv4Net = ipaddress.IPv4Network("198.51.100.0/24")
    refused_hosts: list[str] = Field(default=["evil.example", "exfil.example.net", "management.azure.com.evil.example"],
                                     max_length=100)
    # rehearsals: crossings closed at the lab's router, "mqtt <child level> -> <parent level>" or "eventhubs <level>"
    close: list[str] = Field(default=[], max_length=20)
    # a Kubernetes cluster per level (lab/clusters); false: the network alone, for proofs that need no cluster
    clusters: bool = True


class Site(Strict):
    name: str                        # letters, digits, '.', '_', '-' (names.check_site_name)
    description: str = ""
    target: Literal["lab", "kube"]
    egress_level: str
    admin: Admin
    levels: list[Level] = Field(max_length=6)  # Purdue levels 0-5, each number once
    azure: Azure
    allowlist: AllowSelection = AllowSelection()
    telemetry: Telemetry = Telemetry()
    arc: Arc = Arc()
    aio: Aio = Aio()
    images: Images = Images()
    monitor: Monitor = Monitor()
    lab: LabSettings = LabSettings()

    @model_validator(mode="before")
    @classmethod
    def _target_defaults(cls, value: Any) -> Any:
        return with_target_defaults(value)

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

    def proxy_levels(self, innermost_first: bool = False) -> list[Level]:
        """The levels that run a proxy, from the egress level down (or from the innermost one outward)."""
        out = [lv for lv in self.chain if lv.proxy]
        return out[::-1] if innermost_first else out

    def arc_levels(self) -> list[Level]:
        """The levels that are Arc-enabled (every level that reaches Azure), from the egress level down."""
        return [lv for lv in self.chain if lv.reaches_azure]

    def served_networks(self, level: Level | str) -> dict[str, list]:
        """Who a level's proxy and DNS serve, by class: its child's proxy (the node address of a child that runs
        one), its child's network, its own network and its pods. Envoy's source ranges and the audit's source
        classes both read this."""
        lv = self.level(level) if isinstance(level, str) else level
        child = self.child(lv)
        return {
            "child proxy": [ipaddress.ip_network(f"{child.node_ip}/32")] if child is not None and child.proxy else [],
            "child network": [child.network] if child is not None else [],
            "own network": [lv.network],
            "pods": [lv.pod_cidr],
        }

    def proxied_ports(self) -> tuple[int, ...]:
        """Listener ports: 443 and 8084 always, 9093 when a level below egress sends to Event Hubs."""
        ports = set(PROXIED_PORTS_DEFAULT)
        if any(lv.name != self.egress_level and lv.name in self.telemetry_eventhubs_levels() for lv in self.levels):
            ports.add(9093)
        return tuple(sorted(ports))

    def node_ports(self, level: Level | str) -> dict[int, str]:
        """What listens on a level's node address (beside the MQTT broker): port -> what."""
        lv = self.level(level) if isinstance(level, str) else level
        out = {KUBE_API_PORT: "the Kubernetes API"}
        if lv.dns_override:
            out[DNS_PORT] = "the DNS override"
        if lv.proxy:
            out.update({p: "the proxy" for p in self.proxied_ports()})
        return out

    def telemetry_eventhubs_levels(self) -> list[str]:
        return list(self.telemetry.eventhubs_from_levels)


# ----------------------------------------------------------------------------------------------- loading
MAX_OVERRIDES = 200


def load_site(path: str | Path, overrides: Optional[list[str] | dict[str, Any]] = None) -> Site:
    """Read, override and validate a site file. Raises SiteError listing every problem."""
    fname = str(path)
    raw = load_yaml_file(path)
    if not isinstance(raw, dict):
        shown = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise SiteError([Problem(fname, "(top level)", MISSING if raw is None else raw,
                                 f"a mapping with keys name, target, egress_level, admin, levels, azure (this is {shown})")])
    problems: list[Problem] = []
    items = _normalise_overrides(overrides)
    if len(items) > MAX_OVERRIDES:
        raise SiteError([Problem(fname, "(overrides)", MISSING, f"at most {MAX_OVERRIDES} -p overrides; put the values in a copy of the site file")])
    given: dict[tuple, int] = {}
    for n, (key, value) in enumerate(items, 1):
        try:
            parts = tuple(split_path(key))
        except _PathError:
            parts = None
        if parts is not None and parts in given:
            problems.append(Problem(fname, key, HIDDEN if _secret_override(key, value) else value,
                                    f"each field once: -p {key[:80]} is given as override {given[parts]} and again as "
                                    f"override {n} (the second would silently win); drop one"))
            continue
        if parts is not None:
            given[parts] = n
        if isinstance(value, _BadValue):
            shown = MISSING if value.text is None else HIDDEN if looks_secret(value.text) else value.text
            problems.append(Problem(fname, key or "(override)", shown, value.why))
            continue
        err = _apply_override(raw, key, value)
        if err:
            problems.append(Problem(fname, key or "(override)", HIDDEN if _secret_override(key, value) else value, err))
    if problems:
        raise SiteError(problems)
    return validate_site(raw, fname)


def _secret_override(key: str, value: Any) -> bool:
    return any(is_secret_key(part) for part in re.split(r"[.\[\]]", key or "")) or contains_secret(value)


def validate_site(raw: dict, fname: str = "<site>") -> Site:
    problems: list[Problem] = []
    site: Optional[Site] = None
    if not isinstance(raw, dict):
        raise SiteError([Problem(fname, "(top level)", raw, "a mapping with keys name, target, egress_level, admin, levels, azure")])
    raw = with_target_defaults(raw)     # the checks below see what the model will hold
    # secrets first: a field holding one is reported once, without its value, and checked no further
    secret_paths: list[str] = []
    for path, kind in find_secrets(raw):
        if kind == "key" and declared_field(path):
            continue  # a field of the model (e.g. the name of a Kubernetes Secret), not a secret value
        if any(path.startswith((s + ".", s + "[")) or path == s for s in secret_paths):
            continue  # inside a field already refused
        secret_paths.append(path)
        if kind == "key":
            problems.append(Problem(fname, path, HIDDEN, "no secrets in a site file: this key names a secret (the value "
                                    "is hidden); remove it and give credentials through the environment or the Azure "
                                    "credential chain (az login, a managed identity)"))
        else:
            problems.append(Problem(fname, path, HIDDEN, "no secrets in a site file: this value looks like a connection "
                                    "string, token or key (the value is hidden); remove it and give credentials through "
                                    "the environment or the Azure credential chain"))
    for path in _control_characters(raw):
        if not any(path == s for s in secret_paths):
            problems.append(Problem(fname, path, MISSING, "text without control characters (escape sequences, NUL, "
                                    "line breaks inside names); retype the value"))
    try:
        site = Site.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        for err in errors[:MAX_PROBLEMS]:
            problems.append(Problem(fname, _loc(err["loc"]), _value_at(raw, err["loc"]), _expected(err)))
        if len(errors) > MAX_PROBLEMS:
            problems.append(Problem(fname, "(more)", MISSING, f"{len(errors) - MAX_PROBLEMS:,} more problem(s) of "
                                    "wrong or unknown values not listed; fix the ones above first"))
    for checks in (_semantic_checks, _section_checks):
        try:
            problems += checks(raw, fname)
        except (TypeError, AttributeError, KeyError, ValueError):
            # a check tripped over a value of the wrong type: the model has reported that value already
            if site is not None:
                raise
    if site is not None and not problems:
        problems += _site_checks(site, raw, fname)
    # a field can be reported twice (type error + semantic); keep the first per path+message, and nothing more
    # for a field that holds a secret
    seen, unique = set(), []
    for p in problems:
        key = (p.path, p.expected)
        hidden_field = p.value is not HIDDEN and any(p.path == s or p.path.startswith((s + ".", s + "[")) for s in secret_paths)
        if key not in seen and not hidden_field:
            seen.add(key)
            unique.append(p)
    if unique:
        raise SiteError(unique)
    assert site is not None
    return site


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _control_characters(raw: Any, budget: int = MAX_HOSTS * 20) -> list[str]:
    """Field paths of strings (keys included) holding control characters: terminal escapes, NUL, bidi overrides."""
    out: list[str] = []
    todo: list[tuple[str, Any]] = [("", raw)]
    while todo and budget > 0 and len(out) < 20:
        path, v = todo.pop()
        budget -= 1
        if isinstance(v, dict):
            for k, item in v.items():
                sub = f"{path}.{k}" if path else str(k)
                if isinstance(k, str) and _CONTROL.search(k):
                    out.append((path or "(top level)") + " (a key)")
                    continue
                todo.append((sub, item))
        elif isinstance(v, list):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(v))
        elif isinstance(v, str) and _CONTROL.search(v):
            out.append(path or "(top level)")
    return out


def _model_of(annotation: Any) -> Optional[type]:
    todo = [annotation]
    while todo:
        ann = todo.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
        todo.extend(getattr(ann, "__args__", ()))
    return None


def declared_field(path: str) -> bool:
    """Is `path` (e.g. telemetry.mqtt.client_cert_secret) a field the site model declares?"""
    model: Any = Site
    parts = [p for p in re.split(r"\.|\[\d+\]", path) if p]
    for i, part in enumerate(parts):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        if i == len(parts) - 1:
            return True
        model = _model_of(field.annotation)
        if model is None:
            return False
    return False


def _normalise_overrides(overrides) -> list[tuple[str, Any]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    out: list[tuple[str, Any]] = []
    for item in overrides:
        item = str(item)
        if "=" not in item:
            key = item.strip()
            out.append((key, _BadValue(None, f"an override must look like key.path=value, e.g. -p azure.location=westeurope"
                                            f"{'' if not key else ' (' + key[:60] + '=...)'}")))
            continue
        key, text = item.split("=", 1)
        value, why = parse_value(text)
        if why is not None:
            value = _BadValue(text, f"a YAML value after '=' ({why}; quote text that holds ':', '[', '{{' or '#', "
                                    "e.g. -p 'description=\"a: b\"')")
        out.append((key.strip(), value))
    return out


class _BadValue:
    def __init__(self, text: str, why: str):
        self.text, self.why = text, why

    def __repr__(self) -> str:
        return repr(self.text)


_PIECE = re.compile(r"([^.\[\]=\s]+)((?:\[[0-9]{1,6}\])*)")


class _PathError(ValueError):
    pass


def split_path(key: str) -> list[str | int]:
    """`levels[1].node_ip` -> ['levels', 1, 'node_ip']; `levels.level3.proxy` -> ['levels', 'level3', 'proxy'].
    Raises _PathError (a text for the user) on an empty segment, a stray bracket or a negative index."""
    if not key:
        raise _PathError("an override needs a field path, e.g. -p azure.location=westeurope")
    parts: list[str | int] = []
    for piece in key.split("."):
        m = _PIECE.fullmatch(piece)
        if not m:
            if piece == "":
                raise _PathError(f"a field path without empty segments: {key[:80]!r} has '..' or a leading or "
                                 "trailing '.'; write e.g. azure.location")
            raise _PathError(f"a field path of names and [index]es separated by '.', e.g. levels[1].node_ip or "
                             f"levels.level3.proxy; {piece[:60]!r} is not a path segment")
        parts.append(m.group(1))
        parts += [int(i) for i in re.findall(r"\[([0-9]+)\]", m.group(2))]
    return parts


def _apply_override(raw: dict, key: str, value: Any) -> Optional[str]:
    """Set raw[key.path] = value. `levels.level3.proxy` addresses a level by name. Returns an error text."""
    try:
        parts = split_path(key)
    except _PathError as exc:
        return str(exc)
    cur: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list) and isinstance(part, str):
            match = [j for j, x in enumerate(cur) if isinstance(x, dict) and x.get("name") == part]
            if not match:
                return f"no list item named {part[:60]!r}; use an index like levels[0] or an existing level name"
            part = match[0]
        if isinstance(part, int):
            if not isinstance(cur, list) or part >= len(cur):
                return f"index [{part}] does not exist"
            if last:
                cur[part] = value
                return None
            cur = cur[part]
            continue
        if not isinstance(cur, dict):
            return "this path does not lead to a settable field" if last else f"{part[:60]!r} cannot be set inside a {type(cur).__name__}"
        if last:
            cur[part] = value
            return None
        if part not in cur or cur[part] is None:
            cur[part] = [] if isinstance(parts[i + 1], int) else {}
        cur = cur[part]
    return "this path does not lead to a settable field"


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
            return MISSING
    return cur


def _expected(err: dict) -> str:
    typ = err["type"]
    loc = err["loc"]
    if typ == "layernet_text":
        return err["msg"]
    if typ == "value_error":          # a section's own rule: its text says what is expected
        return str(err.get("msg", "")).removeprefix("Value error, ")
    if "ports" in loc and typ in ("int_type", "int_parsing", "int_from_float", "greater_than_equal", "less_than_equal"):
        return "a TCP port number 1-65535, unquoted (true, yes and no are not ports)"
    if "ports" in loc and typ == "list_type":
        return "a list of port numbers, e.g. ports: [443] (a single number needs brackets)"
    if typ == "string_pattern_mismatch" and tuple(loc) == ("lab", "prefix"):
        return "1-6 lowercase letters and digits, starting with a letter (it prefixes the lab's namespace names)"
    if typ == "string_pattern_mismatch":
        return f"text of the form {err.get('ctx', {}).get('pattern', '')}"
    if typ == "too_long":
        return f"at most {err.get('ctx', {}).get('max_length', 'a few')} entries"
    if typ == "string_type":
        return "text (a name or words), not a number, list or mapping; quote it if YAML reads it otherwise"
    if typ == "list_type":
        return "a list, e.g. [a, b] or one '- item' per line"
    if typ in ("dict_type", "model_type", "model_attributes_type"):
        return "a mapping of key: value lines"
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
def _net(value: Any) -> Optional[ipaddress.IPv4Network]:
    if not isinstance(value, (str, ipaddress.IPv4Network)):
        return None
    try:
        return ipaddress.IPv4Network(value)
    except (ValueError, TypeError):
        return None


def _ip(value: Any) -> Optional[ipaddress.IPv4Address]:
    if not isinstance(value, (str, ipaddress.IPv4Address)):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        return None


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any, cap: int = MAX_HOSTS) -> list:
    """A list value cut to `cap` items (the model reports a longer one), or [] for anything else."""
    return value[:cap] if isinstance(value, list) else []


def known_locations(cloud: str) -> list[str]:
    text = resources.files("layernet.data").joinpath("locations.yaml").read_text()
    return list(yaml.safe_load(text).get(cloud, []))


def _semantic_checks(raw: dict, fname: str) -> list[Problem]:
    """Checks across fields, on the raw document: every value is type-checked here before use, because the
    model reports wrong types itself and these checks must not trip over them."""
    P: list[Problem] = []

    def add(path: str, value: Any, expected: str) -> None:
        P.append(Problem(fname, path, value, expected))

    why = names.check_site_name(raw.get("name"))
    if why:
        add("name", raw.get("name"), why)
    levels = raw.get("levels")
    if isinstance(levels, list) and not levels:
        add("levels", levels, "at least one level")
    have_levels = isinstance(levels, list) and bool(levels)
    levels = _list(levels, 6)
    good = [(i, lv) for i, lv in enumerate(levels) if isinstance(lv, dict)]
    names_: dict[str, int] = {}
    numbers: dict[Any, int] = {}
    duplicates: set[int] = set()
    for i, lv in good:
        n = _str(lv.get("name"))
        if n is not None:
            why = names.check_level_name(n)
            if not why and raw.get("target") == "lab" and n in LAB_NAMESPACES:
                why = (f"a name other than {', '.join(LAB_NAMESPACES)}: the lab names its own namespaces so "
                       f"(<prefix>-{n} would be taken twice)")
            if why:
                add(f"levels[{i}].name", n, why)
                duplicates.add(i)
            elif n in names_:
                add(f"levels[{i}].name", n, f"a unique level name; levels[{names_[n]}] already uses it")
                duplicates.add(i)
            else:
                names_[n] = i
        num = lv.get("number")
        if isinstance(num, int) and not isinstance(num, bool):
            if num in numbers:
                add(f"levels[{i}].number", num, f"a unique Purdue number; levels[{numbers[num]}] already uses it")
            else:
                numbers[num] = i
    # a level whose name is taken or invalid is reported above and kept out of the chain checks
    good = [(i, lv) for i, lv in good if i not in duplicates and isinstance(lv.get("name"), str)]
    by_name = {lv["name"]: (i, lv) for i, lv in good}
    level_list = ", ".join(by_name) or "none defined"

    # parents exist, one chain ending at the egress level
    egress = _str(raw.get("egress_level"))
    if have_levels and egress is not None and egress not in by_name:
        add("egress_level", egress, f"the name of a level ({level_list})")
    children: dict[str, list[int]] = {}
    for i, lv in good:
        parent = lv.get("parent")
        if parent is not None and not isinstance(parent, str):
            continue  # a type error, reported by the model
        if lv.get("name") == egress:
            if parent is not None:  # reported once, below; the egress level's parent is not a chain link
                add(f"levels[{i}].parent", parent, f"no parent: {egress} is the egress level, the top of the chain")
            continue
        if parent is None:
            if egress in by_name:
                add(f"levels[{i}].parent", parent, f"a parent level: only the egress level ({egress}) may have none")
            continue
        if parent not in by_name:
            add(f"levels[{i}].parent", parent, f"the name of another level ({level_list})")
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
        while (cur.get("name") != egress and _str(cur.get("parent")) in by_name
               and cur.get("parent") != cur.get("name") and cur.get("name") not in seen):
            seen.add(cur.get("name"))
            cur = by_name[cur["parent"]][1]
        if cur.get("name") == egress:
            on_chain.add(i)
        elif cur.get("name") in seen and not cycle_reported:
            add(f"levels[{i}].parent", lv.get("parent"), "a chain without cycles that ends at the egress level")
            cycle_reported = True
    chain = [(i, lv) for i, lv in good if i in on_chain]

    def number(lv: dict) -> Optional[int]:
        n = lv.get("number")
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    # Purdue numbers grow towards the egress level
    for i, lv in chain:
        p = by_name.get(lv.get("parent")) if lv.get("name") != egress else None
        if p and number(lv) is not None and number(p[1]) is not None and number(p[1]) <= number(lv):
            add(f"levels[{i}].number", lv["number"], f"a Purdue number below its parent's ({p[1]['number']})")

    # addresses
    admin = _dict(raw.get("admin"))
    nets: list[tuple[str, ipaddress.IPv4Network]] = []
    anet = _net(admin.get("network"))
    if anet:
        nets.append(("admin.network", anet))
        jb = _ip(admin.get("jump_box_ip"))
        if jb and jb not in anet:
            add("admin.jump_box_ip", str(jb), f"an address inside admin.network {anet}")
        elif jb and anet.prefixlen < 31 and jb in (anet.network_address, anet.broadcast_address):
            add("admin.jump_box_ip", str(jb), f"a host address of {anet}, not its network or broadcast address")
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
    for npath, nnet in nets:
        if nnet.prefixlen > 30:
            add(npath, str(nnet), "a network of at least 4 addresses (prefix /30 or shorter): it holds a node, "
                "a router and its network and broadcast addresses")
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
    # DNS upstreams: a resolver that can answer, not a network's own network or broadcast address
    for i, lv in good:
        for k, up in enumerate(_list(lv.get("dns_upstream"))):
            addr = _ip(up)
            if addr is None:
                continue
            bad = ""
            if addr.is_unspecified or addr == ipaddress.IPv4Address("255.255.255.255"):
                bad = "it is the unspecified or broadcast address"
            elif addr.is_multicast or addr.is_reserved:
                bad = "it is a multicast or reserved address"
            else:
                for npath, nnet in nets:
                    if nnet.prefixlen < 31 and addr in (nnet.network_address, nnet.broadcast_address):
                        bad = f"it is the network or broadcast address of {npath} ({nnet})"
            if bad:
                add(f"levels[{i}].dns_upstream[{k}]", str(addr), f"the address of a DNS resolver; {bad}")
    # the lab's cloud network stands in for the internet: it must not overlap the plant (a real site has no lab
    # cloud, so its plan may use those addresses)
    lab = _dict(raw.get("lab"))
    cloud_net = _net(lab.get("cloud_network", "198.51.100.0/24")) if raw.get("target") == "lab" else None
    if cloud_net and cloud_net.prefixlen > 30:
        add("lab.cloud_network", str(cloud_net), "a network of at least 4 addresses (prefix /30 or shorter)")
    elif cloud_net:
        for npath, nnet in nets:
            if cloud_net.overlaps(nnet):
                add("lab.cloud_network", str(cloud_net), f"a network that does not overlap {npath} ({nnet}): the lab's cloud stands in for the internet")
                break
        P.extend(Problem(fname, path, value, why) for path, value, why in _lab_dns_upstreams(raw, cloud_net))

    # roles (levels on the chain only): a level below egress reaching Azure needs DNS override and a proxy
    # on every level above it
    for i, lv in chain:
        name = lv.get("name")
        if name == egress:
            if lv.get("dns_override") is True:
                add(f"levels[{i}].dns_override", True, "false at the egress level: it resolves Azure names with its own (enterprise) DNS")
            continue
        parent = by_name.get(lv.get("parent"))
        if not parent:
            continue
        pi, plv = parent
        if not all(isinstance(x.get(k, False), bool) for x in (lv, plv) for k in ("proxy", "dns_override", "reaches_azure")):
            continue  # a flag that is not true/false is reported by the model
        reaches = lv.get("reaches_azure", True)
        needs = reaches or lv.get("proxy", False)
        if needs and not plv.get("proxy", False):
            why = "runs a proxy" if lv.get("proxy") is True else "reaches Azure"
            add(f"levels[{pi}].proxy", plv.get("proxy", False), f"true: {name} {why} through {plv.get('name')}, so {plv.get('name')} must run a proxy (or set levels[{i}].reaches_azure: false)")
        if reaches and not lv.get("dns_override", False):
            add(f"levels[{i}].dns_override", lv.get("dns_override", False), f"true: {name} reaches Azure, so its DNS must point Azure names at {plv.get('name')}'s proxy (or set reaches_azure: false)")
    if egress in by_name:
        ei, elv = by_name[egress]
        ups = elv.get("dns_upstream") or []
        if elv.get("proxy") is True and not ups:
            add(f"levels[{ei}].dns_upstream", ups, "at least one resolver address: the egress proxy resolves Azure names with it (Envoy must not guess from /etc/resolv.conf)")

    # kube target needs a context per level; clusters name known levels
    if raw.get("target") == "kube":
        for i, lv in good:
            if not lv.get("kube_context"):
                add(f"levels[{i}].kube_context", lv.get("kube_context", MISSING), "the kubectl context of this level's cluster (target: kube)")
    azure = _dict(raw.get("azure"))
    clusters = azure.get("clusters")
    clusters = clusters if isinstance(clusters, dict) else {} if clusters is None else None
    if clusters is not None:
        for k, v in list(clusters.items())[:32]:
            if by_name and k not in by_name:
                add(f"azure.clusters.{k}", v, f"a key that names a level ({level_list})")
                continue
            why = names.check_cluster_name(v)
            if why:
                add(f"azure.clusters.{k}", v, why)
    cloud = azure.get("cloud", "public")
    loc = azure.get("location")
    if cloud in CLOUDS and isinstance(loc, str):
        known = known_locations(cloud)
        if loc not in known:
            close = [k for k in known if k.startswith(loc[:4])][:5] if len(loc) >= 2 else []
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            other = [c for c in CLOUDS if c != cloud and loc in known_locations(c)]
            if other:
                hint = f" ({loc} is a location of the {other[0]} cloud: set azure.cloud: {other[0]})"
            add("azure.location", loc, f"an Azure location of the {cloud} cloud, lowercase without spaces{hint}")
    for key, what in (("subscription_id", "subscription"), ("tenant_id", "tenant")):
        why = names.check_guid(azure.get(key), what)
        if why and isinstance(azure.get(key), str):
            add(f"azure.{key}", azure.get(key), why)
    for key, check in (("resource_group", names.check_resource_group),
                       ("eventhubs_namespace", names.check_eventhubs_namespace),
                       ("schema_registry_storage", names.check_storage_account)):
        why = check(azure.get(key))
        if why:
            add(f"azure.{key}", azure.get(key), why)

    # allow-list selection
    sel = _dict(raw.get("allowlist"))
    groups = sel.get("groups")
    if isinstance(groups, list):
        known_groups = catalog_groups()
        for j, g in enumerate(groups[:32]):
            if isinstance(g, str) and g not in known_groups:
                add(f"allowlist.groups[{j}]", g, f"a catalog group ({', '.join(known_groups)})")
    for j, e in enumerate(_list(sel.get("extra_hosts"))):
        host = e.get("host") if isinstance(e, dict) else e
        field = f"allowlist.extra_hosts[{j}].host" if isinstance(e, dict) else f"allowlist.extra_hosts[{j}]"
        if isinstance(host, str):
            why = check_host(host)
            if why:
                add(field, host, why)
        if isinstance(e, dict) and isinstance(e.get("ports"), list) and not e["ports"]:
            add(f"allowlist.extra_hosts[{j}].ports", [], "at least one port, e.g. [443] (leave 'ports' out for 443)")
    for j, h in enumerate(_list(sel.get("drop_hosts"))):
        if isinstance(h, str):
            why = check_host(h)
            if why:
                add(f"allowlist.drop_hosts[{j}]", h, why)
    for j, h in enumerate(_list(lab.get("refused_hosts"))):
        if isinstance(h, str):
            why = check_host(h)
            if why:
                add(f"lab.refused_hosts[{j}]", h, why)

    return P


def _lab_dns_upstreams(raw: dict, cloud_net: ipaddress.IPv4Network) -> list[tuple[str, Any, str]]:
    """target: lab: the egress level resolves with the lab's internet DNS, which runs at one address inside
    lab.cloud_network (the first dns_upstream there; see lab.netns.topology). Any other upstream answers nothing."""
    egress = raw.get("egress_level")
    out: list[tuple[str, Any, str]] = []
    tls_ip = cloud_net.network_address + LAB_CLOUD_TLS_HOST
    example = cloud_net.network_address + LAB_CLOUD_DNS_HOST
    for i, lv in enumerate(_list(raw.get("levels"), 6)):
        if not isinstance(lv, dict) or lv.get("name") != egress:
            continue
        ups = [(k, _ip(u)) for k, u in enumerate(_list(lv.get("dns_upstream"), 8))]
        inside = [a for _, a in ups if a is not None and a in cloud_net
                  and a not in (tls_ip, cloud_net.network_address, cloud_net.broadcast_address)]
        for k, addr in ups:
            if addr is None:
                continue
            fix = (f"the lab's internet DNS: an address inside lab.cloud_network {cloud_net}, e.g. {example} "
                   f"(target: lab; a real site's resolver is set in a copy with target: kube)")
            if addr not in cloud_net:
                out.append((f"levels[{i}].dns_upstream[{k}]", str(addr), f"{fix}; {addr} is outside it, so the "
                            "egress proxy could resolve nothing in the lab"))
            elif addr == tls_ip or addr in (cloud_net.network_address, cloud_net.broadcast_address):
                out.append((f"levels[{i}].dns_upstream[{k}]", str(addr), f"{fix}; {addr} is the cloud's "
                            f"{'TLS front' if addr == tls_ip else 'network or broadcast address'}, not its DNS"))
            elif inside and addr != inside[0]:
                out.append((f"levels[{i}].dns_upstream[{k}]", str(addr), f"{fix}: the lab runs one internet DNS, at "
                            f"{inside[0]} (the first upstream); drop this one"))
    return out


def _section_checks(raw: dict, fname: str) -> list[Problem]:
    """The later sections' own cross-checks on the raw document (level names they refer to, and more)."""
    from layernet.site import aio, arc, telemetry

    P: list[Problem] = []
    if hasattr(telemetry, "check_raw"):
        P += [Problem(fname, path, HIDDEN if value == "(hidden)" else value, expected)
              for path, value, expected in telemetry.check_raw(raw)]
    if hasattr(arc, "check"):
        P += list(arc.check(raw, fname))
    if hasattr(aio, "check"):
        P += list(aio.check(raw, fname))
    return P


def _site_checks(site: Site, raw: dict, fname: str) -> list[Problem]:
    """Checks that need the validated site: values that are valid each on their own but cannot work together."""
    P: list[Problem] = []
    ports = site.proxied_ports()
    listening = ", ".join(str(p) for p in ports)
    for j, x in enumerate(site.allowlist.extra_hosts):
        for k, port in enumerate(x.ports):
            if port not in ports:
                P.append(Problem(fname, f"allowlist.extra_hosts[{j}].ports[{k}]", port,
                                 f"a port the proxies listen on ({listening}); no listener forwards {port}"))
    undropped = site.model_copy(update={"allowlist": site.allowlist.model_copy(update={"drop_hosts": []})})
    full = effective_allowlist(undropped)
    present = {e.host.lower() for e in full.entries}
    for j, d in enumerate(site.allowlist.drop_hosts):
        if d.lower() not in present:
            P.append(Problem(fname, f"allowlist.drop_hosts[{j}]", d, "a host of a selected group, written as "
                             "`layernet allowlist` shows it; this one is in none, so dropping it does nothing"))
    effective = effective_allowlist(site)
    if not effective.entries and any(lv.reaches_azure for lv in site.levels):
        P.append(Problem(fname, "allowlist.groups", list(site.allowlist.groups), "an allow list that is not empty: "
                         "levels reach Azure, so select groups (arc-core, arc-cluster-connect, aio) or extra hosts"))
    for j, h in enumerate(site.lab.refused_hosts):
        hit = effective.match(h)
        if hit is not None:
            P.append(Problem(fname, f"lab.refused_hosts[{j}]", h, f"a host the allow list refuses; {hit.host} "
                             "allows it, so the lab's refusal check could never pass"))
    P += check_images(site, fname)
    from layernet.site import aio, telemetry

    P += aio.check_site(site, fname)
    P += telemetry.check_site(site, fname)
    return P
