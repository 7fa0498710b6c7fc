"""`python -m layernet.lab.cloud` with --state, run in a network namespace of the test's own (so it can listen on
127.0.0.1:443 as in the lab): echo, apps by name, routes file, clean exit on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from layernet.lab import pki

NS = f"cst-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.fail("needs root (a network namespace of its own)")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def _in_ns(*argv, timeout=10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", NS, *argv], capture_output=True, text=True, timeout=timeout)


def test_cloud_process_serves_echo_and_apps_by_name(netns, tmp_path):
    state = tmp_path / "cloud"
    cert, key = pki.issue_server_cert(tmp_path / "ca", state, ["management.azure.com", "*.example.test"])
    ca = tmp_path / "ca" / "ca.crt"
    proc = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "layernet.lab.cloud", "--addr", "127.0.0.1",
                             "--ports", "443,9093", "--cert", str(cert), "--key", str(key), "--state", str(state),
                             "--region", "northeurope", "--egress-ip", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "TLS on 127.0.0.1 ports 443,9093; apps: entra, arm" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        # the probe's echo, by ALPN, for an app name
        code = ("import json,socket,ssl,sys; c=ssl.create_default_context(cafile=sys.argv[1]); c.set_alpn_protocols(['layernet-echo']);"
                "s=c.wrap_socket(socket.create_connection(('127.0.0.1',443)),server_hostname='management.azure.com');"
                "print(s.recv(4096).decode())")
        out = _in_ns(sys.executable, "-c", code, str(ca))
        assert json.loads(out.stdout)["host"] == "management.azure.com", out.stderr
        # ARM and Entra by name (curl: a client that is not ours), with the regional names of the site
        r = _in_ns("curl", "-sS", "--cacert", str(ca), "--resolve", "management.azure.com:443:127.0.0.1",
                   "https://management.azure.com/metadata/endpoints?api-version=2022-09-01")
        assert json.loads(r.stdout)[0]["resourceManager"] == "https://management.azure.com/", r.stderr
        r = _in_ns("curl", "-sS", "--cacert", str(ca), "--resolve", "northeurope.login.microsoft.com:443:127.0.0.1",
                   "https://northeurope.login.microsoft.com/common/v2.0/.well-known/openid-configuration")
        assert json.loads(r.stdout)["token_endpoint"] == "https://northeurope.login.microsoft.com/common/oauth2/v2.0/token"
        r = _in_ns("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(ca), "--resolve",
                   "northeurope.dp.kubernetesconfiguration.azure.com:443:127.0.0.1", "-X", "POST",
                   "https://northeurope.dp.kubernetesconfiguration.azure.com/azure-arc-k8sagents/healthCheck")
        assert r.stdout == "200"
        assert (state / "entra.json").stat().st_mode & 0o777 == 0o600
        rows = [json.loads(l) for l in (state / "requests" / "arm.jsonl").read_text().splitlines()]
        assert rows[-1]["path"] == "/metadata/endpoints" and rows[-1]["peer"].startswith("127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        proc.wait(timeout=10)
    assert proc.returncode == 0 and time.monotonic() - t0 < 5


def test_unknown_hooks_module_is_a_one_line_error(tmp_path):
    cert, key = pki.issue_server_cert(tmp_path / "ca", tmp_path / "cloud", ["x.example.test"])
    proc = subprocess.run([sys.executable, "-m", "layernet.lab.cloud", "--addr", "127.0.0.1", "--ports", "0",
                           "--cert", str(cert), "--key", str(key), "--state", str(tmp_path / "cloud"),
                           "--hooks", "layernet.no_such_hooks"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--hooks layernet.no_such_hooks" in proc.stderr
