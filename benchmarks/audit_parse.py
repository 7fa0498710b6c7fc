"""Benchmark: parse an N-line Envoy access log and compute every audit finding.

    .venv/bin/python benchmarks/audit_parse.py [N] [--keep FILE]

Writes a realistic log (the lab site's levels, allowed / refused-name / refused-source / upstream-failure
connections, forwarded pairs between the proxy levels, about 0.1 % malformed lines: truncated, garbage and
a text-format line), then times `layernet.audit` (parse + findings) and a plain `json.loads` loop over the
same file, and prints both, their ratio and the peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ALLOWED = ["management.azure.com", "eastus.dp.kubernetesconfiguration.azure.com", "login.microsoftonline.com",
           "mcr.microsoft.com", "eastus.data.mcr.microsoft.com", "gbl.his.arc.azure.com",
           "layernet-lab-ehns.servicebus.windows.net", "guestnotificationservice.azure.com",
           "layernetlabsr.blob.core.windows.net", "sts.windows.net"]
REFUSED = ["evil.example", "exfil.example.net", "management.azure.com.evil.example", "servicebus.windows.net"]


def _record(t, level, port, src, sni, chain, up_host, cluster, bi, bo, dur, flags, details, tf, cid):
    return json.dumps({
        "time": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z", "level": level,
        "listener_port": port, "source": src, "sni": sni, "filter_chain": chain, "upstream_host": up_host,
        "upstream_cluster": cluster, "bytes_in": bi, "bytes_out": bo, "duration_ms": dur,
        "response_flags": flags, "details": details, "transport_failure": tf, "connection_id": cid,
    }, separators=(",", ":"))


def write_log(path: Path, n: int, seed: int = 7) -> dict:
    """Write about n lines; returns counts by kind."""
    rnd = random.Random(seed)
    t = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
    counts = {"lines": 0, "malformed": 0}
    cid = {"level3": 0, "level4": 0}
    with open(path, "w") as f:
        while counts["lines"] < n:
            t += timedelta(milliseconds=rnd.randint(1, 40))
            r = rnd.random()
            if r < 0.001:
                bad = rnd.choice([
                    _record(t, "level3", 443, "192.168.102.10:40000", "mcr.microsoft.com", "allowed", None,
                            "parent_443", 1, 1, 1, "-", None, None, 1)[:rnd.randint(10, 120)],
                    "\x00\x17garbage bytes \xff",
                    f"[{t.isoformat()}] \"- - -\" 0 NR 0 0 0 - \"192.168.102.10:1234\" \"evil.example\"",
                ])
                f.write(bad + "\n")
                counts["lines"] += 1
                counts["malformed"] += 1
                continue
            port = 443 if rnd.random() < 0.85 else rnd.choice([8084, 9093])
            sport = rnd.randint(20000, 65000)
            if r < 0.75:          # allowed from level2 through level3 and level4
                sni = rnd.choice(ALLOWED)
                cid["level3"] += 1
                cid["level4"] += 1
                dur = rnd.randint(5, 30000)
                bi, bo = rnd.randint(500, 200000), rnd.randint(500, 2000000)
                f.write(_record(t, "level3", port, f"192.168.102.10:{sport}", sni, "allowed", f"192.168.104.10:{port}",
                                f"parent_{port}", bi, bo, dur, "-", None, None, cid["level3"]) + "\n")
                t4 = t + timedelta(milliseconds=rnd.randint(0, 2))
                f.write(_record(t4, "level4", port, f"192.168.103.10:{rnd.randint(20000, 65000)}", sni, "allowed",
                                f"198.51.100.10:{port}", "dynamic_forward_proxy", bi, bo, max(0, dur - 1), "-", None,
                                None, cid["level4"]) + "\n")
                counts["lines"] += 2
            elif r < 0.85:        # allowed at level4 from its own network
                cid["level4"] += 1
                f.write(_record(t, "level4", port, f"192.168.104.{rnd.randint(20, 40)}:{sport}", rnd.choice(ALLOWED),
                                "allowed", f"198.51.100.10:{port}", "dynamic_forward_proxy", rnd.randint(500, 9000),
                                rnd.randint(500, 90000), rnd.randint(2, 900), "-", None, None, cid["level4"]) + "\n")
                counts["lines"] += 1
            elif r < 0.95:        # refused name (no chain), some without SNI or not TLS
                lvl = rnd.choice(["level3", "level4"])
                src = "192.168.102.10" if lvl == "level3" else "192.168.103.10"
                k = rnd.random()
                sni = None if k < 0.2 else rnd.choice(REFUSED)
                tf = "TLS_error:|268435612:SSL routines:OPENSSL_internal:HTTP_REQUEST:TLS_error_end" if k < 0.1 else None
                f.write(_record(t, lvl, port, f"{src}:{sport}", sni, None, None, None, rnd.randint(0, 600), 0, 0,
                                "NR", "filter_chain_not_found", tf, 0) + "\n")
                counts["lines"] += 1
            elif r < 0.98:        # refused source
                cid["level3"] += 1
                f.write(_record(t, "level3", port, f"10.9.{rnd.randint(0, 3)}.{rnd.randint(1, 250)}:{sport}",
                                rnd.choice(ALLOWED), "refused-source", None, "refused", 517, 0, 0, "UH", None,
                                None, cid["level3"]) + "\n")
                counts["lines"] += 1
            else:                 # upstream failure at the egress
                cid["level4"] += 1
                f.write(_record(t, "level4", port, f"192.168.104.{rnd.randint(20, 40)}:{sport}", rnd.choice(ALLOWED),
                                "allowed", None, "dynamic_forward_proxy", 517, 0, 5000, "UF", None, None,
                                cid["level4"]) + "\n")
                counts["lines"] += 1
    return counts


def json_loop(path: Path) -> float:
    t0 = time.perf_counter()
    ok = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                json.loads(line)
                ok += 1
            except ValueError:
                pass
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write the log to this file and keep it")
    args = ap.parse_args(argv)

    from layernet.allowlist import effective_allowlist
    from layernet.audit import findings
    from layernet.audit.parse import parse_logs
    from layernet.site import load_site

    site = load_site(ROOT / "params" / "lab.yaml")
    allowlist = effective_allowlist(site)
    tmp = None
    path = Path(args.keep) if args.keep else Path(tempfile.mkdtemp()) / "envoy-access.log"
    tmp = None if args.keep else path
    t0 = time.perf_counter()
    counts = write_log(path, args.n)
    size = path.stat().st_size
    print(f"wrote {counts['lines']:,} lines ({counts['malformed']:,} malformed), {size / 1e6:.0f} MB in "
          f"{time.perf_counter() - t0:.1f} s: {path}")

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    parsed = parse_logs({"mixed": path}, allowlist)   # read piece by piece
    t_parse = time.perf_counter() - t0
    res = findings.all_findings(parsed.connections, site, allowlist)
    t_total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux
    df = parsed.connections
    print(f"layernet.audit: parse {t_parse:.2f} s + findings {t_total - t_parse:.2f} s = {t_total:.2f} s; "
          f"{len(df):,} connections, {len(parsed.malformed):,} malformed lines reported")
    print("  verdicts: " + ", ".join(f"{k} {v:,}" for k, v in df["verdict"].value_counts().items()))
    print("  findings: " + ", ".join(f"{k} {len(v):,} rows" for k, v in res.items()))
    t_json = json_loop(path)
    print(f"plain json.loads loop: {t_json:.2f} s")
    print(f"ratio audit / json.loads: {t_total / t_json:.2f}")
    print(f"peak RSS: {peak / 1024:.0f} MB (before the parse: {base_rss / 1024:.0f} MB)")
    ok = t_total < 5.0 and peak / 1024 < 1536 and len(parsed.malformed) == counts["malformed"]
    print("target (1,000,000 lines: < 5 s, < 1.5 GB, every malformed line reported): " + ("met" if ok else "NOT met"))
    if tmp is not None:
        os.unlink(tmp)
        os.rmdir(tmp.parent)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
