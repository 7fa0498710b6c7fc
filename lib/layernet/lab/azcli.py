"""The real Azure CLI (az) on the lab's jump box: what a plant's jump box has and a laptop lacks, nothing more.

`make setup` installs the az pinned in tools/az/requirements.txt into `.tools/az` (its own environment). On the
lab's jump box (the `<prefix>-jumpbox` namespace, where the real Azure names resolve to the lab's cloud) az runs
exactly as an operator runs it on a plant; the lab only adds

- trust in the lab CA: `REQUESTS_CA_BUNDLE` (az and MSAL make their calls with requests);
- its own login state: `AZURE_CONFIG_DIR` in the lab's state folder (`<state>/az`), so nothing reads or writes
  the machine's ~/.azure, and a lab taken down takes its login with it;
- no telemetry upload (`AZURE_CORE_COLLECT_TELEMETRY=no`: a plant's jump box may send it; the lab has no
  internet to send it to).

`login(site)` is the operator's `az login --service-principal` with the lab's Entra client (read from the lab's
state folder, never shown). The commands themselves are the az executor's (layernet.azure.arc / aio), unchanged.
Everything here must run inside the jump box namespace (`ip netns exec <prefix>-jumpbox ...`).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

from layernet.lab import LabError, state_dir

AZ_HOME = Path(__file__).resolve().parents[3] / ".tools" / "az"
PIN_FILE = Path(__file__).resolve().parents[3] / "tools" / "az" / "requirements.txt"


def home() -> Path:
    """The environment `make setup` made for az (override with LAYERNET_AZ_HOME)."""
    return Path(os.environ.get("LAYERNET_AZ_HOME") or AZ_HOME)


def installed() -> bool:
    return (home() / ".installed").is_file() and (home() / "bin" / "az").is_file()


def pinned_version() -> str:
    """The azure-cli version tools/az/requirements.txt pins."""
    for line in PIN_FILE.read_text().splitlines():
        if line.strip().startswith("azure-cli=="):
            return line.split("==", 1)[1].strip()
    raise LabError(f"{PIN_FILE}: no azure-cli==<version> line")


def installed_version() -> Optional[str]:
    """The azure-cli version installed in `home()` (from its package metadata), None when there is none."""
    found = sorted(home().glob("lib/python*/site-packages/azure_cli-*.dist-info"))
    return found[-1].name.removeprefix("azure_cli-").removesuffix(".dist-info") if found else None


def config_dir(site) -> Path:
    return state_dir(site) / "az"


def env(site, base: Optional[dict] = None) -> dict:
    """The environment az runs with on the lab's jump box: the pinned az first on PATH, the lab CA trusted, the
    lab's own config folder."""
    out = dict(os.environ if base is None else base)
    out["PATH"] = f"{home() / 'bin'}{os.pathsep}{out.get('PATH', '')}"
    out["REQUESTS_CA_BUNDLE"] = str(state_dir(site) / "ca" / "ca.crt")
    out["AZURE_CONFIG_DIR"] = str(config_dir(site))
    out["AZURE_CORE_COLLECT_TELEMETRY"] = "no"
    out["AZURE_CORE_NO_COLOR"] = "true"
    return out


def client(site) -> tuple[str, str, str]:
    """(tenant id, client id, secret) of the service principal the lab's Entra made at its first start."""
    path = state_dir(site) / "cloud" / "entra.json"
    try:
        doc = json.loads(path.read_text())
        client_id, secret = next(iter(doc["clients"].items()))
        return doc["tenant_id"], client_id, secret
    except (OSError, ValueError, KeyError, StopIteration):
        raise LabError(f"the lab's Entra stand-in has no client in {path}: is the lab's cloud running? "
                       f"(layernet lab up --site FILE)") from None


def login(site, secret: Optional[str] = None, timeout: float = 120) -> dict:
    """`az login --service-principal` as the lab's Entra client (`secret`: another secret, to see it refused).
    Returns {"rc", "stdout", "stderr"} with the secret cut out of both."""
    tenant, client_id, real = client(site)
    used = real if secret is None else secret
    config_dir(site).mkdir(parents=True, exist_ok=True)
    argv = ["az", "login", "--service-principal", "--username", client_id, "--password", used, "--tenant", tenant,
            "-o", "json"]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=env(site), timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"az is not installed in {home()}: run `make setup`") from None
    clean = (lambda text: text.replace(used, "<secret>").replace(real, "<secret>"))
    return {"rc": p.returncode, "stdout": clean(p.stdout), "stderr": clean(p.stderr)}
