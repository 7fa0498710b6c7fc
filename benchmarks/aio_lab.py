"""Stage 03 on the lab, three levels: how long the plan, the apply, the check and a second (empty) plan take.

    .venv/bin/python benchmarks/aio_lab.py [RUNS]

Builds a lab of its own (prefix "ab", 10.76.0.0/16), Arc-enables it (stage 02, not timed), then per run deploys
AIO from scratch (the ARM store emptied of the stage's resources by rebuilding the lab between runs) and prints
the seconds of each part and of the whole stage (plan + apply + check; target: 20 s or less). Takes the lab
down at the end. Needs root and the lab's tools (make setup).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX, BASE = "ab", "10.76.0.0/16"
TARGET = 20.0


def site():
    from layernet.harden.lab import beside
    from layernet.site import load_site

    return load_site(ROOT / "params" / "lab.yaml", beside(ROOT / "params" / "lab.yaml", PREFIX, BASE))


def once(s) -> dict:
    from layernet.lab import commands
    from layernet.stages import aio, arc
    from layernet.targets.lab import lab_target

    commands.down(s)
    lab_target(s).apply(commands.render_lab(s))
    arc.run(arc.plan(s), s)
    quiet = lambda _line: None   # noqa: E731 - progress lines are not what is measured
    out = {}
    since = aio.begin()
    t = time.monotonic()
    p = aio.plan(s)
    out["plan"] = time.monotonic() - t
    t = time.monotonic()
    aio.apply(p, s, progress=quiet)
    out["apply"] = time.monotonic() - t
    t = time.monotonic()
    rows = aio.check(s, since)
    out["check"] = time.monotonic() - t
    out["stage"] = out["plan"] + out["apply"] + out["check"]
    bad = [r for r in rows if not r["ok"]]
    if bad:
        raise SystemExit(f"the stage failed: {bad[0]['level']}: {bad[0]['check']}: {bad[0]['hint']}")
    t = time.monotonic()
    again = aio.plan(s)
    out["second plan"] = time.monotonic() - t
    if not again.empty:
        raise SystemExit(f"the second plan is not empty: {[(x.level, x.action) for x in again.changes]}")
    out["resources"] = len(p.changes)
    out["mqtt checks"] = sum(1 for r in rows if r["check"].startswith("mqtt"))
    return out


def main() -> int:
    from layernet.lab import commands

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    s = site()
    why = commands.missing_requirements()
    if why:
        print(f"cannot build the lab here: {why}")
        return 2
    results = []
    try:
        for i in range(runs):
            r = once(s)
            results.append(r)
            print(f"run {i + 1}: plan {r['plan']:.2f} s, apply {r['apply']:.2f} s ({r['resources']} changes), "
                  f"check {r['check']:.2f} s ({r['mqtt checks']} MQTT round trips), stage {r['stage']:.2f} s; "
                  f"second plan {r['second plan']:.2f} s (empty)", flush=True)
    finally:
        commands.down(s)
    stage = [r["stage"] for r in results]
    verdict = "within" if max(stage) <= TARGET else "OVER"
    print(f"stage 03 on 3 levels: median {statistics.median(stage):.2f} s, max {max(stage):.2f} s "
          f"({verdict} the {TARGET:g} s target)")
    return 0 if max(stage) <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
