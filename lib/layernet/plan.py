"""What a plan is made of, and the refusal to apply a plan the live state no longer gives.

Two shapes, one rule (apply does exactly the reviewed plan, or nothing):
- a stage's `Plan` of `Step`s (stages 02-04: ARM requests and az commands); apply compares the live state's
  `fingerprint` with the one the plan saw (`refuse_drift`);
- a target's list of `Change`s (stage 01: one per object a level holds, with its diff); apply plans again and
  compares (`require_same_plan`).
Both raise `DriftError` and change nothing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from layernet.errors import DriftError

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


@dataclass(frozen=True)
class Change:
    level: str
    obj: str           # what changes: a file name on the lab, "namespace/Kind/name" on kube
    action: str        # "create" | "update" | "unchanged" | "delete" | "restart" | "replace" (kube) | "repair" (lab)
    diff: str = ""     # unified diff, desired vs live ("" when unchanged)

    def as_row(self) -> dict:
        return {"level": self.level, "object": self.obj, "action": self.action,
                "diff_lines": sum(1 for l in self.diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---"))}


def require_same_plan(reviewed: Optional[list[Change]], now: list[Change], where: str) -> None:
    """DriftError unless the plan made now equals the reviewed one (same objects, actions and diffs)."""
    if reviewed is None:
        return
    key = lambda cs: [(c.level, c.obj, c.action, c.diff) for c in cs]  # noqa: E731
    if key(reviewed) != key(now):
        was = {(c.level, c.obj): c.action for c in reviewed}
        moved = [f"{c.level}/{c.obj}: planned {was.get((c.level, c.obj), 'nothing')}, now {c.action}"
                 for c in now if was.get((c.level, c.obj)) != c.action][:5]
        raise DriftError(f"{where} changed since the plan was reviewed; nothing was applied"
                         + (f" ({'; '.join(moved)})" if moved else " (the diffs differ)")
                         + ". Plan again, review it, then apply.")
