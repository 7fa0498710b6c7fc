"""The differential DNS test's names and oracle, shared by the CoreDNS tests on their own namespaces
(tests/render) and against the running lab (tests/lab)."""
from __future__ import annotations

from layernet.allowlist import host_matches
from layernet.render.dns import empty_nodes


def probe_names(site, allowlist) -> list[str]:
    """Names around every allow-list host: itself, below it, its apex, look-alikes, odd spellings, plus
    refused names. Letter case is kept: a question in capitals is a different question (the owner must
    follow it)."""
    names: set[str] = set()
    for e in allowlist.entries:
        h = e.host
        if h.startswith("*."):
            x = h[2:]
            parent = x.split(".", 1)[1]
            names |= {f"a.{x}", f"a.b.{x}", x, f"x{x}", f"{x}.evil.example", f"A.{x.upper()}", f"*.{x}",
                      f"-.{x}", f"_tcp.{x}", f"{'a' * 63}.{x}", f"0.{x}", f"xn--bcher-kva.{x}", f"a-{x}",
                      f"www.{x}.", parent, f"{x.split('.')[0]}x.{parent}", f"a.{x}.{x}", f"aA.{x.title()}",
                      f"{x}-.com", f"a.{x.replace('.', '-')}"}
        else:
            first, rest = h.split(".", 1)
            names |= {h, f"sub.{h}", f"x{h}", f"{h}.evil.example", h.upper(), rest, f"a.b.{h}", f"{h}x",
                      f"{first}-x.{rest}", h.title(), f"*.{h}", f"_acme-challenge.{h}", f"{first}.{h}",
                      f"www.{h}", f"{h}.{h}", f"{first}{rest.replace('.', '')}.com"}
    names |= set(site.lab.refused_hosts)
    names |= {"localhost", "evil.example", "com", "net", "io", "windows.net", "azure.com", "microsoft.com",
              "example", "a" * 63 + ".example", ".".join(["b" * 60] * 4), "xn--80ak6aa92e.com",
              "management-azure.com", "managementazure.com", "azure.com.management", "sts.windows.net.evil"}
    return sorted(n.rstrip(".") for n in names if n.rstrip("."))


def expected(plan, hosts: list[str], name: str, qtype: str) -> tuple[str, list]:
    """(rcode, answers) the override must give: decided by host_matches for the allowed names; without an
    upstream the rest is REFUSED outside the allow-list zones, and inside them NODATA where names exist
    below (an empty node) and NXDOMAIN elsewhere."""
    if any(host_matches(h, name) for h in hosts):
        return "NOERROR", ([[name + ".", 1, 60, plan.answer_ip]] if qtype == "A" else [])
    low = name.lower()
    if not any(low == z or low.endswith("." + z) for z in plan.zones()):
        return "REFUSED", []
    return ("NOERROR" if low in empty_nodes(plan) else "NXDOMAIN"), []
