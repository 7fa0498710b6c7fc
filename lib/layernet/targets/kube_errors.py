"""What the Kubernetes API server's answers mean for the user, in words they can act on.

Pure functions over the answers (Status objects, discovery documents, pods and events); the kube target
(targets/kube.py) makes the requests. Every message says where (level, object), what (the field, the kind, the
pod and its event) and what to do.

Immutable fields are read from the API server, not from a list kept here: a server-side dry-run apply of the
changed object answers 422 `Invalid`, one cause per refused field. A cause is an immutability refusal when its
message is one Kubernetes' validation gives for a field that cannot change in place: apimachinery's
`FieldImmutableErrorMsg` ("field is immutable", what every `ValidateImmutableField` says: a Deployment's or Job's
selector, a Job's template, a ConfigMap or Secret marked immutable), "may not change once set" (a Service's
clusterIP/clusterIPs) and "is immutable" (e.g. "spec is immutable after creation", a PersistentVolumeClaim). Only
when EVERY cause is one of these does the plan say `replace`; any other cause is a refusal that a replace would not
cure. A kind whose in-place refusal is worded otherwise (a StatefulSet's "updates to statefulset spec for fields
other than ... are forbidden") is a refusal, not a replace.
"""
from __future__ import annotations

from typing import Optional

IMMUTABLE_MARKS = ("field is immutable", "may not change once set", "is immutable")
AIO_GROUP_SUFFIXES = (".iot.azure.com", "deviceregistry.microsoft.com")


def _cut(text: str, n: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def causes(status) -> list[dict]:
    """The per-field causes of a Status answer ([] when the answer is not a Status or names no field)."""
    if not isinstance(status, dict):
        return []
    return [c for c in ((status.get("details") or {}).get("causes") or []) if isinstance(c, dict)]


def immutable_fields(status) -> list[str]:
    """The fields a 422 answer refuses because they cannot change in place; [] when any cause is something else
    (then replacing the object would be refused too)."""
    if not isinstance(status, dict) or status.get("code") != 422:
        return []
    found = causes(status)
    if not found or not all(any(m in (c.get("message") or "") for m in IMMUTABLE_MARKS) for c in found):
        return []
    return sorted({c.get("field") or "?" for c in found})


def replace_reason(status) -> str:
    """The first line of a `replace` change's diff: which fields cannot change in place, in the API server's words,
    and what apply does."""
    fields = immutable_fields(status)
    words = sorted({(c.get("message") or "").rsplit(": ", 1)[-1] for c in causes(status)})
    return (f"# replace: {', '.join(fields)} cannot change in place (the API server's dry run: {'; '.join(words)}); "
            f"apply deletes the object, waits until it and its dependents are gone, then creates it\n")


def refused(where: str, method: str, status_code: int, answer, context: str) -> str:
    """A write the API server refused: its reason and every field path it names, and the fix."""
    if isinstance(answer, dict):
        message = answer.get("message") or answer.get("reason") or ""
        fields = [f"{c.get('field') or '?'}: {_cut(c.get('message') or '', 160)}" for c in causes(answer)]
        reason = answer.get("reason") or ""
    else:
        message, fields, reason = answer or "", [], ""
    if status_code == 404 and isinstance(answer, dict) and (answer.get("details") or {}).get("kind") == "namespaces":
        ns = (answer.get("details") or {}).get("name", "?")
        return (f"{where}: namespace {ns!r} does not exist on the cluster (HTTP 404 from {method}); add a Namespace "
                f"document for it to the manifests or create it first (kubectl --context {context} create "
                f"namespace {ns})")
    if status_code == 403:
        return (f"{where}: forbidden (HTTP 403): {_cut(message, 400)}; the kubeconfig's user for context {context} "
                f"needs that permission (a Role/ClusterRole binding), or use a context that has it")
    head = f"{where}: the API server refused {method} (HTTP {status_code}{' ' + reason if reason else ''})"
    if fields:
        return f"{head}: " + "; ".join(fields) + "; fix these fields in the rendered manifest (or the site), then plan again"
    return f"{head}: {_cut(message, 400)}"


def unserved_kind(where: str, api_version: str, kind: str, group_doc, context: str) -> str:
    """An object whose kind the cluster does not serve (no CustomResourceDefinition for it): which kind, which
    apiVersion, what the cluster serves of that group, and what to install."""
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    served = [v.get("groupVersion", "") for v in (group_doc or {}).get("versions") or []] if isinstance(group_doc, dict) else []
    if served:
        what = f"the cluster serves {', '.join(served)} of group {group} but not kind {kind} in {api_version}"
    else:
        what = f"the cluster serves no API group {group or api_version!r}: no CustomResourceDefinition defines {kind}"
    if group.endswith(AIO_GROUP_SUFFIXES):
        fix = ("install Azure IoT Operations on this cluster first (stage 03, deploy AIO: `az iot ops create` "
               "installs its CRDs), then plan again")
    else:
        fix = f"install the CustomResourceDefinition of {kind} ({group or api_version}) first, then plan again"
    return (f"{where}: kind {kind} (apiVersion {api_version}) is not installed: {what}; {fix} "
            f"(check: kubectl --context {context} api-resources --api-group={group})")


# ----------------------------------------------------------------------------------------------- rollouts
def _stamp(event: dict) -> tuple:
    meta = event.get("metadata") or {}
    rv = meta.get("resourceVersion") or "0"
    return (event.get("lastTimestamp") or event.get("eventTime") or meta.get("creationTimestamp") or "",
            int(rv) if str(rv).isdigit() else 0)


def latest_event(events: list[dict]) -> Optional[dict]:
    """The newest Warning event, else the newest event (a 'Started' after a crash says less than its 'BackOff')."""
    warnings = [e for e in events if e.get("type") == "Warning"]
    pool = warnings or events
    return max(pool, key=_stamp) if pool else None


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def lead_pod(pods: list[dict]) -> Optional[dict]:
    """The pod that explains an unfinished rollout: the newest unready one; else the newest (a container that
    crashes is Ready for the instant it runs)."""
    pool = [p for p in pods if not _ready(p)] or pods
    return max(pool, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "") if pool else None


def container_state(pod: dict) -> tuple[str, str]:
    """(what the first unready container is doing, the reason keyword) of a pod."""
    st = pod.get("status") or {}
    statuses = st.get("containerStatuses") or []
    # unready containers first, then the one that restarted most
    for cs in sorted(statuses, key=lambda c: (bool(c.get("ready")), -int(c.get("restartCount") or 0))):
        state = cs.get("state") or {}
        parts, reason = [], ""
        if "waiting" in state:
            reason = state["waiting"].get("reason") or "Waiting"
            msg = state["waiting"].get("message")
            parts.append(reason + (f" ({_cut(msg, 200)})" if msg else ""))
        elif "terminated" in state:
            t = state["terminated"]
            reason = t.get("reason") or "Terminated"
            parts.append(f"{reason} with exit code {t.get('exitCode')}")
        elif not cs.get("ready"):
            reason = "NotReady"
            parts.append("running but not ready (its readiness probe fails)")
        else:
            reason = "Running"
            parts.append("running")
        parts.append(f"restartCount {cs.get('restartCount', 0)}")
        last = (cs.get("lastState") or {}).get("terminated")
        if last:
            parts.append(f"last exit code {last.get('exitCode')}")
        return f"container {cs.get('name')} " + ", ".join(parts), reason
    phase = st.get("phase") or "Pending"
    cond = next((c for c in st.get("conditions") or [] if c.get("status") == "False" and c.get("message")), None)
    return f"phase {phase}" + (f" ({_cut(cond['message'], 200)})" if cond else ""), phase


def rollout_hint(reason: str, context: str, namespace: str, pod: str) -> str:
    if reason in ("CrashLoopBackOff", "Error"):
        return f"the container keeps exiting: read why with kubectl --context {context} -n {namespace} logs {pod} --previous"
    if reason in ("ImagePullBackOff", "ErrImagePull"):
        return ("the image cannot be pulled: check the image name and that its registry is in the allow list and "
                "reachable through the level's proxies (the site's images section)")
    return f"see: kubectl --context {context} -n {namespace} describe pod {pod}"


def why_not_ready(namespace: str, pods: list[dict], events: dict, context: str, log_tail: str = "",
                  deployment: Optional[dict] = None) -> str:
    """The pod that keeps a rollout from finishing, what its container does, its latest event and the fix.
    `events` maps pod name -> its events."""
    pod = lead_pod(pods)
    if pod is None:
        conds = [c for c in ((deployment or {}).get("status") or {}).get("conditions") or []
                 if c.get("status") == "False" or c.get("type") == "ReplicaFailure"]
        said = "; ".join(f"{c.get('type')}: {_cut(c.get('message') or c.get('reason') or '', 200)}" for c in conds)
        return "no pod of it exists" + (f" (deployment conditions: {said})" if said else "")
    name = (pod.get("metadata") or {}).get("name", "?")
    state, reason = container_state(pod)
    text = f"pod {namespace}/{name} is not ready: {state}"
    ev = latest_event(events.get(name) or [])
    if ev:
        text += f"; latest event: {ev.get('reason')}: {_cut(ev.get('message') or '', 240)}"
    if log_tail.strip():
        text += f"; its log ends with: {_cut(log_tail.strip().splitlines()[-1], 200)}"
    others = sum(1 for p in pods if p is not pod and not _ready(p))
    if others:
        text += f" ({others} more pod(s) not ready)"
    return text + "; " + rollout_hint(reason, context, namespace, name)
