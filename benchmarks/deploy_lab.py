"""The whole deploy runbook on the lab (00 preflight -> 05 audit, six stages): how long each stage takes.

    .venv/bin/python benchmarks/deploy_lab.py [--twice]

Runs `layernet run deploy` exactly as `make demo` does, on a lab of its own (prefix "db", 10.67.0.0/16) that is
down at the start, so the run brings the lab up (inside the infrastructure stage) and walks every stage. Prints each
stage's seconds from the run's manifest, the total wall time of the command and of the six stages, and the target
(90 s). With --twice the lab is kept and the runbook runs a second time: every plan empty (the telemetry stage
still proves its window). Takes the lab down at the end. Needs root and the lab's tools (make setup).
Exit 1 when a stage failed or the first run's stages took longer than the target.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERNET = str(Path(sys.executable).parent / "layernet")
PREFIX, BASE = "db", "10.67.0.0/16"
TARGET = 90.0


def overrides() -> list[str]:
    from layernet.harden.lab import beside

    return beside(ROOT / "params" / "lab.yaml", PREFIX, BASE)


def site_args() -> list[str]:
    out = ["--site", "params/lab.yaml"]
    for o in overrides():
        out += ["-p", o]
    return out


def run(out_dir: Path, keep: bool) -> tuple[float, dict, str]:
    argv = [LAYERNET, "run", "deploy", *site_args(), "--out", str(out_dir)] + (["--keep-lab"] if keep else [])
    t = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    wall = time.monotonic() - t
    index = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if index is None or not (index.parent / "manifest.json").exists():
        raise SystemExit(f"the run printed no run folder (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, json.loads((index.parent / "manifest.json").read_text()), proc.stdout


def show(label: str, wall: float, m: dict) -> float:
    print(f"\n{label}: {m['run_id']}")
    print(f"  {'stage':<16}{'status':<9}{'seconds':>9}  results")
    total = 0.0
    for s in m["stages"]:
        total += s.get("duration_s") or 0.0
        res = s.get("results") or {}
        brief = {k: res[k] for k in ("planned_changes", "applied", "applied_changes", "probes", "connected",
                                     "messages", "lost", "e2e_p50_ms", "e2e_p99_ms", "connections") if k in res}
        print(f"  {s['name']:<16}{s['status']:<9}{s.get('duration_s') or 0:>9.1f}  {brief}")
    print(f"  {'six stages':<25}{total:>9.1f}  (target {TARGET:g} s: {'met' if total <= TARGET else 'NOT met'})")
    print(f"  {'command wall time':<25}{wall:>9.1f}  (Python start-up, kernels, reports and the lab's teardown included)")
    return total


def main(argv: list[str]) -> int:
    twice = "--twice" in argv
    subprocess.run([LAYERNET, "lab", "down", *site_args()], capture_output=True, cwd=ROOT)
    try:
        with tempfile.TemporaryDirectory(prefix="deploy-bench-") as d:
            wall, m, _ = run(Path(d), keep=twice)
            total = show("first run (the lab down at the start)", wall, m)
            ok = all(s["status"] == "passed" for s in m["stages"]) and total <= TARGET
            if twice:
                wall2, m2, _ = run(Path(d), keep=True)
                show("second run (the lab kept: every plan empty)", wall2, m2)
                changes = {s["name"]: (s.get("results") or {}).get("planned_changes") for s in m2["stages"]}
                print(f"  planned changes on the second run: {changes}")
    finally:
        subprocess.run([LAYERNET, "lab", "down", *site_args()], capture_output=True, cwd=ROOT)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
