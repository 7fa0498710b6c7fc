"""Reading the API server's answers (targets/kube_errors.py): the Status shapes are the ones the lab's real API
server returned (tests/lab/test_clusters_lab.py shows them end to end)."""
from __future__ import annotations

from layernet.targets import kube_errors as ke


def status(*causes, code=422, reason="Invalid") -> dict:
    return {"kind": "Status", "code": code, "reason": reason, "message": "refused",
            "details": {"causes": [{"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in causes]}}


def test_only_a_refusal_made_of_immutable_fields_is_a_replace():
    assert ke.immutable_fields(status(("spec.selector", 'Invalid value: {"a":1}: field is immutable'))) == ["spec.selector"]
    assert ke.immutable_fields(status(("spec.clusterIPs[0]", 'Invalid value: ["10.43.0.9"]: may not change once set'),
                                      ("spec.clusterIP", "Invalid value: x: field is immutable"))) == [
        "spec.clusterIP", "spec.clusterIPs[0]"]
    # an immutable field beside a field that is wrong anyway: a replace would be refused too
    assert ke.immutable_fields(status(("spec.selector", "field is immutable"),
                                      ("spec.replicas", "must be greater than or equal to 0"))) == []
    assert ke.immutable_fields(status(("spec.selector", "field is immutable"), code=409, reason="Conflict")) == []
    assert ke.immutable_fields("404 page not found") == [] and ke.immutable_fields(status()) == []


def test_refusals_name_the_place_the_fields_and_the_fix():
    text = ke.refused("level3: ns/Deployment/d", "PATCH (server-side apply)", 422,
                      status(("spec.template.metadata.labels", "Invalid value: x: `selector` does not match")), "aio-l3")
    assert text == ("level3: ns/Deployment/d: the API server refused PATCH (server-side apply) (HTTP 422 Invalid): "
                    "spec.template.metadata.labels: Invalid value: x: `selector` does not match; fix these fields in "
                    "the rendered manifest (or the site), then plan again")
    missing = {"kind": "Status", "code": 404, "reason": "NotFound", "message": 'namespaces "plant" not found',
               "details": {"name": "plant", "kind": "namespaces"}}
    assert "namespace 'plant' does not exist" in ke.refused("level2: plant/ConfigMap/c", "PATCH", 404, missing, "aio-l2")
    forbidden = {"kind": "Status", "code": 403, "reason": "Forbidden",
                 "message": 'configmaps is forbidden: User "viewer" cannot patch resource "configmaps"'}
    text = ke.refused("level2: kube-system/ConfigMap/coredns-custom", "PATCH", 403, forbidden, "aio-l2")
    assert 'User "viewer" cannot patch resource "configmaps"' in text and "context aio-l2 needs that permission" in text


def test_a_kind_of_a_served_group_names_the_versions_served():
    doc = {"kind": "APIGroup", "versions": [{"groupVersion": "example.com/v1beta1", "version": "v1beta1"}]}
    text = ke.unserved_kind("level4: x/Widget/w", "example.com/v1", "Widget", doc, "aio-l4")
    assert "serves example.com/v1beta1 of group example.com but not kind Widget in example.com/v1" in text
    assert "install the CustomResourceDefinition of Widget (example.com) first" in text


def test_the_latest_warning_event_explains_a_pod_better_than_its_last_start():
    events = [{"type": "Normal", "reason": "Started", "lastTimestamp": "2026-01-01T00:00:09Z",
               "metadata": {"resourceVersion": "9"}},
              {"type": "Warning", "reason": "BackOff", "lastTimestamp": "2026-01-01T00:00:05Z",
               "metadata": {"resourceVersion": "5"}},
              {"type": "Warning", "reason": "BackOff", "lastTimestamp": "2026-01-01T00:00:05Z",
               "metadata": {"resourceVersion": "7"}}]
    assert ke.latest_event(events) is events[2]
    assert ke.why_not_ready("ns", [], {}, "c", deployment={"status": {"conditions": [
        {"type": "ReplicaFailure", "status": "True", "message": 'pods "x" is forbidden: exceeded quota'}]}}) == (
        'no pod of it exists (deployment conditions: ReplicaFailure: pods "x" is forbidden: exceeded quota)')


def test_a_replace_says_which_fields_in_the_api_servers_words():
    answer = status(("spec.clusterIPs[0]", 'Invalid value: ["10.43.0.9"]: may not change once set'),
                    ("spec.clusterIP", 'Invalid value: "10.43.0.9": field is immutable'))
    assert ke.replace_reason(answer) == (
        "# replace: spec.clusterIP, spec.clusterIPs[0] cannot change in place (the API server's dry run: field is "
        "immutable; may not change once set); apply deletes the object, waits until it and its dependents are gone, "
        "then creates it\n")


def test_a_pod_the_node_cannot_pull_names_its_state_event_and_fix():
    """The shapes the lab's node agent reports for a registry the chain refuses (tests/lab/test_clusters_lab.py)."""
    pod = {"metadata": {"name": "envoy-1", "creationTimestamp": "2026-01-01T00:00:01Z"},
           "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                      "containerStatuses": [{"name": "envoy", "ready": False, "restartCount": 0, "state": {"waiting": {
                          "reason": "ImagePullBackOff",
                          "message": "Back-off pulling image 'ghcr.io/x/envoy:1': ghcr.io:443 answered HTTP 403"}}}]}}
    older = {"metadata": {"name": "envoy-0", "creationTimestamp": "2026-01-01T00:00:00Z"},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    events = {"envoy-1": [{"type": "Warning", "reason": "Failed", "metadata": {"resourceVersion": "3"},
                           "message": "Failed to pull image 'ghcr.io/x/envoy:1': ghcr.io:443 answered HTTP 403"}]}
    assert ke.why_not_ready("layernet", [older, pod], events, "aio-l3") == (
        "pod layernet/envoy-1 is not ready: container envoy ImagePullBackOff (Back-off pulling image "
        "'ghcr.io/x/envoy:1': ghcr.io:443 answered HTTP 403), restartCount 0; latest event: Failed: Failed to pull "
        "image 'ghcr.io/x/envoy:1': ghcr.io:443 answered HTTP 403; the image cannot be pulled: check the image name "
        "and that its registry is in the allow list and reachable through the level's proxies (the site's images "
        "section)")
