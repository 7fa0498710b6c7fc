"""The telemetry flow of a site on loopback: real mosquitto brokers, the OPC PLC, the connector and the dataflows.

Each level gets its own loopback address (127.<net>.<n>.1, from a /24 per level), so the rendered records are used
exactly as rendered: the MQTT endpoint of a level points at its parent's node address and listener port. Every
process is started here, recorded by PID and stopped by that PID.

    site = loopback_site("params/lab.yaml", port=free_port(...))
    with LoopbackFlow(site, workdir) as flow:
        flow.start_connector()
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from layernet.lab.telemetry_services import services
from layernet.render.telemetry import find, render, to_json
from layernet.site import Site, load_site, validate_site

MOSQUITTO = "mosquitto"
_BASE_LEVEL_NET = {"level4": 4, "level3": 3, "level2": 2}


def loopback_site(base: str | Path = "params/lab.yaml", net: int = 77, port: int = 18830, opc_port: int = 50400,
                  assets: int = 1, rate_hz: Optional[float] = None, mode: str = "anonymous") -> Site:
    """The base site's telemetry on 127.<net>.<level number>.1, sending to Event Hubs with the connection string;
    `assets` copies of its first asset (oven1..N),
    each with its own topics and dataflows; `rate_hz` is the message rate per asset (the simulator ticks at it,
    sampling and publishing run twice as fast)."""
    raw = yaml.safe_load(Path(base).read_text())
    raw["admin"] = {"network": f"127.{net}.0.0/24", "jump_box_ip": f"127.{net}.0.50"}
    for lv in raw["levels"]:
        n = lv["number"]
        lv["network"] = f"127.{net}.{n}.0/24"
        lv["node_ip"] = f"127.{net}.{n}.1"
    tel = raw.setdefault("telemetry", {})
    tel.setdefault("mqtt", {})
    tel["mqtt"].update({"mode": mode, "port": port})
    # no Entra or ARM on loopback: the Kafka leg authenticates with the lab's connection string
    (tel.get("eventhubs") or tel.setdefault("eventhubs", {}))["auth"] = "connection_string"
    proto = copy.deepcopy(tel["assets"][0])
    level_num = {lv["name"]: lv["number"] for lv in raw["levels"]}
    proto["address"] = f"opc.tcp://127.{net}.{level_num[proto['level']]}.1:{opc_port}"
    if rate_hz:
        # sample twice per simulator tick, as the sample does (500 ms against OPC PLC's 1 s): one message per tick
        ms = max(1, int(round(500 / rate_hz)))
        for ds in proto["datasets"]:
            ds["publishing_ms"] = ms
            for p in ds["data_points"]:
                p["sampling_ms"] = ms
    flows = tel["dataflows"]
    new_assets, new_flows = [], []
    for k in range(1, assets + 1):
        a = copy.deepcopy(proto)
        old = proto["name"]
        a["name"] = old if assets == 1 else f"{old.rstrip('0123456789')}{k}"
        for ds in a["datasets"]:
            ds["topic"] = ds["topic"].replace(old, a["name"])
        new_assets.append(a)
        for f in flows:
            g = copy.deepcopy(f)
            if assets > 1:
                g["name"] = f"{f['name']}-{a['name']}"
            for key in ("source", "topic"):
                if g.get(key):
                    g[key] = g[key].replace(old, a["name"])
            new_flows.append(g)
    tel["assets"], tel["dataflows"] = new_assets, new_flows
    return validate_site(raw, f"{base} (loopback 127.{net}.x.1)")


def free_port(hosts: list[str], start: int = 18830, tries: int = 200) -> int:
    """A TCP port free on every one of `hosts`."""
    for port in range(start, start + tries):
        socks = []
        try:
            for h in hosts:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((h, port))
                socks.append(s)
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no free port in {start}..{start + tries} on {hosts}")


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


BROKER_TUNING = ("max_queued_messages 1000000", "max_inflight_messages 0")


def mosquitto_conf(host: str, records: list[dict], certs: Optional[dict] = None) -> str:
    """The level broker's configuration from its rendered listener and authentication records, by the lab broker's
    own rule (`layernet.lab.aioext`): `certs` (X.509 mode) give the server certificate and the CA that every
    trusted CA config map of the records stands for."""
    from layernet.lab import aioext

    ports = aioext.listener_ports(*aioext.from_records(records))
    trusted = {p["trusted_ca"]: certs["ca"] for p in ports if p["auth"] == "x509"} if certs else {}
    return aioext.mosquitto_conf(host, ports, (certs or {}).get("server_cert"), (certs or {}).get("server_key"), None,
                                 trusted, extra=BROKER_TUNING)


def mqtt_certs(out: Path, server_ips: list[str]) -> dict:
    """A CA, one server certificate for every broker address and one client certificate (X.509 mode):
    {"ca", "server_cert", "server_key", "client_cert", "client_key"} as file paths."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from layernet.lab import pki

    ca_cert_path, ca_key_path = pki.ensure_ca(out / "ca")
    server_cert, server_key = pki.issue_server_cert(out / "ca", out, [], ips=server_ips, stem="broker")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "layernet-dataflow")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    client_cert, client_key = out / "client.crt", out / "client.key"
    client_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    client_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    os.chmod(client_key, 0o600)
    return {"ca": str(ca_cert_path), "server_cert": str(server_cert), "server_key": str(server_key),
            "client_cert": str(client_cert), "client_key": str(client_key)}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


def cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a process (seconds), None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoopbackFlow:
    """Brokers per level, the OPC PLC, dataflows per level; the connector when asked. A context manager."""

    def __init__(self, site: Site, workdir: Path, kafka: Optional[dict] = None, fast_ms: Optional[int] = None):
        self.site = site
        self.dir = Path(workdir)
        self.kafka = kafka              # {"connection_string", "ca"} to run the Kafka leg; None: stop at the egress broker
        self.procs: dict[str, Proc] = {}
        self.resources = render(site)
        asset_ms = [p.sampling_ms for a in site.telemetry.assets for ds in a.datasets for p in ds.data_points]
        self.fast_ms = fast_ms or (2 * min(asset_ms) if asset_ms else 1000)   # the OPC PLC's tick

    # ---- processes
    def _start(self, name: str, argv: list[str], env: Optional[dict] = None) -> Proc:
        log = self.dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, env=env or os.environ.copy(), cwd=str(self.dir))
        proc = Proc(name, p, log)
        self.procs[name] = proc
        return proc

    def _wait_line(self, proc: Proc, text: str, timeout: float = 20.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if text in proc.log.read_text(errors="replace"):
                return
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}): {proc.log.read_text()[-800:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{proc.name}: no {text!r} in {proc.log} after {timeout:.0f} s")

    def brokers(self) -> dict[str, tuple[str, int]]:
        """The levels whose records open a listener (every level of the flow), at the node address."""
        port = self.site.telemetry.mqtt.effective_port
        return {lv.name: (str(lv.node_ip), port) for lv in self.site.levels if find(self.resources[lv.name], "listeners")}

    def level_file(self, level: str) -> Path:
        return self.dir / "resources" / f"{level}.json"

    def start(self) -> "LoopbackFlow":
        if shutil.which(MOSQUITTO) is None and not Path("/usr/sbin/mosquitto").exists():
            raise RuntimeError("mosquitto is not installed: make apt (Debian package mosquitto)")
        exe = shutil.which(MOSQUITTO) or "/usr/sbin/mosquitto"
        self.dir.mkdir(parents=True, exist_ok=True)
        for level, recs in self.resources.items():
            self.level_file(level).parent.mkdir(parents=True, exist_ok=True)
            self.level_file(level).write_text(to_json(recs))
        self.certs = None
        if self.site.telemetry.mqtt.tls:
            self.certs = mqtt_certs(self.dir / "pki", sorted({h for h, _ in self.brokers().values()}))
        for level, (host, port) in sorted(self.brokers().items()):
            conf = self.dir / f"mosquitto-{level}.conf"
            conf.write_text(mosquitto_conf(host, self.resources[level], self.certs))
            self._start(f"{level}-broker", [exe, "-c", str(conf)])
        for level, (host, port) in self.brokers().items():
            wait_port(host, port)
        env = os.environ.copy()
        if self.kafka:
            env["LAYERNET_EVENTHUBS_CONNECTION_STRING"] = self.kafka["connection_string"]
        ca = self.certs["ca"] if self.certs else (self.kafka or {}).get("ca")
        self.services = services(self.site, self.level_file("x").parent, brokers=self.brokers(), ca=ca,
                                 client_cert=self.certs["client_cert"] if self.certs else None,
                                 client_key=self.certs["client_key"] if self.certs else None,
                                 kafka=bool(self.kafka))
        for svc in self.services:
            if svc.name.endswith("/connector"):
                continue
            argv = list(svc.argv)
            if svc.name.endswith("/opcplc") or "/opcplc-" in svc.name:
                argv[argv.index("--fast-ms") + 1] = str(self.fast_ms)
            p = self._start(svc.name.replace("/", "-"), argv, env if svc.needs_connection_string else None)
            self._wait_line(p, svc.ready_line, 30)
        return self

    def start_connector(self) -> None:
        for svc in self.services:
            if svc.name.endswith("/connector"):
                self._start(svc.name.replace("/", "-"), list(svc.argv))

    def stop_connector(self, timeout: float = 10.0) -> None:
        for name in [n for n in self.procs if n.endswith("-connector")]:
            self._stop_one(name, timeout)

    def _stop_one(self, name: str, timeout: float) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.popen.poll() is not None:
            return
        proc.popen.terminate()
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(5)

    def tap_tls(self):
        """TLS settings for a tap (X.509 mode), else None."""
        from layernet.lab.dataflow import MqttTls

        if not self.certs:
            return None
        return MqttTls(self.certs["ca"], self.certs["client_cert"], self.certs["client_key"])

    def cpu(self) -> dict[str, Optional[float]]:
        return {name: cpu_seconds(p.pid) for name, p in self.procs.items()}

    def stop(self) -> None:
        order = [n for n in self.procs if n.endswith("-connector")] + \
                [n for n in self.procs if n.endswith("-dataflow")] + \
                [n for n in self.procs if "-opcplc" in n] + \
                [n for n in self.procs if n.endswith("-broker")]
        for name in order:
            self._stop_one(name, 10.0)

    def __enter__(self) -> "LoopbackFlow":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self) -> dict[str, str]:
        return {name: p.log.read_text(errors="replace") for name, p in self.procs.items()}


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def measure(site: Site, seconds: float, workdir: Path, warmup_s: float = 2.0, kafka: Optional[dict] = None,
            kafka_conf: Optional[dict] = None) -> dict:
    """Run the site's flow on loopback for a window and return loss, latency and the CPU of every process.

    CPU is the share of one core each process used during the window (utime + stime over wall time)."""
    from layernet.telemetry.verify import analyse, kafka_hub, observe

    hub = kafka_hub(kafka_conf, site.telemetry.eventhubs.hub) if kafka_conf is not None else None
    with LoopbackFlow(site, workdir, kafka=kafka) as flow:
        flow.start_connector()
        time.sleep(warmup_s)
        cpu0, t0 = flow.cpu(), time.time()
        route_list, got = observe(site, seconds, brokers=flow.brokers(), tls=flow.tap_tls(), hub=hub)
        cpu1, t1 = flow.cpu(), time.time()
        logs = flow.logs()
    a = analyse(route_list, got["records"])
    wall = t1 - t0
    cpu = {name: round(100 * (cpu1[name] - cpu0[name]) / wall, 1)
           for name in sorted(cpu1) if cpu0.get(name) is not None and cpu1.get(name) is not None}
    s = a.summary
    return {
        "assets": len(site.telemetry.assets), "seconds": round(wall, 1), "messages": s["messages"],
        "delivered": s["delivered"], "lost": s["lost"], "rate_msgs_per_s": round(s["messages"] / max(seconds - 2.0, 0.1), 1),
        "e2e_p50_ms": s["e2e_p50_ms"], "e2e_p99_ms": s["e2e_p99_ms"], "e2e_max_ms": s["e2e_max_ms"],
        "hop_p99_ms": {seg: round(float(v), 3) for seg, v in a.latency.groupby("segment")["ms"].quantile(0.99).items()}
        if len(a.latency) else {},
        # gaps in the counter the connector already missed (sampling at the source) vs gaps added on the way
        "source_sequence_gaps": int(a.hops[a.hops["hop"] == 0]["sequence_gaps"].sum()) if len(a.hops) else 0,
        "added_sequence_gaps": _added_gaps(a.hops),
        "tap_missed": int(a.hops["tap_missed"].sum()) if len(a.hops) else 0,
        "cpu_percent": cpu, "problems": a.problems[:5],
        "errors": {**{n: t[-300:] for n, t in logs.items() if "Traceback" in t},
                   **({"event hub consumer": got["kafka_error"][-300:]} if got["kafka_error"] else {})},
    }


def _added_gaps(hops) -> int:
    if not len(hops):
        return 0
    total = 0
    for _, rows in hops.groupby("route"):
        rows = rows.sort_values("hop")
        total += int(rows["sequence_gaps"].iloc[-1] - rows["sequence_gaps"].iloc[0])
    return total


def measure_in_lab(site_file: str | Path, overrides: list[str], seconds: float = 8.0, rate: float = 10.0,
                   assets: int = 1, net: int = 79, timeout: float = 600.0) -> dict:
    """One measured window run inside the lab's egress namespace, through the lab's Event Hubs (its Kafka broker
    must be running): the egress dataflow resolves and reaches `<namespace>.servicebus.windows.net:9093` the
    way real traffic goes. The connection string travels only in the child's environment."""
    from layernet.lab import commands, kafka, pki

    site = load_site(site_file, overrides)
    if not kafka.is_running(site):
        raise RuntimeError(f"the lab's Event Hubs broker is not running (python -m layernet.lab.kafka start --site {site_file})")
    ns = f"{site.lab.prefix}-{site.egress_level}"
    ca = str(commands.state_dir(site) / "ca" / pki.CA_CERT)
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "layernet.telemetry.loopback", "--site", str(site_file),
            "--seconds", str(seconds), "--rate", str(rate), "--assets", str(assets), "--net", str(net), "--kafka-ca", ca]
    for o in overrides:
        argv += ["-p", o]
    proc = subprocess.run(argv, capture_output=True, text=True, env=kafka.client_env(site), timeout=timeout)
    secret = kafka.connection_string(site)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"the measurement in {ns} printed nothing ({proc.returncode}): "
                           f"{kafka.redact(proc.stderr.strip()[-800:], site)}")
    out = json.loads(lines[-1])
    out["secret_leaked"] = secret in proc.stdout or secret in proc.stderr
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """python -m layernet.telemetry.loopback --site FILE [-p K=V] [--seconds N] [--kafka-ca PEM]: one measured
    window, as JSON. With --kafka-ca the egress dataflow produces to the site's Event Hubs Kafka endpoint and a
    consumer reads the hub (the connection string comes from LAYERNET_EVENTHUBS_CONNECTION_STRING); run it inside
    a lab namespace that resolves and reaches that endpoint (ip netns exec <prefix>-<egress level> ...)."""
    import argparse
    import tempfile

    from layernet.telemetry.verify import kafka_consumer_config

    ap = argparse.ArgumentParser(prog="python -m layernet.telemetry.loopback", description=main.__doc__.splitlines()[0])
    ap.add_argument("--site", default="params/lab.yaml")
    ap.add_argument("-p", dest="overrides", action="append", default=[])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--assets", type=int, default=1)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--net", type=int, default=79)
    ap.add_argument("--kafka-ca")
    args = ap.parse_args(argv)
    base = load_site(args.site, args.overrides)
    hosts = [f"127.{args.net}.{lv.number}.1" for lv in base.levels]
    with tempfile.TemporaryDirectory(prefix="telemetry-") as d:
        tmp_site = Path(d) / "site.yaml"
        tmp_site.write_text(yaml.safe_dump(base.model_dump(mode="json"), sort_keys=False))
        site = loopback_site(tmp_site, net=args.net, port=free_port(hosts, 18870),
                             opc_port=free_port(hosts[-1:], 50700), assets=args.assets, rate_hz=args.rate)
        kafka = kconf = None
        if args.kafka_ca:
            cs = os.environ.get(site.telemetry.eventhubs.connection_string_env)
            if not cs:
                print(f"error: {site.telemetry.eventhubs.connection_string_env} is not set", file=sys.stderr)
                return 2
            kafka = {"connection_string": cs, "ca": args.kafka_ca}
            kconf = kafka_consumer_config(site, connection_string=cs, ca=args.kafka_ca, group="layernet-verify")
        result = measure(site, args.seconds, Path(d) / "run", kafka=kafka, kafka_conf=kconf)
    print(json.dumps(result, sort_keys=True))
    return 0 if not result["lost"] and not result["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
