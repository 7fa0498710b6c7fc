"""Stage 04 · Asset telemetry: plan -> apply(plan) -> verify, from the OPC UA asset to the event hub.

What a notebook calls:

    p = telemetry.plan(site)                    # desired ARM records (render/telemetry) vs live, changes and skips
    done = telemetry.run(p, site, RUN)          # exactly p's PUTs; then the cluster runs them (the lab: stand-ins)
    out = telemetry.check(site)                 # provisioning states + a window of message-level proof

The desired state is `layernet.render.telemetry` per level (ADR device and asset, the broker listener of the MQTT
hops, the dataflow endpoints, the dataflows, the Event Hubs Data Sender role), plus the Event Hubs namespace and
hub. Plan and apply talk to ARM through the generic resource client where the target makes its Azure calls (the
lab: its jump box, where the real names resolve to the lab's cloud). After the PUTs the target is told
(`Cluster.install_telemetry`): a real site's AIO runs the connector and dataflows itself; the lab starts its OPC
PLC, connector and dataflow stand-ins in the level namespaces, reading the same records, and its Kafka broker as
the event hub.

Verify is one code path for both: the provisioning state of every record, then MQTT taps on each level's broker
(from the admin network, where this process runs) and a Kafka consumer on the Event Hubs endpoint (where the
Azure calls run: lab connection string, or an Entra token on a real site) for one window; the analysis
(`layernet.telemetry.verify`) gives evidence rows per hop, loss, end-to-end and per-hop latency, and names the hop
where messages stopped.

This module orchestrates; the parts live in `layernet.telemetry`: `records` (the desired ARM records), `arm` (the
ARM client and the observed live state), `waves` (the wave executor of apply), `window` (the message window).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from layernet import context
from layernet.azure import eventhubs_access as access
from layernet.azure.aio_sdk import resource_skip
from layernet.azure.clients import Arm, pick
from layernet.errors import StageFailed
from layernet.evidence import evidence, evidence_table, failed  # noqa: F401  (failed: shared by every stage)
from layernet.plan import Plan, Progress, Step, fingerprint, refuse_drift
from layernet.stages import telemetry_objects as objects
from layernet.context import elsewhere, runs_here
from layernet.stages.base import apply_unless_dry, begin, progress_printer, run_link, with_subscription  # noqa: F401
from layernet.telemetry import arm as arm_state, charts, records, waves, window
from layernet.telemetry.verify import analyse, evidence_rows, observe

STAGE = "telemetry"


_with_subscription = with_subscription     # the site with the subscription the Arm talks to (render puts it in every id)


# ----------------------------------------------------------------------------------------------- plan
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


def steps(site, state: dict) -> list[Step]:
    """The plan from the observed state: one step per record (change or skip with the reason), then, where the
    target runs the telemetry services itself (the lab), starting them when a record changed or they stopped."""
    out: list[Step] = [Step("site", "register provider", ns, f"POST /subscriptions/{site.azure.subscription_id}"
                            f"/providers/{ns}/register", skip=reg == "Registered", reason=reg)
                       for ns, reg in state.get("providers", {}).items()]
    listeners = {k: {"properties": {"ports": v}} for k, v in state.get("listeners", {}).items()}
    for r in records.desired(site, state.get("principals"), state.get("operator")):
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
        if r["action"] == records.SENDER_ACTION and not state.get("principals", {}).get(r["level"]):
            skip, why = False, f"needs the principal of {records.extension_id(site, r['level'])} (read at apply)"
        out.append(Step(r["level"], r["action"], r["name"], detail, skip=skip, reason=why))
    scope = records.receiver_scope(site)
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
        out.append(Step("site", records.START_SERVICES, "OPC PLC, connector, dataflows, event hub",
                        "start each level's stand-ins from the rendered records",
                        skip=bool(running) and not changed,
                        reason="records changed" if changed else ("running" if running else "not running")))
    return out


# ----------------------------------------------------------------------------------------------- plan / apply
def _plain(line: str) -> None:
    """Progress lines that come back from where the calls ran already carry the stage's prefix."""
    print(line, flush=True)


def declared(site) -> bool:
    """The site declares telemetry (an asset or a dataflow). Without any, the stage has nothing to do: no
    provider, no Event Hubs, no services, and its verdict says so."""
    return bool(site.telemetry.assets or site.telemetry.dataflows)


NOTHING_DECLARED = "the site declares no telemetry (no telemetry.assets, no telemetry.dataflows): nothing to do"


def plan(site, arm: Optional[Arm] = None) -> Plan:
    """Read the live state and list every step in order (changes and skips with reasons). Changes nothing.
    Runs where the target makes its Azure calls (the lab: its jump box). Empty, without a call, for a site that
    declares no telemetry."""
    ctx = context.of(site)
    site = ctx.site
    if not declared(site):
        return Plan(STAGE, [], observed=fingerprint({}), executor="none")
    if not runs_here(arm):
        return with_cluster_objects(site, ctx.cluster, elsewhere(ctx, plan))
    s = _with_subscription(site, arm.subscription_id)
    state = arm_state.observe(s, arm)
    return Plan(STAGE, steps(s, state), observed=fingerprint(state), executor="sdk")


def with_cluster_objects(site, cluster, p: Plan) -> Plan:
    """The plan with a step per cluster object the X.509 records name (read here, through each level's Kubernetes
    API), placed before the records that refer to them; what was read is kept to refuse drift at apply."""
    state = objects.observe(site, cluster)
    if not state:
        return p
    extra = objects.steps(site, state, objects.creates(cluster))
    at = next((i for i, st in enumerate(p.steps) if st.action != "register provider"), len(p.steps))
    return Plan(p.stage, p.steps[:at] + extra + p.steps[at:], p.observed, p.executor,
                {**p.context, "cluster_objects": fingerprint(state)})


def _apply_cluster_objects(site, cluster, plan: Plan, progress: Progress) -> tuple[Plan, list[dict]]:
    """Create the plan's cluster objects (refusing when what the plan read changed), and the rest of the plan."""
    rest = Plan(plan.stage, [s for s in plan.steps if s.action not in objects.ACTIONS], plan.observed, plan.executor,
                plan.context)
    if "cluster_objects" not in plan.context:
        return rest, []
    refuse_drift(Plan(plan.stage, observed=plan.context["cluster_objects"]), objects.observe(site, cluster))
    todo = [s for s in plan.changes if s.action in objects.ACTIONS]
    rows = objects.apply_steps(site, cluster, todo, progress) if todo else []
    bad = [r for r in rows if not r["ok"]]
    if bad:
        raise StageFailed("; ".join(f"{r['level']}: {r['action']} {r['target']} failed: {r['output']}" for r in bad))
    return rest, rows


def apply(plan: Plan, site, run_dir: Optional[Path] = None, arm: Optional[Arm] = None,
          progress: Optional[Progress] = None) -> list[dict]:
    """Run exactly the plan's changes in order (PUT, wait for the long-running operation); refuse when the live
    state drifted since the plan. Requests and answers land in run_dir/telemetry/resources/<level>/."""
    progress = progress or progress_printer("▸ telemetry ")
    ctx = context.of(site)
    site = ctx.site
    if not declared(site):
        progress(NOTHING_DECLARED)
        return []
    if not runs_here(arm):
        plan, made = _apply_cluster_objects(site, ctx.cluster, plan, progress)
        return made + elsewhere(ctx, apply, progress=_plain, plan=plan, run_dir=str(run_dir) if run_dir else None)
    s = _with_subscription(site, arm.subscription_id)
    state = arm_state.observe(s, arm)
    refuse_drift(plan, state)
    return waves.run(plan.changes, s, arm, state, Path(run_dir) / STAGE if run_dir else None, progress)


def provisioning(site, arm: Optional[Arm] = None) -> list[dict]:
    """Evidence rows: the provisioning state of every record (runs where the Azure calls run)."""
    ctx = context.of(site)
    site = ctx.site
    if not runs_here(arm):
        return elsewhere(ctx, provisioning)
    s = _with_subscription(site, arm.subscription_id)
    state = arm_state.observe(s, arm)
    rows = []
    for r in records.desired(s, state["principals"], state.get("operator")):
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


# ----------------------------------------------------------------------------------------------- the message proof
def proof_window(site) -> float:
    """Seconds of window that let the proof judge `telemetry.proof.min_messages` messages of every asset dataset
    at its publishing interval (with a fifth more for jitter, and the unjudged tail)."""
    need = [site.telemetry.proof.min_messages * ds.publishing_ms / 1000.0 for a in site.telemetry.assets
            for ds in a.datasets]
    return round(max([window.WINDOW_S] + [n * 1.2 + window.GRACE_S for n in need]), 1)


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
    ctx = context.of(site)
    site = ctx.site
    adaptive = seconds is None
    seconds = seconds if seconds is not None else proof_window(site)
    p99_limit_ms = p99_limit_ms if p99_limit_ms is not None else site.telemetry.proof.p99_ms
    t0 = time.time()
    route_list, got = observe(site, seconds, tls=tap_tls(ctx), hub=window.hub(ctx), settle=settle,
                             min_judged=site.telemetry.proof.min_messages if adaptive else None)
    seconds = got.get("window_s", seconds) if adaptive else seconds
    a = analyse(route_list, got["records"], grace_s=window.GRACE_S)
    rows = evidence_rows(a, p99_limit_ms) + judged_rows(site, a, seconds)
    if got["kafka_error"]:
        hint, scope = got["kafka_error"], records.receiver_scope(site)
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
        refused = ctx.azure.eventhubs_refusals(t0)
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
    ctx = context.of(site)
    site = ctx.site
    if not declared(site):
        return {"evidence": [evidence("site", "telemetry", "what the site declares", NOTHING_DECLARED, True)],
                "analysis": None, "declared": False}
    rehearsed = ctx.cluster.telemetry_rehearsals()
    if rehearsed:
        print(f"▸ telemetry rehearsal (lab.close): {rehearsed}", flush=True)
    rows = provisioning(ctx) + objects.rows(site, ctx.cluster)
    if not all(r["ok"] for r in rows) and not role_rows_only(rows):
        return {"evidence": rows, "analysis": None}
    out = messages(ctx, seconds, settle=settle)
    return {"evidence": rows + out["evidence"], "analysis": out["analysis"]}


def tap_tls(site):
    """TLS and the client certificate of the proof's MQTT taps in X.509 mode (None: anonymous)."""
    ctx = context.of(site)
    try:
        return objects.tap_tls(ctx.site, ctx.cluster)
    except RuntimeError as exc:
        raise StageFailed(f"the proof's MQTT taps have no client certificate: {exc}") from None


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
