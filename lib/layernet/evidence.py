"""Evidence rows: what every stage's `verify` (and every check that proves a state) returns, one row per check."""
from __future__ import annotations

EVIDENCE_COLUMNS = ["level", "check", "expected", "observed", "ok", "hint"]


def evidence(level: str, check: str, expected: str, observed: str, ok: bool, hint: str = "") -> dict:
    return {"level": level, "check": check, "expected": expected, "observed": observed, "ok": bool(ok),
            "hint": "" if ok else hint}


def evidence_table(rows: list[dict]):
    import pandas as pd
    return pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)


def failed(rows: list[dict]):
    """The first failing evidence row as one line: level, check, what was observed, the hint (None: all pass)."""
    bad = [r for r in rows if not r["ok"]]
    return f"{bad[0]['level']}: {bad[0]['check']} is {bad[0]['observed']}: {bad[0]['hint']}" if bad else None
