"""Stage 04's proof is worth its name: at least `telemetry.proof.min_messages` messages judged per asset dataset
(the window follows the dataset's publishing interval; the lab publishes 20x faster than the sample rather than
waiting longer), the site's end-to-end p99 budget applied, and the evidence and verdict saying how many were
judged."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from layernet.errors import StageFailed
from layernet.site import load_site
from layernet.stages import telemetry
from layernet.telemetry import window as tel_window

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab():
    return load_site(ROOT / "params" / "lab.yaml")


def test_the_window_judges_the_site_s_minimum_at_the_publishing_interval(lab):
    assert (lab.telemetry.proof.min_messages, lab.telemetry.proof.p99_ms) == (200, 2000.0)
    assert lab.telemetry.assets[0].datasets[0].publishing_ms == 25
    assert telemetry.proof_window(lab) == 8.0                    # 200 x 25 ms, a fifth more, the 2 s tail
    example = load_site(ROOT / "params" / "site-example.yaml")
    assert telemetry.proof_window(example) == 122.0              # the sample's 500 ms: about two minutes
    few = load_site(ROOT / "params" / "lab.yaml", ["telemetry.proof.min_messages=10"])
    assert telemetry.proof_window(few) == tel_window.WINDOW_S


def analysis(judged: int):
    hops = pd.DataFrame([{"route": "oven1/default", "hop": h, "judged": judged} for h in range(4)])
    return SimpleNamespace(hops=hops, summary={"messages": judged, "delivered": judged, "lost": 0,
                                               "e2e_p50_ms": 40.0, "e2e_p99_ms": 90.0})


def test_each_asset_dataset_says_how_many_were_judged(lab):
    ok = telemetry.judged_rows(lab, analysis(231), 8.0)
    assert [(r["level"], r["check"], r["expected"], r["observed"], r["ok"]) for r in ok] == [
        ("level2", "messages judged oven1/default", ">= 200", "231 judged", True)]
    short = telemetry.judged_rows(lab, analysis(80), 4.0)[0]
    assert not short["ok"] and "80 of oven1/default judged in a 4 s window at 25 ms publishing" in short["hint"]


def test_the_verdict_names_the_judged_count_and_the_budget(lab):
    rows = telemetry.judged_rows(lab, analysis(231), 8.0) + [
        {"level": "all", "check": "telemetry end-to-end p99", "expected": "<= 2000 ms", "observed": "90 ms",
         "ok": True, "hint": ""}]
    line = telemetry.require_delivered({"evidence": rows, "analysis": analysis(231)})
    assert line.startswith("231 message(s) judged (231 judged of oven1/default (at least 200))")
    assert line.endswith("p99 90.0 ms (budget <= 2000 ms)")
    with pytest.raises(StageFailed, match="messages judged oven1/default"):
        telemetry.require_delivered({"evidence": telemetry.judged_rows(lab, analysis(12), 8.0),
                                     "analysis": analysis(12)})


def test_the_proof_uses_the_site_s_window_and_p99_budget(lab, monkeypatch):
    seen = {}

    taps = object()

    def window(site, seconds, tls=None, hub=None, settle=0.0, min_judged=None):   # nothing received: every check fails
        from layernet.telemetry.verify import routes

        seen.update(seconds=seconds, tls=tls, hub=hub, min_judged=min_judged)
        rl = routes(site)
        return rl, {"records": {r.label: {h.index: [] for h in r.hops} for r in rl}, "kafka_error": None}

    monkeypatch.setattr(telemetry, "observe", window)       # THE window (layernet.telemetry.verify.observe)
    monkeypatch.setattr(telemetry, "tap_tls", lambda site, tgt=None: taps)     # no taps: the window above stands in
    monkeypatch.setattr("layernet.targets.sides",
                        lambda s, t=None: (None, None, SimpleNamespace(eventhubs_refusals=lambda since: [])))
    out = telemetry.messages(lab)
    assert seen["seconds"] == 8.0 and seen["min_judged"] == 200
    # the taps get the stage's TLS; the hub is read where the Azure calls run
    assert seen["tls"] is taps and seen["hub"].__qualname__ == "hub.<locals>.read"
    by = {r["check"]: r for r in out["evidence"]}
    assert by["telemetry end-to-end p99"]["expected"] == "<= 2000 ms"
    assert by["messages judged oven1/default"]["observed"] == "0 judged" and not by["messages judged oven1/default"]["ok"]
    telemetry.messages(load_site(ROOT / "params" / "lab.yaml", ["telemetry.proof.p99_ms=150"]), seconds=3.0)
    assert seen["seconds"] == 3.0
