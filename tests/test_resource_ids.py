"""Azure resource ids are built one way (layernet.resource_ids): the Event Hubs namespace id that stage 04's hub
records, the egress level's Data Sender scope, the operator's Data Receiver scope and the lab's Kafka authorizer
use is one function's answer, and every id has ARM's shape."""
from __future__ import annotations

import re
from pathlib import Path

from layernet.lab import azure as lab_azure, kafka
from layernet.render.telemetry import eventhubs_namespace_id
from layernet.resource_ids import ZERO_SUBSCRIPTION, group_id, rid, subscription
from layernet.site import load_site
from layernet.telemetry import records

ROOT = Path(__file__).resolve().parents[1]
SHAPE = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.EventHub/namespaces/[^/]+")


def test_an_id_has_arm_s_shape():
    assert group_id("s", "rg") == "/subscriptions/s/resourceGroups/rg"
    assert rid("s", "rg", "Microsoft.Kubernetes", "connectedClusters", "c1") == \
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/c1"


def test_every_consumer_of_the_event_hubs_namespace_id_agrees():
    site = load_site(ROOT / "params" / "lab.yaml", ["telemetry.eventhubs.auth=managed_identity"])
    ns_id = eventhubs_namespace_id(site)
    assert SHAPE.fullmatch(ns_id) and ns_id.startswith(f"/subscriptions/{subscription(site)}/")
    hub_records = records.eventhub_records(site)
    assert hub_records and hub_records[0]["id"] == ns_id
    assert records.receiver_scope(site) == ns_id
    senders = [r for r in records.desired(site) if r["action"] == records.SENDER_ACTION]
    assert senders and {r["id"].split("/providers/Microsoft.Authorization/")[0] for r in senders} == {ns_id}
    # the lab's broker authorizes against the same id, in the lab's subscription
    lab_sub = lab_azure.subscription_id(site)
    assert kafka.namespace_id(site) == eventhubs_namespace_id(site, lab_sub) == ns_id.replace(subscription(site), lab_sub)


def test_a_site_without_a_subscription_plans_in_the_all_zero_one():
    site = load_site(ROOT / "params" / "site-example.yaml")
    unnamed = site.model_copy(update={"azure": site.azure.model_copy(update={"subscription_id": None})})
    assert subscription(unnamed) == ZERO_SUBSCRIPTION
    assert eventhubs_namespace_id(unnamed).startswith(f"/subscriptions/{ZERO_SUBSCRIPTION}/")
