"""The `layernet` command as a user runs it (subprocess)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERNET = str(Path(sys.executable).parent / "layernet")
LAB = "params/lab.yaml"


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, *args], capture_output=True, text=True, cwd=REPO, timeout=timeout)


def test_render_writes_one_folder_per_level(tmp_path: Path):
    # the lab site's default: what its stage 01 applies to its clusters, the kube objects
    kube = _run("render", "--site", LAB, "--out", str(tmp_path / "kube"))
    assert kube.returncode == 0, kube.stderr
    assert (tmp_path / "kube" / "level3" / "coredns-custom.yaml").is_file()
    assert (tmp_path / "kube" / "level4" / "envoy-manifests.yaml").is_file()
    assert not (tmp_path / "kube" / "level3" / "Corefile").exists()
    # Envoy's and CoreDNS's own files (to run them as plain processes), when asked for
    proc = _run("render", "--site", LAB, "--out", str(tmp_path / "out"), "--target", "lab")
    assert proc.returncode == 0, proc.stderr
    written = {Path(p).relative_to(tmp_path / "out").as_posix() for p in proc.stdout.split()}
    assert {"level4/envoy.yaml", "level3/envoy.yaml", "level3/Corefile", "level2/custom/layernet.server",
            "level4/nftables.nft", "level2/ip-allow-list.md"} <= written
    assert "level2/envoy.yaml" not in written  # level2 runs no proxy


def test_render_bad_site_exits_2_and_writes_nothing(tmp_path: Path):
    proc = _run("render", "--site", LAB, "-p", "levels[0].node_ip=10.0.0.1", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "levels[0].node_ip" in proc.stderr and "10.0.0.1" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_validate_and_allowlist(tmp_path: Path):
    ok = _run("validate", "--site", LAB)
    assert ok.returncode == 0 and "level4 -> level3 -> level2" in ok.stdout
    al = _run("allowlist", "--site", LAB, "-p", "azure.location=westeurope")
    assert al.returncode == 0
    assert "westeurope.dp.kubernetesconfiguration.azure.com" in al.stdout and "eastus." not in al.stdout


def test_lab_exec_usage_error():
    proc = _run("lab", "exec", "--site", LAB)
    assert proc.returncode == 2 and "layernet lab exec LEVEL --site FILE -- CMD" in proc.stderr


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")
def test_lab_up_exec_status_down_through_the_cli():
    site = ["--site", LAB, "-p", "lab.prefix=cx"]
    _run("lab", "down", *site)
    try:
        up = _run("lab", "up", *site)
        assert up.returncode == 0, up.stdout + up.stderr
        ex = _run("lab", "exec", "level2", *site, "--", "ip", "-4", "-o", "addr", "show")
        assert ex.returncode == 0 and "192.168.102.10" in ex.stdout and "192.168.103.10" not in ex.stdout
        code = _run("lab", "exec", "level3", *site, "--", "sh", "-c", "exit 7")
        assert code.returncode == 7
        st = _run("lab", "status", *site)
        assert st.returncode == 0 and "cx-level3" in st.stdout
    finally:
        down = _run("lab", "down", *site)
    assert down.returncode == 0
    assert "cx-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_lab_up_refuses_a_real_site():
    proc = _run("lab", "up", "--site", "params/site-example.yaml")
    assert proc.returncode == 2 and "target: 'kube'" in proc.stderr and "set target: lab" in proc.stderr
    assert "ln-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_firewall_prints_the_ip_allow_list():
    proc = _run("firewall", "--site", LAB)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split() [:4] == ["level", "from", "to", "protocol"]
    assert any("192.168.102.0/24 (level2 network)" in l and "192.168.103.10 (level3 node)" in l and "443, 8084, 9093" in l
               for l in lines)
    assert any("192.168.103.10 (level3 node)" in l and "192.168.104.10 (level4 node)" in l for l in lines)


def test_probe_on_a_lab_that_is_down_says_what_to_do():
    proc = _run("probe", "--site", LAB, "-p", "lab.prefix=zq")
    assert proc.returncode == 1
    assert "error: namespace zq-level4 does not exist: bring the lab up first" in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------------- misuse: exit 2
def test_render_out_that_cannot_hold_artifacts_exits_2(tmp_path: Path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, phrase in [("/", "not the root folder"), (str(afile), "is a file, not a folder"),
                        (str(afile / "sub"), "is a file, so no folder can be made under it")]:
        proc = _run("render", "--site", LAB, "--out", out)
        assert proc.returncode == 2 and phrase in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stdout == ""
    assert afile.read_text() == "x"


def test_render_never_writes_outside_out(tmp_path: Path):
    out = tmp_path / "deep" / "out"
    proc = _run("render", "--site", LAB, "-p", "levels.level2.name=../../../escaped", "--out", str(out))
    assert proc.returncode == 2 and "levels[2].name" in proc.stderr and "a DNS label" in proc.stderr
    assert not (tmp_path / "escaped").exists() and not out.exists()


def test_directory_as_site_says_so(tmp_path: Path):
    proc = _run("validate", "--site", str(tmp_path))
    assert proc.returncode == 2 and "is a directory" in proc.stderr and "must exist" not in proc.stderr


@pytest.mark.parametrize("since, phrase", [("99999999999d", "out of range"), ("2999-01-01", "is in the future"),
                                           ("0001-01-01", "out of range"), ("yesterday", "give an ISO 8601 time")])
def test_audit_since_out_of_range_exits_2(since, phrase, tmp_path: Path):
    proc = _run("audit", str(tmp_path), "--since", since)
    assert proc.returncode == 2 and phrase in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_audit_and_harden_out_that_is_a_file_exit_2(tmp_path: Path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["audit", str(tmp_path), "--out", str(afile)], ["harden", "--site", LAB, "--out", str(afile)]):
        proc = _run(*args)
        assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [
    ["validate", "--site", "a" * 5000],
    ["validate", "--site", ""],
    ["validate", "--site", "x\x1b[31m.yaml"],
    ["render", "--site", LAB, "--out", "o" * 5000],
    ["run", "deploy", "--site", LAB, "--resume", "r" * 5000],
    ["run", "b" * 5000 + ".yaml", "--site", LAB],
    ["audit", "l" * 5000],
])
def test_unusable_paths_exit_2_with_a_short_line(args):
    proc = _run(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stderr
    assert max(len(line) for line in proc.stderr.splitlines()) < 400


def test_an_unexpected_error_is_one_line_without_secrets(monkeypatch, capsys):
    from layernet import cli

    def boom(args):
        raise RuntimeError("broke while reading Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey=Zq9Secret\nmore")

    monkeypatch.setattr(cli, "cmd_validate", boom)
    monkeypatch.delenv("LAYERNET_DEBUG", raising=False)
    assert cli.main(["validate", "--site", LAB]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: unexpected RuntimeError: broke while reading (hidden) (LAYERNET_DEBUG=1 shows where)"]
    monkeypatch.setenv("LAYERNET_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["validate", "--site", LAB])
