"""The site model: one plant described in YAML, as the `Site` holds it once validated (`validate.load_site`).

The levels, the admin network, Azure, the allow-list selection and the lab's settings are here; the later stages'
sections (`arc`, `aio`, `telemetry`, `images`, `monitor`) in their own modules. The checks across fields are in
`checks`, one module per concern.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from layernet.site.aio import Aio
from layernet.site.arc import Arc
from layernet.site.base import Strict
from layernet.site.defaults import with_target_defaults
from layernet.site.images import Images
from layernet.site.monitor import Monitor
from layernet.site.telemetry import Telemetry

PROXIED_PORTS_DEFAULT = (443, 8084)
DNS_PORT = 53             # a level's DNS override answers on its node
KUBE_API_PORT = 6443      # K3s's API port on every level's node
LAB_NAMESPACES = ("cloud", "rtr", "jumpbox")   # the lab's own namespaces beside one per level
# the lab cloud's addresses, as host numbers in lab.cloud_network (lab.netns.topology places them): its TLS front,
# and its internet DNS when the egress level names no upstream inside the cloud network
LAB_CLOUD_TLS_HOST, LAB_CLOUD_DNS_HOST = 10, 53
MAX_HOSTS = 2000          # extra or dropped allow-list hosts
CLOUDS = ("public", "usgov", "china")


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
