"""How a report shows a plan: one line per step, the exact request one click away and kept in the run folder,
the subscription apply will use (or a visible placeholder), and verdict lines that count levels."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from arm_double import ArmDouble, StaticToken
from sites import example_site

from layernet.azure.clients import Arm  # noqa: E402
from layernet.stages import arc  # noqa: E402
from layernet.evidence import evidence  # noqa: E402
from layernet.plan import Plan, Step  # noqa: E402
from layernet.stages.base import request_head, request_text, show_plan  # noqa: E402

SUB = "11111111-2222-3333-4444-555555555555"
BODY = {"location": "eastus", "properties": {"agentPublicKeyCertificate": "<generated at apply>", "note": "a & b"}}
STEPS = [
    Step("site", "register provider", "Microsoft.Kubernetes", "POST /subscriptions/<subscription>/providers/Microsoft.Kubernetes/register",
         reason="registration state NotRegistered"),
    Step("level4", "connect cluster", "aio-l4", "PUT /subscriptions/<subscription>/resourceGroups/rg/providers/"
         "Microsoft.Kubernetes/connectedClusters/aio-l4?api-version=2024-01-01 " + json.dumps(BODY, sort_keys=True),
         reason="not connected to Arc yet"),
    Step("level4", "enable features", "aio-l4", "az connectedk8s enable-features -n aio-l4 -g rg --features cluster-connect",
         skip=True, reason="enabled: cluster-connect"),
    Step("level3", "check node settings", "nodes of level3", "", skip=True, reason="cluster Connected"),
]


class Rows(HTMLParser):
    """Per table row: the visible text of each cell, the <summary> text and the <pre> text."""

    def __init__(self):
        super().__init__()
        self.rows, self.where = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append({"cells": [], "summary": "", "pre": "", "links": []})
        elif tag == "td":
            self.rows[-1]["cells"].append("")
        elif tag == "a" and self.rows:
            self.rows[-1]["links"].append(dict(attrs)["href"])
        self.where.append(tag)

    def handle_endtag(self, tag):
        while self.where and self.where.pop() != tag:
            pass

    def handle_data(self, data):
        if not self.rows or "td" not in self.where:
            return
        row = self.rows[-1]
        row["cells"][-1] += data
        if "summary" in self.where:
            row["summary"] += data
        if "pre" in self.where:
            row["pre"] += data


def rows_of(html: str) -> list[dict]:
    p = Rows()
    p.feed(html)
    return [r for r in p.rows if r["cells"]]


def test_each_step_is_one_line_with_its_exact_request_one_click_away(tmp_path: Path):
    plan = Plan("arc", list(STEPS), executor="sdk")
    html = show_plan(plan, str(tmp_path))._repr_html_()
    rows = rows_of(html)
    assert len(rows) == len(STEPS)
    for step, row in zip(STEPS, rows):
        number, level, change, _, why = row["cells"]
        assert (level, change, why) == (step.level, "skip" if step.skip else "change", step.reason)
        if step.detail:
            assert "\n" not in row["summary"] and f"{step.action} {step.target}" in row["summary"]
            assert row["pre"] == request_text(step.detail)
            kept = tmp_path / row["links"][0]
            assert kept.read_text() == step.detail + "\n"          # the exact request as apply sends it
        else:
            assert row["pre"] == "" and row["links"] == []
    # the placeholder shows as text, the JSON body is readable and the same JSON
    assert "/subscriptions/<subscription>/providers/Microsoft.Kubernetes/register" in rows[0]["pre"]
    head, body = rows[1]["pre"].split("\n", 1)
    assert head.startswith("PUT /subscriptions/<subscription>/resourceGroups/rg/") and json.loads(body) == BODY
    assert rows[1]["summary"] == "connect cluster aio-l4 · PUT Microsoft.Kubernetes/connectedClusters + body"
    assert "/subscriptions//" not in html and "<subscription>" not in html
    assert json.loads((tmp_path / "arc" / "plan.json").read_text()) == plan.to_dict()


def test_request_heads():
    assert request_head("az connectedk8s connect -n x -g rg") == "az connectedk8s connect …"
    assert request_head("POST /subscriptions/s/providers/Microsoft.IoTOperations/register") == \
        "POST Microsoft.IoTOperations/register"
    assert request_head("PUT /subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa/"
                        "blobServices/default/containers/c?api-version=1 {}") == \
        "PUT Microsoft.Storage/storageAccounts/blobServices/containers + body"
    assert request_head("PUT /subscriptions/s/resourcegroups/rg {}") == "PUT subscriptions/resourcegroups + body"
    assert request_head("agent settings: no ARM call") == "agent settings: no …"
    assert request_text("PUT /x {not json") == "PUT /x {not json"


def test_an_empty_plan_says_so(tmp_path: Path):
    html = show_plan(Plan("arc", []), str(tmp_path))._repr_html_()
    assert "no steps: nothing to change" in html and "<table" not in html


@pytest.fixture
def armd(tmp_path):
    d = ArmDouble(tmp_path)
    yield d
    d.close()


def test_the_sdk_plan_shows_the_subscription_apply_uses(armd):
    """A site that names no subscription: the plan shows the one the SDK talks to (the lab's), not a hole."""
    site = example_site(arc={"executor": "sdk", "custom_locations_oid": "51dfe1e8-70c6-4de5-a08e-e18aff23d815"},
                        azure={**example_site().azure.model_dump(), "subscription_id": None})
    assert site.azure.subscription_id is None
    conn = Arm(SUB, StaticToken(), armd.url, str(armd.ca), extra={"polling_interval": 0})
    p = arc.plan(site, arm=conn)
    sent = [s.detail for s in p.steps if s.detail.startswith(("POST", "PUT"))]
    assert sent and all(f"/subscriptions/{SUB}/" in d for d in sent)
    assert not any(re.search(r"/subscriptions/(<subscription>|)/", d) for d in sent)


def test_the_arc_verdict_counts_levels_not_rows():
    rows = [evidence(lv, check, "x", "x", True) for lv in ("level4", "level3", "level2")
            for check in ("connectivity status", "provisioning state", "agent version", "last connectivity time")]
    assert arc.require_connected(rows) == "all 3 level(s) Connected to Azure Arc: level4, level3, level2"


def test_without_a_run_folder_nothing_is_written_and_nothing_linked(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = rows_of(show_plan(Plan("arc", list(STEPS)))._repr_html_())
    assert [r["links"] for r in rows] == [[]] * len(STEPS) and list(tmp_path.iterdir()) == []
    assert rows[0]["pre"] == STEPS[0].detail
