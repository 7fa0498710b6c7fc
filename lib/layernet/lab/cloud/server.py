"""The cloud process: the TLS front plus (with --state) the HTTPS apps and the routes file.

    python -m layernet.lab.cloud --addr 198.51.100.10 --ports 443,8084,9093 --cert server.crt --key server.key \\
        [--state <lab state>/cloud --ca-dir <lab state>/ca --region westeurope --subscription-id S \\
         --tenant-id T --egress-ip 192.168.104.10 --retry-after 1 --offline-after 60 --hooks my.module]

Without --state it is the echo alone (every name, every port).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path

from layernet.lab.cloud.front import Front
from layernet.lab.cloud.routes import RouteTable

ROUTES_FILE = "routes.json"


def _args(argv):
    ap = argparse.ArgumentParser(prog="python -m layernet.lab.cloud",
                                 description="The lab's cloud: TLS front dispatching by server name and ALPN.")
    ap.add_argument("--addr", required=True)
    ap.add_argument("--ports", default="443,8084,9093")
    ap.add_argument("--cert", required=True, help="the echo's certificate (every allowed name)")
    ap.add_argument("--key", required=True)
    ap.add_argument("--state", help="the cloud's state folder: apps, routes.json, request logs, ARM store")
    ap.add_argument("--ca-dir", help="the lab CA folder (default: <state>/../ca)")
    ap.add_argument("--region", default="westeurope")
    ap.add_argument("--cloud", default="public")
    ap.add_argument("--subscription-id", default="00000000-0000-0000-0000-000000000001")
    ap.add_argument("--tenant-id")
    ap.add_argument("--egress-ip", default="", help="heartbeats must come from here to count as Connected")
    ap.add_argument("--retry-after", default="1", help="Retry-After of long-running operations (seconds)")
    ap.add_argument("--offline-after", type=float, default=60.0)
    ap.add_argument("--hooks", default="", help="modules to import first (comma-separated); they register ARM hooks")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = _args(argv)
    ports = [int(p) for p in args.ports.split(",") if p]
    routes = RouteTable()
    apps = None
    log = None
    if args.state:
        from layernet.lab.cloud.apps import AppServer, CloudSettings, build_cloud

        state = Path(args.state)
        for name in [m for m in args.hooks.split(",") if m]:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                print(f"cloud stand-in: --hooks {name}: cannot import it ({exc}); fix the module name", file=sys.stderr)
                return 2
        ca_dir = Path(args.ca_dir) if args.ca_dir else state.parent / "ca"
        try:
            cloud = build_cloud(CloudSettings(state=state, region=args.region, cloud=args.cloud, tenant_id=args.tenant_id,
                                              subscription_id=args.subscription_id, egress_ip=args.egress_ip,
                                              retry_after=args.retry_after, offline_after=args.offline_after))
        except ValueError as exc:
            print(f"cloud stand-in: {exc}", file=sys.stderr)
            return 2
        apps = AppServer(cloud.specs, ca_dir, state / "certs", log_dir=state / "requests")
        routes = RouteTable(apps.start(), state / ROUTES_FILE)
        log = state / "front.jsonl"
    front = Front(args.addr, ports, args.cert, args.key, routes=routes, log=log)
    front.listen()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    front.start()
    what = f"; apps: {', '.join(r.source for r in routes.builtin)}" if apps else ""
    print(f"cloud stand-in: TLS on {args.addr} ports {','.join(map(str, ports))}{what}", flush=True)
    stop.wait()
    front.close()
    if apps:
        apps.stop()
    return 0
