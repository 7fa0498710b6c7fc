"""Azure SDK clients, built in one place so the same stage code talks to real ARM or to the lab's ARM.

`Arm` carries what differs between the two: the credential, the ARM base URL, the cloud's token scope and the
CA bundle to trust (azure-core's `connection_verify`). A real site uses the defaults (the credential chain:
`az login` state on the jump box, environment, managed identity); the lab passes its Entra stand-in credential,
`https://management.azure.com` resolving to the lab's cloud, and the lab CA. Nothing else changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from layernet.apiversions import api_version
from layernet.errors import InputError

CLOUD_ARM = {"public": "https://management.azure.com",
             "usgov": "https://management.usgovcloudapi.net",
             "china": "https://management.chinacloudapi.cn"}


@dataclass
class Arm:
    subscription_id: str
    credential: Any = None                       # a TokenCredential; None: DefaultAzureCredential on first use
    base_url: Optional[str] = None               # None: the cloud's ARM endpoint
    verify: Union[bool, str] = True              # True, or the path of a CA bundle to trust
    cloud: str = "public"
    extra: dict = field(default_factory=dict)    # further client keywords (retry_total, polling_interval, ...)

    @property
    def url(self) -> str:
        return (self.base_url or CLOUD_ARM[self.cloud]).rstrip("/")

    def cred(self):
        if self.credential is None:
            from azure.identity import DefaultAzureCredential

            kw = {} if self.verify is True else {"connection_verify": self.verify}
            self.credential = DefaultAzureCredential(**kw)
        return self.credential

    def kwargs(self) -> dict:
        kw: dict = {"base_url": self.url, "credential_scopes": [self.url + "/.default"]}
        if self.verify is not True:
            kw["connection_verify"] = self.verify
        kw.update(self.extra)
        return kw

    def versioned(self, resource_type: str) -> dict:
        """Client keywords with the api-version of the one table (layernet.apiversions) for `resource_type`."""
        return {**self.kwargs(), "api_version": api_version(resource_type)}

    # ---- clients (imported lazily: each SDK is only loaded by the stage that uses it)
    def resources(self):
        from azure.mgmt.resource.resources import ResourceManagementClient
        return ResourceManagementClient(self.cred(), self.subscription_id,
                                        **self.versioned("Microsoft.Resources/resourceGroups"))

    def deployments(self):
        from azure.mgmt.resource.deployments import DeploymentsMgmtClient
        return DeploymentsMgmtClient(self.cred(), self.subscription_id, **self.versioned("Microsoft.Resources/deployments"))

    def connected_kubernetes(self):
        from azure.mgmt.hybridkubernetes import ConnectedKubernetesClient
        return ConnectedKubernetesClient(self.cred(), self.subscription_id,
                                         **self.versioned("Microsoft.Kubernetes/connectedClusters"))

    def iotoperations(self):
        from azure.mgmt.iotoperations import IoTOperationsMgmtClient
        return IoTOperationsMgmtClient(self.cred(), self.subscription_id, **self.versioned("Microsoft.IoTOperations/instances"))

    def extensions(self):
        from azure.mgmt.kubernetesconfiguration.extensions import KubernetesConfigurationExtensionsMgmtClient
        return KubernetesConfigurationExtensionsMgmtClient(
            self.cred(), self.subscription_id, **self.versioned("Microsoft.KubernetesConfiguration/extensions"))

    def deviceregistry(self):
        from azure.mgmt.deviceregistry import DeviceRegistryMgmtClient
        return DeviceRegistryMgmtClient(self.cred(), self.subscription_id, **self.versioned("Microsoft.DeviceRegistry/namespaces"))


def arm_for(site, credential: Any = None, base_url: Optional[str] = None, verify: Union[bool, str] = True,
            **extra) -> Arm:
    """The Arm connection of a site. A real site needs azure.subscription_id."""
    sub = site.azure.subscription_id
    if not sub:
        raise InputError("site field azure.subscription_id is empty: set it to the subscription GUID "
                         "(az account show --query id -o tsv)")
    return Arm(sub, credential, base_url, verify, site.azure.cloud, dict(extra))


def as_dict(obj: Any) -> dict:
    """An SDK model (old msrest style or new hybrid style) or a dict, as a plain JSON-shaped dict."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    return obj.as_dict()    # new-style models give REST (camelCase) keys; `pick` also accepts snake_case


def pick(d: dict, *path: str, default: Any = None) -> Any:
    """d['properties']['connectivityStatus'] style access that tolerates missing levels and snake_case keys."""
    cur: Any = d
    for key in path:
        if not isinstance(cur, dict):
            return default
        if key in cur:
            cur = cur[key]
            continue
        snake = "".join("_" + c.lower() if c.isupper() else c for c in key)
        if snake in cur:
            cur = cur[snake]
            continue
        return default
    return cur


