"""How long `layernet validate` takes on normal and hostile site files.

    python benchmarks/site_load.py [--repeat 5]

Writes each file into a temporary folder and times `load_site` on it (best of --repeat runs), then prints one
JSON object per file: its size, whether it loaded or the first error line, and the seconds. The cases: the lab
site, a 10 MB file (a long list of extra hosts), 2,000 extra hosts (the most a site may list), a 3.9 MB file just under the size limit, the billion-laughs
alias bomb, 1,000-deep nesting, and a site with every value behind an anchor. Reports also whether PyYAML's
libyaml parser is in use. Exit code 1 when any case takes 2 seconds or more.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from layernet.site import LIBYAML, SiteError, load_site

ROOT = Path(__file__).resolve().parents[1]
LAB = (ROOT / "params" / "lab.yaml").read_text()
LIMIT_S = 2.0


def _hosts(n: int) -> str:
    return "".join(f"    - {{host: h{i}.historian.contoso.com, ports: [443], purpose: p}}\n" for i in range(n))


def cases() -> dict[str, str]:
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        bomb.append(f"{name}: &{name} [" + ",".join([f"*{'abcdefghi'[i]}"] * 9) + "]")
    deep = "[" * 1000 + "x" + "]" * 1000
    return {
        "lab site": LAB,
        "10 MB (144k extra hosts)": LAB.replace("  extra_hosts: []\n", "  extra_hosts:\n" + _hosts(144_000)),
        "2,000 extra hosts (the most a site may list)": LAB.replace("  extra_hosts: []\n", "  extra_hosts:\n" + _hosts(2_000)),
        "3.9 MB (values over the budget)": LAB.replace("  extra_hosts: []\n", "  extra_hosts:\n" + _hosts(56_000)),
        "alias bomb (1 KB, 9^9 values)": "\n".join(bomb) + "\n" + LAB,
        "1,000-deep nesting": LAB.replace("description:", f"colour: {deep}\ndescription:", 1),
        "duplicate key at the end": LAB + "target: kube\n",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    slow = False
    print(json.dumps({"libyaml": LIBYAML}))
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in cases().items():
            f = Path(tmp) / "site.yaml"
            f.write_text(text)
            best, outcome = float("inf"), ""
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                try:
                    load_site(f)
                    outcome = "valid"
                except SiteError as exc:
                    outcome = str(exc).splitlines()[1].strip()[:160]
                best = min(best, time.perf_counter() - t0)
            slow |= best >= LIMIT_S
            print(json.dumps({"case": name, "bytes": len(text.encode()), "seconds": round(best, 4), "outcome": outcome}))
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
