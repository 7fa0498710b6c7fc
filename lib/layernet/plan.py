"""What a plan is made of, and the refusal to apply a plan the live state no longer gives.

Every stage plans a `Plan` of `Step`s: stages 02-04 ARM requests and az commands, stage 01 one step per object
a level holds (`change`: its unified diff as the detail, an unchanged object a skip). One rule: apply does exactly
the reviewed plan, or nothing. It compares the live state's `fingerprint` with the one the plan saw and raises
`DriftError` when they differ (`refuse_drift`). A stage-01 plan observes its own steps (`Plan.of`): each is a diff
of desired vs live, so the same steps planned again mean the same live state.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Callable

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
    def of(cls, stage: str, steps: list[Step], executor: str = "") -> "Plan":
        """A plan that observed its own steps (stage 01: each step is a diff of desired vs live)."""
        return cls(stage, steps, fingerprint(steps), executor)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(d["stage"], [Step(**s) for s in d.get("steps", [])], d.get("observed", ""), d.get("executor", ""),
                   dict(d.get("context") or {}))


UNCHANGED = "unchanged"
_WHY = {UNCHANGED: "live matches the desired state", "create": "not there yet",
        "update": "live differs from the desired state"}


def change(level: str, target: str, action: str, diff: str = "") -> Step:
    """A stage-01 step: one object of a level (a file on the lab, "namespace/Kind/name" on kube), its action
    (create / update / replace / restart / repair, or "unchanged": a skip) and the unified diff apply puts in place.
    The reason is the detail's first line when that says why (a replace names its immutable fields)."""
    first = diff.split("\n", 1)[0]
    said = first.lstrip("# ") if first and not first.startswith(("---", "+++", "@@")) else ""
    return Step(level, action, target, diff, skip=action == UNCHANGED, reason=said or _WHY.get(action, ""))


def _plain(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


def fingerprint(live: Any) -> str:
    """A stable digest of an observed live state (any JSON-able value, or steps)."""
    return hashlib.sha256(json.dumps(live, sort_keys=True, default=_plain).encode()).hexdigest()[:16]


def _moved(reviewed: list[Step], now: Any) -> str:
    """Which steps changed action between the reviewed plan and the one made now (when `now` is steps)."""
    if not now or not isinstance(now, list) or not all(isinstance(s, Step) for s in now):
        return ""
    was = {(s.level, s.target): s.action for s in reviewed}
    moved = [f"{s.level}/{s.target}: planned {was.get((s.level, s.target), 'nothing')}, now {s.action}"
             for s in now if was.get((s.level, s.target)) != s.action][:5]
    return "; ".join(moved) or "the diffs differ"


def refuse_drift(plan: Plan, live_now: Any) -> None:
    """Raise DriftError when the live state differs from the one the plan was made against (for a plan that
    observed its own steps, `live_now` is the steps planned now, and the message names those that moved)."""
    now = fingerprint(live_now)
    if plan.observed and now != plan.observed:
        moved = _moved(plan.steps, live_now)
        raise DriftError(f"stage {plan.stage}: the live state changed since the plan was made "
                         f"(planned against {plan.observed}, now {now}{'; ' + moved if moved else ''}); "
                         "nothing was applied. Run the plan again, review it, then apply.")
