"""Site section `arc`: how stage 02 Arc-enables each level's cluster."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from layernet.site.base import Strict

# The Custom Locations resource provider's first-party application id; its service principal's object id is
# what `--custom-locations-oid` wants (derive it with `az ad sp show --id <this> --query id -o tsv`).
CUSTOM_LOCATIONS_APP_ID = "bc313c14-388c-4e7d-a58e-70017303ee3b"
DEFAULT_PROVIDERS = [
    "Microsoft.ExtendedLocation", "Microsoft.Kubernetes", "Microsoft.KubernetesConfiguration",
    "Microsoft.IoTOperations", "Microsoft.DeviceRegistry", "Microsoft.SecretSyncController",
]


class Arc(Strict):
    custom_locations_oid: Optional[str] = None           # None: derived on the jump box from CUSTOM_LOCATIONS_APP_ID
    onboarding_timeout: dict[str, int] = {}              # seconds per level name; a level not listed gets the default
    default_onboarding_timeout: int = Field(default=1200, ge=60, le=7200, strict=True)
    oidc_issuer: bool = Field(default=True, strict=True)
    workload_identity: bool = Field(default=True, strict=True)
    auto_upgrade: bool = Field(default=False, strict=True)
    features: list[str] = ["cluster-connect", "custom-locations"]
    providers: list[str] = DEFAULT_PROVIDERS
    gateway_resource_id: Optional[str] = None

    def timeout(self, level: str) -> int:
        return self.onboarding_timeout.get(level, self.default_onboarding_timeout)
