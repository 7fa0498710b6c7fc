"""CoreDNS in the running lab: every DNS level answers the differential names as `host_matches` decides, asked
from inside the level at its node address, and no name asked there reaches the internet DNS (root only)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "render"))

from dns_names import expected, probe_names  # noqa: E402
from layernet.lab import layout
from layernet.allowlist import effective_allowlist  # noqa: E402
from layernet.lab import commands  # noqa: E402
from layernet.render.dns import dns_plan  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.slow]
DNSCLIENT = ROOT / "tests" / "render" / "dnsclient.py"


def _ask(site, level: str, server: str, questions: list) -> list[dict]:
    res = subprocess.run(["ip", "netns", "exec", layout.namespace(site, level), sys.executable, str(DNSCLIENT),
                          "batch", server, "53"], input=json.dumps(questions), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_every_dns_level_answers_as_host_matches_decides(lab, lab_site):
    al = effective_allowlist(lab_site)
    hosts = [e.host for e in al.entries]
    names = probe_names(lab_site, al)
    assert len(names) >= 300
    up_log = commands.state_dir(lab_site) / "cloud" / "coredns.out"
    up_start = up_log.stat().st_size
    levels = [lv for lv in lab_site.levels if lv.dns_override]
    assert [lv.name for lv in levels] == ["level3", "level2"]
    questions = [[n, t, 0] for n in names for t in ("A", "AAAA")]
    failures = []
    for lv in levels:
        plan = dns_plan(lab_site, al, lv)
        replies = _ask(lab_site, lv.name, str(lv.node_ip), questions)
        for (name, qtype, _), r in zip(questions, replies):
            want, got = expected(plan, hosts, name, qtype), (r["rcode"], r["answers"])
            if got != want or r["seconds"] is None or r["seconds"] > 0.5:
                failures.append((lv.name, name, qtype, want, got, r["seconds"]))
    assert not failures, f"{len(failures)} answers differ, first: {failures[:5]}"
    # nothing asked at a DNS level went on to the internet DNS
    leaked = up_log.read_bytes()[up_start:].decode(errors="replace")
    assert '"A IN' not in leaked and '"AAAA IN' not in leaked, leaked[:500]


def test_the_child_level_asks_its_own_dns_through_the_lab(lab, lab_site):
    """level2's resolver (resolv.conf of its namespace) is its own CoreDNS; TCP works the same."""
    l2 = lab_site.level("level2")
    r = _ask(lab_site, "level2", str(l2.node_ip), [["Management.Azure.com", "A", 1], ["evil.example", "A", 1]])
    assert r[0]["answers"] == [["Management.Azure.com.", 1, 60, str(lab_site.level("level3").node_ip)]]
    assert r[1]["rcode"] == "REFUSED" and r[1]["answers"] == []
    resolv = Path("/etc/netns") / layout.namespace(lab_site, "level2") / "resolv.conf"
    assert f"nameserver {l2.node_ip}" in resolv.read_text()


def test_coredns_memory_per_level(lab, lab_site, capsys):
    """Resident memory of each CoreDNS (K3s's CoreDNS pod at every level, and the internet DNS), printed for the
    record."""
    pids = {"cloud/dns": commands.load_procs(lab_site)["cloud/dns"].pid}
    for lv in lab_site.levels:
        pods = lab.api(lv.name).call("GET", "/api/v1/namespaces/kube-system/pods")["items"]
        cid = pods[0]["status"]["containerStatuses"][0]["containerID"]
        pids[f"{lv.name}/coredns"] = int(cid.split("//")[1])
    rss = {}
    for name, pid in pids.items():
        status = Path(f"/proc/{pid}/status").read_text()
        rss[name] = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmRSS:"))) // 1024
    assert set(rss) == {"level4/coredns", "level3/coredns", "level2/coredns", "cloud/dns"}
    assert all(0 < mb < 100 for mb in rss.values()), rss
    with capsys.disabled():
        print("\nCoreDNS RSS (MB): " + ", ".join(f"{k} {v}" for k, v in sorted(rss.items())))
