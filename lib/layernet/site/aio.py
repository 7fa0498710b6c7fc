"""Site section `aio`: what stage 03 deploys on each level.

Per level (keys of `levels` are level names; a level not listed gets names derived from its cluster name):
the instance, its custom location, the ADR namespace, the schema registry with its storage account and
container, the broker sizing (defaults: the public sample's values) and the listener (the sample's insecure
1883 LoadBalancer listener for the east-west hops, or TLS only). `release` pins the AIO release: the az
executor pins the `azure-iot-ops` CLI extension version, the arm executor fetches that release's templates.
Cross-checks against the whole site are in `checks.aio` (as written) and `checks.aio_names` (resolved names).
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator

from layernet.site import names
from layernet.site.base import Strict

AIO_NAMESPACE = "azure-iot-operations"      # where AIO runs in a cluster (the objects its resources name live there)
TEMPLATE_URL = "https://github.com/Azure/azure-iot-operations/releases/download/{tag}/azure-iot-operations-{kind}.json"
CONTAINER = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", re.ASCII)
_SHA = re.compile(r"[0-9a-f]{64}", re.ASCII)
_CLI_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+[a-z0-9.]*", re.ASCII)


def _name(value: Optional[str], kind: str) -> Optional[str]:
    why = names.check_aio_name(value, kind)
    if why:
        raise ValueError(why)
    return value


class Broker(Strict):
    frontend_replicas: int = Field(default=1, ge=1, le=16, strict=True)
    frontend_workers: int = Field(default=1, ge=1, le=16, strict=True)
    backend_partitions: int = Field(default=1, ge=1, le=16, strict=True)
    backend_workers: int = Field(default=1, ge=1, le=16, strict=True)
    backend_redundancy_factor: int = Field(default=2, ge=1, le=5, strict=True)
    memory_profile: Literal["Tiny", "Low", "Medium", "High"] = "Low"


class SchemaRegistry(Strict):
    name: Optional[str] = None               # default: <cluster>-sr
    namespace: Optional[str] = None          # the registry namespace; default: the registry name
    storage_account: Optional[str] = None    # default: azure.schema_registry_storage
    container: Optional[str] = None          # default: <cluster>-schemas

    @field_validator("name", "namespace")
    @classmethod
    def _names(cls, value: Optional[str], info) -> Optional[str]:
        return _name(value, "schema registry" if info.field_name == "name" else "registry namespace")

    @field_validator("storage_account")
    @classmethod
    def _sa(cls, value: Optional[str]) -> Optional[str]:
        why = names.check_storage_account(value)
        if why:
            raise ValueError(why)
        return value

    @field_validator("container")
    @classmethod
    def _c(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not CONTAINER.fullmatch(value):
            raise ValueError("a blob container name of 3-63 lowercase letters, digits and single inner hyphens")
        return value


class AioLevel(Strict):
    instance: Optional[str] = None           # default: <cluster>-ops
    custom_location: Optional[str] = None    # default: <cluster>-cl
    adr_namespace: Optional[str] = None      # default: <cluster>-ns
    schema_registry: SchemaRegistry = SchemaRegistry()
    broker: Broker = Broker()
    listener: Literal["insecure-1883", "tls"] = "insecure-1883"

    @field_validator("instance", "custom_location", "adr_namespace")
    @classmethod
    def _names(cls, value: Optional[str], info) -> Optional[str]:
        return _name(value, info.field_name.replace("_", " ").replace("adr", "ADR"))


class Templates(Strict):
    """The pinned release's ARM templates (arm executor). URLs default to the release's assets."""
    enablement_url: Optional[str] = None
    instance_url: Optional[str] = None
    enablement_sha256: Optional[str] = None  # when set, a fetched template with another digest is refused
    instance_sha256: Optional[str] = None

    @field_validator("enablement_url", "instance_url")
    @classmethod
    def _https(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith("https://"):
            raise ValueError("an https:// URL of the release's template")
        return value

    @field_validator("enablement_sha256", "instance_sha256")
    @classmethod
    def _sha(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _SHA.fullmatch(value):
            raise ValueError("a sha256 digest: 64 lowercase hex characters")
        return value


class Resolved(Strict):
    """One level's AIO names with every default filled in (see `Aio.for_level`)."""
    level: str
    cluster: str
    instance: str
    custom_location: str
    adr_namespace: str
    registry: str
    registry_namespace: str
    storage_account: str
    container: str
    broker: Broker
    listener: str


class Aio(Strict):
    release: str = Field(default="1.2", pattern=r"^[0-9]+\.[0-9]+$")
    release_tag: Optional[str] = None        # the GitHub release tag whose templates the arm executor fetches
    cli_version: Optional[str] = None        # the azure-iot-ops CLI extension version the az executor pins
    executor: Literal["az", "arm", "sdk"] = "az"   # sdk: each resource PUT through the SDK clients (the lab)
    levels: dict[str, AioLevel] = {}
    templates: Templates = Templates()
    schema_registry_role: bool = Field(default=True, strict=True)   # Storage Blob Data Contributor for the registry

    @field_validator("cli_version")
    @classmethod
    def _cli(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _CLI_VERSION.fullmatch(value):
            raise ValueError("an azure-iot-ops extension version such as 1.2.0")
        return value

    def for_level(self, site, level: str) -> Resolved:
        cfg = self.levels.get(level) or AioLevel()
        cluster = site.azure.clusters.get(level) or f"aio-{level}"
        sr = cfg.schema_registry
        registry = sr.name or f"{cluster}-sr"
        return Resolved(level=level, cluster=cluster, instance=cfg.instance or f"{cluster}-ops",
                        custom_location=cfg.custom_location or f"{cluster}-cl",
                        adr_namespace=cfg.adr_namespace or f"{cluster}-ns", registry=registry,
                        registry_namespace=sr.namespace or registry,
                        storage_account=sr.storage_account or site.azure.schema_registry_storage or "",
                        container=sr.container or f"{cluster}-schemas", broker=cfg.broker, listener=cfg.listener)

    def template_url(self, kind: str) -> Optional[str]:
        url = getattr(self.templates, f"{kind}_url")
        if url:
            return url
        return TEMPLATE_URL.format(tag=self.release_tag, kind=kind) if self.release_tag else None
