"""The lab's clusters: `lab up` and `lab down` times with a Kubernetes control plane and a node per level, the memory
each level takes, and how fast the jump box's kube API calls are.

    sudo flock /tmp/layernet-lab.lock .venv/bin/python benchmarks/clusters_lab.py [--site params/lab.yaml]
        [--prefix cb] [--rounds 3]

Budgets: up <= 10 s with three clusters, down <= 2 s, <= 700 MB RSS per level for control plane + node (every process
in the level's namespace: kine, the control plane (kube-apiserver, kube-controller-manager and kube-scheduler in one
process), the node agent, and the level's Envoy and CoreDNS pods, measured once stage 01 has applied them through the
kube path). Run it on an idle machine: the API servers' start is CPU-bound.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from layernet.lab import layout
from layernet.lab import commands, netns, procs
from layernet.lab.clusters import kubeconfig
from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[1]
UP_BUDGET, DOWN_BUDGET, RSS_BUDGET_MB = 10.0, 2.0, 700


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--site", default=str(ROOT / "params" / "lab.yaml"))
    ap.add_argument("--prefix", default="cb")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    site = load_site(a.site, [f"lab.prefix={a.prefix}"])
    ups, downs = [], []
    for _ in range(a.rounds):
        ups.append(commands.up(site))
        downs.append(commands.down(site))
    commands.up(site)
    try:
        from layernet.targets.lab import LabTarget

        t0 = time.monotonic()
        steps = LabTarget(site).apply(commands.render_lab(site))
        print(f"stage 01 on the new clusters (kube path): {sum(not s.skip for s in steps)} object(s) in "
              f"{time.monotonic() - t0:.2f} s")
        time.sleep(5)        # let the controllers settle before measuring memory
        print(f"levels: {len(site.levels)}")
        for lv in site.chain:
            ns = layout.namespace(site, lv.name)
            print(f"  {lv.name:<10} RSS {rss_mb(procs.ns_pids(ns)):7.0f} MB (budget {RSS_BUDGET_MB} MB)")
        from layernet.targets.kube import Api

        api = Api(kubeconfig.client(site, site.chain[-1].name))
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            api.call("GET", "/api/v1/namespaces/kube-system/configmaps")
            times.append(1000 * (time.perf_counter() - t0))
        print(f"kube API GET from the jump box: p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms")
    finally:
        commands.down(site)
    print(f"lab up   : median {statistics.median(ups):5.2f} s, max {max(ups):5.2f} s (budget {UP_BUDGET} s)")
    print(f"lab down : median {statistics.median(downs):5.2f} s, max {max(downs):5.2f} s (budget {DOWN_BUDGET} s)")
    left = commands.leftovers(site)
    if left or netns.our_namespaces(a.prefix):
        print("left behind: " + ", ".join(left))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
