"""Stage 04 on the lab the way a plant authenticates to Event Hubs: the egress dataflow presents an Entra token of
the AIO extension's managed identity over SASL OAUTHBEARER, the broker validates it with Kafka's own validator
against the lab Entra's JWKS and authorizes it by the Azure Event Hubs role assignments ARM holds; the verify
consumer reads as the operator, whose Data Receiver assignment the stage plans.

Negative rehearsals, each a stage failure naming the cause, then put right:
- the Data Sender assignment deleted through ARM: the egress hop stops at the event hub; the stage names the role,
  the principal and the scope, and the broker's denial;
- a token for the wrong audience (the extension's endpoint asks Entra for https://management.azure.com);
- an expired token (the lab's Entra stamps the identity's tokens two hours in the past);
- the JWKS unreachable from the broker (it cannot resolve login.microsoftonline.com): the broker does not start
  and the stage's apply names the JWKS.
Also a user-assigned identity (endpoint `UserAssignedManagedIdentity`) with its own Data Sender assignment, and
the connection-string mode on the same lab.

One lab for the module with its own prefix and address plan, always taken down.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from layernet.errors import StageFailed
from layernet.lab import commands, kafka, services, workload_identity
from layernet.lab import telemetry as lab_telemetry
from layernet.lab.cloud import entra
from layernet.lab.cloud.arm.view import role_assignments
from layernet.rbac import RECEIVER, SENDER
from layernet.stages import aio, arc, telemetry
from layernet.telemetry import records
from layernet import context

import labs


pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = labs.plan(__file__).prefix
HUB_TOPIC = "Topic aio-telemetry"


def site_with(*extra: str):
    return labs.site(__file__, *extra)


@pytest.fixture(scope="module")
def lab():
    site = site_with()
    assert site.telemetry.eventhubs.auth == "managed_identity"
    why = kafka.missing()
    if why:
        pytest.skip(why)
    with labs.running(site):
        arc.run(arc.plan(site), site)
        aio.run(aio.plan(site), site)
        yield site


@pytest.fixture(scope="module")
def deployed(lab, tmp_path_factory):
    site = lab
    p = telemetry.plan(site)
    t0 = time.monotonic()
    applied = telemetry.run(p, site, run_dir=str(tmp_path_factory.mktemp("identity-run")))
    out = telemetry.check(site)
    print(f"\nstage 04 with managed identity: apply + check {time.monotonic() - t0:.1f} s")
    return {"plan": p, "applied": applied, "out": out}


def extension_principal(site) -> str:
    return workload_identity.extension(site, site.egress_level)["identity"]["principalId"].lower()


def assignments(site, role: str) -> list[dict]:
    return [a for a in role_assignments(workload_identity.store_file(site)) if a["role"] == role]


def rbac_log(site) -> str:
    return kafka._paths(site)["rbac_log"].read_text()


def wait_for(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def failing(out) -> list[dict]:
    """The failed evidence rows, but for the proof's volume check (how many messages a window judged, against the
    site's minimum), which is not about identity and depends on how busy the machine is."""
    return [r for r in out["evidence"] if not r["ok"] and not r["check"].startswith("messages judged ")]


def stage_failure(out) -> str:
    with pytest.raises(StageFailed) as exc:
        telemetry.require_delivered(out)
    return str(exc.value)


def eventhubs_hint(out) -> str:
    return " ".join(r["hint"] for r in out["evidence"] if not r["ok"] and r["level"] == "eventhubs")


def restore(site) -> None:
    """The stage's own plan and apply put the lab right (the records, the assignments, the stand-ins)."""
    p = telemetry.plan(site)
    telemetry.run(p, site)
    out = telemetry.check(site, settle=20.0)
    assert failing(out) == [], failing(out)


def test_the_egress_dataflow_sends_with_the_extensions_identity_through_oauthbearer(deployed, lab):
    site, p, out = lab, deployed["plan"], deployed["out"]
    assert failing(out) == [], failing(out)
    hub = out["analysis"].hops[out["analysis"].hops["kind"] == "kafka"]
    assert len(hub) == 1 and hub["arrived"].iloc[0] == hub["judged"].iloc[0] > 0 and hub["lost"].iloc[0] == 0
    actions = [(s.level, s.action) for s in p.changes]
    assert ("level4", "assign Azure Event Hubs Data Sender") in actions
    assert ("eventhubs", "assign Azure Event Hubs Data Receiver") in actions
    # the identity is the principal ARM reports on the level4 AIO extension; Entra knows it, the file is private
    principal = extension_principal(site)
    ident = workload_identity.identity_path(lab_telemetry.records_dir(site), "level4")
    assert oct(ident.stat().st_mode & 0o777) == "0o600"
    assert workload_identity.principals(ident) == {"system": principal, "user": {}}
    # the role assignments ARM holds, as ACLs: the extension may write, the operator (the lab's SP) may read
    sp = json.loads((commands.state_dir(site) / "cloud" / "entra.json").read_text())["clients"]
    operator = entra.service_principal_oid(next(iter(sp)))
    assert [a["principal"] for a in assignments(site, SENDER)] == [principal]
    assert [a["principal"] for a in assignments(site, RECEIVER)] == [operator]
    log = rbac_log(site)
    assert f"allow User:{principal} WRITE on topic *" in log and f"allow User:{operator} READ on group *" in log
    # the dataflow asked Entra itself, with the identity's client id, and holds no connection string
    df = services.table(site)["level4/telemetry-dataflow"]
    env = Path(f"/proc/{df.pid}/environ").read_bytes().split(b"\0")
    assert not [e for e in env if e.startswith(kafka.ENV_VAR.encode() + b"=")]
    out_log = Path(df.log).read_text()
    assert f"system-assigned managed identity {entra.identity_client_id(principal)}" in out_log
    assert f"token scope https://{kafka.host(site)}/.default" in out_log
    # the broker validated its token and named the principal by oid; the verify consumer read with the operator's
    # token, not the connection string (whose user is a super user, so a fallback would read the hub all the same)
    broker_log = kafka._paths(site)["log"].read_text()
    assert f"Successfully authenticate User={principal}" in broker_log
    assert f"Successfully authenticate User={operator}" in broker_log
    assert telemetry.plan(site).empty


def test_without_the_data_sender_assignment_the_egress_hop_fails_naming_role_and_scope(deployed, lab):
    site = lab
    principal = extension_principal(site)
    sender = assignments(site, SENDER)
    assert len(sender) == 1
    t0 = time.monotonic()
    assert context.build(site).azure.call("layernet.lab.eventhubs_rbac:delete_assignment", assignment_id=sender[0]["id"])
    assert wait_for(lambda: f"revoke User:{principal} WRITE on topic *" in rbac_log(site))
    print(f"\nrole assignment deleted -> ACL revoked in {time.monotonic() - t0:.2f} s")
    out = telemetry.check(site, settle=5.0)
    msg = stage_failure(out)
    scope = kafka.namespace_id(site).lower()
    assert msg.startswith("level4: Azure Event Hubs Data Sender ") and "is missing" in msg
    assert f"needs azure event hubs data sender on {scope}" in msg.lower() and principal in msg
    print(f"stage failure: {msg}")
    hops = out["analysis"].hops.set_index("name")
    assert hops.loc["level4 broker", "lost"] == 0 and hops.loc["level4 broker", "arrived"] > 0
    hub = [n for n in hops.index if n.startswith("event hub")][0]
    assert hops.loc[hub, "arrived"] == 0 and hops.loc[hub, "lost_here"] > 0
    # the broker's authorizer said no to that principal (metadata first: DESCRIBE, then WRITE)
    assert re.search(f"Event Hubs refused: User:{principal} denied (DESCRIBE|WRITE) on {HUB_TOPIC}", eventhubs_hint(out))
    restore(site)
    assert f"allow User:{principal} WRITE on topic *" in rbac_log(site).rsplit("revoke", 1)[1]


def test_a_token_for_the_wrong_audience_is_refused(deployed, lab):
    site = lab
    d = lab_telemetry.records_dir(site)
    records = {p.stem: json.loads(p.read_text()) for p in d.glob("level*.json") if "." not in p.stem}
    good = json.loads(json.dumps(records))
    for r in records["level4"]:
        auth = r["body"]["properties"].get("kafkaSettings", {}).get("authentication")
        if auth:
            auth["systemAssignedManagedIdentitySettings"] = {"audience": "https://management.azure.com"}
    try:
        lab_telemetry.install(site, records)
        out = telemetry.check(site, settle=5.0)
        msg = stage_failure(out)
        assert msg.startswith("eventhubs: ")
        want = ("for https://management.azure.com refused: Audience (aud) claim [https://management.azure.com] "
                f"doesn't contain an acceptable identifier. Expected https://{kafka.host(site)} as an aud value")
        assert want in msg, msg
        print(f"\nstage failure: {msg}")
    finally:
        lab_telemetry.install(site, good)


def test_an_expired_token_is_refused(deployed, lab):
    site = lab
    client = entra.identity_client_id(extension_principal(site))
    entra.set_clock_offset(commands.state_dir(site) / "cloud", -7200, [client])
    try:
        lab_telemetry.restart(site, "level4/dataflow")            # a new token, from the skewed clock
        out = telemetry.check(site, settle=5.0)
        msg = stage_failure(out)
        assert msg.startswith("eventhubs: ") and "refused: The JWT is no longer valid" in msg, msg
        assert "is on or after the Expiration Time" in msg
        print(f"\nstage failure: {msg}")
    finally:
        entra.set_clock_offset(commands.state_dir(site) / "cloud", 0)
        lab_telemetry.restart(site, "level4/dataflow")


def test_a_user_assigned_identity_sends_with_its_own_token_and_role(deployed, lab):
    site = lab
    state = commands.state_dir(site) / "cloud"
    ua_principal, ua_client = "7a1e0000-0000-4000-8000-00000000aa01", "7a1e0000-0000-4000-8000-0000000c11e1"
    uami = (f"/subscriptions/x/resourceGroups/{site.azure.resource_group}/providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/dataflow-ua")
    entra.register_identity(state / "entra.json", ua_principal, uami, kind="UserAssigned", client_id=ua_client)
    rid = context.build(site).azure.call("layernet.lab.eventhubs_rbac:put_assignment", scope=kafka.namespace_id(site),
                                      role=SENDER, principal=ua_principal)
    assert wait_for(lambda: f"allow User:{ua_principal} WRITE on topic *" in rbac_log(site))
    d = lab_telemetry.records_dir(site)
    records = {p.stem: json.loads(p.read_text()) for p in d.glob("level*.json") if "." not in p.stem}
    good = json.loads(json.dumps(records))
    for r in records["level4"]:
        kafka_settings = r["body"]["properties"].get("kafkaSettings")
        if kafka_settings:
            kafka_settings["authentication"] = {"method": "UserAssignedManagedIdentity", "userAssignedManagedIdentitySettings": {
                "clientId": ua_client, "tenantId": kafka.tenant(site)}}
    try:
        lab_telemetry.install(site, records)
        out = telemetry.check(site, settle=20.0)
        assert failing(out) == [], failing(out)
        assert workload_identity.principals(workload_identity.identity_path(d, "level4"))["user"] == {ua_client: ua_principal}
        df = services.table(site)["level4/telemetry-dataflow"]
        assert f"user-assigned managed identity {ua_client}" in Path(df.log).read_text()
        assert f"Successfully authenticate User={ua_principal}" in kafka._paths(site)["log"].read_text()
    finally:
        context.build(site).azure.call("layernet.lab.eventhubs_rbac:delete_assignment", assignment_id=rid)
        lab_telemetry.install(site, good)


def test_a_broker_that_cannot_reach_its_jwks_fails_the_stage_naming_it(deployed, lab):
    site = lab
    kafka.stop(site)
    kafka.rehearse_jwks_unreachable(site)
    try:
        p = telemetry.plan(site)
        assert [s.action for s in p.changes] == [records.START_SERVICES]
        with pytest.raises(StageFailed) as exc:
            telemetry.run(p, site)
        msg = str(exc.value)
        assert f"cannot reach its JWKS {kafka.jwks_url(site)}" in msg, msg
        assert "UnknownHostException: login.microsoftonline.com" in msg
        assert "org.apache.kafka.sasl.oauthbearer.allowed.urls" not in msg
        print(f"\nstage failure: {msg}")
    finally:
        kafka.rehearse_jwks_unreachable(site, on=False)
    restore(site)


def test_the_connection_string_mode_still_passes_on_the_same_lab(deployed, lab):
    site = site_with("telemetry.eventhubs.auth=connection_string")
    p = telemetry.plan(site)
    assert not [s for s in p.steps if s.action == "assign Azure Event Hubs Data Receiver"]
    telemetry.run(p, site)
    out = telemetry.check(site, settle=20.0)
    assert failing(out) == [], failing(out)
    df = services.table(site)["level4/telemetry-dataflow"]
    env = Path(f"/proc/{df.pid}/environ").read_bytes().split(b"\0")
    assert [e for e in env if e.startswith(kafka.ENV_VAR.encode() + b"=")]
    assert not workload_identity.identity_path(lab_telemetry.records_dir(site), "level4").exists()
    assert os.environ.get(kafka.ENV_VAR) is None          # the test process never held it
