"""Site section `arc`: how stage 02 Arc-enables each level's cluster.

Types and ranges are checked here (field paths come out as ``arc.onboarding_timeout.level9``); the checks that
need the whole site (a timeout names an existing level, every Arc-enabled level has a cluster name) are in
`checks.arc`.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import Field, field_validator

from layernet.site import names
from layernet.site.base import Strict

# The Custom Locations resource provider's first-party application id; its service principal's object id is
# what `--custom-locations-oid` wants (derive it with `az ad sp show --id <this> --query id -o tsv`).
CUSTOM_LOCATIONS_APP_ID = "bc313c14-388c-4e7d-a58e-70017303ee3b"
DEFAULT_PROVIDERS = [
    "Microsoft.ExtendedLocation", "Microsoft.Kubernetes", "Microsoft.KubernetesConfiguration",
    "Microsoft.IoTOperations", "Microsoft.DeviceRegistry", "Microsoft.SecretSyncController",
]
FEATURES = ("cluster-connect", "custom-locations", "azure-rbac")
# what stage 03 needs on every Arc-enabled cluster: AIO is installed at a custom location, reached through cluster
# connect
NEEDED_FEATURES = ("cluster-connect", "custom-locations")
# Per node, before Arc (the sample: without these the agents time out).
NODE_SYSCTLS = {"fs.inotify.max_user_instances": 8192, "fs.inotify.max_user_watches": 524288,
                "fs.file-max": 100000}

_PROVIDER = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)+", re.ASCII)
# the value type carries the range, so a bad entry is reported at arc.onboarding_timeout.<level>
Seconds = Annotated[int, Field(ge=10, le=7200, strict=True)]   # 10 s: short lab rehearsals


ARC_GROUPS = ("arc-core", "arc-cluster-connect")     # the direct Arc endpoints a gateway replaces


class Arc(Strict):
    executor: Literal["az", "sdk"] = "az"                # az: the az CLI on the jump box; sdk: ARM calls (the lab)
    custom_locations_oid: Optional[str] = None           # None: derived on the jump box from CUSTOM_LOCATIONS_APP_ID
    onboarding_timeout: dict[str, Seconds] = {}              # seconds per level name; a level not listed gets the default
    default_onboarding_timeout: int = Field(default=1200, ge=60, le=7200, strict=True)
    oidc_issuer: bool = Field(default=True, strict=True)
    workload_identity: bool = Field(default=True, strict=True)
    auto_upgrade: bool = Field(default=False, strict=True)
    features: list[Literal["cluster-connect", "custom-locations", "azure-rbac"]] = ["cluster-connect", "custom-locations"]
    providers: list[str] = DEFAULT_PROVIDERS
    gateway_resource_id: Optional[str] = None
    gateway_endpoint: Optional[str] = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}\.gw\.arc\.azure\.com$")
    # the gateway's own host (its resource's properties.gatewayEndpoint, e.g. abc123.gw.arc.azure.com)
    kube_config: Optional[str] = None                    # kubeconfig file on the jump box; None: $KUBECONFIG or ~/.kube/config
    distribution: str = "k3s"                            # what the connected cluster reports (sdk executor body)
    infrastructure: str = "generic"
    node_preflight: bool = Field(default=True, strict=True)   # read the node sysctls with a debugger pod per node

    @field_validator("custom_locations_oid")
    @classmethod
    def _oid(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and names.check_guid(value, "object id"):
            raise ValueError("the object id (a GUID) of the Custom Locations service principal, or null to derive it "
                             f"with `az ad sp show --id {CUSTOM_LOCATIONS_APP_ID} --query id -o tsv`")
        return value

    @field_validator("providers")
    @classmethod
    def _providers(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _PROVIDER.fullmatch(name):
                raise ValueError(f"resource provider namespaces such as Microsoft.Kubernetes; {name!r} is not one")
        if len(set(v.lower() for v in value)) != len(value):
            raise ValueError("each provider once")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each feature once")
        missing = [f for f in NEEDED_FEATURES if f not in value]
        if missing:
            raise ValueError(f"a list with {' and '.join(NEEDED_FEATURES)}: stage 03 installs AIO at a custom location "
                             f"it reaches through cluster connect; add {', '.join(missing)}")
        return value

    @field_validator("gateway_resource_id")
    @classmethod
    def _gateway(cls, value: Optional[str]) -> Optional[str]:
        why = names.check_arc_gateway_id(value)
        if why:
            raise ValueError(why)
        return value

    def allow_groups(self, groups: list[str]) -> list[str]:
        """The allow-list groups the site's Arc setup needs: with a gateway, the gateway's minimal set instead of
        the direct Arc groups (the agents then reach Azure through the gateway)."""
        if not self.gateway_resource_id:
            return list(groups)
        out = [g for g in groups if g not in ARC_GROUPS]
        return out + (["arc-gateway"] if "arc-gateway" not in out else [])

    def timeout(self, level: str) -> int:
        return self.onboarding_timeout.get(level, self.default_onboarding_timeout)
