"""Hardening results as tables: a summary per item, CSV files, and the `layernet harden` command."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import pandas as pd

from layernet.table import print_table

ITEMS = {
    "differential": "server names: allow list vs real Envoy, every proxy level and port",
    "source": "connections from outside a proxy's allowed sources (refused-source)",
    "isolation": "non-adjacent levels and the cloud unreachable (TCP, UDP, ICMP)",
    "dns": "inner DNS never forwards names outside the allow list",
}


def summary(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for key, df in frames.items():
        ok = df["ok"].astype(bool) if len(df) else pd.Series(dtype=bool)
        rows.append({"item": key, "what": ITEMS.get(key, ""), "checks": int(len(df)), "passed": int(ok.sum()),
                     "failed": int((~ok).sum()), "result": "PASS" if len(df) and ok.all() else "FAIL"})
    return pd.DataFrame(rows, columns=["item", "what", "checks", "passed", "failed", "result"])


def write_tables(frames: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, df in list(frames.items()) + [("summary", summary(frames))]:
        p = out / f"harden-{key}.csv"
        df.to_csv(p, index=False)
        paths.append(p)
    return paths


def failures(frames: dict[str, pd.DataFrame], limit: int = 20) -> pd.DataFrame:
    parts = [df[~df["ok"].astype(bool)].assign(item=key) for key, df in frames.items() if len(df)]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts).head(limit) if parts else pd.DataFrame()


def cli(site, out: Optional[str] = None) -> int:
    """`layernet harden --site FILE [--out DIR]`: items 1-3 on a running lab; exit 0 when all pass."""
    from layernet.harden import checks
    from layernet.lab import commands

    if site.target != "lab":
        print(f"error: hardening runs on the lab only (site target: {site.target})", file=sys.stderr)
        return 2
    if not commands.lab_is_up(site):
        print(f"error: the lab (prefix {site.lab.prefix}) is not up: run `layernet lab up --site ...` or the "
              "infrastructure stage first", file=sys.stderr)
        return 2
    frames = checks.run_all(site)
    table = summary(frames)
    print_table(table.to_dict("records"), list(table.columns))
    bad = failures(frames, limit=100_000)
    if len(bad):
        print("\nfailures:")
        print_table(bad.to_dict("records"), list(bad.columns), limit=20,
                    csv_path=Path(out) / "harden-failures.csv" if out else None,
                    hint="" if out else "--out DIR writes the full table as CSV")
    if out:
        for p in write_tables(frames, Path(out)):
            print(p)
    return 0 if (table["result"] == "PASS").all() else 1
