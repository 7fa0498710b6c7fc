"""Run the probe matrix on a site's target and show the result (`layernet probe --site FILE`)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from layernet import targets
from layernet.allowlist import effective_allowlist
from layernet.matrix import build_matrix
from layernet.table import print_table

COLUMNS = ["level", "check", "host", "port", "expected", "observed", "ok", "latency_ms", "hint"]


def run_matrix(site, target=None, matrix: Optional[dict] = None, verbose: bool = True) -> list[dict]:
    """Build the matrix (unless given), run each level's checks through `target.probe`, return every row.
    Levels run in parallel; inside a level the probe runs its checks concurrently."""
    if target is None:
        target = targets.get_target(site)
    if matrix is None:
        matrix = build_matrix(site, effective_allowlist(site), **target.probe_inputs())
    started = time.monotonic()
    levels = [name for name, checks in matrix.items() if checks]
    with ThreadPoolExecutor(max_workers=max(1, len(levels))) as pool:
        results = list(pool.map(lambda name: target.probe(name, matrix[name]), levels))
    rows = [row for level_rows in results for row in level_rows]
    if verbose:
        failed = sum(1 for r in rows if not r.get("ok"))
        print(f"probe matrix: {len(rows)} checks on {len(levels)} level(s), {failed} failed, "
              f"{time.monotonic() - started:.2f} s")
    return rows


def run_matrix_cli(site) -> int:
    rows = run_matrix(site)
    shown = [dict(r, ok="ok" if r.get("ok") else "FAIL") for r in rows]
    print_table(shown, COLUMNS)
    return 0 if rows and all(r.get("ok") for r in rows) else 1

