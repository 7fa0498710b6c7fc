"""THE api-version of every Azure resource type layernet reads or writes: one table, used by every executor (the
SDK clients are built with it, generic calls and templates carry it), by stage 04's records and by the lab's ARM,
which answers any other version as ARM does (`InvalidApiVersionParameter`) and checks bodies against the pinned
SDK package's models of that version (`layernet.lab.cloud.arm.contract`).

Where a pinned azure-mgmt-* package holds the type's models, the version is that package's default (the models
are generated from Azure's REST specification of exactly that version; `MODEL_PACKAGES` says which package, and a
test keeps the two equal). The other types are written through the generic resource client at a version of the
REST specification; the lab checks only their api-version (no pinned models in this environment).

Imports nothing: every layer may read it.
"""
from __future__ import annotations

from typing import Optional

IOTOPERATIONS = "2026-07-01"          # azure-mgmt-iotoperations 1.2.0
DEVICEREGISTRY = "2025-10-01"         # azure-mgmt-deviceregistry 1.1.0
KUBERNETES = "2026-05-01"             # azure-mgmt-hybridkubernetes 2.0.0
KUBERNETES_CONFIGURATION = "2025-03-01"   # azure-mgmt-kubernetesconfiguration-extensions 1.0.0
RESOURCES = "2025-04-01"              # azure-mgmt-resource 26 (resources: groups, providers, generic)
DEPLOYMENTS = "2026-06-01"            # azure-mgmt-resource-deployments 2.0.0

API_VERSIONS: dict[str, str] = {
    "Microsoft.Resources/resourceGroups": RESOURCES,
    "Microsoft.Resources/deployments": DEPLOYMENTS,
    "Microsoft.Kubernetes/connectedClusters": KUBERNETES,
    "Microsoft.KubernetesConfiguration/extensions": KUBERNETES_CONFIGURATION,
    "Microsoft.IoTOperations/instances": IOTOPERATIONS,
    "Microsoft.IoTOperations/instances/brokers": IOTOPERATIONS,
    "Microsoft.IoTOperations/instances/brokers/listeners": IOTOPERATIONS,
    "Microsoft.IoTOperations/instances/brokers/authentications": IOTOPERATIONS,
    "Microsoft.IoTOperations/instances/brokers/authorizations": IOTOPERATIONS,
    "Microsoft.IoTOperations/instances/dataflowProfiles": IOTOPERATIONS,
    "Microsoft.IoTOperations/instances/dataflowProfiles/dataflows": IOTOPERATIONS,
    "Microsoft.IoTOperations/instances/dataflowEndpoints": IOTOPERATIONS,
    "Microsoft.IoTOperations/instances/registryEndpoints": IOTOPERATIONS,
    "Microsoft.DeviceRegistry/schemaRegistries": DEVICEREGISTRY,
    "Microsoft.DeviceRegistry/namespaces": DEVICEREGISTRY,
    "Microsoft.DeviceRegistry/namespaces/devices": DEVICEREGISTRY,
    "Microsoft.DeviceRegistry/namespaces/assets": DEVICEREGISTRY,
    # through the generic resource client (no pinned models here)
    "Microsoft.Storage/storageAccounts": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2023-05-01",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.ExtendedLocation/customLocations": "2021-08-15",
    "Microsoft.EventHub/namespaces": "2024-01-01",
    "Microsoft.EventHub/namespaces/eventhubs": "2024-01-01",
}

# Other api-versions Azure serves for a type, which a client the project runs unchanged sends: the pinned Azure CLI
# (tools/az/requirements.txt, azure-cli 2.91.0) picks its own versions for its core commands (the executor cannot
# choose them). The lab's ARM answers these too, as Azure does (a body is still checked against the pinned models);
# any other version is refused. tests/lab/test_az_cli.py runs that az against the lab's ARM: a version it sends that
# is missing here fails there.
CLIENT_VERSIONS: dict[str, tuple[str, ...]] = {
    "Microsoft.Resources/resourceGroups": ("2024-11-01",),     # az group create / exists / show
    "Microsoft.Storage/storageAccounts": ("2025-08-01",),      # az storage account create / show
}

# the package whose default api-version (and models) a provider namespace's types follow
MODEL_PACKAGES: dict[str, str] = {
    "Microsoft.IoTOperations": "azure.mgmt.iotoperations",
    "Microsoft.DeviceRegistry": "azure.mgmt.deviceregistry",
    "Microsoft.Kubernetes": "azure.mgmt.hybridkubernetes",
    "Microsoft.KubernetesConfiguration": "azure.mgmt.kubernetesconfiguration.extensions",
    "Microsoft.Resources/resourceGroups": "azure.mgmt.resource.resources",
    "Microsoft.Resources/deployments": "azure.mgmt.resource.deployments",
}

_LOWER = {k.lower(): v for k, v in API_VERSIONS.items()}


def api_version(resource_type: str) -> str:
    """The pinned api-version of a resource type (case-insensitive); KeyError names a type not in the table."""
    try:
        return _LOWER[resource_type.lower()]
    except KeyError:
        raise KeyError(f"no api-version pinned for {resource_type}: add it to layernet.apiversions.API_VERSIONS") \
            from None


def known(resource_type: str) -> Optional[str]:
    return _LOWER.get(resource_type.lower())


_CLIENT_LOWER = {k.lower(): v for k, v in CLIENT_VERSIONS.items()}


def served(resource_type: str) -> tuple[str, ...]:
    """Every api-version the lab's ARM answers for a type: the pinned one first, then the pinned clients' own
    (CLIENT_VERSIONS); () for a type not in the table."""
    pinned = known(resource_type)
    return (pinned,) + _CLIENT_LOWER.get(resource_type.lower(), ()) if pinned else ()


def type_of(resource_id: str) -> str:
    """The resource type of an ARM id: /subscriptions/s/resourceGroups/g/providers/NS/t1/n1/t2/n2 -> NS/t1/t2
    (extension resources: the type after the last /providers/)."""
    parts = [p for p in resource_id.split("/") if p]
    low = [p.lower() for p in parts]
    if "providers" not in low:
        return "Microsoft.Resources/resourceGroups" if len(parts) == 4 and low[2] == "resourcegroups" else ""
    i = len(low) - 1 - low[::-1].index("providers")
    rest = parts[i + 1:]
    return "/".join([rest[0]] + rest[1::2])
