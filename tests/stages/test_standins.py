"""The reports say plainly which parts of Azure were stand-ins: every lab stage names the lab's Entra and ARM and
what else stood in (Arc data plane and identity, registry, agents; AIO extensions; Event Hubs as Kafka); a real
site's report says every call went to Azure."""
from __future__ import annotations

from pathlib import Path
from sites import example_site

from layernet.site import load_site  # noqa: E402
from layernet.stages import standins  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_a_lab_run_names_every_stand_in_per_stage():
    lab = load_site(ROOT / "params" / "lab.yaml")
    parts = {stage: [r["part"] for r in standins.rows(lab, stage)] for stage in ("arc", "aio", "telemetry")}
    for stage, names in parts.items():
        assert names[:2] == ["Microsoft Entra ID (tokens)", "Azure Resource Manager"], stage
    assert "Arc identity (HIS)" in parts["arc"] and "Arc agents in each cluster" in parts["arc"]
    assert "AIO extensions in each cluster" in parts["aio"]
    assert "Azure Event Hubs" in parts["telemetry"]
    eh = next(r for r in standins.rows(lab, "telemetry") if r["part"] == "Azure Event Hubs")
    assert "Apache Kafka" in eh["on this run"]
    assert standins.sentence(lab, "aio").startswith("lab run: Microsoft Entra ID (tokens), Azure Resource Manager, ")
    assert list(standins.table(lab, "arc").columns) == ["part", "hosts", "on this run"]


def test_a_real_site_says_every_call_went_to_azure():
    site = example_site()
    assert standins.rows(site, "arc") == [{"part": "stand-ins", "hosts": "", "on this run": standins.REAL}]
    assert standins.sentence(site, "telemetry") == "against Azure"


def test_every_stage_notebook_shows_the_table():
    for nb, stage in (("02-arc", "arc"), ("03-aio", "aio"), ("04-telemetry", "telemetry")):
        text = (ROOT / "notebooks" / f"{nb}.ipynb").read_text()
        assert f'show(standins.table(ctx, \\"{stage}\\"))' in text, nb
