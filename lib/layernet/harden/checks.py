"""Hardening checks on a running lab; each returns a DataFrame with an ``ok`` column.

- `differential`: every name of the corpus, at every proxy level and listener port, from the level below:
  what real Envoy did (its access log's filter chain for that connection) must equal
  `AllowList.allows(name, port)`.
- `source_enforcement`: an allowed name from sources outside a proxy's allowed ranges (the jump box on the
  admin network, a rogue device on the level's segment) is refused and logged with the refused-source chain.
- `isolation`: from every level, the addresses of non-adjacent levels and of the cloud do not answer on a
  fixed list of TCP and UDP ports nor to ICMP echo (with controls that the scanner sees an open path).
- `dns_forwarding`: inner levels' DNS answers names outside the allow list itself (never forwarded, per
  its query log), and the upstream ("internet") DNS never saw such a name.
"""
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import pandas as pd

from layernet.lab import layout
from layernet import flows as flows_model
from layernet.allowlist import effective_allowlist
from layernet.harden import lab as hl
from layernet.harden.names import corpus
from layernet.harden.wire import hello_case
from layernet.lab import commands, netns, podfiles
from layernet.probe import build_query
from layernet.progress import step
from layernet.targets.lab import lab_target

TCP_PORTS = (22, 53, 80, 443, 853, 1053, 1883, 3128, 6443, 8080, 8084, 8443, 8883, 9093, 9901, 10250)
UDP_PORTS = (53, 123, 161, 443, 1053)
SCAN_TIMEOUT = 0.5
DIFF_COLUMNS = ["level", "from", "port", "family", "mode", "name", "expected", "envoy", "chain", "client", "ok"]


def proxy_hops(site) -> list[tuple]:
    """(proxy level, level below it) for every proxy level with a child on the chain."""
    out = []
    for lv in site.chain:
        child = site.child(lv)
        if lv.proxy and child is not None:
            out.append((lv, child))
    return out


def _verdict(entries: list) -> tuple[str, str]:
    chains = sorted({str(e.get("filter_chain") or "") for e in entries})
    if not entries:
        return "no log line", ""
    if chains == ["allowed"]:
        return "forwarded", "allowed"
    if chains == [""]:
        return "reset", (entries[0].get("response_flags") or "")
    return "refused", ",".join(c or "-" for c in chains)


def own_lines(entries: list, name: Optional[str]) -> list:
    """The log lines of one connection, found by its source address and port. Thousands of short connections reuse
    source ports (a connection the proxy reset leaves no TIME_WAIT behind), so a line of another connection from the
    same address and port can share the key: a line whose server name is another name is not this connection's.
    Lines without a server name stay (an unreadable SNI is logged without one)."""
    want = (name or "").lower()
    own = [e for e in entries if not e.get("sni") or str(e["sni"]).lower() == want]
    return own if own else entries


# ----------------------------------------------------------------------------------------------- item 1
def differential(site, cases: Optional[list] = None, ports: Optional[list] = None, workers: int = 64) -> pd.DataFrame:
    """Send every case to every proxy level and listener port from the level below; compare with the allow list."""
    al = effective_allowlist(site)
    cases = corpus(al) if cases is None else cases
    ports = list(flows_model.proxy_ports(site, al)) if ports is None else ports
    rows: list[dict] = []
    started = time.monotonic()
    for proxy, child in proxy_hops(site):        # one level at a time: the log lines of one hop stay apart
        ns, ip = layout.namespace(site, child.name), str(proxy.node_ip)
        hl.check_addresses(site, ns, [ip])
        sent = []
        for port in ports:
            for i, c in enumerate(cases):
                sent.append({"id": len(sent), "connect_ip": ip, "port": port, "mode": c["mode"], "sni": c["name"],
                             "chunks": c.get("chunks", 5), "_case": c})
        since = hl.now_ms()
        answers = hl.run_wire(ns, {"op": "hello", "workers": workers, "timeout": 3.0,
                                   "cases": [{k: v for k, v in s.items() if k != "_case"} for s in sent]})
        keys = {(a["source"], s["port"]) for s, a in zip(sent, answers) if a.get("source")}
        log = hl.wait_for_log(site, proxy.name, since, keys)
        for s, a in zip(sent, answers):
            c = s["_case"]
            expected = "forwarded" if al.allows(c["name"], s["port"]) and c["mode"] in ("tls", "split") else "reset"
            envoy, chain = _verdict(own_lines(log.get((a.get("source"), s["port"]), []), c["name"]))
            rows.append({"level": proxy.name, "from": child.name, "port": s["port"], "family": c["family"],
                         "mode": c["mode"], "name": c["name"], "expected": expected, "envoy": envoy, "chain": chain,
                         "client": a.get("observed", ""), "ok": envoy == expected})
    df = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    step(f"differential: {len(cases)} names x {len(ports)} port(s) x {len(proxy_hops(site))} proxy level(s) = "
         f"{len(df)} connections, {int((~df['ok']).sum()) if len(df) else 0} disagreement(s), "
         f"{time.monotonic() - started:.1f} s")
    return df


def differential_summary(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=["level", "family", "connections", "forwarded", "reset", "disagree"])
    g = df.groupby(["level", "family"], sort=False)
    out = pd.DataFrame({"connections": g.size(), "forwarded": g["envoy"].apply(lambda s: int((s == "forwarded").sum())),
                        "reset": g["envoy"].apply(lambda s: int((s == "reset").sum())),
                        "disagree": g["ok"].apply(lambda s: int((~s).sum()))})
    return out.reset_index()


# ----------------------------------------------------------------------------------------------- item 2
def _rogue_address(site, level) -> str:
    """An address of the admin network (which the level's firewall admits) that no lab host uses."""
    used = {site.admin.jump_box_ip} | {netns.gateway(site.admin.network, {site.admin.jump_box_ip})}
    hosts = list(site.admin.network.hosts())
    for a in reversed(hosts):
        if a not in used:
            return str(a)
    raise ValueError(f"admin network {site.admin.network} has no free address for a rogue device")


def source_enforcement(site, host: Optional[str] = None, port: int = 443) -> pd.DataFrame:
    """From the jump box and from a rogue device on each proxy level's segment, an allowed name must be
    refused with the refused-source chain; from the level below, the same name is forwarded (control)."""
    al = effective_allowlist(site)
    exact = [e.host for e in al.entries if not e.host.startswith("*.") and port in e.ports]
    host = host or ("management.azure.com" if "management.azure.com" in exact else exact[0])
    rows = []
    for proxy, child in proxy_hops(site):
        ip = str(proxy.node_ip)
        rogue = _rogue_address(site, proxy)
        attempts = []
        # the level below (allowed source): control
        ns = layout.namespace(site, child.name)
        hl.check_addresses(site, ns, [ip])
        attempts.append((f"{child.name} node (allowed source)", str(child.node_ip), "forwarded",
                         lambda ns=ns: hl.run_wire(ns, {"op": "hello", "cases": [
                             {"id": 0, "connect_ip": ip, "port": port, "mode": "tls", "sni": host}]})[0]))
        # the jump box on the admin network (the level firewall admits it; the proxy must not)
        hl.check_addresses(site, None, [ip])
        attempts.append((f"jump box {site.admin.jump_box_ip} (admin network)", str(site.admin.jump_box_ip),
                         "refused-source",
                         lambda: hello_case({"id": 0, "connect_ip": ip, "port": port, "mode": "tls", "sni": host}, 3.0)))
        since = hl.now_ms()
        rns = hl.add_rogue(site, proxy.name, rogue)
        try:
            hl.check_addresses(site, rns, [ip]) if rns.startswith(site.lab.prefix + "-") else None
            attempts.append((f"rogue device {rogue} on the {proxy.name} segment", rogue, "refused-source",
                             lambda: hl.run_wire(rns, {"op": "hello", "cases": [
                                 {"id": 0, "connect_ip": ip, "port": port, "mode": "tls", "sni": host}]})[0]))
            results = [(label, src, want, fn()) for label, src, want, fn in attempts]
        finally:
            hl.remove_rogue(site)
        keys = {(a["source"], port) for *_, a in results if a.get("source")}
        log = hl.wait_for_log(site, proxy.name, since, keys)
        for label, src, want, a in results:
            entries = log.get((a.get("source"), port), [])
            chain = ",".join(sorted({str(e.get("filter_chain") or "-") for e in entries})) or "(no log line)"
            got = "forwarded" if chain == "allowed" else chain
            client_ok = a.get("observed") == "server-hello" if want == "forwarded" else a.get("observed") != "server-hello"
            rows.append({"level": proxy.name, "source": label, "source_ip": (a.get("source") or src).split(":")[0],
                         "sni": host, "port": port, "expected": want, "chain": chain, "client": a.get("observed"),
                         "ok": got == want and client_ok and (a.get("source") or "").startswith(src + ":")})
    df = pd.DataFrame(rows)
    step(f"source enforcement: {len(df)} connection(s), {int((~df['ok']).sum()) if len(df) else 0} failed")
    return df


# ----------------------------------------------------------------------------------------------- item 3
def scan_plan(site) -> dict[str, list[dict]]:
    """{level: [target]}: from every level's node, every other level's node and the cloud's addresses on a set of
    TCP/UDP ports and ICMP. `expect` comes from the flows model (layernet.flows.reaches): "reachable" exactly
    when the site opens that path on purpose, "unreachable" everywhere else."""
    topo = netns.topology(site)
    addrs = [(str(o.node_ip), f"{o.name} node") for o in site.levels]
    addrs += [(str(topo.cloud_tls_ip), "cloud"), (str(topo.cloud_dns_ip), "cloud DNS")]
    plan: dict[str, list[dict]] = {}
    for lv in site.levels:
        targets = []
        for ip, what in addrs:
            if ip == str(lv.node_ip):
                continue
            probes = [("tcp", p) for p in TCP_PORTS] + [("udp", p) for p in UDP_PORTS] + [("icmp", None)]
            for proto, port in probes:
                ok = flows_model.reaches(site, lv.name, ip, proto, port)
                targets.append({"ip": ip, "proto": proto, "port": port, "what": what,
                                "expect": "reachable" if ok else "unreachable"})
        plan[lv.name] = targets
    return plan


def isolation(site, timeout: float = SCAN_TIMEOUT) -> pd.DataFrame:
    plan = scan_plan(site)
    started = time.monotonic()

    def one(level: str) -> list[dict]:
        ns = layout.namespace(site, level)
        targets = plan[level]
        hl.check_addresses(site, ns, [t["ip"] for t in targets])
        answers = hl.run_wire(ns, {"op": "scan", "timeout": timeout, "workers": 96,
                                   "targets": [{k: t[k] for k in ("ip", "proto", "port")} for t in targets]})
        return [{"level": level, "target": t["what"], "ip": t["ip"], "proto": t["proto"], "port": t["port"],
                 "expected": t["expect"], "observed": a["observed"],
                 "ok": (a["reachable"] is True) == (t["expect"] == "reachable")} for t, a in zip(targets, answers)]

    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        rows = [r for part in pool.map(one, list(plan)) for r in part]
    df = pd.DataFrame(rows)
    df["port"] = df["port"].astype("Int64")  # ICMP has no port: <NA>, not a float column
    step(f"isolation: {len(df)} probes from {len(plan)} level(s), {int((~df['ok']).sum())} failed, "
         f"{time.monotonic() - started:.1f} s")
    return df


# A line of CoreDNS's `log` plugin (default format): client, id, "TYPE CLASS NAME PROTO SIZE DO BUFSIZE", rcode,
# flags, response size, duration.
_LOG_LINE = re.compile(r'\] (\S+) - \d+ "(\S+) IN (\S+) (?:udp|tcp) \d+ \S+ \d+" (\S+) (\S+) \d+ ([0-9.e-]+)s')
_FORWARD = re.compile(r"^\s*forward\s+\S+\s+(.+?)\s*(?:\{)?\s*$", re.M)


def _coredns_log(text: str) -> dict[str, list[tuple[str, str, str]]]:
    """name (lower case, no trailing dot) -> [(client, rcode, seconds)] from CoreDNS `log` lines."""
    out: dict[str, list] = {}
    for line in text.splitlines():
        m = _LOG_LINE.search(line)
        if m:
            out.setdefault(m.group(3).lower().rstrip("."), []).append((m.group(1), m.group(4), m.group(6)))
    return out


def _forwards_outside(files: list) -> list[str]:
    """Addresses outside the level that the level's CoreDNS config `files` (Corefile and imported custom keys,
    lab/podfiles.py) forward to; loopback targets stay in the level (K3s's block asking the coredns-external block)."""
    texts = [p.read_text() for p in files if p.is_file()]
    targets = [t for text in texts for m in _FORWARD.finditer(text) for t in m.group(1).split()]
    return sorted({t for t in targets if not t.startswith("127.")})


def _dns_names(site, al, limit: int) -> tuple[list[str], list[str]]:
    """(names outside the allow list, allowed names) from the corpus that can be written as DNS questions."""
    ports = site.proxied_ports()
    refused, allowed = [], []
    for c in corpus(al):
        n = c["name"]
        if not n or c["mode"] != "tls" or n.endswith(".") or not n.isascii():
            continue
        try:
            build_query(n, 1)
        except (ValueError, UnicodeError):
            continue
        bucket = allowed if any(al.allows(n, p) for p in ports) else refused
        if n.lower() not in (x.lower() for x in bucket):
            bucket.append(n)
    return refused[:limit], allowed[: max(5, limit // 8)]


def dns_forwarding(site, limit: int = 120) -> pd.DataFrame:
    """Query each inner DNS level (DNS override, no upstream) for names outside the allow list, then read its
    CoreDNS query log: each must have been answered by that CoreDNS, whose config forwards nowhere outside the
    level, and the upstream DNS in the cloud must have seen no name outside the allow list: none while the
    inner levels were asked, and none ever from a client other than the egress level (whose own lookups, such
    as the isolation scan's DNS probe, go to that DNS by design)."""
    al = effective_allowlist(site)
    ports = site.proxied_ports()
    refused, allowed = _dns_names(site, al, limit)
    target = lab_target(site)
    rows = []
    up_log = commands.state_dir(site) / "cloud" / "coredns.out"
    up_start = up_log.stat().st_size if up_log.exists() else 0
    inner = [lv for lv in site.levels if lv.dns_override and lv.name != site.egress_level]
    for lv in inner:
        log = podfiles.coredns_log(site, lv.name)
        start = log.stat().st_size if log.exists() else 0
        server = str(lv.node_ip)
        checks = [{"kind": "dns-refused", "host": n, "server": server} for n in refused]
        checks += [{"kind": "dns", "host": n, "server": server} for n in allowed]
        probe_rows = target.probe(lv.name, checks)
        time.sleep(0.3)
        with open(log, "rb") if log.exists() else open("/dev/null", "rb") as f:
            f.seek(start)
            replies = _coredns_log(f.read().decode(errors="replace"))
        outside = _forwards_outside(podfiles.coredns_config(site, lv.name))
        for n, pr in zip(refused + allowed, probe_rows):
            seen = replies.get(n.lower().rstrip("."), [])
            is_refused = n in refused
            local = bool(seen) and (not outside or not is_refused)
            rows.append({"level": lv.name, "name": n, "allowed": not is_refused,
                         "answer": pr["observed"], "log_reply": "; ".join(f"{r} {s}s from {c}" for c, r, s in seen) or "(none)",
                         "answered_locally": local, "forward_zone": ", ".join(outside) or None,
                         "ok": bool(pr["ok"]) and local})
    # the upstream DNS: names asked while the inner levels were queried, and names from clients other than the
    # egress level's node at any time, must all be allowed
    egress_ip = str(site.egress.node_ip)
    data = up_log.read_bytes() if up_log.exists() else b""
    text, window = data.decode(errors="replace"), data[up_start:].decode(errors="replace")
    asked = [n for n, seen in _coredns_log(window).items() for _ in seen]
    asked += [n for n, seen in _coredns_log(text).items() for c, _, _ in seen
              if c.rsplit(":", 1)[0] != egress_ip]
    outside = sorted({n for n in asked if not any(al.allows(n, p) for p in ports)})
    rows.append({"level": "cloud (upstream DNS)", "name": f"{len(asked)} queries, {len(set(asked))} names",
                 "allowed": None, "answer": ", ".join(outside[:10]) or "only allow-list names",
                 "log_reply": "", "answered_locally": None, "forward_zone": None, "ok": not outside})
    df = pd.DataFrame(rows)
    step(f"DNS: {len(refused)} names outside the allow list at {len(inner)} inner level(s); upstream saw "
         f"{len(outside)} such name(s); {int((~df['ok'].astype(bool)).sum())} failed")
    return df


# ----------------------------------------------------------------------------------------------- all
def run_all(site) -> dict[str, pd.DataFrame]:
    return {"differential": differential(site), "source": source_enforcement(site), "isolation": isolation(site),
            "dns": dns_forwarding(site)}


def results(frames: dict[str, pd.DataFrame]) -> dict:
    """Counts for the run manifest."""
    out = {}
    for key, df in frames.items():
        ok = df["ok"].astype(bool) if len(df) else pd.Series(dtype=bool)
        out[f"{key}_checks"] = int(len(df))
        out[f"{key}_failed"] = int((~ok).sum())
    d = frames.get("differential")
    if d is not None and len(d):
        out["differential_names"] = int(d[["mode", "name"]].astype(str).drop_duplicates().shape[0])
    return out


def require_all_passed(frames: dict[str, pd.DataFrame]) -> str:
    bad = {k: df[~df["ok"].astype(bool)] for k, df in frames.items() if len(df)}
    bad = {k: v for k, v in bad.items() if len(v)}
    empty = [k for k, df in frames.items() if not len(df)]
    if empty:
        raise RuntimeError(f"no evidence for: {', '.join(empty)}")
    if bad:
        k, v = next(iter(bad.items()))
        raise RuntimeError(f"hardening failed: {', '.join(f'{k} {len(v)}' for k, v in bad.items())}; first {k} row: "
                           f"{v.iloc[0].to_dict()}")
    total = sum(len(df) for df in frames.values())
    return f"all {total} hardening checks passed"
