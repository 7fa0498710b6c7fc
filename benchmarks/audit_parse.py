"""Benchmark: parse an N-line Envoy access log and compute every audit finding.

    .venv/bin/python benchmarks/audit_parse.py [N] [--keep FILE] [--big] [--no-old] [--hostile]

Writes a realistic log (the lab site's levels, allowed / refused-name / refused-source / upstream-failure
connections, forwarded pairs between the proxy levels with the upstream local address, about 0.1 % malformed
lines: truncated, garbage and a text-format line), then measures, each in its own process (time and peak RSS):

- ``counts``: a DuckDB query that only reads the file and counts per level and flags (the floor);
- ``new``: `layernet.audit` parse + every finding (per level, refused, coverage, paths summary, hop latency,
  anomalies);
- ``old``: the pandas/pyarrow implementation it replaced (from git), parse + findings.

and prints the ratios. `--big` adds 10,000,000 lines (about 3.6 GB; only counts and new). `--hostile` writes a
traffic mix instead where every connection comes from a new source address and asks for one of 200,000 names (no
two connections alike: the engine names its groups by reading the log again); it prints the numbers, no target.
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


def _record(t, level, port, src, sni, chain, up_host, cluster, bi, bo, dur, flags, details, tf, cid, local=None):
    return json.dumps({
        "time": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z", "level": level,
        "listener_port": port, "source": src, "sni": sni, "filter_chain": chain, "upstream_host": up_host,
        "upstream_cluster": cluster, "upstream_local": local, "bytes_in": bi, "bytes_out": bo, "duration_ms": dur,
        "response_flags": flags, "details": details, "transport_failure": tf, "connection_id": cid,
    }, separators=(",", ":"))


def write_hostile(path: Path, n: int, seed: int = 11) -> dict:
    """About n refused connections, each from a new source address, to one of 200,000 names."""
    rnd = random.Random(seed)
    t = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
    with open(path, "w") as f:
        for i in range(n):
            t += timedelta(milliseconds=rnd.randint(1, 20))
            src = f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}:{rnd.randint(1024, 65000)}"
            f.write(_record(t, rnd.choice(["level3", "level4"]), 443, src, f"h{rnd.randint(0, 199_999)}.example",
                            None, None, None, 517, 0, 0, "NR", "filter_chain_not_found", None, i) + "\n")
    return {"lines": n, "malformed": 0}


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
                up = rnd.randint(20000, 65000)
                f.write(_record(t, "level3", port, f"192.168.102.10:{sport}", sni, "allowed", f"192.168.104.10:{port}",
                                f"parent_{port}", bi, bo, dur, "-", None, None, cid["level3"],
                                f"192.168.103.10:{up}") + "\n")
                t4 = t + timedelta(milliseconds=rnd.randint(0, 2))
                f.write(_record(t4, "level4", port, f"192.168.103.10:{up}", sni, "allowed",
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


RAW_COLUMNS = ("{'time': 'VARCHAR', 'level': 'VARCHAR', 'listener_port': 'VARCHAR', 'source': 'VARCHAR', "
               "'sni': 'VARCHAR', 'filter_chain': 'VARCHAR', 'upstream_host': 'VARCHAR', 'upstream_cluster': "
               "'VARCHAR', 'upstream_local': 'VARCHAR', 'bytes_in': 'VARCHAR', 'bytes_out': 'VARCHAR', "
               "'duration_ms': 'VARCHAR', 'response_flags': 'VARCHAR', 'details': 'VARCHAR', "
               "'transport_failure': 'VARCHAR', 'connection_id': 'VARCHAR'}")
OLD_COMMIT = "a9437d4"        # the pandas/pyarrow implementation this engine replaced


def measure_counts(path: Path) -> dict:
    """The floor: one DuckDB query that reads the file and counts connections per level and verdict flags."""
    import duckdb

    db = duckdb.connect()
    rows = db.sql(f"""SELECT level, response_flags, count(*), sum(try_cast(bytes_in AS BIGINT))
                      FROM read_json('{path}', format='newline_delimited', ignore_errors=true, columns={RAW_COLUMNS})
                      GROUP BY ALL""").fetchall()
    return {"groups": len(rows)}


def measure_new(path: Path) -> dict:
    """layernet.audit: parse (DuckDB) + every finding (SQL; the path table stays in DuckDB)."""
    import duckdb  # noqa: F401  (imported before the clock starts, as the replaced implementation's pandas)
    import pandas  # noqa: F401

    from layernet.allowlist import effective_allowlist
    from layernet.audit import findings
    from layernet.audit.parse import parse_logs
    from layernet.site import load_site

    site = load_site(ROOT / "params" / "lab.yaml")
    al = effective_allowlist(site)
    t0 = time.perf_counter()
    parsed = parse_logs({"mixed": path}, al)
    t1 = time.perf_counter()
    res = findings.all_findings(parsed, site, al, rows=False)
    per = res["per_level"].set_index("level")
    return {"parse_s": round(t1 - t0, 2), "findings_s": round(time.perf_counter() - t1, 2),
            "records": parsed.records, "malformed": int(len(parsed.malformed)),
            "allowed": int(per["allowed"].sum()),
            "findings": {k: int(len(v)) for k, v in res.items()}, "_t0": t0}


def measure_old(path: Path) -> dict:
    """The replaced implementation (git show OLD_COMMIT), parse + findings, for the ratio."""
    import importlib
    import subprocess

    tmp = Path(tempfile.mkdtemp()) / "oldaudit"
    tmp.mkdir()
    for name in ("parse", "findings"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:lib/layernet/audit/{name}.py"],
                             check=True, capture_output=True, text=True).stdout
        (tmp / f"{name}.py").write_text(src.replace("layernet.audit.parse", "oldaudit.parse"))
    (tmp / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp.parent))
    old_parse = importlib.import_module("oldaudit.parse")
    old_findings = importlib.import_module("oldaudit.findings")
    from layernet.allowlist import effective_allowlist
    from layernet.site import load_site

    site = load_site(ROOT / "params" / "lab.yaml")
    al = effective_allowlist(site)
    t0 = time.perf_counter()
    parsed = old_parse.parse_logs({"mixed": path}, al)
    res = old_findings.all_findings(parsed.connections, site, al)
    return {"records": int(len(parsed.connections)), "malformed": int(len(parsed.malformed)),
            "findings": {k: int(len(v)) for k, v in res.items()}, "_t0": t0}


MODES = {"counts": measure_counts, "new": measure_new, "old": measure_old}


def child(mode: str, path: str) -> None:
    """One measurement in its own process, so its peak RSS is its own."""
    t0 = time.perf_counter()
    out = MODES[mode](Path(path))
    t0 = out.pop("_t0", t0)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))


def run(mode: str, path: Path) -> dict:
    import subprocess

    p = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True,
                       cwd=str(ROOT))
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write the log to this file and keep it (an existing file is reused)")
    ap.add_argument("--big", action="store_true", help="also 10,000,000 lines (about 3.6 GB; RSS target 1 GB)")
    ap.add_argument("--hostile", action="store_true", help="a mix where no two connections are alike (no target)")
    ap.add_argument("--no-old", action="store_true", help="skip the replaced implementation")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    ok = True
    sizes = [args.n] + ([10_000_000] if args.big else [])
    for n in sizes:
        keep = Path(args.keep) if args.keep and n == args.n else None
        path = keep or Path(tempfile.mkdtemp()) / "envoy-access.log"
        if not path.is_file():
            t0 = time.perf_counter()
            counts = (write_hostile if args.hostile else write_log)(path, n)
            print(f"wrote {counts['lines']:,} lines ({counts['malformed']:,} malformed), "
                  f"{path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s: {path}")
        else:
            counts = None
        modes = ["counts", "new"] + ([] if args.no_old or args.hostile or n > 1_000_000 else ["old"])
        got = {m: run(m, path) for m in modes}
        base = got["counts"]
        print(f"\n{n:,} lines")
        for m in modes:
            g = got[m]
            if "error" in g:
                print(f"  {m:7s} error: {g['error']}")
                continue
            ratio = f"{g['seconds'] / base['seconds']:.2f}x time, {g['peak_rss_mb'] / base['peak_rss_mb']:.2f}x RSS " \
                    f"of counts-only" if m != "counts" else "(the floor)"
            extra = f" (parse {g['parse_s']} s + findings {g['findings_s']} s)" if m == "new" else ""
            print(f"  {m:7s} {g['seconds']:6.2f} s{extra}, peak RSS {g['peak_rss_mb']:5d} MB  {ratio}")
        new = got["new"]
        if "error" in new:
            ok = False
            continue
        if counts is not None and new["malformed"] != counts["malformed"]:
            print(f"  every malformed line reported: NO ({new['malformed']} vs {counts['malformed']} written)")
            ok = False
        if "old" in got and "error" not in got["old"]:
            print(f"  new vs old: {got['old']['seconds'] / new['seconds']:.1f}x faster, "
                  f"{got['old']['peak_rss_mb'] / new['peak_rss_mb']:.1f}x less memory; same records: "
                  f"{got['old']['records'] == new['records']}")
        if args.hostile:
            print(f"  hostile mix (no target): {new['records']:,} connections, rows per finding {new['findings']}")
            met = True
        elif n <= 1_000_000:
            met = new["seconds"] <= 1.5 and new["peak_rss_mb"] <= 300
            print(f"  target (1M lines: <= 1.5 s, <= 300 MB): {'met' if met else 'NOT met'}")
        else:
            met = new["peak_rss_mb"] <= 1024
            print(f"  target (10M lines: peak RSS <= 1 GB): {'met' if met else 'NOT met'}")
        ok &= met
        if keep is None:
            os.unlink(path)
            os.rmdir(path.parent)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
