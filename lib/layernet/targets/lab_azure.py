"""The lab's Azure side: its Azure calls run on the lab's jump box (its own namespace, Azure's names resolving to the
lab's cloud), against the stand-ins that play Entra, ARM and Event Hubs (lab/cloud/, lab/kafka.py)."""
from __future__ import annotations

from layernet.lab import layout
from layernet.lab import azure as lab_azure, jumpbox, kafka
from layernet.targets.azure_side import AzureSide


class LabAzure(AzureSide):
    elsewhere = True

    poll_interval = 0.5

    def call(self, func: str, progress=None, **kwargs):
        """The lab's Azure calls run on its jump box (its own namespace, names resolving to the lab's cloud)."""
        return jumpbox.call(self.site, func, progress=progress, **kwargs)

    def arm(self):
        return lab_azure.arm(self.site)

    def stand_ins(self, stage: str) -> list[dict]:
        region = self.site.azure.location
        common = [
            ("Microsoft Entra ID (tokens)", "login.microsoftonline.com",
             "the lab's Entra stand-in: client-credential tokens signed with its own key, published in its JWKS"),
            ("Azure Resource Manager", "management.azure.com",
             "the lab's ARM stand-in: the pinned api-versions and the SDK models' contracts enforced, long-running "
             "operations as ARM runs them; no Azure subscription was touched"),
        ]
        parts = {
            "arc": [("Arc configuration data plane and heartbeats", f"{region}.dp.kubernetesconfiguration.azure.com",
                     "lab stand-in: Connected only while heartbeats arrive from the egress level's node"),
                    ("Arc identity (HIS)", f"gbl.his.arc.azure.com, {region}.his.arc.azure.com",
                     "lab stand-in: checks the agents' proof with the connected cluster's public key"),
                    ("Arc notification, relay and cluster connect", "guestnotificationservice.azure.com, "
                     f"*.servicebus.windows.net, {region}.obo.arc.azure.com",
                     "lab stand-ins answering the agents' calls (content not modelled)"),
                    ("Microsoft Container Registry", "mcr.microsoft.com, *.data.mcr.microsoft.com",
                     "lab registry: made-up image manifests and layers"),
                    ("Arc agents in each cluster", "namespace azure-arc",
                     "one lab process per level making the agents' calls by name through the proxies")],
            "aio": [("AIO extensions in each cluster", "cert-manager, secret store, azure-iot-operations",
                     "one lab process per level: image pulls through the proxies, status to the configuration data "
                     "plane, mosquitto as the MQTT broker of the listener resources"),
                    ("Microsoft Container Registry", "mcr.microsoft.com, *.data.mcr.microsoft.com",
                     "lab registry: made-up image manifests and layers")],
            "telemetry": [("Azure Event Hubs", "<namespace>.servicebus.windows.net:9093",
                           "Apache Kafka in the lab's cloud (TLS, OAUTHBEARER against the lab's Entra, authorized by "
                           "the ARM role assignments)"),
                          ("AIO connector and dataflows, the OPC UA server", "the levels' nodes",
                           "lab processes reading the ARM records (asyncua OPC PLC, MQTT dataflows)")],
        }
        return [{"part": p, "hosts": h, "on this run": w} for p, h, w in common + parts.get(stage, [])]

    def eventhubs_client(self) -> tuple:
        """The lab's Event Hubs connection string (lab.kafka, read here) and the lab CA."""

        return kafka.connection_string(self.site), str(layout.ca_cert_path(self.site))

    def eventhubs_refusals(self, since: float) -> list:
        """From the lab broker's log: tokens its validator refused and principals its authorizer denied."""

        return kafka.refusals(self.site, since)
