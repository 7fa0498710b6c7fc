"""Stage 04's wave executor: the plan's changes in waves (a wave starts when the one before it succeeded, its
steps side by side): register providers, PUT the records and wait for each long-running operation, then tell the
target to run the telemetry services. Requests and answers land in the run folder, telemetry/resources/<level>/."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from layernet import context
from layernet.azure import aio_sdk, eventhubs_access as access
from layernet.azure.clients import Arm, as_dict, pick
from layernet.errors import StageFailed
from layernet.plan import Progress, Step
from layernet.telemetry.arm import Live, principals as read_principals
from layernet.telemetry.records import SENDER_ACTION, START_SERVICES, desired, extension_id, records_by_level

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


def run(changes: list[Step], s, arm: Arm, state: dict, record: Optional[Path], progress: Progress) -> list[dict]:
    """Run `changes` (the plan's, in order) in waves; raises StageFailed naming the steps of the first wave that
    failed. `s`: the site with the subscription `arm` talks to; `state`: what `arm.observe` read (the
    principals, the operator); `record`: the stage's run folder (None: nothing written)."""
    cluster = context.of(s).cluster
    live = Live(arm)
    principals = dict(state["principals"])
    recs = {(r["level"], r["action"], r["name"]): r for r in desired(s, principals, state.get("operator"))}
    total = len(changes)
    index = {id(st): i for i, st in enumerate(changes, 1)}
    lock = threading.Lock()
    done: dict[int, dict] = {}

    def one(step: Step) -> dict:
        i = index[id(step)]
        with lock:
            progress(f"[{i}/{total}] {step.level}: {step.action} {step.target}")
        row = _run_step(step, s, arm, live, cluster, recs, principals, record)
        done[i] = row
        with lock:
            progress(f"[{i}/{total}] {step.level}: {step.action} " + (
                f"done in {row['seconds']} s" + (f" ({row['output']})" if row["output"] else "")
                if row["ok"] else f"FAILED: {row['output']}"))
        return row

    if any(st.action == START_SERVICES for st in changes):
        cluster.prepare_telemetry()          # what the services need and takes long starts beside the records
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


def _run_step(step: Step, s, arm: Arm, live: Live, cluster, recs: dict, principals: dict, record) -> dict:
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
            note = cluster.install_telemetry(records_by_level(s, read_principals(s, live))) or ""
            state_ = "running"
        except Exception as exc:  # noqa: BLE001 - the stand-ins' failure is the step's outcome
            ok, note, state_ = False, " ".join(str(exc).split())[:600], "failed"
    else:
        r = recs[(step.level, step.action, step.target)]
        body = json.loads(json.dumps(r["body"]))
        if step.action == SENDER_ACTION:         # the extension's principal, read from ARM now
            p = principals.get(step.level) or read_principals(s, live).get(step.level)
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
            note = cluster.aio_listeners(step.level, c.listeners(inst), c.authentications(inst)) or ""
    return {"level": step.level, "action": step.action, "target": step.target, "ok": ok, "state": state_,
            "seconds": round(time.monotonic() - t0, 3), "output": note, "file": path}


def _write(record: Optional[Path], level: str, rid: str, body: dict, result: Any) -> str:
    if not record:
        return ""
    d = record / "resources" / level
    d.mkdir(parents=True, exist_ok=True)
    path = d / (rid.split("/providers/", 1)[-1].replace("/", "~") + ".json")
    path.write_text(json.dumps({"id": rid, "request": body, "response": result}, indent=1, sort_keys=True))
    return str(path)
