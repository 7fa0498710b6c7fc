"""Load through the full lab chain (level2 -> level3 Envoy -> level4 Envoy -> cloud).

    python benchmarks/load_chain.py --site params/lab.yaml [-p lab.prefix=XX] [--clients 64] [--seconds 30] [--up]

N clients (default 64, at most 256) open new verified TLS connections for T seconds (default 30, at most 300),
only to the lab's level-3 proxy address (checked with the lab's route check). Prints failed connections (must
be 0), p50/p99 connect and handshake latency and each Envoy's resident memory before and after, as JSON.
With --up the lab is brought up first and taken down at the end. Exit code 1 when any connection failed.
"""
from __future__ import annotations

import argparse
import json
import sys

from layernet.harden import load
from layernet.lab import commands
from layernet.site import load_site


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default="params/lab.yaml")
    ap.add_argument("-p", "--param", action="append", default=[])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--up", action="store_true", help="bring the lab up first and take it down afterwards")
    args = ap.parse_args(argv)
    site = load_site(args.site, args.param)
    if args.up:
        commands.up(site)
    elif not commands.lab_is_up(site):
        print("error: the lab is not up (use --up or `layernet lab up`)", file=sys.stderr)
        return 2
    try:
        result = load.run(site, clients=args.clients, seconds=args.seconds)
    finally:
        if args.up:
            commands.down(site)
    print(json.dumps(result, indent=1))
    return 0 if result["failed"] == 0 and result["connections"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
