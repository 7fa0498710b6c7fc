"""What reaching every host a role requires costs the lab's stand-ins, per level: the Arc agents' and the AIO
extensions' connections by name to the required hosts their own calls do not use (lab/reach.py).

    .venv/bin/python benchmarks/required_hosts_lab.py

Builds a lab of its own (prefix "rq", 10.71.0.0/16), runs stage 02 and stage 03, and prints per
level how many reach calls each stand-in made and their seconds in total, beside the seconds of the Arc agents'
own start-up calls and of each stage (target: the reach calls under 0.5 s per level and stand-in). Takes the lab
down at the end. Run it under the lab lock (flock /tmp/layernet-lab.lock ...); needs root and make setup's tools.
"""
from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX, BASE = "rq", "10.71.0.0/16"
TARGET = 0.5


def main() -> int:
    from layernet.harden.lab import beside
    from layernet.lab import aioext, services
    from layernet.site import load_site
    from layernet.stages import aio, arc
    from layernet.targets import lab as lab_target

    site = load_site(ROOT / "params" / "lab.yaml", beside(ROOT / "params" / "lab.yaml", PREFIX, BASE))
    worst = 0.0
    with lab_target.running(site):
        for name, stage, role in (("stage 02 (Arc)", arc, "arc-agents"), ("stage 03 (AIO)", aio, "aio-extensions")):
            t = time.monotonic()
            stage.run(stage.plan(site), site)
            rows = stage.check(site)
            took = time.monotonic() - t
            bad = [r for r in rows if not r["ok"]]
            print(f"{name}: {took:.1f} s, {'every check passed' if not bad else 'FAILED: ' + bad[0]['check']}")
            for lv in site.levels:
                st = (services.arc_agent_status(site, lv.name) if role == "arc-agents"
                      else aioext.status(site, lv.name)) or {}
                calls = st.get("calls") or []
                reach = [c for c in calls if c["step"].startswith("reach ")]
                own = [c for c in calls if not c["step"].startswith("reach ")]
                secs = sum(c.get("seconds") or 0 for c in reach)
                worst = max(worst, secs)
                own_s = sum(c.get("seconds") or 0 for c in own)
                print(f"  {lv.name}: {role}: {len(reach)} reach call(s), {secs:.3f} s in total"
                      + (f"; the agents' own start-up calls {own_s:.3f} s" if role == "arc-agents" else ""))
    print(f"slowest level's reach calls: {worst:.3f} s (target {TARGET} s): {'ok' if worst <= TARGET else 'OVER'}")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
