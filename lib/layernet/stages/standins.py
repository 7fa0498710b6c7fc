"""Which parts of Azure a stage's run talked to were stand-ins (the lab), said plainly in the stage's report."""
from __future__ import annotations

from layernet import context

REAL = "none: every Azure call of this stage went to Azure"


def rows(site, stage: str) -> list[dict]:
    """{"part", "hosts", "on this run"} per stand-in the Azure side put in Azure's place for `stage` (arc, aio,
    telemetry); one row saying so when there is none (`site`: a Context or a Site)."""
    found = context.of(site).azure.stand_ins(stage)
    return found or [{"part": "stand-ins", "hosts": "", "on this run": REAL}]


def table(site, stage: str):
    import pandas as pd

    return pd.DataFrame(rows(site, stage), columns=["part", "hosts", "on this run"])


def sentence(site, stage: str) -> str:
    """One line for the verdict: which parts were stand-ins, or that none were."""
    found = [r["part"] for r in rows(site, stage) if r["on this run"] != REAL]
    return ("lab run: " + ", ".join(found) + " were stand-ins, not Azure") if found else "against Azure"
