"""How long the secret-shape detection takes on a megabyte of hostile text, and `layernet validate` on a site file
holding such a value.

    python benchmarks/secret_shapes.py [--repeat 3] [--mb 1]

For each text (repeated `a.`, `a-`, `a:`, `a=`, `eyJ-`, `a://`, ` a:b@`, `?sig=`, `-----BEGIN `, and one with every
trigger at once) prints one JSON object: its length, whether it looks like a secret, and the best of --repeat
runs of `looks_secret` and of `redact`, in seconds. Then times `layernet validate` (the installed command, a new
process) on a site whose images.probe is a megabyte of `a.` and of `a-`. Exit code 1 when a detection takes 0.5 s
or more, or a validate 3 s or more (a quadratic pattern takes minutes on these).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from layernet.site.secrets import looks_secret, redact

ROOT = Path(__file__).resolve().parents[1]
LAYERNET = str(Path(sys.executable).parent / "layernet")
DETECT_LIMIT_S, VALIDATE_LIMIT_S = 0.5, 3.0
UNITS = ["a.", "a-", "a:", "a=", "eyJ-", "a://", " a:b@", "?sig=", "-----BEGIN ", "a://b:c=eyJ?sig=-----BEGIN @"]


def best(fn, repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mb", type=float, default=1.0)
    args = ap.parse_args()
    size = int(args.mb * 1_000_000)
    slow = False
    for unit in UNITS:
        text = (unit * (size // len(unit) + 1))[:size]
        found = looks_secret(text)
        detect = best(lambda: looks_secret(text), args.repeat)
        hide = best(lambda: redact(text), args.repeat)
        slow |= max(detect, hide) >= DETECT_LIMIT_S
        print(json.dumps({"text": f"{unit!r} x {size // len(unit):,}", "chars": len(text), "secret": found,
                          "looks_secret_s": round(detect, 4), "redact_s": round(hide, 4)}))
    raw = yaml.safe_load((ROOT / "params" / "lab.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for unit in ("a.", "a-"):
            raw["images"]["probe"] = unit * (size // 2)
            f = Path(tmp) / "site.yaml"
            f.write_text(yaml.safe_dump(raw, sort_keys=False, width=10**9))
            t0 = time.perf_counter()
            proc = subprocess.run([LAYERNET, "validate", "--site", str(f)], capture_output=True, text=True)
            took = time.perf_counter() - t0
            slow |= took >= VALIDATE_LIMIT_S
            print(json.dumps({"validate": f"images.probe = {unit!r} x {size // 2:,}", "exit": proc.returncode,
                              "seconds": round(took, 3), "first_error": (proc.stderr.splitlines() or [""])[-1][:120]}))
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
