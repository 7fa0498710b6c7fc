"""Stage 04 on a site that declares no telemetry (another plant's network-only site, tests/doubles/plants.py): the
plan is empty and made without any Azure call, apply does nothing, verify has one passing row that says so and the
verdict passes. Event Hubs is needed only by what uses it."""
from __future__ import annotations

from pathlib import Path

import pytest
from plants import plant_site, write

from layernet.site import load_site  # noqa: E402
from layernet.stages import telemetry  # noqa: E402


@pytest.fixture(params=["lab", "kube"])
def site(request, tmp_path, monkeypatch):
    class Untouchable:
        def __init__(self, side):
            self.side = side

        def __getattr__(self, name):
            raise AssertionError(f"stage 04 asked the {self.side} for {name} on a site without telemetry")

    monkeypatch.setattr("layernet.targets.sides",
                        lambda site, target=None: (Untouchable("target"), Untouchable("cluster side"),
                                                   Untouchable("Azure side")))
    return load_site(write(plant_site(request.param), tmp_path))


def test_nothing_to_plan_apply_or_verify(site):
    assert site.azure.eventhubs_namespace is None and not telemetry.declared(site)
    planned = telemetry.plan(site)
    assert planned.steps == [] and planned.empty
    assert telemetry.run(planned, site) == []
    status = telemetry.check(site)
    assert [(r["level"], r["check"], r["ok"]) for r in status["evidence"]] == [("site", "telemetry", True)]
    assert telemetry.require_delivered(status) == telemetry.NOTHING_DECLARED
    res = telemetry.results(planned, [], status)
    assert res["planned_changes"] == 0 and res["failed"] == [] and res["messages"] == 0


def test_a_site_with_telemetry_still_plans_through_the_target(tmp_path, monkeypatch):
    """The shortcut is for sites without telemetry only: the lab site's plan still goes to the Azure side."""
    asked = []

    class Azure:
        def call(self, func, **kw):
            asked.append((func, kw.get("stage_call")))
            raise RuntimeError("stop here")

    monkeypatch.setattr("layernet.targets.sides", lambda site, target=None: (None, None, Azure()))
    site = load_site(Path(__file__).resolve().parents[2] / "params" / "lab.yaml")
    assert telemetry.declared(site)
    with pytest.raises(RuntimeError, match="stop here"):
        telemetry.plan(site)
    assert asked == [("layernet.context:_there", "layernet.stages.telemetry:plan")]
