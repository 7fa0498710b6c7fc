"""Stage 04 on the lab: what a real cluster's AIO does with the telemetry records, done by stand-ins.

When the stage's PUTs are done, `install(site, records)` writes each level's records (exactly as rendered and
PUT) to `<state>/telemetry/<level>.json`, starts the lab's Kafka broker as the event hub, then starts the stand-ins
of `layernet.lab.telemetry_services` as stage services in the level namespaces, in their start order (simulators,
dataflows downstream first, connectors), each waiting for its ready line. The egress dataflow authenticates to
Event Hubs as its endpoint record says: with a managed identity, the level's identities are registered with the
lab's Entra and written for it (`workload_identity`); with the connection string, only that dataflow gets it, in
its environment (never on a command line). The brokers are the AIO stage's.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from layernet.lab import LabError, mqttpki, netns, procs, services, telemetry_services
from layernet.lab import layout
from layernet.render.telemetry import to_json

PREFIX = "telemetry"


def records_dir(site) -> Path:
    return layout.state_dir(site) / "telemetry"


def _services(site):
    """The stand-ins; in X.509 mode they present the lab's client certificate (the one the Secret holds)."""
    m = mqttpki.paths(site)
    return telemetry_services.services(site, records_dir(site), ca=str(layout.ca_cert_path(site)), client_cert=m.cert,
                        client_key=m.key)


def sends_to_eventhubs(site) -> bool:
    """A stand-in of the site sends to Event Hubs (so the lab's event hub broker runs)."""
    return any(svc.eventhubs for svc in _services(site))


def running(site) -> bool:
    """Every telemetry stand-in of the site runs (False when one was never started or has stopped)."""
    t = services.table(site)
    for svc in _services(site):
        p = t.get(_name(svc))
        if p is None or not procs.alive(p):
            return False
    from layernet.lab import kafka

    return kafka.is_running(site) if any(s.eventhubs for s in _services(site)) else True


def _wait_line(log: Path, p: procs.Proc, text: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if text in log.read_text(errors="replace"):
                return
        except OSError:
            pass
        if not procs.alive(p):
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
    raise LabError(f"{p.name} did not print {text!r} within {timeout:.0f} s; its output ({log}):\n{tail}")


def install(site, records: dict[str, list[dict]], timeout: float = 30.0) -> str:
    """Write the records, start the event hub and every stand-in (restarting those that run)."""
    from layernet.lab import kafka

    d = records_dir(site)
    d.mkdir(parents=True, exist_ok=True)
    if site.telemetry.mqtt.tls:
        mqttpki.ensure(site)
    for level, recs in records.items():
        (d / f"{level}.json").write_text(to_json(recs))
    svcs = _services(site)
    done = []
    env_plain = {k: v for k, v in os.environ.items() if k != kafka.env_var(site)}
    # the previous generation stops first, upstream first, so nothing publishes into a restarting hop
    t = services.table(site)
    old = [_name(svc) for svc in reversed(svcs) if _name(svc) in t]
    for name in old:                          # asked to stop together, then waited for
        services.stop(site, name, wait=False)
    for name in old:
        services.wait_stopped(site, name)
    started: list = []

    def spawn(svc, env) -> None:
        services.start(site, _name(svc), svc.level, list(svc.argv), env=env, wait=False)
        started.append(svc)

    def ready() -> None:                      # the pods start side by side; each is waited for here
        for svc in started:
            p = services.wait_started(site, _name(svc))
            _wait_line(Path(p.log), p, svc.ready_line, timeout)     # a pod's output is its container log
            done.append(f"{svc.name} (pid {p.pid})")
        started.clear()

    # simulators and the MQTT-only dataflows start while the event hub's broker comes up; the Event Hubs
    # dataflow once it is up; the connectors last, once their OPC UA servers serve
    connectors = [s for s in svcs if s.name.endswith("/connector")]
    for svc in svcs:
        if svc not in connectors and not svc.eventhubs:
            spawn(svc, env_plain)
    if any(s.eventhubs for s in svcs):
        from layernet.lab import workload_identity

        info = kafka.start(site)
        done.append(f"event hub {info['host']}:{info['port']} ({', '.join(info['topics'])})")
        env_cs = kafka.client_env(site, env_plain)
        for svc in svcs:
            if svc.eventhubs:
                # a managed-identity endpoint: the extension's identity, known to the lab's Entra, for this level
                if workload_identity.write(site, svc.level, records.get(svc.level, []), d):
                    done.append(f"{svc.level}: managed identity for Event Hubs")
                spawn(svc, env_cs if svc.needs_connection_string else env_plain)
    ready()
    for svc in connectors:
        spawn(svc, env_plain)
    ready()
    return "started " + ", ".join(done)


def rehearse(site) -> str:
    """Put the site's `lab.close` rehearsals in place on the running lab (and lift those it no longer names): the
    router's closed MQTT hops, the Event Hubs names taken off a level's resolution (that level's dataflow restarts
    to resolve again, as a restarted pod would). Returns what changed ("" when nothing)."""
    topo = netns.topology(site)
    want = netns.router_ruleset(site, topo, rehearse=True)
    marker = state_path(site)
    done = []
    closes = netns.closed_rules(site, topo)
    if closes or marker.exists():                      # atomic and idempotent: loaded whenever it may differ
        netns.nft_replace(topo.router_ns, f"inet {netns.ROUTER_TABLE}", want)
        if closes:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(want)
            done.append("router: " + "; ".join(c.split('comment "closed: ', 1)[1].rstrip('"') for c in closes)
                        + " closed")
        else:
            marker.unlink()
            done.append("router: every crossing open again")
    for level in netns.write_closed_names(site, topo):
        names = netns.closed_names(site).get(level)
        done.append(f"{level}: " + (f"{', '.join(names)} taken off its resolution" if names else "names resolve again"))
        if any(s.name == f"{level}/dataflow" for s in _services(site)) and f"{level}/{PREFIX}-dataflow" in services.table(site):
            done.append(restart(site, f"{level}/dataflow"))
    return "; ".join(done)


def state_path(site) -> Path:
    """The router ruleset the last rehearsal loaded (the lab's build loads the one without rehearsals)."""
    return records_dir(site) / "router-rehearsal.nft"


def restart(site, service: str, timeout: float = 30.0) -> str:
    """Restart one stand-in ("level4/dataflow"), e.g. after its namespace's name resolution changed (a pod that
    restarts reads it again)."""
    from layernet.lab import kafka

    svc = next((s for s in _services(site) if s.name == service), None)
    if svc is None:
        raise LabError(f"no telemetry stand-in named {service!r} (have: {', '.join(s.name for s in _services(site))})")
    env = {k: v for k, v in os.environ.items() if k != kafka.env_var(site)}
    if svc.needs_connection_string:
        env = kafka.client_env(site, env)
    services.stop(site, _name(svc))
    p = services.start(site, _name(svc), svc.level, list(svc.argv), env=env)
    _wait_line(Path(p.log), p, svc.ready_line, timeout)
    return f"{service} restarted (pid {p.pid})"


def _name(svc) -> str:
    return f"{svc.level}/{PREFIX}-{svc.name.split('/', 1)[1]}"


def stop(site) -> list[str]:
    """Stop every telemetry stand-in (the event hub stays: `lab down` stops it)."""
    out = []
    for name in list(services.table(site)):
        if name.split("/", 1)[1].startswith(PREFIX + "-"):
            services.stop(site, name)
            out.append(name)
    return out


def clear(site) -> bool:
    """Remove the records `install` wrote and the rehearsal marker (`lab down` does): a later lab starts without
    them. True when there was something to remove."""
    d = records_dir(site)
    if not d.exists():
        return False
    shutil.rmtree(d, ignore_errors=True)
    return True


def counts(site, level: str, service: str = "dataflow") -> Optional[dict]:
    """The last counts line a stand-in printed (dataflow: per flow; connector: sent per asset)."""
    log = services.log_path(site, f"{level}/{PREFIX}-{service}")
    try:
        lines = [l for l in log.read_text(errors="replace").splitlines() if " counts " in l or " sent " in l]
    except OSError:
        return None
    if not lines:
        return None
    try:
        return json.loads(lines[-1].split(" ", 2)[2])
    except (IndexError, ValueError):
        return None
