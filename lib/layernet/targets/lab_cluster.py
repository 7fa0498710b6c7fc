"""The lab's cluster side: what a plant's clusters do on their own, done by the lab's stand-ins.

Once ARM accepts a connected cluster, an extension or telemetry records, the stand-ins start in the level's namespace
(the Arc agents, the AIO extensions with mosquitto as the broker, the connector and dataflows); the stages read their
state through the same `Cluster` methods a plant answers with nothing or its Kubernetes API.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

from layernet.lab import layout
from layernet.evidence import evidence
from layernet.lab import aioext, arcagent, mqttpki, netns, procs, reach, services, telemetry
from layernet.lab.clusters import kubeconfig
from layernet.targets.cluster import Cluster
from layernet.targets.kube import Api


class _AdminSide(Api):
    """The level's API from the jump box's admin side (where it is reached), also when the stage runs on its
    internet side (the Azure calls' namespace)."""

    def request(self, *args, **kwargs):
        return netns.in_root(super().request, *args, **kwargs)


class LabCluster(Cluster):
    makes_x509_objects = True
    _broker: Optional[threading.Thread] = None      # the event hub's broker starting (prepare_telemetry)
    _broker_error: Optional[Exception] = None

    def install_arc_agents(self, level: str, cluster_id: str, progress=None, agent_key: Optional[bytes] = None) -> str:
        d = layout.level_dir(self.site, level)
        d.mkdir(parents=True, exist_ok=True)
        (d / arcagent.FEATURES_FILE).unlink(missing_ok=True)      # newly installed agents: no feature enabled yet
        (d / arcagent.KEY_FILE).unlink(missing_ok=True)
        if agent_key:
            arcagent.save_key(d, agent_key)
        return services.start_arc_agent(self.site, level, cluster_id)

    def role_rows(self, role: str) -> list[dict]:
        """Per level whose stand-in of `role` started: did it reach every host the catalog marks required for the
        role (lab/reach.py)? Names each one it did not, and the role."""
        out = []
        for lv in self.site.levels:
            if role == arcagent.ROLE:
                st, who = services.arc_agent_status(self.site, lv.name), "Arc agents"
            elif role == aioext.ROLE:
                st, who = aioext.status(self.site, lv.name), "AIO extensions"
            else:
                return []
            if st is not None:
                out.append(reach.row(self.site, role, lv.name, st.get("calls"), who, st.get("blocked_on")))
        return out

    def arc_features(self, level: str):
        return arcagent.read_features(layout.level_dir(self.site, level))

    def enable_arc_features(self, level: str, features: list) -> str:
        on = arcagent.enable_features(layout.level_dir(self.site, level), list(features))
        return f"agents of {level}: features enabled: {', '.join(on) or 'none'}"

    def install_aio_extension(self, level: str, cluster_id: str, extension: dict) -> str:
        return aioext.install(self.site, level, cluster_id, extension)

    def aio_extension_running(self, level: str):
        """False when the level's extension stand-in was started (it left its status) and no longer runs;
        None when it never started."""
        if aioext.status(self.site, level) is None:
            return None
        p = services.table(self.site).get(f"{level}/aio-extension")
        return p is not None and procs.alive(p)

    def aio_listeners(self, level: str, listeners: list, authentications: list = ()) -> str:
        return aioext.set_listeners(self.site, level, listeners, authentications)

    def aio_note(self, level: str) -> str:
        return aioext.note(self.site, level)

    def aio_broker_rows(self, listeners: dict, wait: float = 10.0) -> list:
        """An MQTT round trip (connect, subscribe, publish, receive) to every anonymous listener of every level's
        broker, and an anonymous client refused by every listener that authenticates its clients, from this
        namespace (the jump box side, which routes to the level nodes: the admin flow)."""
        rows = []
        ca = str(layout.ca_cert_path(self.site))
        for level, ports in listeners.items():
            node = str(self.site.level(level).node_ip)
            layout.check_route(self.site, node)
            st = aioext.status(self.site, level) or {}
            failed = not st or any(e.get("state") == "Failed" for e in st.get("extensions", {}).values())
            for name, port, tls, authenticated in ports:
                probe = aioext.mqtt_refuses_anonymous if authenticated else aioext.mqtt_round_trip
                end = time.monotonic() + (0 if failed else wait)   # a broker that is (re)starting gets a few seconds
                while True:
                    ok, observed = probe(node, port, ca if tls else None)
                    if ok or time.monotonic() >= end:
                        break
                    time.sleep(0.5)
                hint = f"{name} on {node}:{port} ({'TLS' if tls else 'plain'}): {observed}"
                note = aioext.note(self.site, level)
                rows.append(evidence(level, f"mqtt {name} :{port}",
                                     "anonymous client refused" if authenticated else "round trip",
                                     observed if ok else "failed", ok, hint + (f"; {note}" if note else "")))
        return rows

    def prepare_telemetry(self) -> None:
        """The event hub's broker (a JVM: seconds) starts beside the records' requests; the install waits for it and
        fails with its reason if it did not start (a failed start also ends a rehearsal, so it is not tried again)."""
        if self._broker is None and telemetry.sends_to_eventhubs(self.site):
            from layernet.lab import kafka

            def start() -> None:
                try:
                    kafka.start(self.site)
                except Exception as exc:  # noqa: BLE001 - raised by install_telemetry, which waits for it
                    self._broker_error = exc

            self._broker_error = None
            self._broker = threading.Thread(target=start, daemon=True, name="eventhub-broker")
            self._broker.start()

    def install_telemetry(self, records: dict) -> str:
        if self._broker is not None:
            self._broker.join()
            self._broker, error, self._broker_error = None, self._broker_error, None
            if error is not None:
                raise error
        return telemetry.install(self.site, records)

    @property
    def reader(self):
        """The stages' cluster checks read the lab's clusters as a plant's (pods Ready, the broker's Services)."""
        return self.api

    def api(self, level: str):
        """The level cluster's API from the jump box's kubeconfig."""
        return _AdminSide(netns.in_root(kubeconfig.client, self.site, level))

    def x509_objects(self, refs: list) -> list[dict]:
        return mqttpki.objects(self.site, refs)

    def telemetry_rehearsals(self) -> str:
        return telemetry.rehearse(self.site)

    def telemetry_running(self):
        return telemetry.running(self.site)

    def arc_agent_note(self, level: str) -> str:
        st = services.arc_agent_status(self.site, level)
        if st is None:
            return f"the lab's Arc agents of {level} never started"
        if st.get("blocked_on"):
            return f"the Arc agents of {level} cannot reach {st['blocked_on']}"
        if st.get("heartbeat_error"):
            return f"the Arc agents of {level} cannot send heartbeats: {st['heartbeat_error']}"
        return ""
