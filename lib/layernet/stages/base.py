"""The one shape every stage has: plan -> apply(plan) -> verify.

- `plan(...)` compares the desired state (from the site) with the live state and returns a `Plan`: every step in
  order, each either a change (with the exact command, request or diff it will run) or a skip with the reason
  (already in the desired state). Nothing changes while planning.
- `apply(plan, ...)` does exactly the plan's changes, in order, and nothing else. Before it starts it re-reads
  the live state; when that no longer matches what the plan saw (`Plan.observed`), it raises `DriftError`.
- `verify(...)` returns evidence rows (see `EVIDENCE_COLUMNS`), the same code for a real site and the lab.

Notebooks show `plan.table()`, then the applied steps, then the evidence.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from layernet.errors import DriftError

EVIDENCE_COLUMNS = ["level", "check", "expected", "observed", "ok", "hint"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    level: str                    # a level name, or "site" for site-wide steps
    action: str                   # short verb phrase: "register provider", "connect cluster", "restart envoy"
    target: str                   # what it acts on: a resource id, a file, a process
    detail: str = ""              # the exact command line, request or diff that apply will run
    skip: bool = False            # True: already in the desired state, apply does nothing
    reason: str = ""              # why the step is needed, or why it is skipped

    def as_row(self) -> dict:
        return {"level": self.level, "action": self.action, "target": self.target,
                "change": "skip" if self.skip else "change", "reason": self.reason, "detail": self.detail}


@dataclass
class Plan:
    stage: str
    steps: list[Step] = field(default_factory=list)
    observed: str = ""            # fingerprint of the live state the plan was made against (see `fingerprint`)
    executor: str = ""            # which executor apply will use: "az", "arm", "lab", ...
    context: dict[str, Any] = field(default_factory=dict)   # what apply needs beyond the steps (no secrets)

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if not s.skip]

    @property
    def empty(self) -> bool:
        return not self.changes

    def rows(self) -> list[dict]:
        return [s.as_row() for s in self.steps]

    def table(self):
        import pandas as pd
        cols = ["level", "action", "target", "change", "reason", "detail"]
        return pd.DataFrame(self.rows(), columns=cols)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "executor": self.executor, "observed": self.observed,
                "steps": [asdict(s) for s in self.steps], "context": self.context}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(d["stage"], [Step(**s) for s in d.get("steps", [])], d.get("observed", ""), d.get("executor", ""),
                   dict(d.get("context") or {}))


def fingerprint(live: Any) -> str:
    """A stable digest of an observed live state (any JSON-able value)."""
    return hashlib.sha256(json.dumps(live, sort_keys=True, default=str).encode()).hexdigest()[:16]


def refuse_drift(plan: Plan, live_now: Any) -> None:
    """Raise DriftError when the live state differs from the one the plan was made against."""
    now = fingerprint(live_now)
    if plan.observed and now != plan.observed:
        raise DriftError(f"stage {plan.stage}: the live state changed since the plan was made "
                         f"(planned against {plan.observed}, now {now}); nothing was applied. "
                         "Run the plan again, review it, then apply.")


def evidence(level: str, check: str, expected: str, observed: str, ok: bool, hint: str = "") -> dict:
    return {"level": level, "check": check, "expected": expected, "observed": observed, "ok": bool(ok),
            "hint": "" if ok else hint}


def evidence_table(rows: list[dict]):
    import pandas as pd
    return pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)


def progress_printer(prefix: str = "") -> Progress:
    def _p(msg: str) -> None:
        print(f"{prefix}{msg}", flush=True)
    return _p


# ---- what every stage notebook shares: the stage's window, the proxies' evidence in it, dry runs
def begin():
    """The stage's start time: the window in which the proxies' logs are read for evidence."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def crossings(site, since=None):
    """Every connection that crossed (or tried to cross) a proxy during the stage, as paths (crossings.py)."""
    from layernet import crossings as cx
    from layernet.targets.base import get_target

    return cx.paths(site, get_target(site), since)


def refused_hosts(site, since=None) -> dict[str, list[str]]:
    """{level where it was refused: ["host:port (from level)"]} in the stage's window."""
    from layernet import crossings as cx

    return cx.refused(site, crossings(site, since))


def picture(site, df, title: str, hosts: Optional[list[str]] = None):
    """Which calls crossed which hops during the stage (an SVG for the report)."""
    from IPython.display import SVG

    from layernet import crossings as cx

    return SVG(cx.picture(site, df, hosts=hosts, title=title))


def apply_unless_dry(apply, plan: "Plan", site, run_dir: str = "", dry_run: bool = False) -> list[dict]:
    """Apply the reviewed plan with the stage's `apply` (nothing in a dry run)."""
    if dry_run:
        print("dry run: nothing applied")
        return []
    from pathlib import Path

    return apply(plan, site, run_dir=Path(run_dir) if run_dir else None)


def applied_table(rows: list[dict]):
    """The changes apply made, one row each (the executors' outcome rows)."""
    import pandas as pd

    cols = ["level", "action", "target", "ok", "rc", "attempts", "seconds", "retried_for", "output"]
    return pd.DataFrame(rows, columns=cols)


def verify_table(rows: list[dict]):
    return evidence_table(rows)


def failed(rows: list[dict]) -> Optional[str]:
    """The first failing evidence row as one line: level, check, what was observed, the hint (None: all pass)."""
    bad = [r for r in rows if not r["ok"]]
    return f"{bad[0]['level']}: {bad[0]['check']} is {bad[0]['observed']}: {bad[0]['hint']}" if bad else None


def run_link(path: str, run_dir: str = "") -> str:
    """An HTML link to a file the stage kept, relative to the run folder when it lies inside it."""
    if not path:
        return ""
    from pathlib import Path

    rel = Path(path)
    if run_dir:
        try:
            rel = rel.relative_to(Path(run_dir))
        except ValueError:
            pass
    return f'<a href="{rel}">{rel.name}</a>'
