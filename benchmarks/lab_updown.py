"""Time `lab up` and `lab down`, new TLS connections through the proxy chain, and the probe matrix.

    sudo flock /tmp/layernet-lab.lock .venv/bin/python benchmarks/lab_updown.py [--site params/lab.yaml] [--prefix lb]
        [--rounds 5] [--cli]

Each round runs the same code as `layernet lab up` (clean, namespaces, certificate, render, nftables,
processes, health) and `layernet lab down`. After the rounds the lab is brought up once more to time new
TLS connections from the lowest level through every proxy to the cloud stand-in, next to the same
connection made directly from the egress level, and the full probe matrix (`layernet probe`); then it is taken
down. Targets: up < 2 s, down < 1 s.
With --cli the rounds run the commands themselves (`layernet lab up` / `lab down` in a new process, as a user
types them: interpreter start and imports included) and time them from outside.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import time

from layernet.lab import layout
from layernet.lab import commands, netns
from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[1]
UP_TARGET, DOWN_TARGET = 2.0, 1.0

CLIENT = r"""
import json, socket, ssl, sys, time
host, ip, port, ca, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["layernet-echo"])      # the cloud's echo (names its HTTPS apps serve answer it too)
times = []
for _ in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((ip, port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tls = ctx.wrap_socket(s, server_hostname=host)
    reply = tls.recv(4096)
    tls.close()
    assert reply.startswith(b"{"), reply
    times.append(1000 * (time.perf_counter() - t0))
print(json.dumps(times))
"""


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values):6.1f} ms  min {min(values):6.1f}  max {max(values):6.1f}"


def connection_times(site, ns: str, host: str, ip: str, n: int) -> list[float]:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, host, ip, "443",
                           str(layout.ca_cert_path(site)), str(n)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"connection benchmark failed in {ns}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def cli_seconds(*args: str) -> float:
    """Wall time of one `layernet ...` command (exit 0 required)."""
    t0 = time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / "layernet"), *args], capture_output=True, text=True,
                          timeout=600)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"layernet {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return seconds


def probe_matrix_times(site, runs: int) -> tuple[list[float], int, int]:
    """Seconds of each full probe matrix run (what `layernet probe` runs, every level in parallel), the number of
    checks and how many failed in the last run."""
    from layernet.probe_run import run_matrix
    from layernet.targets.lab import lab_target

    target, times, rows = lab_target(site), [], []
    for _ in range(runs):
        t0 = time.monotonic()
        rows = run_matrix(site, target=target, verbose=False)
        times.append(time.monotonic() - t0)
    return times, len(rows), sum(1 for r in rows if not r.get("ok"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default=str(ROOT / "params" / "lab.yaml"))
    ap.add_argument("--prefix", default="lb", help="lab prefix for the benchmark (default lb, not the real lab's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--probe-runs", type=int, default=3, help="full probe matrix runs on the lab (0: none)")
    ap.add_argument("--cli", action="store_true", help="time the `layernet lab up/down` commands from outside")
    args = ap.parse_args(argv)
    site = load_site(args.site, [f"lab.prefix={args.prefix}"])
    ups, downs = [], []
    cli_site = ["--site", args.site, "-p", f"lab.prefix={args.prefix}"]
    try:
        for i in range(args.rounds):
            if args.cli:
                ups.append(cli_seconds("lab", "up", *cli_site))
                downs.append(cli_seconds("lab", "down", *cli_site))
            else:
                ups.append(commands.up(site))
                downs.append(commands.down(site))
            print(f"round {i + 1}: up {ups[-1]:.3f} s  down {downs[-1]:.3f} s", flush=True)
        commands.up(site)
        chain = site.chain
        lowest, egress = chain[-1], chain[0]
        topo = netns.topology(site)
        parent = site.parent(lowest)
        host = "management.azure.com"
        through = connection_times(site, topo.level_ns[lowest.name], host, str(parent.node_ip), args.connections)
        direct = connection_times(site, topo.level_ns[egress.name], host, str(topo.cloud_tls_ip), args.connections)
        matrix_s, checks, failed = probe_matrix_times(site, args.probe_runs)
    finally:
        commands.down(site)
    up_med, down_med = statistics.median(ups), statistics.median(downs)
    print()
    what = "`layernet lab up/down` commands, wall time" if args.cli else "commands.up/down in this process"
    print(f"{what}, {args.rounds} rounds, site {args.site}")
    print(f"lab up    {_ms([1000 * u for u in ups])}   target < {UP_TARGET:.0f} s: {'met' if up_med < UP_TARGET else 'MISSED'}")
    print(f"lab down  {_ms([1000 * d for d in downs])}   target < {DOWN_TARGET:.0f} s: {'met' if down_med < DOWN_TARGET else 'MISSED'}")
    hops = len([lv for lv in chain if lv.proxy and lv is not lowest])
    print(f"new TLS connection {lowest.name} -> {hops} proxies -> cloud  {_ms(through)}  (n={len(through)})")
    print(f"new TLS connection {egress.name} -> cloud directly         {_ms(direct)}  (n={len(direct)})")
    print(f"per proxy hop: ~{(statistics.median(through) - statistics.median(direct)) / max(hops, 1):.2f} ms")
    if matrix_s:
        print(f"probe matrix ({checks} checks, {failed} failed)  {_ms([1000 * t for t in matrix_s])}  (n={len(matrix_s)})")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    return 0 if up_med < UP_TARGET and down_med < DOWN_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
