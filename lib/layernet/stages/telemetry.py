"""Stage 04 · Asset telemetry: plan -> apply(plan) -> verify, from the OPC UA asset to the event hub.

What a notebook calls:

    p = telemetry.plan(site)                    # desired ARM records (render/telemetry) vs live, changes and skips
    done = telemetry.run(p, site, RUN)          # exactly p's PUTs; then the cluster runs them (the lab: stand-ins)
    out = telemetry.check(site)                 # provisioning states + a window of message-level proof

The desired state is `layernet.render.telemetry` per level (ADR device and asset, the broker listener of the MQTT
hops, the dataflow endpoints, the dataflows, the Event Hubs Data Sender role), plus the Event Hubs namespace and
hub. Plan and apply talk to ARM through the generic resource client where the target makes its Azure calls (the
lab: its jump box, where the real names resolve to the lab's cloud). After the PUTs the target is told
(`Target.install_telemetry`): a real site's AIO runs the connector and dataflows itself; the lab starts its OPC
PLC, connector and dataflow stand-ins in the level namespaces, reading the same records, and its Kafka broker as
the event hub.

Verify is one code path for both: the provisioning state of every record, then MQTT taps on each level's broker
(from the admin network, where this process runs) and a Kafka consumer on the Event Hubs endpoint (where the
Azure calls run: lab connection string, or an Entra token on a real site) for one window; the analysis
(`layernet.telemetry.verify`) gives evidence rows per hop, loss, end-to-end and per-hop latency, and names the hop
where messages stopped.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Optional

from layernet import targets
from layernet.apiversions import api_version
from layernet.azure import aio as az_aio, aio_sdk, eventhubs_access as access
from layernet.azure.aio import INSTANCE_EXTENSION
from layernet.azure.aio_sdk import resource_skip
from layernet.azure.clients import Arm, as_dict, pick
from layernet.errors import StageFailed
from layernet.evidence import evidence, evidence_table, failed  # noqa: F401  (failed: shared by every stage)
from layernet.plan import Plan, Progress, Step, fingerprint, refuse_drift
from layernet.render.telemetry import AioNames, ZERO_SUBSCRIPTION, _rg_id, render
from layernet.site.telemetry import eventhubs_namespace
from layernet.stages import telemetry_objects as objects
from layernet.stages.base import apply_unless_dry, begin, progress_printer, run_link, with_subscription  # noqa: F401
from layernet.telemetry import charts
from layernet.telemetry.verify import MqttTap, Record, analyse, broker_addresses, consume_kafka, evidence_rows, kafka_consumer_config, routes

STAGE = "telemetry"
EVENTHUB_API = api_version("Microsoft.EventHub/namespaces/eventhubs")      # the one table (layernet.apiversions)
START_SERVICES = "start telemetry services in the cluster"
ACTIONS = {   # the last type of a record's id -> the step's verb phrase
    "namespaces": "create Event Hubs namespace", "eventhubs": "create event hub", "devices": "create device",
    "assets": "create asset", "authentications": "create broker authentication",
    "listeners": "create broker listener", "dataflowEndpoints": "create dataflow endpoint",
    "dataflows": "create dataflow", "roleAssignments": "assign Azure Event Hubs Data Sender",
}
SENDER_ACTION = ACTIONS["roleAssignments"]      # the AIO extension's identity: read from ARM at apply
WINDOW_S = 6.0                # the shortest proof window (seconds)
GRACE_S = 2.0                 # the window's tail whose messages are not judged (telemetry.verify.analyse)
PROVIDERS = ("Microsoft.EventHub", "Microsoft.DeviceRegistry", "Microsoft.IoTOperations")


# ----------------------------------------------------------------------------------------------- desired
_with_subscription = with_subscription     # the site with the subscription the Arm talks to (render puts it in every id)


def _names(site) -> dict:
    """The names stage 03 gave each level's deployment (instance, custom location, ADR namespace)."""
    return {r.level: AioNames(r.instance, r.custom_location, r.adr_namespace) for r in az_aio.levels(site)}


def extension_id(site, level: str) -> str:
    """How the plan names a level's AIO extension: it is found by extension type, whatever its name
    (`az iot ops create` names it azure-iot-operations-<suffix>)."""
    cluster = site.aio.for_level(site, level).cluster
    return f"the {INSTANCE_EXTENSION} extension of connected cluster {cluster}"


def eventhub_records(site) -> list[dict]:
    """The Event Hubs namespace and hub the egress dataflow sends to (a real site usually has them: skips)."""
    tel = site.telemetry
    if not any(f.destination == "eventhubs" for f in tel.dataflows):
        return []
    ns = eventhubs_namespace(tel, site.azure.eventhubs_namespace)
    ns_id = f"{_rg_id(site)}/providers/Microsoft.EventHub/namespaces/{ns}"
    return [{"id": ns_id, "apiVersion": EVENTHUB_API,
             "body": {"location": site.azure.location, "sku": {"name": "Standard", "tier": "Standard"},
                      "properties": {"kafkaEnabled": True}}},
            {"id": f"{ns_id}/eventhubs/{tel.eventhubs.hub}", "apiVersion": EVENTHUB_API,
             "body": {"properties": {"partitionCount": 1, "messageRetentionInDays": 1}}}]


ADOPTED = ("create Event Hubs namespace", "create event hub")
SKU_RANK = {"basic": 0, "standard": 1, "premium": 2}


def adoption_notes(rec: dict, have: dict) -> list[str]:
    """How an existing Event Hubs namespace or hub differs from what the site would create. It is adopted as it
    is, never changed: a Standard hub's partition count cannot change (and never shrink), and the SKU and
    retention of a plant's namespace are someone's paid, production settings."""
    want, notes = rec["body"], []
    if rec["action"] == "create Event Hubs namespace":
        w, h = pick(want, "sku", "name") or "", pick(have, "sku", "name") or "?"
        if h.lower() != w.lower():
            notes.append(f"SKU {h} (the site would create {w}): kept" +
                         ("; the Kafka endpoint needs Standard or higher" if SKU_RANK.get(h.lower(), 1) < 1 else ""))
        if pick(have, "properties", "kafkaEnabled") is False:
            notes.append("kafkaEnabled is false: the dataflow's Kafka endpoint will not answer")
        return notes
    for field, unit, why in (("partitionCount", "partition(s)", "partitions cannot be decreased"),
                             ("messageRetentionInDays", "day(s) retention", "")):
        w, h = pick(want, "properties", field), pick(have, "properties", field)
        if h is not None and h != w:
            notes.append(f"{h} {unit} (the site would create {w}): kept" + (f"; {why}" if why and h > w else ""))
    return notes


def desired(site, principals: Optional[dict[str, str]] = None, operator: Optional[dict] = None) -> list[dict]:
    """Every record in apply order, each with its level and action: the event hub first (on the egress level),
    then each level's records as render/telemetry gives them, egress level first; with a managed identity, the
    operator's Data Receiver assignment last (`operator`: from `eventhubs_access.operator`)."""
    out = [{**r, "level": site.egress_level} for r in eventhub_records(site)]
    for level, recs in render(site, _names(site), principals or {}).items():
        out += [{**r, "level": level} for r in recs]
    scope = receiver_scope(site)
    if scope and (operator or {}).get("principal"):
        out.append({**access.receiver_record(site.azure.subscription_id or "", scope, operator["principal"],
                                             operator.get("type", "ServicePrincipal")), "level": "eventhubs"})
    for r in out:
        r["action"] = ACTIONS.get(r["id"].rstrip("/").split("/")[-2], "create resource")
        if r["action"].startswith("assign") and access.role_of(r["body"]) == access.RECEIVER:
            r["action"] = access.ASSIGN_RECEIVER
        r["name"] = "/".join(r["id"].rstrip("/").split("/")[-1:])
    return out


def receiver_scope(site) -> Optional[str]:
    """Where the operator needs Azure Event Hubs Data Receiver to read the hub (the namespace), when the site's
    Event Hubs uses Entra identities (auth: managed_identity); None otherwise."""
    tel = site.telemetry
    if tel.eventhubs.auth != "managed_identity" or not any(f.destination == "eventhubs" for f in tel.dataflows):
        return None
    return access.namespace_scope(site.azure.subscription_id or ZERO_SUBSCRIPTION, site.azure.resource_group,
                                  eventhubs_namespace(tel, site.azure.eventhubs_namespace))


def records_by_level(site, principals: Optional[dict[str, str]] = None) -> dict[str, list[dict]]:
    """The rendered records per level (no Event Hubs records): what the cluster's connector and dataflows run."""
    return render(site, _names(site), principals or {})


# ----------------------------------------------------------------------------------------------- live
class Live:
    """Reads and writes records by id through the generic resource client (one client per thread)."""

    def __init__(self, arm: Arm):
        self.arm = arm
        self._local = threading.local()

    @property
    def client(self):
        if not hasattr(self._local, "c"):
            self._local.c = self.arm.resources()
        return self._local.c

    def get(self, rid: str, api: str) -> Optional[dict]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return as_dict(self.client.resources.get_by_id(rid, api_version=api))
        except ResourceNotFoundError:
            return None

    def put(self, rid: str, api: str, body: dict) -> dict:
        return as_dict(self.client.resources.begin_create_or_update_by_id(rid, api_version=api, parameters=body).result())

    def extension_of_type(self, site, level: str, ext_type: str) -> Optional[dict]:
        """The level's cluster extension of `ext_type` (found by type, never by name), or None."""
        from azure.core.exceptions import ResourceNotFoundError

        if not hasattr(self._local, "ext"):
            self._local.ext = self.arm.extensions()
        cluster = site.aio.for_level(site, level).cluster
        try:
            exts = [as_dict(e) for e in self._local.ext.extensions.list(
                site.azure.resource_group, "Microsoft.Kubernetes", "connectedClusters", cluster)]
        except ResourceNotFoundError:
            return None
        return next((e for e in exts if (pick(e, "properties", "extensionType") or "").lower() == ext_type), None)


def _principals(site, live: Live) -> dict[str, str]:
    """The AIO extension's managed identity per level that sends to Event Hubs (read from ARM)."""
    out = {}
    for lv in site.chain:
        if any(f.level == lv.name and f.destination == "eventhubs" for f in site.telemetry.dataflows):
            ext = live.extension_of_type(site, lv.name, INSTANCE_EXTENSION) or {}
            p = pick(ext, "identity", "principalId")
            if p:
                out[lv.name] = p
    return out


def _listener_port_taken(rec: dict, lives: dict) -> Optional[str]:
    """A listener record whose port another listener of the same broker already serves the same way (stage 03's
    anonymous 1883 listener, the sample's east-west port): the name of that listener."""
    port = (pick(rec["body"], "properties", "ports") or [{}])[0]
    base = rec["id"].rsplit("/", 1)[0]
    for rid, live in lives.items():
        if rid.rsplit("/", 1)[0].lower() != base.lower() or rid.lower() == rec["id"].lower() or not live:
            continue
        for p in pick(live, "properties", "ports") or []:
            if p.get("port") == port.get("port") and bool(p.get("tls")) == bool(port.get("tls")) \
                    and p.get("authenticationRef") == port.get("authenticationRef"):
                return rid.rsplit("/", 1)[1]
    return None


def observe(site, arm: Arm) -> dict:
    """{"principals", "resources": {id: {"state", "missing"} | None}, "listeners": {id: live}, "running"}."""
    from concurrent.futures import ThreadPoolExecutor

    site = _with_subscription(site, arm.subscription_id)
    live = Live(arm)
    providers = {}
    for ns in PROVIDERS:
        try:
            providers[ns] = pick(as_dict(live.client.providers.get(ns)), "registrationState") or "NotRegistered"
        except Exception:  # noqa: BLE001 - an unknown namespace reads as not registered
            providers[ns] = "NotRegistered"
    principals = _principals(site, live)
    operator = access.operator(arm) if receiver_scope(site) else None
    wanted = desired(site, principals, operator)
    # the brokers' other listeners (stage 03's), to see whether a port is already served
    others = {}
    for r in wanted:
        if r["action"] == "create broker listener":
            base = r["id"].rsplit("/", 1)[0]
            for name in aio_sdk.LISTENERS:
                others[f"{base}/{name}"] = r["apiVersion"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda r: live.get(r["id"], r["apiVersion"]), wanted))
        listeners = dict(zip(others, pool.map(lambda i: live.get(i, others[i]), others)))
    out = {}
    for r, have in zip(wanted, got):
        if have is None:
            out[r["id"]] = None
            continue
        if r["action"] in ADOPTED:      # an existing namespace or hub is adopted, compared, never changed
            out[r["id"]] = {"state": pick(have, "properties", "provisioningState") or "unknown", "missing": [],
                            "adopted": adoption_notes(r, have)}
            continue
        want = json.loads(json.dumps(r["body"]))
        if r["action"] == SENDER_ACTION and principals.get(r["level"]) is None:
            want["properties"].pop("principalId", None)
        out[r["id"]] = {"state": pick(have, "properties", "provisioningState") or "unknown",
                        "missing": aio_sdk.differences(want, have)}
        if r["action"] == "create broker listener":
            listeners[r["id"]] = have
    return {"providers": providers, "principals": principals, "operator": operator, "resources": out,
            "listeners": {k: pick(v, "properties", "ports") for k, v in listeners.items() if v},
            "running": targets.get_target(site).telemetry_running()}


def steps(site, state: dict) -> list[Step]:
    """The plan from the observed state: one step per record (change or skip with the reason), then, where the
    target runs the telemetry services itself (the lab), starting them when a record changed or they stopped."""
    out: list[Step] = [Step("site", "register provider", ns, f"POST /subscriptions/{site.azure.subscription_id}"
                            f"/providers/{ns}/register", skip=reg == "Registered", reason=reg)
                       for ns, reg in state.get("providers", {}).items()]
    listeners = {k: {"properties": {"ports": v}} for k, v in state.get("listeners", {}).items()}
    for r in desired(site, state.get("principals"), state.get("operator")):
        live = state["resources"].get(r["id"])
        detail = f"PUT {r['id']}?api-version={r['apiVersion']} " + json.dumps(r["body"], sort_keys=True,
                                                                             separators=(",", ":"))
        taken = _listener_port_taken(r, listeners) if r["action"] == "create broker listener" else None
        if live is None and taken:
            skip, why = True, f"listener {taken} already serves this port the same way (stage 03)"
        elif live is not None and "adopted" in live:
            notes = live["adopted"]
            skip, why = True, (f"exists ({live['state']}): adopted as it is, never changed" +
                               ("; notes: " + "; ".join(notes) if notes else "; same as the site's"))
        else:
            skip, why = resource_skip(live)
        if r["action"] == SENDER_ACTION and not state.get("principals", {}).get(r["level"]):
            skip, why = False, f"needs the principal of {extension_id(site, r['level'])} (read at apply)"
        out.append(Step(r["level"], r["action"], r["name"], detail, skip=skip, reason=why))
    scope = receiver_scope(site)
    who = state.get("operator") or {}
    if scope and not who.get("principal"):
        out.append(Step("eventhubs", access.ASSIGN_RECEIVER, "the operator", "the verify consumer reads the hub as "
                        "the identity the stage's Azure calls use", skip=True,
                        reason=f"MISSING: {access.missing_text(access.RECEIVER, scope, 'the operator')} to read the "
                               f"hub, and the stage cannot tell who the operator is ({who.get('error', 'unknown')}): "
                               f"{access.assign_command(access.RECEIVER, scope, None)}"))
    running = state.get("running")
    if running is not None:
        changed = any(not s.skip for s in out)
        out.append(Step("site", START_SERVICES, "OPC PLC, connector, dataflows, event hub",
                        "start each level's stand-ins from the rendered records",
                        skip=bool(running) and not changed,
                        reason="records changed" if changed else ("running" if running else "not running")))
    return out


# ----------------------------------------------------------------------------------------------- plan / apply
def _plain(line: str) -> None:
    """Progress lines that come back from where the calls ran already carry the stage's prefix."""
    print(line, flush=True)


def _here(arm) -> bool:
    return arm is not None


def _arm(site, arm: Optional[Arm]) -> Arm:
    if arm is not None:
        return arm
    return targets.get_target(site).arm()


def declared(site) -> bool:
    """The site declares telemetry (an asset or a dataflow). Without any, the stage has nothing to do: no
    provider, no Event Hubs, no services, and its verdict says so."""
    return bool(site.telemetry.assets or site.telemetry.dataflows)


NOTHING_DECLARED = "the site declares no telemetry (no telemetry.assets, no telemetry.dataflows): nothing to do"


def plan(site, arm: Optional[Arm] = None) -> Plan:
    """Read the live state and list every step in order (changes and skips with reasons). Changes nothing.
    Runs where the target makes its Azure calls (the lab: its jump box). Empty, without a call, for a site that
    declares no telemetry."""
    if not declared(site):
        return Plan(STAGE, [], observed=fingerprint({}), executor="none")
    if not _here(arm):
        tgt = targets.get_target(site)
        return with_cluster_objects(site, tgt, Plan.from_dict(tgt.azure_call("layernet.stages.telemetry:_plan_remote")))
    state = observe(site, arm)
    return Plan(STAGE, steps(_with_subscription(site, arm.subscription_id), state), observed=fingerprint(state),
                executor="sdk")


def with_cluster_objects(site, tgt, p: Plan) -> Plan:
    """The plan with a step per cluster object the X.509 records name (read here, through each level's Kubernetes
    API), placed before the records that refer to them; what was read is kept to refuse drift at apply."""
    state = objects.observe(site, tgt)
    if not state:
        return p
    extra = objects.steps(site, state, objects.creates(tgt))
    at = next((i for i, st in enumerate(p.steps) if st.action != "register provider"), len(p.steps))
    return Plan(p.stage, p.steps[:at] + extra + p.steps[at:], p.observed, p.executor,
                {**p.context, "cluster_objects": fingerprint(state)})


def _apply_cluster_objects(site, tgt, plan: Plan, progress: Progress) -> tuple[Plan, list[dict]]:
    """Create the plan's cluster objects (refusing when what the plan read changed), and the rest of the plan."""
    rest = Plan(plan.stage, [s for s in plan.steps if s.action not in objects.ACTIONS], plan.observed, plan.executor,
                plan.context)
    if "cluster_objects" not in plan.context:
        return rest, []
    refuse_drift(Plan(plan.stage, observed=plan.context["cluster_objects"]), objects.observe(site, tgt))
    todo = [s for s in plan.changes if s.action in objects.ACTIONS]
    rows = objects.apply_steps(site, tgt, todo, progress) if todo else []
    bad = [r for r in rows if not r["ok"]]
    if bad:
        raise StageFailed("; ".join(f"{r['level']}: {r['action']} {r['target']} failed: {r['output']}" for r in bad))
    return rest, rows


def _write(record: Optional[Path], level: str, rid: str, body: dict, result: Any) -> str:
    if not record:
        return ""
    d = record / "resources" / level
    d.mkdir(parents=True, exist_ok=True)
    path = d / (rid.split("/providers/", 1)[-1].replace("/", "~") + ".json")
    path.write_text(json.dumps({"id": rid, "request": body, "response": result}, indent=1, sort_keys=True))
    return str(path)


def apply(plan: Plan, site, run_dir: Optional[Path] = None, arm: Optional[Arm] = None,
          progress: Optional[Progress] = None) -> list[dict]:
    """Run exactly the plan's changes in order (PUT, wait for the long-running operation); refuse when the live
    state drifted since the plan. Requests and answers land in run_dir/telemetry/resources/<level>/."""
    progress = progress or progress_printer("▸ telemetry ")
    if not declared(site):
        progress(NOTHING_DECLARED)
        return []
    if not _here(arm):
        tgt = targets.get_target(site)
        plan, made = _apply_cluster_objects(site, tgt, plan, progress)
        return made + tgt.azure_call("layernet.stages.telemetry:_apply_remote", progress=_plain,
                                     plan=plan.to_dict(), run_dir=str(run_dir) if run_dir else None)
    state = observe(site, arm)
    refuse_drift(plan, state)
    s = _with_subscription(site, arm.subscription_id)
    tgt = targets.get_target(s)
    live = Live(arm)
    record = Path(run_dir) / STAGE if run_dir else None
    principals = dict(state["principals"])
    recs = {(r["level"], r["action"], r["name"]): r for r in desired(s, principals, state.get("operator"))}
    changes = plan.changes
    total = len(changes)
    index = {id(st): i for i, st in enumerate(changes, 1)}
    lock = threading.Lock()
    done: dict[int, dict] = {}

    def one(step: Step) -> dict:
        i = index[id(step)]
        with lock:
            progress(f"[{i}/{total}] {step.level}: {step.action} {step.target}")
        row = _run_step(step, s, arm, live, tgt, recs, principals, record)
        done[i] = row
        with lock:
            progress(f"[{i}/{total}] {step.level}: {step.action} " + (
                f"done in {row['seconds']} s" + (f" ({row['output']})" if row["output"] else "")
                if row["ok"] else f"FAILED: {row['output']}"))
        return row

    from concurrent.futures import ThreadPoolExecutor

    for wave in waves(changes):
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, wave))
        bad = [done[index[id(st)]] for st in wave if not done[index[id(st)]]["ok"]]
        if bad:
            where = f" Requests and answers: {record / 'resources'}." if record else ""
            raise StageFailed("; ".join(f"{r['level']}: {r['action']} {r['target']} failed: {r['output']}"
                                        for r in bad) + "." + where)
    if not changes:
        progress("nothing to change: every record is in the desired state")
    return [done[i] for i in sorted(done)]


WAVE = {"register provider": 0, "create Event Hubs namespace": 1, "create device": 1,
        "create broker authentication": 1, "create dataflow endpoint": 1, "create event hub": 2,
        "create broker listener": 2, "create asset": 2, "create dataflow": 2,
        "assign Azure Event Hubs Data Sender": 2, access.ASSIGN_RECEIVER: 2, START_SERVICES: 3}


def waves(changes: list[Step]) -> list[list[Step]]:
    """The changes in waves: a wave starts when the one before it succeeded; within a wave the steps run side by
    side (they do not refer to each other: devices before assets, endpoints before dataflows, the namespace before
    its hub and role assignment, every record before the services that run them)."""
    out: dict[int, list[Step]] = {}
    for st in changes:
        out.setdefault(WAVE.get(st.action, 4), []).append(st)
    return [out[k] for k in sorted(out)]


def _run_step(step: Step, s, arm: Arm, live: Live, tgt, recs: dict, principals: dict, record) -> dict:
    t0 = time.monotonic()
    note, state_, path, ok = "", "", "", True
    if step.action == "register provider":
        live.client.providers.register(step.target)
        while True:
            state_ = pick(as_dict(live.client.providers.get(step.target)), "registrationState")
            if state_ == "Registered" or time.monotonic() - t0 > 120:
                break
            time.sleep(0.5)
        ok = state_ == "Registered"
        note = "" if ok else f"{step.target} still {state_} after 120 s"
    elif step.action == START_SERVICES:
        try:
            note = tgt.install_telemetry(records_by_level(s, _principals(s, live))) or ""
            state_ = "running"
        except Exception as exc:  # noqa: BLE001 - the stand-ins' failure is the step's outcome
            ok, note, state_ = False, " ".join(str(exc).split())[:600], "failed"
    else:
        r = recs[(step.level, step.action, step.target)]
        body = json.loads(json.dumps(r["body"]))
        if step.action == SENDER_ACTION:         # the extension's principal, read from ARM now
            p = principals.get(step.level) or _principals(s, live).get(step.level)
            if not p:
                ok, note = False, f"{extension_id(s, step.level)} has no managed identity principal"
            body["properties"]["principalId"] = p
        if ok:
            try:
                result = live.put(r["id"], r["apiVersion"], body)
                state_ = pick(result, "properties", "provisioningState") or "Succeeded"
                ok = state_ == "Succeeded"
                note = "" if ok else f"{step.target} is {state_}"
            except Exception as exc:  # noqa: BLE001 - an ARM error is the step's outcome
                result = {"error": getattr(exc, "message", None) or str(exc)}
                ok, state_, note = False, "Failed", " ".join(str(result["error"]).split())[:400]
                if step.action.startswith("assign") and "RoleAssignmentExists" in str(result["error"]):
                    ok, state_, note = True, "Succeeded", "the principal already holds this role on the scope"
            path = _write(record, step.level, r["id"], body, result)
        if ok and step.action == "create broker listener":
            inst = r["id"].split("/instances/", 1)[1].split("/", 1)[0]
            c = aio_sdk.SdkClients(arm, s.azure.resource_group)
            note = tgt.aio_listeners(step.level, c.listeners(inst), c.authentications(inst)) or ""
    return {"level": step.level, "action": step.action, "target": step.target, "ok": ok, "state": state_,
            "seconds": round(time.monotonic() - t0, 3), "output": note, "file": path}


def provisioning(site, arm: Optional[Arm] = None) -> list[dict]:
    """Evidence rows: the provisioning state of every record (runs where the Azure calls run)."""
    if not _here(arm):
        return targets.get_target(site).azure_call("layernet.stages.telemetry:_provisioning_remote")
    state = observe(site, arm)
    rows = []
    for r in desired(_with_subscription(site, arm.subscription_id), state["principals"], state.get("operator")):
        live = state["resources"].get(r["id"])
        if live is None and r["action"] == "create broker listener":
            continue                                  # skipped: another listener serves its port
        got = "missing" if live is None else live["state"]
        ok = got == "Succeeded" and not (live or {}).get("missing")
        hint = "run the stage's plan and apply again; the request and answer are in the run folder (telemetry/resources)"
        if r["action"].startswith("assign"):
            hint = role_hint(r) + "; " + hint
        rows.append(evidence(r["level"], f"{r['action'].split(' ', 1)[1]} {r['name']}", "Succeeded",
                             got + (f" (differs in {', '.join(live['missing'][:3])})" if live and live["missing"] else ""),
                             ok, hint=hint))
    return rows


def role_hint(rec: dict) -> str:
    """What a role assignment record is for, naming role, principal and scope."""
    role = access.role_of(rec["body"])
    principal = pick(rec["body"], "properties", "principalId") or "?"
    scope = access.scope_of(rec["id"])
    who = "the operator (the verify consumer)" if role == access.RECEIVER else \
        f"the AIO extension's identity on {rec['level']} (the egress dataflow)"
    return (f"{access.missing_text(role, scope, who + ' ' + principal)}: without it Event Hubs refuses its "
            f"{'reads' if role == access.RECEIVER else 'messages'}")


def role_rows_only(rows: list[dict]) -> bool:
    """Every failing row is a role assignment: the message window still runs, to show what the missing role
    breaks (a hop that stops at the event hub, or a consumer that may not read)."""
    bad = [r for r in rows if not r["ok"]]
    return bool(bad) and all(r["check"].startswith(("Azure Event Hubs Data", "assign")) for r in bad)


# ---- the same calls, made where the target's Azure calls run (JSON in and out)
def _plan_remote(site) -> dict:
    return plan(site, arm=_arm(site, None)).to_dict()


def _apply_remote(site, plan: dict, run_dir=None) -> list[dict]:
    return apply(Plan.from_dict(plan), site, run_dir=Path(run_dir) if run_dir else None, arm=_arm(site, None))


def _provisioning_remote(site) -> list[dict]:
    return provisioning(site, arm=_arm(site, None))


# ----------------------------------------------------------------------------------------------- the message proof
READY = "telemetry: kafka consumer assigned"


def consumer_config(site) -> dict:
    """The Event Hubs Kafka consumer settings where the Azure calls run. With `auth: managed_identity` the
    operator reads with an Entra token (OAUTHBEARER) of the credential the stage's Azure calls use
    (DefaultAzureCredential on a plant, the lab's service principal on the lab), so it needs Azure Event Hubs Data
    Receiver; with `auth: connection_string`, the target's connection string (the lab's, or the site's variable)."""
    cs, ca = targets.get_target(site).eventhubs_client()
    if receiver_scope(site):
        return kafka_consumer_config(site, ca=ca, credential=_arm(site, None).cred(), group="layernet-verify")
    return kafka_consumer_config(site, connection_string=cs, ca=ca, group="layernet-verify")


def _consume_remote(site, seconds: float, stop_file: Optional[str] = None) -> list[dict]:
    """Read the hub for at most `seconds`, until `stop_file` exists; prints READY once the partitions are
    assigned. Records as JSON."""
    import os

    ready, stop = threading.Event(), threading.Event()
    got: list = []
    err: list = []

    def go():
        try:
            got.extend(consume_kafka(consumer_config(site), site.telemetry.eventhubs.hub, seconds, ready, stop))
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            err.append(f"{type(exc).__name__}: {exc}")
            ready.set()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    if ready.wait(30) and not err:
        print(READY, flush=True)
    end = time.monotonic() + seconds + 30
    while t.is_alive() and time.monotonic() < end:
        if stop_file and os.path.exists(stop_file):
            stop.set()
        t.join(0.1)
    if err:
        raise StageFailed(f"the Event Hubs consumer failed: {err[0]}")
    return [{"t": r.t, "topic": r.topic, "key": r.key, "payload": r.payload.decode(errors="replace")} for r in got]


def observe_window(site, seconds: float = WINDOW_S, brokers=None, settle: float = 0.0,
                   tail: float = 1.5, min_judged: Optional[int] = None) -> tuple[list, dict]:
    """MQTT taps on every level's broker (from here: the admin network) and the Kafka consumer where the Azure
    calls run, for one window; returns (routes, {"records", "kafka_error"}) for `verify.analyse`. The consumer
    starts first; while it joins the hub, up to `settle` seconds pass until the flow reaches its last broker; it
    reads `tail` seconds beyond the taps' window."""
    import shutil
    import tempfile

    tgt = targets.get_target(site)
    route_list = routes(site)
    brokers = brokers or broker_addresses(site)
    tls = tap_tls(site, tgt)
    ready = threading.Event()
    kafka_out: dict = {}
    has_kafka = any(h.kind == "kafka" for r in route_list for h in r.hops)
    tmp = tempfile.mkdtemp(prefix="layernet-telemetry-")
    stop_file = str(Path(tmp) / "stop")

    def on_line(line: str) -> None:
        if READY in line:
            ready.set()
        else:
            print(line, flush=True)

    def consume():
        try:
            kafka_out["records"] = tgt.azure_call("layernet.stages.telemetry:_consume_remote", progress=on_line,
                                                  seconds=settle + seconds + 60.0, stop_file=stop_file)
        except Exception as exc:  # noqa: BLE001 - becomes evidence
            kafka_out["error"] = str(exc)
        ready.set()

    kt = None
    try:
        if has_kafka:
            kt = threading.Thread(target=consume, daemon=True)
            kt.start()
        if settle:
            wait_flowing(site, settle, brokers, tls=tls)
        ready.wait(60)
        topics: dict[str, set] = {}
        depth: dict[str, int] = {}
        for r in route_list:
            for h in r.hops:
                if h.kind == "mqtt":
                    topics.setdefault(h.level, set()).add(h.topic)
                    depth[h.level] = h.index
        taps = {}
        tapped = time.monotonic()
        try:
            for lv in sorted(topics, key=lambda lv: -depth.get(lv, 0)):     # downstream first
                taps[lv] = MqttTap(*brokers[lv], sorted(topics[lv]), name="layernet-stage-tap", tls=tls).start()
            time.sleep(seconds)
            if min_judged:      # a source that misses sampling ticks: go on (up to three windows) until judged
                first = [(r.hops[0].level, r.hops[0].topic) for r in route_list if r.hops and r.hops[0].kind == "mqtt"]
                end = time.monotonic() + 2 * seconds
                while time.monotonic() < end and not all(
                        sum(1 for x in list(taps[lv].records) if x.topic == tp and x.t <= time.time() - GRACE_S)
                        >= min_judged for lv, tp in first if lv in taps):
                    time.sleep(0.5)
        finally:
            got = {lv: tap.stop() for lv, tap in taps.items()}
            tapped = time.monotonic() - tapped
        if kt is not None:
            time.sleep(tail)
            Path(stop_file).touch()
            kt.join(90)
    finally:
        Path(stop_file).touch()
        shutil.rmtree(tmp, ignore_errors=True)
    krecs = [Record(d["t"], d["topic"], d["key"], d["payload"].encode()) for d in kafka_out.get("records", [])]
    records = {r.label: {h.index: (krecs if h.kind == "kafka" else got.get(h.level, [])) for h in r.hops}
               for r in route_list}
    return route_list, {"records": records, "kafka_error": kafka_out.get("error"), "window_s": round(tapped, 1)}


def proof_window(site) -> float:
    """Seconds of window that let the proof judge `telemetry.proof.min_messages` messages of every asset dataset
    at its publishing interval (with a fifth more for jitter, and the unjudged tail)."""
    need = [site.telemetry.proof.min_messages * ds.publishing_ms / 1000.0 for a in site.telemetry.assets
            for ds in a.datasets]
    return round(max([WINDOW_S] + [n * 1.2 + GRACE_S for n in need]), 1)


def judged_rows(site, analysis, seconds: float) -> list[dict]:
    """One evidence row per asset dataset: how many of its messages the proof judged, against the site's minimum."""
    want = site.telemetry.proof.min_messages
    hops = analysis.hops
    rows = []
    for a in site.telemetry.assets:
        for ds in a.datasets:
            label = f"{a.name}/{ds.name}"
            got = hops[hops["route"] == label]["judged"] if len(hops) else []
            n = int(got.max()) if len(got) else 0
            rows.append(evidence(a.level, f"messages judged {label}", f">= {want}", f"{n} judged", n >= want,
                                 hint=f"{n} of {label} judged in a {seconds:g} s window at {ds.publishing_ms} ms "
                                      f"publishing: raise the dataset's sampling and publishing rate (or lower "
                                      f"telemetry.proof.min_messages) so {want} fit"))
    return rows


def messages(site, seconds: Optional[float] = None, p99_limit_ms: Optional[float] = None, settle: float = 0.0) -> dict:
    """One window of message-level proof: {"analysis", "evidence"}. `seconds`: the window (default: long
    enough for the site's telemetry.proof.min_messages per asset dataset); `p99_limit_ms`: the end-to-end p99
    budget (default: the site's telemetry.proof.p99_ms)."""
    adaptive = seconds is None
    seconds = seconds if seconds is not None else proof_window(site)
    p99_limit_ms = p99_limit_ms if p99_limit_ms is not None else site.telemetry.proof.p99_ms
    t0 = time.time()
    route_list, got = observe_window(site, seconds, settle=settle,
                                     min_judged=site.telemetry.proof.min_messages if adaptive else None)
    seconds = got.get("window_s", seconds) if adaptive else seconds
    a = analyse(route_list, got["records"], grace_s=GRACE_S)
    rows = evidence_rows(a, p99_limit_ms) + judged_rows(site, a, seconds)
    if got["kafka_error"]:
        hint, scope = got["kafka_error"], receiver_scope(site)
        if scope and "authoriz" in hint.lower():
            hint += "; " + access.missing_text(access.RECEIVER, scope, "the operator (the identity of the stage's "
                                               "Azure calls)") + " to read the hub"
        rows.append(evidence("eventhubs", "Event Hubs consumer", "reads the hub", "failed", False, hint=hint))
    s = a.summary
    rows.append(evidence("all", "telemetry end-to-end latency", "p50 and p99 measured",
                         f"p50 {s.get('e2e_p50_ms')} ms, p99 {s.get('e2e_p99_ms')} ms", s.get("e2e_p99_ms") is not None,
                         hint="no message went end to end: see the hop rows"))
    for lvl, hint in _stopped_hints(a).items():
        for r in rows:
            if not r["ok"] and r["level"] in (lvl, "all") and hint not in r["hint"]:
                r["hint"] = f"{r['hint']}; {hint}" if r["hint"] else hint
    if any(not r["ok"] and r["level"] == "eventhubs" for r in rows):
        refused = targets.get_target(site).eventhubs_refusals(t0)
        if refused:
            note = "Event Hubs refused: " + "; ".join(refused)
            for r in rows:
                if not r["ok"] and r["level"] == "eventhubs":
                    r["hint"] = f"{r['hint']}; {note}" if r["hint"] else note
    return {"analysis": a, "evidence": rows}


def _stopped_hints(a) -> dict[str, str]:
    """Where messages stopped, per route: the last hop that saw them and the first that did not (the brokers'
    evidence), keyed by the level whose row should carry it."""
    out = {}
    df = a.hops
    for route, rows in df.groupby("route", sort=True):
        rows = rows.sort_values("hop")
        bad = rows[rows["lost_here"] > 0]
        if not len(bad):
            continue
        first = bad.iloc[0]
        prev = rows[rows["hop"] == first["hop"] - 1].iloc[0]
        level = "eventhubs" if first["kind"] == "kafka" else first["name"].split(" ", 1)[0]
        what = "Event Hubs" if first["kind"] == "kafka" else f"MQTT {prev['name'].split(' ')[0]} -> {level}"
        out[level] = (f"{what}: {route} messages reached {prev['name']} ({int(prev['arrived'])} seen on "
                      f"{prev['topic']}) and stopped before {first['name']} (dataflow {first['via']})")
    return out


# ----------------------------------------------------------------------------------------------- notebook calls
def run(plan: Plan, site, run_dir: str = "", dry_run: bool = False) -> list[dict]:
    """Apply the reviewed plan (nothing in a dry run)."""
    return apply_unless_dry(apply, plan, site, run_dir, dry_run)


def check(site, dry_run: bool = False, seconds: Optional[float] = None, settle: float = 20.0) -> dict:
    """Provisioning states, then the message-level proof for a window (after waiting up to `settle` seconds for
    the first message at the last hop, so a flow that has just started is not counted as loss). On the lab the
    site's `lab.close` rehearsals are put in place first (the infrastructure stage leaves them open).
    {"evidence": rows, "analysis": Analysis | None}."""
    if dry_run:
        print("dry run: nothing verified")
        return {"evidence": [], "analysis": None}
    if not declared(site):
        return {"evidence": [evidence("site", "telemetry", "what the site declares", NOTHING_DECLARED, True)],
                "analysis": None, "declared": False}
    rehearsed = targets.get_target(site).telemetry_rehearsals()
    if rehearsed:
        print(f"▸ telemetry rehearsal (lab.close): {rehearsed}", flush=True)
    rows = provisioning(site) + objects.rows(site, targets.get_target(site))
    if not all(r["ok"] for r in rows) and not role_rows_only(rows):
        return {"evidence": rows, "analysis": None}
    out = messages(site, seconds, settle=settle)
    return {"evidence": rows + out["evidence"], "analysis": out["analysis"]}


def tap_tls(site, tgt=None):
    """TLS and the client certificate of the proof's MQTT taps in X.509 mode (None: anonymous)."""
    if tgt is None:
        tgt = targets.get_target(site)
    try:
        return objects.tap_tls(site, tgt)
    except RuntimeError as exc:
        raise StageFailed(f"the proof's MQTT taps have no client certificate: {exc}") from None


def wait_flowing(site, timeout: float, brokers=None, tls=None) -> bool:
    """Until a message arrives at the last MQTT hop of every route (or `timeout`)."""
    last = {}
    for r in routes(site):
        mq = [h for h in r.hops if h.kind == "mqtt"]
        if mq:
            last.setdefault(mq[-1].level, set()).add(mq[-1].topic)
    brokers = brokers or broker_addresses(site)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            taps = [MqttTap(*brokers[lv], sorted(t), name="layernet-stage-wait", tls=tls).start()
                    for lv, t in last.items()]
        except OSError:
            time.sleep(0.5)
            continue
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0 and not all(t.records for t in taps):
            time.sleep(0.1)
        ok = all(t.stop() for t in taps)
        if ok:
            return True
    return False


def resource_table(plan: Plan, applied: list[dict], run_dir: str = ""):
    """One row per record of every level: planned change or skip, outcome, seconds, link to the request/answer."""
    import pandas as pd

    done = {(r["level"], r["action"], r["target"]): r for r in applied}
    rows = []
    for s in plan.steps:
        r = done.get((s.level, s.action, s.target)) or {}
        link = run_link(r.get("file", ""), run_dir)
        rows.append({"level": s.level, "resource": s.action, "name": s.target, "plan": "skip" if s.skip else "change",
                     "state": r.get("state") or ("unchanged" if s.skip else "not run"), "ok": r.get("ok", s.skip),
                     "seconds": r.get("seconds"), "note": r.get("output", "") or (s.reason if s.skip else ""),
                     "json": link})
    return pd.DataFrame(rows, columns=["level", "resource", "name", "plan", "state", "ok", "seconds", "note", "json"])


def evidence_view(out: dict):
    return evidence_table(out["evidence"])


def hop_table(out: dict):
    """Per route and hop: received, arrived, lost, unenriched, sequence gaps, hop latency."""
    import pandas as pd

    a = out.get("analysis")
    return a.hops if a is not None else pd.DataFrame()


def sankey(out: dict):
    from layernet.audit.charts import show

    a = out.get("analysis")
    return show(charts.sankey(a)) if a is not None else None


def latency_chart(out: dict):
    from layernet.audit.charts import show

    a = out.get("analysis")
    return show(charts.latency(a)) if a is not None else None


def results(plan: Plan, applied: list[dict], out: dict) -> dict:
    rows = out["evidence"]
    a = out.get("analysis")
    s = a.summary if a is not None else {}
    return {"planned_changes": len(plan.changes), "skipped": len(plan.steps) - len(plan.changes),
            "applied": len(applied), "checks": len(rows), "passed": sum(1 for r in rows if r["ok"]),
            "messages": s.get("messages", 0), "delivered": s.get("delivered", 0), "lost": s.get("lost", 0),
            "e2e_p50_ms": s.get("e2e_p50_ms"), "e2e_p99_ms": s.get("e2e_p99_ms"),
            "judged_per_dataset": {r["check"].removeprefix("messages judged "): int(r["observed"].split()[0])
                                   for r in rows if r["check"].startswith("messages judged ")},
            "cluster_objects": {f"{r['level']}: {r['check']}": r["observed"] for r in rows if r["expected"] == "exists"},
            "failed": [f"{r['level']}: {r['check']} {r['observed']}" for r in rows if not r["ok"]]}


def require_delivered(out: dict, dry_run: bool = False) -> str:
    """The verdict line; raises StageFailed naming the first failing check (the hop where messages stopped)."""
    if dry_run:
        return "dry run: plan shown, nothing applied or verified"
    msg = failed(out["evidence"])
    if msg:
        raise StageFailed(msg)
    if out.get("declared") is False:
        return NOTHING_DECLARED
    s = out["analysis"].summary
    judged = [f"{r['observed']} of {r['check'].removeprefix('messages judged ')} (at least "
              f"{r['expected'].removeprefix('>= ')})" for r in out["evidence"] if r["check"].startswith("messages judged ")]
    budget = next((r["expected"] for r in out["evidence"] if r["check"] == "telemetry end-to-end p99"), "")
    return (f"{s['messages']} message(s) judged ({'; '.join(judged)}) from the OPC UA node to the event hub with "
            f"every enrichment field, {s['lost']} lost; end to end p50 {s['e2e_p50_ms']} ms, p99 {s['e2e_p99_ms']} ms"
            + (f" (budget {budget})" if budget else ""))
