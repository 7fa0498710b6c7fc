"""layernet.lab.azcli without a lab: what the real az on the lab's jump box gets besides the operator's commands."""
from __future__ import annotations

from pathlib import Path

from layernet.lab import azcli, state_dir
from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[2]


def test_az_trusts_the_lab_ca_and_keeps_its_login_in_the_labs_state_folder(monkeypatch, tmp_path):
    site = load_site(ROOT / "params" / "lab.yaml", ["lab.prefix=zu"])
    monkeypatch.setenv("LAYERNET_AZ_HOME", str(tmp_path / "az"))
    env = azcli.env(site, {"PATH": "/usr/bin", "HOME": "/root"})
    assert env["PATH"].split(":")[0] == str(tmp_path / "az" / "bin")
    assert env["REQUESTS_CA_BUNDLE"] == str(state_dir(site) / "ca" / "ca.crt")
    assert env["AZURE_CONFIG_DIR"] == str(state_dir(site) / "az") == str(azcli.config_dir(site))
    assert not env["AZURE_CONFIG_DIR"].startswith("/root")
    assert env["AZURE_CORE_COLLECT_TELEMETRY"] == "no" and env["HOME"] == "/root"


def test_the_installed_version_is_read_from_the_package_and_compared_with_the_pin(monkeypatch, tmp_path):
    monkeypatch.setenv("LAYERNET_AZ_HOME", str(tmp_path))
    assert azcli.installed_version() is None and not azcli.installed()
    (tmp_path / "lib" / "python3.11" / "site-packages" / "azure_cli-2.90.0.dist-info").mkdir(parents=True)
    assert azcli.installed_version() == "2.90.0"
    pin = (ROOT / "tools" / "az" / "requirements.txt").read_text()
    assert f"azure-cli=={azcli.pinned_version()}" in pin and azcli.pinned_version() != "2.90.0"
