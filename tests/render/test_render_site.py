"""render_site: the artifact set per target, golden files, determinism, write_artifacts."""
from __future__ import annotations

import os

import pytest

from render_helpers import GOLDEN
from layernet.render import Artifact, render_site, write_artifacts

UPDATE = os.environ.get("LAYERNET_UPDATE_GOLDEN") == "1"


def _names(arts):
    return {(a.level, a.name, a.kind) for a in arts}


def test_lab_artifacts_per_level(site, allowlist):
    arts = render_site(site, allowlist, "lab")
    assert all(isinstance(a, Artifact) for a in arts)
    assert _names(arts) == {
        ("level4", "envoy.yaml", "envoy"), ("level4", "nftables.nft", "firewall"),
        ("level4", "ip-allow-list.md", "firewall-table"),
        ("level3", "envoy.yaml", "envoy"), ("level3", "Corefile", "dns-lab"), ("level3", "NodeHosts", "dns-lab"),
        ("level3", "custom/layernet.server", "dns-lab"), ("level3", "nftables.nft", "firewall"),
        ("level3", "ip-allow-list.md", "firewall-table"),
        ("level2", "Corefile", "dns-lab"), ("level2", "NodeHosts", "dns-lab"),
        ("level2", "custom/layernet.server", "dns-lab"),
        ("level2", "nftables.nft", "firewall"), ("level2", "ip-allow-list.md", "firewall-table"),
    }


def test_kube_artifacts_per_level(site, allowlist):
    arts = render_site(site, allowlist, "kube")
    assert _names(arts) == {
        ("level4", "envoy.yaml", "envoy"), ("level4", "envoy-manifests.yaml", "manifests"),
        ("level4", "nftables.nft", "firewall"), ("level4", "ip-allow-list.md", "firewall-table"),
        ("level3", "envoy.yaml", "envoy"), ("level3", "envoy-manifests.yaml", "manifests"),
        ("level3", "coredns-custom.yaml", "coredns"), ("level3", "coredns-external.yaml", "coredns"),
        ("level3", "nftables.nft", "firewall"), ("level3", "ip-allow-list.md", "firewall-table"),
        ("level2", "coredns-custom.yaml", "coredns"), ("level2", "coredns-external.yaml", "coredns"),
        ("level2", "nftables.nft", "firewall"), ("level2", "ip-allow-list.md", "firewall-table"),
    }
    envoy = {a.level: a.content for a in arts if a.name == "envoy.yaml"}
    assert all("path: /dev/stdout" in c for c in envoy.values())


def test_unknown_target_is_refused(site, allowlist):
    with pytest.raises(ValueError, match="unknown target"):
        render_site(site, allowlist, "docker")


@pytest.mark.parametrize("target", ["lab", "kube"])
def test_deterministic(site, allowlist, target, tmp_path):
    a = render_site(site, allowlist, target, state_dir=tmp_path)
    b = render_site(site, allowlist, target, state_dir=tmp_path)
    assert [(x.level, x.name, x.content.encode()) for x in a] == [(x.level, x.name, x.content.encode()) for x in b]


def test_lab_paths_follow_state_dir(site, allowlist, tmp_path):
    arts = {(a.level, a.name): a.content for a in render_site(site, allowlist, "lab", state_dir=tmp_path)}
    assert f"path: {tmp_path}/level3/envoy-access.log" in arts[("level3", "envoy.yaml")]
    assert f"hosts {tmp_path}/level2/NodeHosts {{" in arts[("level2", "Corefile")]
    assert f"import {tmp_path}/level2/custom/*.server" in arts[("level2", "Corefile")]
    default = {(a.level, a.name): a.content for a in render_site(site, allowlist, "lab")}
    assert "path: /var/lib/layernet/ln/level4/envoy-access.log" in default[("level4", "envoy.yaml")]


@pytest.mark.parametrize("target", ["lab", "kube"])
def test_golden(site, allowlist, target):
    """The rendered lab site equals the reviewed files in golden/ (LAYERNET_UPDATE_GOLDEN=1 rewrites them)."""
    arts = render_site(site, allowlist, target)
    root = GOLDEN / target
    if UPDATE:
        for old in sorted(root.rglob("*"), reverse=True):
            old.unlink() if old.is_file() else old.rmdir()
        write_artifacts(arts, root)
    expected = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert expected == sorted(f"{a.level}/{a.name}" for a in arts), "golden file set differs; LAYERNET_UPDATE_GOLDEN=1"
    for a in arts:
        assert (root / a.level / a.name).read_text() == a.content, f"{target}/{a.level}/{a.name} differs from golden"


def test_write_artifacts(site, allowlist, tmp_path):
    arts = render_site(site, allowlist, "lab", state_dir=tmp_path / "state")
    paths = write_artifacts(arts, tmp_path / "out")
    assert paths == sorted(paths)
    assert len(paths) == len(arts)
    for a in arts:
        assert (tmp_path / "out" / a.level / a.name).read_text() == a.content
    # writing again gives the same files
    assert write_artifacts(arts, tmp_path / "out") == paths
