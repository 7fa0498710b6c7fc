"""Which telemetry stand-in runs where, with what arguments (the stage and the loopback runner share them), and the
verify command's input errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from layernet.site import load_site
from layernet.lab.telemetry_services import services

ROOT = Path(__file__).resolve().parents[2]


def test_lab_services_follow_the_site():
    site = load_site(ROOT / "params" / "lab.yaml", ["telemetry.mqtt.mode=anonymous"])     # the sample's hops
    svc = {s.name: s for s in services(site, Path("/r"), ca="/ca.pem", python="py")}
    assert list(svc) == ["level2/opcplc", "level4/dataflow", "level3/dataflow", "level2/dataflow", "level2/connector"]
    assert svc["level2/opcplc"].argv == ("py", "-m", "layernet.lab.opcplc", "--host", "192.168.102.10", "--port", "50000",
                                         "--fast-ms", "50")     # twice the sample's 25 ms sampling
    df4 = svc["level4/dataflow"]
    # the sample authenticates with the extension's managed identity: the identity file, no connection string
    assert df4.eventhubs and not df4.needs_connection_string and not svc["level3/dataflow"].eventhubs
    assert df4.argv[df4.argv.index("--identity") + 1] == "/r/level4.identity.json"
    assert df4.argv[3:9] == ("--resources", "/r/level4.json", "--local", "192.168.104.10:1883", "--name", "df-level4")
    assert ("--ca", "/ca.pem") == df4.argv[-2:]
    assert svc["level2/connector"].argv[3:7] == ("--resources", "/r/level2.json", "--broker", "192.168.102.10:1883")
    without = [s.name for s in services(site, Path("/r"), kafka=False)]
    assert "level4/dataflow" not in without and "level3/dataflow" in without


def test_x509_services_present_the_client_certificate():
    site = load_site(ROOT / "params" / "site-example.yaml")
    svc = {s.name: s for s in services(site, Path("/r"), ca="/ca", client_cert="/c", client_key="/k", python="py")}
    assert svc["level3/dataflow"].argv[-7:] == ("--ca", "/ca", "--cert", "/c", "--key", "/k", "--local-tls")
    assert "192.168.103.10:8883" in svc["level3/dataflow"].argv
    assert svc["level2/connector"].argv[-6:] == ("--ca", "/ca", "--cert", "/c", "--key", "/k")


def test_verify_command_names_a_bad_broker_argument():
    proc = subprocess.run([sys.executable, "-m", "layernet.telemetry.verify", "--site", "params/lab.yaml",
                           "--broker", "level9=1.2.3.4:1883"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert "level9=1.2.3.4:1883" in proc.stderr and "LEVEL=HOST:PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_verify_command_in_x509_mode_needs_the_taps_client_certificate(tmp_path):
    def run(*extra):
        return subprocess.run([sys.executable, "-m", "layernet.telemetry.verify", "--site", "params/lab.yaml", *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    proc = run("--mqtt-ca", str(tmp_path / "absent.pem"))               # the lab site uses x509
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--mqtt-cert, --mqtt-key missing" in proc.stderr and "telemetry.mqtt.mode is x509" in proc.stderr
    for name in ("ca.pem", "c.crt"):
        (tmp_path / name).write_text("x")
    proc = run("--mqtt-ca", str(tmp_path / "ca.pem"), "--mqtt-cert", str(tmp_path / "c.crt"), "--mqtt-key", "/nope.key")
    assert proc.returncode == 2 and "no such file: --mqtt-key '/nope.key'" in proc.stderr
    proc = run("-p", "telemetry.mqtt.mode=anonymous", "--mqtt-cert", str(tmp_path / "c.crt"))
    assert proc.returncode == 2 and "--mqtt-cert: the site's telemetry.mqtt.mode is anonymous" in proc.stderr
