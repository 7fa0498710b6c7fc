"""The AIO resources stage 03 gives each Arc-enabled level: the resolved names, their resource ids, the broker's
listeners and the roles the executors assign. One place for the three executors (az, templates, SDK: aio.py and
aio_sdk.py), stage 03's checks and the lab's AIO stand-ins."""
from __future__ import annotations

from layernet.apiversions import api_version
from layernet.resource_ids import rid
from layernet.errors import InputError

STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
DR_API = api_version("Microsoft.DeviceRegistry/schemaRegistries")
INSTANCE_EXTENSION = "microsoft.iotoperations"
BLOB_SUFFIX = {"public": "blob.core.windows.net", "usgov": "blob.core.usgovcloudapi.net",
               "china": "blob.core.chinacloudapi.cn"}
PRINCIPAL_PLACEHOLDER = "<principal id of schema registry {name}>"


LISTENERS = {    # listener name -> body properties (the release template's default and az's --add-insecure-listener)
    "default": {"serviceName": "aio-broker", "serviceType": "ClusterIp",
                "ports": [{"port": 18883, "authenticationRef": "default",
                           "tls": {"mode": "Automatic", "certManagerCertificateSpec": {
                               "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer",
                                             "name": "azure-iot-operations-aio-certificate-issuer"}}}}]},
    "default-insecure": {"serviceName": "aio-broker-insecure", "serviceType": "LoadBalancer",
                         "ports": [{"port": 1883}]},
}


def insecure(r) -> bool:
    """The level asks for az's --add-insecure-listener (aio.levels.<level>.listener: insecure-1883)."""
    return r.listener == "insecure-1883"


def listener_names(r) -> list[str]:
    """The broker listeners stage 03 gives a level: the release's default (TLS, 18883) and, where
    aio.levels.<level>.listener is insecure-1883, az's --add-insecure-listener (1883, no authentication)."""
    return ["default"] + (["default-insecure"] if insecure(r) else [])


def listener_ports(r) -> list[tuple[str, int, bool, bool]]:
    """(listener, port, tls, authenticated) of every port of the level's stage 03 listeners (from LISTENERS)."""
    return [(name, p["port"], bool(p.get("tls")), bool(p.get("authenticationRef")))
            for name in listener_names(r) for p in LISTENERS[name]["ports"]]


def levels(site) -> list:
    """The resolved AIO names of every Arc-enabled level, egress level first."""
    out = []
    for lv in site.arc_levels():
        r = site.aio.for_level(site, lv.name)
        if not r.storage_account:
            raise InputError(f"site field aio.levels.{lv.name}.schema_registry.storage_account is empty: name the "
                             "schema registry's storage account there or in azure.schema_registry_storage")
        out.append(r)
    return out


def ids(site, r) -> dict:
    sub, rg = site.azure.subscription_id or "<subscription>", site.azure.resource_group
    sa = rid(sub, rg, "Microsoft.Storage", "storageAccounts", r.storage_account)
    return {"storage": sa, "container": f"{sa}/blobServices/default/containers/{r.container}",
            "registry": rid(sub, rg, "Microsoft.DeviceRegistry", "schemaRegistries", r.registry),
            "namespace": rid(sub, rg, "Microsoft.DeviceRegistry", "namespaces", r.adr_namespace),
            "cluster": rid(sub, rg, "Microsoft.Kubernetes", "connectedClusters", r.cluster),
            "custom_location": rid(sub, rg, "Microsoft.ExtendedLocation", "customLocations", r.custom_location),
            "instance": rid(sub, rg, "Microsoft.IoTOperations", "instances", r.instance)}


ROLE_EXISTS = "RoleAssignmentExists"     # ARM's error code for a second assignment of a role on one scope
