"""Telemetry through three real mosquitto brokers on loopback: N assets x R messages/s for T seconds.

    python benchmarks/telemetry_flow.py [--assets 10] [--rate 100] [--seconds 60] [--step]

The site is params/lab.yaml's flow (oven1 -> level2 broker -> level3 -> level4, enriched at each dataflow) with
each level on its own loopback address (127.<net>.<level>.1); the OPC PLC simulator ticks at R per second, one
connector publishes every asset, one dataflow process per level runs that level's rendered dataflows. Prints, as
JSON: messages judged, lost, end-to-end p50/p99 from the OPC UA source timestamp, p99 per hop and the CPU share
of each broker and stand-in. With --step the rate per asset doubles from --rate while the run stays lossless with
p99 <= --p99-ms (or halves until it is), and the highest sustained rate is printed (lossless, p99 within bound, the source keeping up). Exit code 1 when a run lost messages.
With --lab-site (and -p overrides) the same run happens inside that lab's egress namespace and the egress
dataflow produces to the lab's Event Hubs (real Kafka behind the cloud front); the lab and its broker must be up.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from layernet.telemetry.loopback import free_port, loopback_site, measure


def run(assets: int, rate: float, seconds: float, net: int, lab_site=None, overrides=()) -> dict:
    if lab_site:
        from layernet.telemetry.loopback import measure_in_lab

        result = measure_in_lab(lab_site, list(overrides), seconds=seconds, rate=rate, assets=assets, net=net)
        result["rate_per_asset"] = rate
        return result
    hosts = [f"127.{net}.{n}.1" for n in (4, 3, 2)]
    site = loopback_site("params/lab.yaml", net=net, port=free_port(hosts, 18950), opc_port=free_port(hosts[2:], 50600),
                         assets=assets, rate_hz=rate)
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as d:
        result = measure(site, seconds, Path(d))
    result["rate_per_asset"] = rate
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=10)
    ap.add_argument("--rate", type=float, default=100.0, help="messages per second per asset")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--step", action="store_true", help="double the rate while lossless and within --p99-ms")
    ap.add_argument("--p99-ms", type=float, default=100.0)
    ap.add_argument("--max-rate", type=float, default=1600.0)
    ap.add_argument("--net", type=int, default=78, help="second octet of the loopback addresses (127.NET.x.1)")
    ap.add_argument("--lab-site", help="run inside this lab's egress namespace, through its Event Hubs")
    ap.add_argument("-p", dest="overrides", action="append", default=[], help="site overrides for --lab-site")
    args = ap.parse_args(argv)
    if not (1 <= args.assets <= 50 and 0 < args.rate <= 2000 and 5 <= args.seconds <= 600):
        print("error: --assets 1-50, --rate 0-2000, --seconds 5-600", file=sys.stderr)
        return 2
    first = run(args.assets, args.rate, args.seconds, args.net, args.lab_site, args.overrides)
    print(json.dumps(first, indent=1), flush=True)
    if not args.step:
        return 1 if first["lost"] else 0

    def sustained(r: dict) -> bool:
        """Lossless, within the p99 bound, and the source kept up (90 % of the offered rate judged)."""
        offered = r["rate_per_asset"] * r["assets"]
        return (not r["lost"] and r["e2e_p99_ms"] is not None and r["e2e_p99_ms"] <= args.p99_ms
                and r["rate_msgs_per_s"] >= 0.9 * offered)

    def brief(r: dict) -> str:
        return json.dumps({k: r[k] for k in ("rate_per_asset", "rate_msgs_per_s", "lost", "source_sequence_gaps",
                                             "e2e_p50_ms", "e2e_p99_ms", "cpu_percent")})

    rate, best = args.rate, (args.rate if sustained(first) else None)
    factor = 2.0 if best else 0.5          # up from a sustained rate, down from one that was not
    while True:
        rate *= factor
        if rate > args.max_rate or rate < 1:
            break
        r = run(args.assets, rate, min(args.seconds, 30.0), args.net, args.lab_site, args.overrides)
        print(brief(r), flush=True)
        if sustained(r):
            best = max(best or 0, rate)
            if factor < 1:
                break
        elif factor > 1:
            break
    print(json.dumps({"highest_sustained_rate_per_asset": best, "assets": args.assets,
                      "highest_sustained_total_msgs_per_s": best * args.assets if best else None}))
    return 1 if first["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
