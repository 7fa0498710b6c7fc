"""The allow list against the validated site: extra hosts on ports a proxy listens on, dropped hosts that a selected
group holds, a list that is not empty while levels reach Azure, and refused lab hosts the list does not allow."""
from __future__ import annotations

from layernet.allowlist import effective_allowlist
from layernet.site.checks.doc import Doc
from layernet.site.problems import Problem


def check(doc: Doc) -> list[Problem]:
    site, fname = doc.site, doc.file
    P: list[Problem] = []
    ports = site.proxied_ports()
    listening = ", ".join(str(p) for p in ports)
    for j, x in enumerate(site.allowlist.extra_hosts):
        for k, port in enumerate(x.ports):
            if port not in ports:
                P.append(Problem(fname, f"allowlist.extra_hosts[{j}].ports[{k}]", port,
                                 f"a port the proxies listen on ({listening}); no listener forwards {port}"))
    undropped = site.model_copy(update={"allowlist": site.allowlist.model_copy(update={"drop_hosts": []})})
    full = effective_allowlist(undropped)
    present = {e.host.lower() for e in full.entries}
    for j, d in enumerate(site.allowlist.drop_hosts):
        if d.lower() not in present:
            P.append(Problem(fname, f"allowlist.drop_hosts[{j}]", d, "a host of a selected group, written as "
                             "`layernet allowlist` shows it; this one is in none, so dropping it does nothing"))
    effective = effective_allowlist(site)
    if not effective.entries and any(lv.reaches_azure for lv in site.levels):
        P.append(Problem(fname, "allowlist.groups", list(site.allowlist.groups), "an allow list that is not empty: "
                         "levels reach Azure, so select groups (arc-core, arc-cluster-connect, aio) or extra hosts"))
    for j, h in enumerate(site.lab.refused_hosts):
        hit = effective.match(h)
        if hit is not None:
            P.append(Problem(fname, f"lab.refused_hosts[{j}]", h, f"a host the allow list refuses; {hit.host} "
                             "allows it, so the lab's refusal check could never pass"))
    return P
