"""A real Apache Kafka broker as the lab's Event Hubs namespace `<namespace>.servicebus.windows.net:9093`.

Event Hubs speaks Kafka on 9093: TLS, then SASL OAUTHBEARER with an Entra token (managed identities, service
principals) or SASL PLAIN with the user name `$ConnectionString` and the namespace's connection string as
password, and it advertises `<namespace>.servicebus.windows.net:9093`. The lab runs the pinned broker that
`make kafka` fetched from Maven Central (tools/kafka/pom.xml -> .tools/kafka/libs/; kafka-clients brings Kafka's
own token validator and jose4j) in the cloud namespace, one node in KRaft mode with a 256 MB heap:

    EVENTHUBS  127.0.0.1:19093  SASL_SSL, OAUTHBEARER and PLAIN; certificate from the lab CA for the namespace's
                                name; advertised as <namespace>.servicebus.windows.net:9093
    INTERNAL   127.0.0.1:19092  plaintext, loopback of the cloud namespace only: inter-broker and topic set-up
    CONTROLLER 127.0.0.1:19094  the KRaft controller

Clients reach it the way real traffic goes: the name resolves (through the level's DNS) to the cloud's TLS
front, which reads `<state>/cloud/routes.json` and splices a connection whose server name is listed for port
9093 to the backend 127.0.0.1:19093, unchanged (TLS end to end). `start` writes that route, `stop` removes it.

OAUTHBEARER: Kafka's `OAuthBearerValidatorCallbackHandler` checks each token against the lab Entra's JWKS at the
real discovery URL `https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys` (fetched over TLS through
the cloud's front, trusting the lab CA; the URL is the only entry of the JVM's allow-list property
`org.apache.kafka.sasl.oauthbearer.allowed.urls`, without which Kafka 4 fetches nothing): RS256 signature by a
`kid` of the JWKS, `exp`, `aud` = `https://<namespace>.servicebus.windows.net`, `iss` = Entra's v1 issuer
`https://sts.windows.net/<tenant>/`. The principal is `User:<oid>`, the object id role assignments name.
Authorization is Kafka's StandardAuthorizer: `$ConnectionString` (the root key) and the loopback listeners are
super users; everyone else needs an ACL, and `layernet.lab.eventhubs_rbac` (started beside the broker) keeps
the ACLs equal to the Azure Event Hubs Data Sender / Receiver / Owner role assignments ARM holds. Why a token
was refused is in the broker's log (`refusals(site)`).

The connection string is made per lab (`<state>/kafka/connection-string`, mode 0600) and reaches clients only
through `connection_string(site)` or the environment (`client_env`); it is never printed and never part of an
error. One topic per event hub of the site. `start(site)` is idempotent; `stop(site)` stops the broker and
removes its data and secrets (`layernet lab down` does the same).
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from layernet.lab import LabError, netns, pki, procs
from layernet.lab import state_dir as _state_dir
from layernet.lab.cloud import entra
from layernet.render.telemetry import eventhubs_namespace_id

KAFKA_VERSION = "4.1.1"                  # keep equal to kafka.version in tools/kafka/pom.xml
DEFAULT_HUB = "telemetry"                # the event hub when the site names none
PUBLIC_PORT = 9093                       # the Event Hubs Kafka port (what clients dial, through the front)
LISTEN_PORT = 19093                      # the broker's TLS listener inside the cloud namespace (the route's backend)
INTERNAL_PORT = 19092
CONTROLLER_PORT = 19094
LOOPBACK = "127.0.0.1"
USERNAME = "$ConnectionString"
KEY_NAME = "RootManageSharedAccessKey"
ENV_VAR = "LAYERNET_EVENTHUBS_CONNECTION_STRING"
HEAP = "256m"
READY_TIMEOUT = 30.0                    # about 5-10 s idle; a loaded 2-core machine needs more
PROC_NAME = "cloud/kafka"
RBAC_NAME = "cloud/eventhubs-rbac"
VALIDATOR = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
BROKER_VALIDATOR = "org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator"
LOGIN_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
ALLOWED_URLS = "org.apache.kafka.sasl.oauthbearer.allowed.urls"
SUPER_USERS = ("User:ANONYMOUS", f"User:{USERNAME}")   # loopback listeners, and the namespace's root key
SUFFIX = {"public": "servicebus.windows.net", "usgov": "servicebus.usgovcloudapi.net",
          "china": "servicebus.chinacloudapi.cn"}
JVM_OPTS = ["-Xms" + HEAP, "-Xmx" + HEAP, "-XX:MaxDirectMemorySize=64m", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=64m", "-XX:MaxMetaspaceSize=128m",
            "-XX:+ExitOnOutOfMemoryError", "-Xss512k", "-Djava.net.preferIPv4Stack=true", "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8"]
Progress = Callable[[str], None]


# ----------------------------------------------------------------------------------------------- where things are
def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def kafka_home() -> Path:
    """The folder `make kafka` fills (override with LAYERNET_KAFKA_HOME)."""
    return Path(os.environ.get("LAYERNET_KAFKA_HOME") or repo_root() / ".tools" / "kafka")


def libs_dir() -> Path:
    return kafka_home() / "libs"


def java_binary() -> Optional[str]:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def missing() -> str:
    """Why the broker cannot run here ("" when it can)."""
    if not java_binary():
        return "java not found: install a Java 17 runtime (Debian: apt-get install -y openjdk-17-jre-headless)"
    jar = libs_dir() / f"kafka_2.13-{KAFKA_VERSION}.jar"
    if not jar.is_file():
        return (f"Apache Kafka {KAFKA_VERSION} is not fetched: run `make setup` (tools/kafka/pom.xml takes it "
                f"from Maven Central into {kafka_home()})")
    return ""


def kafka_dir(site) -> Path:
    return _state_dir(site) / "kafka"


def routes_path(site) -> Path:
    """The cloud front's route table (a JSON list of {"names", "port", "backend"})."""
    return _state_dir(site) / "cloud" / "routes.json"


def _record_path(site) -> Path:
    return kafka_dir(site) / "pid.json"


def _cs_path(site) -> Path:
    return kafka_dir(site) / "connection-string"


# ----------------------------------------------------------------------------------------------- site facts
def namespace_name(site) -> str:
    tel = getattr(site, "telemetry", None)
    eh = getattr(tel, "eventhubs", None)
    name = getattr(eh, "namespace", None) or site.azure.eventhubs_namespace
    if not name:
        raise LabError("the site names no Event Hubs namespace: set azure.eventhubs_namespace in the site file")
    return name


def host(site) -> str:
    """`<namespace>.servicebus.windows.net` (the suffix of the site's Azure cloud)."""
    return f"{namespace_name(site)}.{SUFFIX.get(site.azure.cloud, SUFFIX['public'])}".lower()


def hubs(site) -> list[str]:
    """The event hubs (one Kafka topic each): the site's telemetry hub, else DEFAULT_HUB."""
    tel = getattr(site, "telemetry", None)
    eh = getattr(tel, "eventhubs", None)
    names = getattr(eh, "hubs", None) or [getattr(eh, "hub", None) or DEFAULT_HUB]
    return list(dict.fromkeys(str(n) for n in names))


def env_var(site=None) -> str:
    """The environment variable that carries the connection string: the site's
    telemetry.eventhubs.connection_string_env, else ENV_VAR."""
    eh = getattr(getattr(site, "telemetry", None), "eventhubs", None)
    return getattr(eh, "connection_string_env", None) or ENV_VAR


def tenant(site) -> str:
    from layernet.lab import azure as lab_azure

    return lab_azure.tenant_id(site)


def jwks_url(site) -> str:
    """The lab Entra's JWKS at the real discovery URL of the lab's tenant (what the broker fetches)."""
    return entra.jwks_url(tenant(site))


def audience(site) -> str:
    """The `aud` Event Hubs accepts from Kafka clients: the namespace's URL."""
    return f"https://{host(site)}"


def scope(site) -> str:
    """The scope a client asks Entra for (the audience's `.default`)."""
    return audience(site) + "/.default"


def namespace_id(site) -> str:
    """The namespace's ARM id in the lab's subscription (role assignments are on it or its hubs)."""
    from layernet.lab import azure as lab_azure

    namespace_name(site)                 # refuses a site without a namespace, naming the field
    return eventhubs_namespace_id(site, lab_azure.subscription_id(site))


def route(site) -> dict:
    """The front's route: the namespace's name on 9093 to the broker. Every other name under the Event Hubs
    suffix on 9093 goes to the broker too, whose certificate names only the lab's namespace, so a client that
    dials a wrong namespace fails TLS verification with a clear error instead of reaching the echo."""
    suffix = host(site).split(".", 1)[1]
    return {"names": [host(site), f"*.{suffix}"], "port": PUBLIC_PORT, "backend": f"{LOOPBACK}:{LISTEN_PORT}"}


# ----------------------------------------------------------------------------------------------- the secret
def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def new_connection_string(site) -> str:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return f"Endpoint=sb://{host(site)}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key}"


def connection_string(site) -> str:
    """This lab's Event Hubs connection string (made on first use, kept in the state folder with mode 0600)."""
    path = _cs_path(site)
    try:
        text = path.read_text().strip()
        if text:
            return text
    except OSError:
        pass
    text = new_connection_string(site)
    _write_private(path, text + "\n")
    return text


def client_env(site, base: Optional[dict] = None) -> dict:
    """An environment for a client process: `base` (default os.environ) plus the connection string."""
    env = dict(os.environ if base is None else base)
    env[env_var(site)] = connection_string(site)
    return env


def client_config(site=None, *, bootstrap: Optional[str] = None, password: Optional[str] = None,
                  ca: Optional[str] = None) -> dict:
    """The librdkafka settings a real Event Hubs needs: SASL_SSL, PLAIN, `$ConnectionString` and the
    connection string (from `password`, else the environment variable `env_var(site)`), CA = the lab CA (`ca`, default
    the lab's)."""
    if password is None:
        password = os.environ.get(env_var(site))
        if not password:
            raise LabError(f"no Event Hubs connection string: set {env_var(site)} (layernet.lab.kafka.client_env)")
    conf = {
        "bootstrap.servers": bootstrap or f"{host(site)}:{PUBLIC_PORT}",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": USERNAME,
        "sasl.password": password,
        "ssl.endpoint.identification.algorithm": "https",
    }
    if ca is None and site is not None:
        ca = str(_state_dir(site) / "ca" / pki.CA_CERT)
    if ca:
        conf["ssl.ca.location"] = ca
    return conf


def redact(text: str, site) -> str:
    """`text` without this lab's connection string or its key."""
    try:
        cs = _cs_path(site).read_text().strip()
    except OSError:
        return text
    if cs:
        text = text.replace(cs, "***")
        key = cs.rsplit("SharedAccessKey=", 1)[-1]
        if key:
            text = text.replace(key, "***")
    return text


# ----------------------------------------------------------------------------------------------- rendering
def render_properties(site, paths: dict) -> str:
    """server.properties of the one-node KRaft broker (no secret in it: PEM key file, JAAS file apart)."""
    lines = [
        "# layernet lab: Apache Kafka as the Event Hubs namespace " + host(site),
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{LOOPBACK}:{CONTROLLER_PORT}",
        f"listeners=EVENTHUBS://{LOOPBACK}:{LISTEN_PORT},INTERNAL://{LOOPBACK}:{INTERNAL_PORT},"
        f"CONTROLLER://{LOOPBACK}:{CONTROLLER_PORT}",
        f"advertised.listeners=EVENTHUBS://{host(site)}:{PUBLIC_PORT},INTERNAL://{LOOPBACK}:{INTERNAL_PORT}",
        "listener.security.protocol.map=EVENTHUBS:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=INTERNAL",
        "controller.listener.names=CONTROLLER",
        "listener.name.eventhubs.sasl.enabled.mechanisms=OAUTHBEARER,PLAIN",
        "sasl.enabled.mechanisms=OAUTHBEARER,PLAIN",
        # Entra tokens: Kafka's own validator against the lab Entra's JWKS (TLS from the lab CA)
        f"listener.name.eventhubs.oauthbearer.sasl.server.callback.handler.class={VALIDATOR}",
        # (the login module also logs the broker itself in: an unsecured placeholder token, never sent, since
        # brokers talk over the INTERNAL listener)
        f"listener.name.eventhubs.oauthbearer.sasl.jaas.config={LOGIN_MODULE} required "
        f'unsecuredLoginStringClaim_sub="broker" ssl.truststore.type="PEM" ssl.truststore.location="{paths["ca"]}" ;',
        # Kafka 4.1's default validator (DefaultJwtValidator) checks no signature unless handed a key resolver:
        # the broker's validator is named, and it builds its resolver from the JWKS URL
        f"sasl.oauthbearer.jwt.validator.class={BROKER_VALIDATOR}",
        f"sasl.oauthbearer.jwks.endpoint.url={jwks_url(site)}",
        f"sasl.oauthbearer.expected.audience={audience(site)}",
        f"sasl.oauthbearer.expected.issuer={entra.issuer(tenant(site))}",
        "sasl.oauthbearer.sub.claim.name=oid",
        "sasl.oauthbearer.clock.skew.seconds=30",
        "sasl.oauthbearer.jwks.endpoint.retry.backoff.ms=100",
        "sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms=2000",
        # authorization: ACLs that follow the role assignments (eventhubs_rbac); the root key is a super user
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users={';'.join(SUPER_USERS)}",
        "allow.everyone.if.no.acl.found=false",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={paths['keystore']}",
        "ssl.client.auth=none",
        "ssl.enabled.protocols=TLSv1.2,TLSv1.3",
        "ssl.endpoint.identification.algorithm=https",
        f"log.dirs={paths['data']}",
        f"metadata.log.dir={paths['data']}",
        "num.partitions=1",
        "default.replication.factor=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "num.network.threads=2",
        "num.io.threads=2",
        "num.recovery.threads.per.data.dir=1",
        "background.threads=2",
        "log.retention.hours=24",
        "log.segment.bytes=16777216",
        "message.max.bytes=1048576",
        "",
    ]
    return "\n".join(lines)


def render_jaas(connection_string: str) -> str:
    """The broker's JAAS file: PLAIN accepts exactly one user, `$ConnectionString`, with this password."""
    if '"' in connection_string or "\\" in connection_string:
        raise LabError("the lab connection string must not contain quotes or backslashes")
    return ("KafkaServer {\n"
            "  org.apache.kafka.common.security.plain.PlainLoginModule required\n"
            f'  user_{USERNAME}="{connection_string}";\n'
            "};\n")


def render_log4j(log_file: Path) -> str:
    return "\n".join([
        "status = warn",
        "appender.out.type = Console",
        "appender.out.name = OUT",
        "appender.out.layout.type = PatternLayout",
        "appender.out.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = WARN",
        "rootLogger.appenderRef.out.ref = OUT",
        "logger.server.name = kafka.server.KafkaRaftServer",
        "logger.server.level = INFO",
        "logger.auth.name = org.apache.kafka.common.network.Selector",
        "logger.auth.level = INFO",
        "logger.oauth.name = org.apache.kafka.common.security.oauthbearer",
        "logger.oauth.level = DEBUG",
        "logger.authz.name = kafka.authorizer.logger",
        "logger.authz.level = INFO",
        "",
    ])


def _paths(site) -> dict:
    d = kafka_dir(site)
    return {"dir": d, "data": d / "data", "keystore": d / "tls" / "broker.pem", "properties": d / "server.properties",
            "jaas": d / "jaas.conf", "log4j": d / "log4j2.properties", "log": d / "kafka.out",
            "ca": _state_dir(site) / "ca" / pki.CA_CERT, "hosts": d / "hosts.rehearsal", "rbac_log": d / "rbac.out",
            "rehearsal": d / "rehearsal.json"}


def argv(site, jwks_resolves: bool = True) -> list[str]:
    """The broker's command line. `jwks_resolves=False` (a rehearsal) gives the JVM a hosts file without the
    Entra name, so the broker cannot reach its JWKS."""
    p = _paths(site)
    extra = [] if jwks_resolves else [f"-Djdk.net.hosts.file={p['hosts']}"]
    return ([java_binary() or "java"] + JVM_OPTS + extra +
            [f"-D{ALLOWED_URLS}={jwks_url(site)}",
             f"-Djava.security.auth.login.config={p['jaas']}", f"-Dlog4j2.configurationFile={p['log4j']}",
             "-cp", str(libs_dir() / "*"), "kafka.Kafka", str(p["properties"])])


def _write_configs(site) -> dict:
    """Write the broker's files: properties, JAAS (0600), PEM key store (0600), log4j; format the storage."""
    p = _paths(site)
    d = p["dir"]
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    ca_dir = _state_dir(site) / "ca"
    tls = d / "tls"
    cert, key = pki.issue_server_cert(ca_dir, tls, [host(site)])
    _write_private(p["keystore"], key.read_text() + cert.read_text())
    _write_private(p["jaas"], render_jaas(connection_string(site)))
    p["properties"].write_text(render_properties(site, p))
    p["log4j"].write_text(render_log4j(p["log"]))
    if p["data"].exists():
        shutil.rmtree(p["data"])
    _format_storage(site, p)
    return p


def _format_storage(site, p: dict) -> None:
    """An empty KRaft log folder. `kafka-storage format` runs once per broker version and node settings; its
    result (meta.properties, bootstrap checkpoint) is kept in .tools/kafka/storage-<key>/ and copied, which
    saves a JVM start on every `start`."""
    key = hashlib.sha256(f"{KAFKA_VERSION} node.id=1 {LOOPBACK}:{CONTROLLER_PORT}".encode()).hexdigest()[:16]
    template = kafka_home() / f"storage-{key}"
    if (template / "meta.properties").is_file():
        shutil.copytree(template, p["data"])
        return
    cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run([java_binary() or "java", "-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                          f"-Dlog4j2.configurationFile={p['log4j']}", "-cp", str(libs_dir() / "*"),
                          "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(p["properties"])],
                         capture_output=True, text=True, timeout=60)
    if fmt.returncode != 0:
        raise LabError(f"formatting the Kafka storage failed ({fmt.returncode}): "
                       f"{redact((fmt.stderr or fmt.stdout).strip()[-800:], site)}")
    tmp = template.with_name(f"{template.name}.{os.getpid()}.tmp")
    try:
        shutil.copytree(p["data"], tmp)
        tmp.rename(template)
    except OSError:                      # another lab stored it first, or the folder is read-only
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- routes
@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_routes(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return data if isinstance(data, list) else []


def _ours(entry, names: set) -> bool:
    """A route to this lab's broker: port 9093 to the broker's backend, or listing one of `names` on 9093."""
    if not isinstance(entry, dict) or entry.get("port") != PUBLIC_PORT:
        return False
    return (entry.get("backend") == f"{LOOPBACK}:{LISTEN_PORT}"
            or bool({str(n).lower() for n in entry.get("names") or []} & names))


def _update_routes(site, add: Optional[dict], remove_names: set) -> None:
    path = routes_path(site)
    if add is None and not path.exists():
        return
    with _locked(path.with_name(".routes.lock")):
        entries = [e for e in _read_routes(path) if not _ours(e, remove_names)]
        if add is not None:
            entries.append(add)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(entries, indent=1) + "\n")
        tmp.replace(path)


def add_route(site) -> None:
    """List the namespace's name on port 9093 in the front's route table (replacing an older entry)."""
    r = route(site)
    _update_routes(site, r, set(r["names"]))


def remove_route(site) -> None:
    """Take the broker's route out of the front's table. Needs no Event Hubs namespace: the route is found by its
    backend, so a site without telemetry (or whose namespace changed since the broker started) cleans up too."""
    _update_routes(site, None, set())


# ----------------------------------------------------------------------------------------------- life cycle
def _load_record(site) -> Optional[procs.Proc]:
    try:
        return procs.Proc(**json.loads(_record_path(site).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running_proc(site) -> Optional[procs.Proc]:
    p = _load_record(site)
    return p if p is not None and procs.alive(p) else None


def _cloud_ns(site) -> str:
    return netns.ns_name(site, "cloud")


def _tail(site, path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return "(no output)"
    return redact("\n".join(lines), site)


TOPICS_SCRIPT = r"""
import json, sys, time
from confluent_kafka.admin import AdminClient, NewTopic
boot, names, deadline = sys.argv[1], json.loads(sys.argv[2]), time.monotonic() + float(sys.argv[3])
admin = AdminClient({"bootstrap.servers": boot})
want = set(names)
while True:
    try:
        have = admin.list_topics(timeout=2).topics
        break
    except Exception as exc:
        if time.monotonic() > deadline:
            print(json.dumps({"error": str(exc)})); sys.exit(1)
        time.sleep(0.05)
new = [NewTopic(t, num_partitions=1, replication_factor=1) for t in sorted(want - set(have))]
if new:
    for t, fut in admin.create_topics(new, operation_timeout=10).items():
        try:
            fut.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                print(json.dumps({"error": f"{t}: {exc}"})); sys.exit(1)
while True:
    md = admin.list_topics(timeout=2).topics
    ready = [t for t in want if t in md and md[t].partitions and all(p.leader >= 0 for p in md[t].partitions.values())]
    if len(ready) == len(want):
        break
    if time.monotonic() > deadline:
        print(json.dumps({"error": f"topics without a leader: {sorted(want - set(ready))}"})); sys.exit(1)
    time.sleep(0.05)
print(json.dumps({"topics": sorted(want), "created": [t.topic for t in new]}))
"""


def ensure_topics(site, names: Optional[list[str]] = None, timeout: float = 10.0) -> dict:
    """Create the topics (one per event hub) through the internal listener, from inside the cloud namespace."""
    names = list(names or hubs(site))
    proc = netns.ns_exec(_cloud_ns(site), [sys.executable, "-c", TOPICS_SCRIPT, f"{LOOPBACK}:{INTERNAL_PORT}",
                                           json.dumps(names), str(timeout)], check=False)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        out = {"error": (proc.stderr or proc.stdout).strip()[-500:]}
    if proc.returncode != 0 or "error" in out:
        raise LabError(f"creating the event hub topics {names} failed: {redact(str(out.get('error')), site)}")
    return out


def _rbac_record(site) -> Path:
    return kafka_dir(site) / "rbac.json"


def rbac_proc(site) -> Optional[procs.Proc]:
    try:
        p = procs.Proc(**json.loads(_rbac_record(site).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return p if procs.alive(p) else None


def start_rbac(site, timeout: float = 15.0) -> procs.Proc:
    """Start the role-assignment -> ACL sync beside the broker (once); returns when the ACLs are in step."""
    from layernet.lab.eventhubs_rbac import READY_LINE

    p = rbac_proc(site)
    if p is not None:
        return p
    paths = _paths(site)
    log = paths["rbac_log"]
    log.write_bytes(b"")
    p = procs.start(RBAC_NAME, _cloud_ns(site), [
        sys.executable, "-m", "layernet.lab.eventhubs_rbac", "--store", str(_state_dir(site) / "cloud" / "arm-store.json"),
        "--bootstrap", f"{LOOPBACK}:{INTERNAL_PORT}", "--namespace-id", namespace_id(site)], log)
    _rbac_record(site).write_text(json.dumps(p.__dict__))
    end = time.monotonic() + timeout
    while READY_LINE not in log.read_text(errors="replace"):
        if not procs.alive(p) or time.monotonic() > end:
            raise LabError(f"the role-assignment sync did not get in step within {timeout:.0f} s; its output "
                           f"({log}):\n{_tail(site, log)}")
        time.sleep(0.05)
    return p


_CONFIGURE_ERROR = re.compile(r"BrokerJwtValidator defined in the sasl\.oauthbearer\.jwt\.validator\.class configuration "
                              r"encountered an error on configure\(\): (.*?)( \(org\.apache[\w.]*\))?$")


def _startup_failure(site, log: Path) -> str:
    """Why the broker exited while starting: Kafka refuses to start when its token validator cannot fetch the
    JWKS, which is named with the cause; anything else with the end of its output."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        m = _CONFIGURE_ERROR.search(line)
        if m:
            return (f"the Event Hubs broker cannot reach its JWKS {jwks_url(site)} (where it gets the keys that sign "
                    f"Entra tokens), so it does not start: {redact(m.group(1), site)}; check that the broker resolves "
                    f"and reaches {entra.PUBLIC_AUTHORITY}:443 and trusts the lab CA (its log: {log})")
    return f"Kafka exited during start-up; its output ({log}):\n{_tail(site, log)}"


def rehearse_jwks_unreachable(site, on: bool = True) -> None:
    """Rehearsal: the broker started next (by `start`, e.g. from stage 04) cannot resolve the Entra name, so it
    cannot fetch its JWKS; `on=False` (or `stop`) ends it."""
    path = _paths(site)["rehearsal"]
    if on:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"jwks_resolves": False}) + "\n")
    else:
        path.unlink(missing_ok=True)


def _jwks_resolves(site) -> bool:
    try:
        return bool(json.loads(_paths(site)["rehearsal"].read_text()).get("jwks_resolves", True))
    except (OSError, ValueError, AttributeError):
        return True


def start(site, progress: Optional[Progress] = None, timeout: float = READY_TIMEOUT,
          event_hubs: Optional[list[str]] = None, jwks_resolves: Optional[bool] = None) -> dict:
    """Start the broker in the lab's cloud namespace (nothing to do when it already runs), create one topic per
    event hub (`event_hubs`, default the site's), start the role-assignment sync, list its route for the front.
    `jwks_resolves=False` rehearses a broker that cannot reach its JWKS (None: as `rehearse_jwks_unreachable`
    set it). Returns {"pid", "seconds", "rss_mb", "host", "topics", "started"}."""
    if jwks_resolves is None:
        jwks_resolves = _jwks_resolves(site)
    names = list(event_hubs or hubs(site))
    why = missing()
    if why:
        raise LabError(why)
    ns = _cloud_ns(site)
    if ns not in netns.list_namespaces():
        raise LabError(f"namespace {ns} does not exist: bring the lab up first (layernet lab up)")
    t0 = time.monotonic()
    with _locked(kafka_dir(site) / ".lock"):
        p = running_proc(site)
        started = p is None
        if started:
            paths = _write_configs(site)
            t_fmt = time.monotonic() - t0
            paths["log"].unlink(missing_ok=True)
            if not jwks_resolves:
                paths["hosts"].write_text("# rehearsal: the broker resolves no Entra name\n127.0.0.1 localhost\n")
            p = procs.start(PROC_NAME, ns, argv(site, jwks_resolves), paths["log"])
            _record_path(site).write_text(json.dumps(p.__dict__))
            deadline = t0 + timeout
            try:
                while procs.listening(p.pid, [LISTEN_PORT, INTERNAL_PORT]) != {LISTEN_PORT, INTERNAL_PORT}:
                    if not procs.alive(p):
                        raise LabError(_startup_failure(site, paths["log"]))
                    if time.monotonic() > deadline:
                        raise LabError(f"Kafka not listening after {timeout:.0f} s; see {paths['log']}")
                    time.sleep(0.05)
                t_listen = time.monotonic() - t0
                topics = ensure_topics(site, names, timeout=max(1.0, deadline - time.monotonic()))
                start_rbac(site)
            except BaseException:
                stop(site)
                raise
        else:
            topics = ensure_topics(site, names)
            start_rbac(site)
        add_route(site)
    seconds = time.monotonic() - t0
    info = {"pid": p.pid, "seconds": round(seconds, 2), "rss_mb": procs.rss_mb(p.pid), "host": host(site),
            "port": PUBLIC_PORT, "backend": f"{LOOPBACK}:{LISTEN_PORT}", "topics": topics["topics"],
            "started": started}
    if progress:
        if started:
            progress(f"Kafka {KAFKA_VERSION} ready as {host(site)}:{PUBLIC_PORT} in {seconds:.2f} s "
                     f"(configs and storage {t_fmt:.2f} s, listening at {t_listen:.2f} s; RSS {info['rss_mb']} MB; "
                     f"topics {', '.join(info['topics'])})")
        else:
            progress(f"Kafka already running as {host(site)}:{PUBLIC_PORT} (pid {p.pid})")
    return info


def stop(site, clean: bool = True, timeout: float = 10.0) -> bool:
    """Stop the broker, remove its route and (clean) its data, key material and connection string; the broker
    log stays for inspection. True when a running broker was stopped."""
    p = running_proc(site)
    stopped = False
    r = rbac_proc(site)
    if r is not None:
        procs.terminate([r.pid], timeout=timeout)
    _rbac_record(site).unlink(missing_ok=True)
    if p is not None:
        procs.terminate([p.pid], timeout=timeout)
        stopped = True
    try:
        remove_route(site)
    except OSError:
        pass
    _record_path(site).unlink(missing_ok=True)
    if clean:
        d = kafka_dir(site)
        for name in ("data", "tls"):
            shutil.rmtree(d / name, ignore_errors=True)
        for name in ("jaas.conf", "connection-string", "rehearsal.json", "hosts.rehearsal"):
            (d / name).unlink(missing_ok=True)
    return stopped


_TOKEN_REFUSED = re.compile(r'Could not validate the access token: JWT \(claims->(\{.*?\})\) rejected.*?Additional details: '
                            r'\[\[\d+\] (.*)\]( \(org\.apache[\w.]*\))?$')
_TOKEN_ERROR = re.compile(r'Could not validate the access token: (?!JWT \(claims)(.*?)( \(org\.apache[\w.]*\))?$')
_DENIED = re.compile(r"Principal = (User:\S+) is Denied operation = (\w+) from host = \S+ on resource = (\w+):\w+:(\S+) "
                     r"for request = (\w+)")


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")


def _stamp(line: str) -> Optional[float]:
    m = _STAMP.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def refusals(site, since: Optional[float] = None, limit: int = 5) -> list[str]:
    """Why the broker refused clients, oldest first, each once: a token that failed validation (audience, issuer,
    expiry, signature) with its `oid`, and authorization denials of a principal (`User:<oid> denied WRITE on Topic
    aio-telemetry (Produce)`), from its log lines stamped at or after `since` (a time.time())."""
    try:
        text = _paths(site)["log"].read_text(errors="replace")
    except OSError:
        return []
    out: list[str] = []
    for line in text.splitlines():
        if since is not None:
            t = _stamp(line)
            if t is not None and t < since - 0.5:
                continue
        if "OAuthBearerValidatorCallbackHandler" in line or "is Denied operation" in line:
            m = _TOKEN_REFUSED.search(line)
            if m:
                claims = m.group(1)
                who = re.search(r'"oid":"([^"]+)"', claims)
                aud = re.search(r'"aud":"([^"]+)"', claims)
                why = re.sub(r"NumericDate\{\d+ -> ([^}]*)\}", r"\1", m.group(2))
                why = re.sub(r"the evaluation time .*? is on or after", "the time of validation is on or after", why)
                item = (f"token of {'oid ' + who.group(1) if who else 'a caller without oid'}"
                        f"{' for ' + aud.group(1) if aud else ''} refused: {why}")
            elif _TOKEN_ERROR.search(line):
                item = f"token refused: {_TOKEN_ERROR.search(line).group(1)}"
            elif _DENIED.search(line):
                d = _DENIED.search(line)
                item = f"{d.group(1)} denied {d.group(2)} on {d.group(3)} {d.group(4)} ({d.group(5)})"
            else:
                continue
            if item not in out:
                out.append(item[:500])
    return [redact(x, site) for x in out[:limit]]


def is_running(site) -> bool:
    return running_proc(site) is not None


def status_row(site) -> Optional[dict]:
    """A `lab status` row when the broker was started (None otherwise)."""
    p = _load_record(site)
    if p is None:
        return None
    alive = procs.alive(p)
    ready = alive and procs.listening(p.pid, [LISTEN_PORT]) == {LISTEN_PORT}
    cell = f"kafka {p.pid}" + (f" {procs.rss_mb(p.pid)} MB" if alive else " dead")
    return {"level": "eventhubs", "namespace": p.ns, "ns": "yes" if p.ns in netns.list_namespaces() else "no",
            "envoy": cell, "dns": "-", "nft": "-", "ok": bool(ready)}


CLIENT_SCRIPT = r"""
import json, logging, os, re, socket, sys, time, uuid
from confluent_kafka import Consumer, KafkaException, Producer
spec = json.loads(sys.argv[1])
conf = dict(spec["conf"])
if spec.get("oauth"):
    # the token as given (a stale one included: the broker, not the client, is what a rehearsal tests)
    conf.update({"sasl.mechanism": "OAUTHBEARER",
                 "oauth_cb": lambda _cfg: (os.environ.get(spec["oauth"], ""), time.time() + 3600)})
elif conf.get("security.protocol", "").startswith("SASL"):
    conf["sasl.password"] = os.environ.get(spec["env"], "")
out = {"bootstrap": conf["bootstrap.servers"], "protocol": conf.get("security.protocol")}
errors = []

class Keep(logging.Handler):
    def emit(self, record):
        text = record.getMessage()
        if record.levelno >= logging.INFO and (text.startswith("FAIL ") or "security.protocol" in text):
            errors.append(re.sub(r"^\w+ \[rdkafka#[^\]]*\] \[thrd:[^\]]*\]: ", "", text))

log = logging.getLogger("kafka-client")
log.propagate = False
log.setLevel(logging.INFO)
log.addHandler(Keep())
conf["error_cb"] = lambda err: errors.append(err.str())
conf["logger"] = log
host = conf["bootstrap.servers"].rsplit(":", 1)[0]
t0 = time.monotonic()
try:
    out["resolved"] = sorted({a[4][0] for a in socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)})
except OSError as exc:
    out["resolved"] = []
    errors.append(f"resolve {host}: {exc}")
try:
    prod = Producer({**conf, "linger.ms": 5, "message.timeout.ms": int(spec["timeout"] * 1000)})
    deadline, md = time.monotonic() + spec["timeout"], None
    while md is None:
        try:
            md = prod.list_topics(timeout=1)
        except KafkaException as exc:
            prod.poll(0.2)
            if errors or time.monotonic() > deadline:
                prod.poll(0.5)
                raise
    out["brokers"] = sorted(f"{b.host}:{b.port}" for b in md.brokers.values())
    out["topics"] = sorted(t for t in md.topics if not t.startswith("__"))
    if spec["messages"]:
        run = uuid.uuid4().hex
        delivered = []
        for i in range(spec["messages"]):
            prod.produce(spec["topic"], key=run, value=json.dumps({"run": run, "seq": i}),
                         on_delivery=lambda err, msg: delivered.append(err.str() if err else "ok"))
        prod.flush(spec["timeout"])
        out["produced"] = delivered.count("ok")
        if delivered.count("ok") != len(delivered):
            errors += [d for d in delivered if d != "ok"][:3]
        cons = Consumer({**conf, "group.id": "layernet-" + run, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
        cons.subscribe([spec["topic"]])
        seen, deadline = set(), time.monotonic() + spec["timeout"]
        while len(seen) < spec["messages"] and time.monotonic() < deadline:
            msg = cons.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                errors.append(msg.error().str())
                continue
            body = json.loads(msg.value())
            if body.get("run") == run:
                seen.add(body["seq"])
        cons.close()
        out["consumed"] = len(seen)
except KafkaException as exc:
    errors.append(exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc))
out["errors"] = list(dict.fromkeys(re.sub(r" \(after \d+ms in state \w+\)", "", e) for e in errors))[:8]
out["ms"] = round(1000 * (time.monotonic() - t0), 1)
print(json.dumps(out))
"""


TOKEN_VAR = "LAYERNET_EVENTHUBS_TOKEN"


def client_run(site, ns: str, *, messages: int = 10, topic: Optional[str] = None, bootstrap: Optional[str] = None,
               password: Optional[str] = None, protocol: str = "SASL_SSL", timeout: float = 10.0,
               extra: Optional[dict] = None, wrap: Optional[list[str]] = None, token: Optional[str] = None) -> dict:
    """Run a confluent-kafka (librdkafka) client inside namespace `ns` with the Event Hubs settings: it resolves
    the name with that namespace's DNS, lists the metadata, produces `messages` and consumes them back (0: only
    the metadata). The connection string travels in the client's environment only (`password` replaces it,
    for refusal tests); with `token` the client presents that access token over SASL OAUTHBEARER instead (also
    in its environment only). Returns {"resolved", "brokers", "topics", "produced", "consumed", "errors", "ms"}."""
    conf = client_config(site, bootstrap=bootstrap, password="")
    conf.pop("sasl.password")
    if token is not None:
        conf.pop("sasl.username")
    if protocol != "SASL_SSL":
        conf = {"bootstrap.servers": conf["bootstrap.servers"], "security.protocol": protocol}
    conf.update(extra or {})
    spec = {"conf": conf, "env": env_var(site), "topic": topic or hubs(site)[0], "messages": messages, "timeout": timeout,
            "oauth": TOKEN_VAR if token is not None else None}
    env = client_env(site)
    if password is not None:
        env[env_var(site)] = password
    if token is not None:
        env.pop(env_var(site), None)
        env[TOKEN_VAR] = token
    cmd = ["ip", "netns", "exec", ns] + list(wrap or []) + [sys.executable, "-c", CLIENT_SCRIPT, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout * 3 + 15)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise LabError(f"the Kafka client in {ns} failed ({proc.returncode}): "
                       f"{redact(proc.stderr.strip()[-600:], site)}") from None


def main(argv_: Optional[list[str]] = None) -> int:
    """`python -m layernet.lab.kafka start|stop --site FILE [-p KEY=VALUE ...]` (for runbooks and by hand)."""
    import argparse

    from layernet.site import load_site

    ap = argparse.ArgumentParser(prog="python -m layernet.lab.kafka", description=main.__doc__)
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--site", required=True)
    ap.add_argument("-p", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv_)
    site = load_site(Path(args.site), args.overrides)
    try:
        if args.action == "start":
            start(site, progress=lambda m: print(m, flush=True))
        else:
            print("stopped" if stop(site) else "not running")
    except LabError as exc:
        print(f"error: {redact(str(exc), site)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
