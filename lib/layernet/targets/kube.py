"""The `kube` target: one Kubernetes cluster per level, reached through its kubectl context.

- plan: for each object of the level's rendered manifests (envoy-manifests.yaml, coredns-custom.yaml,
  coredns-external.yaml) GET the live object and diff it against the desired one, comparing only the fields
  layernet sets (server defaults and status are ignored);
  an object that differs is sent as a server-side dry-run apply first: when the API server refuses it only for
  immutable fields (targets/kube_errors.py says how that is read), the plan says `replace` and why;
- apply: reads the live state as plan does (refusing when it no longer gives the reviewed plan), then server-side
  apply (field manager ``layernet``, force) of the objects that differ, nothing else; a `replace` is a delete
  (foreground: its ReplicaSets and pods go first), a wait until the object is gone, and a create; CoreDNS is
  restarted only when ``coredns-custom`` changed; changed Deployments are waited for, and one that does not become
  ready names its unready pod, what its container does and its latest event;
- refusals (a field the API server rejects, a missing namespace, RBAC, a kind whose CRD is not installed) are
  `KubeError`s that name the level, the object and the fix (targets/kube_errors.py);
- logs: the Envoy pods' JSON access-log lines;
- probe: `layernet.probe` runs as a Job in a plain python image, mounted from a ConfigMap, in the
  ``layernet`` namespace (created by the probe on levels whose manifests do not create it).

Requests go through the official client's `ApiClient` (its kubeconfig loading, TLS and token handling) as
plain REST calls on resource paths, so any kind the renderers emit works without per-kind API classes.
"""
from __future__ import annotations

import os

import difflib
import json
import math
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode

import yaml

from layernet import clock
from layernet.errors import LayernetError
from layernet.targets import kube_errors, tools
from layernet.plan import Plan, Step, change, refuse_drift
from layernet.targets.base import Target

# apply order within a level: the DNS override first, so a proxy image pulled through the level's chain resolves
KUBE_ARTIFACTS = ("coredns-custom.yaml", "coredns-external.yaml", "envoy-manifests.yaml")
FIELD_MANAGER = "layernet"
APPLY = "application/apply-patch+yaml"
MERGE = "application/strategic-merge-patch+json"
CORE_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
PLURALS = {"ConfigMap": "configmaps", "Service": "services", "Deployment": "deployments", "Namespace": "namespaces",
           "ServiceAccount": "serviceaccounts", "Job": "jobs", "Pod": "pods", "DaemonSet": "daemonsets",
           "Secret": "secrets", "NetworkPolicy": "networkpolicies"}
CORE_DNS = ("kube-system", "coredns")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class KubeError(LayernetError, RuntimeError):
    """A Kubernetes call or wait failed; the message says where and what to look at (exit 1, shown without a
    traceback)."""


# ----------------------------------------------------------------------------------------------- objects
def object_path(obj: dict, collection: bool = False) -> str:
    """REST path of an object (or of its collection) from apiVersion, kind, namespace and name."""
    api, kind = obj["apiVersion"], obj["kind"]
    base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
    plural = PLURALS.get(kind) or kind.lower() + "s"
    meta = obj.get("metadata") or {}
    if kind not in CLUSTER_SCOPED:
        base += f"/namespaces/{quote(meta.get('namespace') or 'default')}"
    return f"{base}/{plural}" if collection else f"{base}/{plural}/{quote(meta['name'])}"


def object_id(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = "" if obj["kind"] in CLUSTER_SCOPED else (meta.get("namespace") or "default") + "/"
    return f"{ns}{obj['kind']}/{meta['name']}"


def desired_objects(artifacts: list, level: str) -> list[dict]:
    """The level's objects in apply order: implicit Namespaces first, then the documents as rendered."""
    docs: list[dict] = []
    for name in KUBE_ARTIFACTS:
        for art in artifacts:
            if art.level == level and art.name == name:
                docs += [d for d in yaml.safe_load_all(art.content) if d]
    declared = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    needed = []
    for d in docs:
        ns = (d.get("metadata") or {}).get("namespace")
        if d["kind"] not in CLUSTER_SCOPED and ns and ns not in CORE_NAMESPACES | declared and ns not in needed:
            needed.append(ns)
    implicit = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in needed]
    return implicit + docs


def project(live: Any, desired: Any) -> Any:
    """`live` reduced to the fields present in `desired` (what layernet sets), for a fair comparison."""
    if isinstance(desired, dict) and isinstance(live, dict):
        return {k: project(live[k], v) for k, v in desired.items() if k in live}
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        return [project(l, d) for l, d in zip(live, desired)]
    return live


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # a diff shows values, never &anchors
        return True


def _text(dumper: yaml.SafeDumper, data: str):
    """A multi-line value (a ConfigMap's envoy.yaml, a Corefile) as a block, so its diff shows the changed lines."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_PlainDumper.add_representer(str, _text)


def _dump(obj: Optional[dict]) -> str:
    return "" if obj is None else yaml.dump(obj, Dumper=_PlainDumper, sort_keys=True, default_flow_style=False)


def diff_object(desired: dict, live: Optional[dict]) -> tuple[str, str]:
    """(action, unified diff of live -> desired); action is create, update or unchanged."""
    before = _dump(project(live, desired)) if live is not None else ""
    after = _dump(desired)
    if before == after:
        return "unchanged", ""
    oid = object_id(desired)
    text = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        fromfile=f"live/{oid}", tofile=f"desired/{oid}"))
    return ("create" if live is None else "update"), text


# ----------------------------------------------------------------------------------------------- REST
class Api:
    """Plain REST calls through a kubernetes `ApiClient` (host, TLS, token and refresh from its configuration)."""

    def __init__(self, client, timeout: float = 30.0):
        self.client, self.timeout = client, timeout

    def request(self, method: str, path: str, query: Optional[dict] = None, body: Any = None,
                content_type: str = "application/json", parse: bool = True) -> tuple[int, Any]:
        from kubernetes.client.rest import ApiException

        cfg = self.client.configuration
        url = cfg.host.rstrip("/") + path + (("?" + urlencode(query)) if query else "")
        headers = dict(self.client.default_headers)
        headers["Accept"] = "application/json, */*"
        auth = cfg.auth_settings().get("BearerToken")
        if auth and auth.get("value"):
            headers[auth["key"]] = auth["value"]
        if body is not None:
            headers["Content-Type"] = content_type
            if "json" not in content_type:  # apply patches go as text (JSON is valid YAML)
                body = json.dumps(body)
        try:
            resp = self.client.rest_client.request(method, url, headers=headers, body=body,
                                                   _request_timeout=self.timeout)
            status, raw = resp.status, resp.data if resp.data is not None else resp.read()
        except ApiException as exc:  # older clients raise on non-2xx
            status, raw = exc.status, exc.body
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
        if not parse:
            return status, text
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return status, data

    def call(self, method: str, path: str, ok=(200, 201, 202), **kw) -> Any:
        status, data = self.request(method, path, **kw)
        if status not in ok:
            msg = data.get("message") if isinstance(data, dict) else data
            raise KubeError(f"{method} {path} failed with HTTP {status}: {msg}")
        return data

    def get(self, path: str) -> Optional[dict]:
        status, data = self.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeError(f"GET {path} failed with HTTP {status}: {data}")
        return data


# ----------------------------------------------------------------------------------------------- target
def _ns_flag(obj: dict) -> str:
    return "" if obj["kind"] in CLUSTER_SCOPED else f" -n {(obj.get('metadata') or {}).get('namespace') or 'default'}"


CUSTOM_ID = "kube-system/ConfigMap/coredns-custom"


def with_coredns_restart(level: str, pairs: list[tuple[Step, dict]]) -> list[tuple[Step, dict]]:
    """The level's (step, object) pairs with the CoreDNS restart a changed coredns-custom needs (CoreDNS reads its
    imports at start) right after that ConfigMap: the override is live before anything after it pulls through it."""
    out = []
    for s, obj in pairs:
        out.append((s, obj))
        if s.target == CUSTOM_ID and not s.skip:
            out.append((_coredns_restart(level), {}))
    return out


def _coredns_restart(level: str) -> Step:
    ns, name = CORE_DNS
    return change(level, f"{ns}/Deployment/{name}", "restart", "coredns-custom changed: roll the CoreDNS pods\n")


class KubeTarget(Target):
    kind = "kube"
    shared_proxies = True

    def __init__(self, site, clients: Optional[dict] = None, configuration=None, namespace: str = "layernet",
                 probe_image: Optional[str] = None, envoy_deployment: str = "layernet-envoy",
                 rollout_timeout: float = 300.0, job_timeout: float = 180.0, poll_interval: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep, contexts: Optional[dict] = None):
        """`clients` maps level name -> kubernetes ApiClient; `configuration` (a kubernetes Configuration)
        is used for every level instead of the kubeconfig contexts (tests point it at a test double); `contexts`
        maps level name -> the kubeconfig context the messages' kubectl hints name (default: the level's
        kube_context)."""
        self.site = site
        self.namespace, self.envoy_deployment = namespace, envoy_deployment
        # the site's images.probe (checked against the allow list by validation) unless given here
        self.probe_image = probe_image or site.images.reference("probe", site.azure.cloud)
        self.rollout_timeout, self.job_timeout, self.poll_interval = rollout_timeout, job_timeout, poll_interval
        self.sleep = sleep
        self._clients = dict(clients or {})
        self._configuration = configuration
        self._contexts = dict(contexts or {})

    # -- clients
    def api(self, level: str) -> Api:
        if level not in self._clients:
            from kubernetes import client as k8s, config as k8s_config

            if self._configuration is not None:
                self._clients[level] = k8s.ApiClient(configuration=self._configuration)
            else:
                ctx = self.site.level(level).kube_context
                if not ctx:
                    raise KubeError(f"level {level} has no kube_context in the site file")
                path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
                self._clients[level] = k8s_config.new_client_from_config(config_file=path, context=ctx)
        return Api(self._clients[level])

    def _levels(self, artifacts: list) -> list[str]:
        present = {a.level for a in artifacts if a.name in KUBE_ARTIFACTS}
        return [lv.name for lv in self.site.chain if lv.name in present]

    # -- plan / apply
    def _where(self, level: str, obj: dict) -> str:
        return f"{level}: {object_id(obj)}"

    def _context(self, level: str) -> str:
        return self._contexts.get(level) or self.site.level(level).kube_context or level

    def _live(self, api: Api, level: str, obj: dict) -> Optional[dict]:
        """The live object (None: absent). A 404 that is not a Kubernetes Status is the API server saying it does
        not serve that resource at all: the kind's CRD is not installed."""
        status, data = api.request("GET", object_path(obj))
        if status == 200:
            return data
        if status == 404 and isinstance(data, dict) and data.get("kind") == "Status":
            return None
        if status == 404:
            api_version = obj["apiVersion"]
            group = api_version.split("/", 1)[0] if "/" in api_version else ""
            doc = api.get(f"/apis/{group}") if group else None
            raise KubeError(kube_errors.unserved_kind(self._where(level, obj), api_version, obj["kind"], doc,
                                                      self._context(level)))
        raise KubeError(kube_errors.refused(self._where(level, obj), "GET", status, data, self._context(level)))

    def _replace_reason(self, api: Api, level: str, obj: dict) -> str:
        """'' when the changed object can be applied in place; else the `replace` line naming the immutable fields.
        Asked of the API server: a server-side dry-run apply (nothing is stored)."""
        status, data = api.request("PATCH", object_path(obj), body=obj, content_type=APPLY,
                                   query={"fieldManager": FIELD_MANAGER, "force": "true", "dryRun": "All"})
        if status in (200, 201):
            return ""
        if status == 403:  # a user who may read but not write plans an update; apply (a writer) asks again
            return ""
        if kube_errors.immutable_fields(data):
            return kube_errors.replace_reason(data)
        raise KubeError(kube_errors.refused(self._where(level, obj), "PATCH (server-side dry-run apply)", status,
                                            data, self._context(level)))

    def _plan_level(self, level: str, artifacts: list) -> list[tuple[Step, dict]]:
        """(change, desired object) per object of the level, in apply order; then the CoreDNS restart, if any."""
        api, out = self.api(level), []
        for obj in desired_objects(artifacts, level):
            action, diff = diff_object(obj, self._live(api, level, obj))
            if action == "update":
                why = self._replace_reason(api, level, obj)
                if why:
                    action, diff = "replace", why + diff
            out.append((change(level, object_id(obj), action, diff), obj))
        return with_coredns_restart(level, out)

    def plan(self, artifacts: list) -> Plan:
        """Every object (create / update / replace / unchanged) per level, with the CoreDNS restart a changed
        coredns-custom needs right after it."""
        steps = [c for level in self._levels(artifacts) for c, _ in self._plan_level(level, artifacts)]
        return Plan.of("infrastructure", steps, self.kind)

    def apply(self, artifacts: list, plan: Optional[Plan] = None) -> list[Step]:

        levels = self._levels(artifacts)
        planned: dict[str, list] = {}
        if plan is not None:  # everything is read before anything changes
            planned = {level: self._plan_level(level, artifacts) for level in levels}
            refuse_drift(plan, [c for level in levels for c, _ in planned[level]])
        changes = []
        for level in levels:
            api = self.api(level)
            rollouts = []
            for s, obj in planned.get(level) or self._plan_level(level, artifacts):
                if s.action == "restart":
                    changes.append(self.restart_coredns(level))
                    self.wait_rollout(level, *CORE_DNS)
                    continue
                changes.append(s)
                if s.skip:
                    continue
                if s.action == "replace":
                    self._delete_and_wait(api, level, obj)
                self._apply_object(api, level, obj)
                if obj["kind"] == "Deployment":
                    rollouts.append((obj["metadata"].get("namespace") or "default", obj["metadata"]["name"]))
            for ns, name in rollouts:
                self.wait_rollout(level, ns, name)
        return changes

    def _apply_object(self, api: Api, level: str, obj: dict) -> None:
        status, data = api.request("PATCH", object_path(obj), body=obj, content_type=APPLY,
                                   query={"fieldManager": FIELD_MANAGER, "force": "true"})
        if status not in (200, 201):
            raise KubeError(kube_errors.refused(self._where(level, obj), "PATCH (server-side apply)", status, data,
                                                self._context(level)))

    def _delete_and_wait(self, api: Api, level: str, obj: dict) -> None:
        """Delete the live object in the foreground (its ReplicaSets and pods go before it) and wait until it is
        gone, so the new one never runs beside the old one."""
        path = object_path(obj)
        status, data = api.request("DELETE", path, query={"propagationPolicy": "Foreground"})
        if status not in (200, 202, 404):
            raise KubeError(kube_errors.refused(self._where(level, obj), "DELETE (replace)", status, data,
                                                self._context(level)))
        deadline = time.monotonic() + self.rollout_timeout
        while api.get(path) is not None:
            if time.monotonic() >= deadline:
                raise KubeError(f"{self._where(level, obj)}: deleted to be replaced, but still there after "
                                f"{self.rollout_timeout:g}s (a finalizer or a dependent that does not go?); see: "
                                f"kubectl --context {self._context(level)}{_ns_flag(obj)} get {obj['kind'].lower()} "
                                f"{obj['metadata']['name']} -o yaml")
            self.sleep(self.poll_interval)

    def restart_coredns(self, level: str) -> Step:
        """Roll the CoreDNS pods so they read the new coredns-custom (as `kubectl rollout restart` does)."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        ns, name = CORE_DNS
        self.api(level).call("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}", body=patch,
                             content_type=MERGE, query={"fieldManager": FIELD_MANAGER})
        return _coredns_restart(level)

    def wait_rollout(self, level: str, namespace: str, name: str) -> None:
        api, path = self.api(level), f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        deadline = time.monotonic() + self.rollout_timeout
        while True:
            dep = api.get(path) or {}
            want = (dep.get("spec") or {}).get("replicas", 1)
            st = dep.get("status") or {}
            gen = (dep.get("metadata") or {}).get("generation", 0)
            if (st.get("observedGeneration", 0) >= gen and st.get("updatedReplicas", 0) == want
                    and st.get("availableReplicas", 0) == want and st.get("replicas", want) == want):
                return
            if time.monotonic() >= deadline:
                ctx = self._context(level)
                raise KubeError(
                    f"{level}: deployment {namespace}/{name} not rolled out after {self.rollout_timeout:g}s "
                    f"(updated {st.get('updatedReplicas', 0)}/{want}, available {st.get('availableReplicas', 0)}/{want}); "
                    f"{self._why_not_ready(api, level, namespace, dep)} "
                    f"(see: kubectl --context {ctx} -n {namespace} describe deployment {name})")
            self.sleep(self.poll_interval)

    def _why_not_ready(self, api: Api, level: str, namespace: str, dep: dict) -> str:
        """The unready pod of a Deployment, its container's state, its latest event and its last log line (what
        `kubectl describe` and `kubectl logs --previous` would show), read once when the wait gives up."""
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        status, data = api.request("GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector})
        pods = (data.get("items") or []) if status == 200 and isinstance(data, dict) else []
        pod = kube_errors.lead_pod(pods)
        events: dict = {}
        tail = ""
        if pod is not None:
            name = pod["metadata"]["name"]
            status, data = api.request("GET", f"/api/v1/namespaces/{namespace}/events",
                                       query={"fieldSelector": f"involvedObject.name={name}"})
            events[name] = (data.get("items") or []) if status == 200 and isinstance(data, dict) else []
            restarted = [cs for cs in (pod.get("status") or {}).get("containerStatuses") or [] if cs.get("restartCount")]
            if restarted:
                status, text = api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}/log", parse=False,
                                           query={"container": restarted[0]["name"], "previous": "true",
                                                  "tailLines": "5"})
                tail = text if status == 200 else ""
        return kube_errors.why_not_ready(namespace, pods, events, self._context(level), tail, dep)

    # -- logs
    def _pods(self, api: Api, namespace: str, selector: str) -> list[dict]:
        data = api.call("GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector})
        return data.get("items") or []

    def requirements(self) -> list[dict]:
        return [tools.envoy()] + tools.kube_contexts(self.site)

    def logs(self, level: str, since: Optional[datetime] = None) -> list[str]:
        api = self.api(level)
        dep = api.get(f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.envoy_deployment}")
        if dep is None:
            return []
        labels = dep["spec"]["selector"]["matchLabels"]
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        query: dict = {}
        if since is not None:
            query["sinceSeconds"] = max(1, math.ceil((clock.now() - clock.utc(since)).total_seconds()))
        lines: list[str] = []
        after = clock.utc(since) if since is not None else None
        for pod in self._pods(api, self.namespace, selector):
            name = pod["metadata"]["name"]
            container = pod["spec"]["containers"][0]["name"]
            text = api.call("GET", f"/api/v1/namespaces/{self.namespace}/pods/{name}/log",
                            query=dict(query, container=container), parse=False)
            lines += [l for l in text.splitlines() if l.startswith("{") and _since(l, after)]
        return lines

    # -- probe
    def probe_job(self, level: str, name: str) -> tuple[dict, dict]:
        """The ConfigMap (probe source + checks) and the Job that runs it."""
        labels = {"app.kubernetes.io/name": "layernet-probe", "app.kubernetes.io/managed-by": FIELD_MANAGER,
                  "layernet/level": level}
        job = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": int(self.job_timeout),
                "ttlSecondsAfterFinished": 600,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "probe", "image": self.probe_image,
                            "imagePullPolicy": "Never" if self.site.images.mode_of(level) == "import" else "IfNotPresent",
                            "command": ["python3", "/probe/probe.py", "/probe/checks.json"],
                            "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "probe", "mountPath": "/probe", "readOnly": True}],
                        }],
                        "volumes": [{"name": "probe", "configMap": {"name": name}}],
                    },
                },
            },
        }
        return labels, job

    def probe(self, level: str, checks: list[dict]) -> list[dict]:
        api, ns = self.api(level), self.namespace
        name = f"layernet-probe-{level}-{secrets.token_hex(3)}".lower()[:63]
        labels, job = self.probe_job(level, name)
        source = Path(__file__).resolve().parents[1].joinpath("probe.py").read_text()
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels},
              "data": {"probe.py": source, "checks.json": json.dumps({"level": level, "checks": checks})}}
        if api.get(f"/api/v1/namespaces/{ns}") is None:  # a level without Envoy (level2) has no namespace yet
            api.call("PATCH", f"/api/v1/namespaces/{ns}", body={"apiVersion": "v1", "kind": "Namespace",
                                                                "metadata": {"name": ns}},
                     content_type=APPLY, query={"fieldManager": FIELD_MANAGER, "force": "true"})
        api.call("POST", f"/api/v1/namespaces/{ns}/configmaps", body=cm)
        try:
            api.call("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", body=job)
            state = self._wait_job(api, ns, name)
            pods = self._pods(api, ns, f"job-name={name}")
            if not pods:
                raise KubeError(f"{level}: probe Job {ns}/{name} {state} but has no pod to read")
            log = api.call("GET", f"/api/v1/namespaces/{ns}/pods/{pods[0]['metadata']['name']}/log",
                           query={"container": "probe"}, parse=False)
            if state != "complete":
                raise KubeError(f"{level}: probe Job {ns}/{name} failed; its log ends with: {log[-500:]}")
            return _rows_from_log(log, level, name)
        finally:
            api.request("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                        query={"propagationPolicy": "Background"})
            api.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/{name}")

    def _wait_job(self, api: Api, ns: str, name: str) -> str:
        deadline = time.monotonic() + self.job_timeout
        while True:
            st = (api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}") or {}).get("status") or {}
            if st.get("succeeded"):
                return "complete"
            if st.get("failed"):
                return "failed"
            if time.monotonic() >= deadline:
                raise KubeError(f"probe Job {ns}/{name} did not finish within {self.job_timeout:g}s "
                                f"(image {self.probe_image} pulled? pod scheduled?)")
            self.sleep(self.poll_interval)


def _since(line: str, after: Optional[datetime]) -> bool:
    """An access-log line at or after `after` (sinceSeconds counts whole seconds; the line's own time is exact).
    A line without a readable time is kept."""
    if after is None:
        return True
    try:
        t = clock.parse(json.loads(line).get("time"))
    except (ValueError, TypeError, AttributeError):
        return True
    return t is None or t >= after


def _rows_from_log(log: str, level: str, job: str) -> list[dict]:
    for line in reversed(log.strip().splitlines()):
        if line.startswith("["):
            return json.loads(line)
    raise KubeError(f"{level}: probe Job {job} wrote no result rows; its log: {log[-500:]}")
