"""A regular (non-editable) install runs `layernet run` without the source checkout: the runbooks, notebooks and
site files travel inside the package (setup.py bundles them), and runs go to ./runs of the working folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _log_line(**kw) -> str:
    d = {"time": "2025-03-01T08:00:01.000Z", "level": "level3", "listener_port": 443,
         "source": "192.168.102.10:40000", "sni": "management.azure.com", "filter_chain": "allowed",
         "upstream_host": "192.168.104.10:443", "upstream_cluster": "parent_443", "upstream_local": "192.168.103.10:50000",
         "bytes_in": 10, "bytes_out": 20, "duration_ms": 5, "response_flags": "-", "connection_id": 1}
    d.update(kw)
    return json.dumps(d)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel and installed (without dependencies: the test's own environment has them)
    into a folder of its own."""
    work = tmp_path_factory.mktemp("install")
    wheels, target = work / "wheels", work / "site-packages"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=600, cwd=work)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    wheel = next(wheels.glob("layernet-*.whl"))
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-2000:]
    return target


def _run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(installed))
    return subprocess.run([sys.executable, "-m", "layernet.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_the_installed_package_carries_its_runbooks_notebooks_and_sites(installed, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(installed))
    code = ("import json, layernet, layernet.paths as p; print(json.dumps({'file': layernet.__file__, "
            "'checkout': str(p.checkout()), 'runbooks': sorted(x.name for x in p.runbooks().glob('*.yaml')), "
            "'notebooks': sorted(x.name for x in p.notebooks().glob('*.ipynb')), 'runs': str(p.runs())}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    info = json.loads(out.stdout)
    assert info["file"].startswith(str(installed)) and info["checkout"] == "None"
    assert info["runbooks"] == sorted(p.name for p in (ROOT / "runbooks").glob("*.yaml"))
    assert info["notebooks"] == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert info["runs"] == str(tmp_path / "runs")


def test_layernet_run_from_an_install_writes_its_run_folder_here(installed, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "level3.log").write_text(_log_line() + "\n")
    (logs / "level4.log").write_text(_log_line(level="level4", source="192.168.103.10:50000",
                                               upstream_host="198.51.100.10:443", upstream_cluster="dynamic_forward_proxy",
                                               upstream_local="198.51.100.1:1", time="2025-03-01T08:00:01.002Z") + "\n")
    site = installed / "layernet" / "bundled" / "params" / "lab.yaml"
    proc = _run(installed, tmp_path, "run", "audit", "--site", str(site), "-s", f"audit.log_dir={logs}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = Path(proc.stdout.strip().splitlines()[-1])
    assert index.name == "index.html" and index.parent.parent == tmp_path / "runs"
    m = json.loads((index.parent / "manifest.json").read_text())
    assert [s["status"] for s in m["stages"]] == ["passed"]
    assert str(installed) in m["stages"][0]["notebook"] or m["stages"][0]["notebook"].startswith("notebooks/")
