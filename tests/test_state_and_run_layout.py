"""Where a lab keeps its state and where a run keeps its results are each said once (paths.lab_state,
runfolder.results_file): the renderers name the lab's files under the folder the lab writes, and what a notebook
records is what the runner and the session read back."""
from __future__ import annotations

import json
from pathlib import Path

from layernet import lab, paths
from layernet.allowlist import effective_allowlist
from layernet.render import render_site
from layernet.render.envoy import default_state_dir
from layernet.runfolder import results_file
from layernet.runner import read_results, record_results
from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[1]


def test_the_renderers_name_files_under_the_folder_the_lab_writes(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "LAB_STATE", tmp_path)
    site = load_site(ROOT / "params" / "lab.yaml", ["lab.prefix=zz"])
    assert lab.state_dir(site) == default_state_dir(site) == tmp_path / "zz"
    envoy = next(a for a in render_site(site, effective_allowlist(site)) if a.name == "envoy.yaml")
    assert str(tmp_path / "zz" / envoy.level / "envoy-access.log") in envoy.content


def test_a_stage_s_recorded_results_are_where_the_runner_reads_them(tmp_path):
    path = record_results(str(tmp_path), "arc", {"connected": 3})
    assert path == results_file(tmp_path, "arc") == tmp_path / paths.RESULTS / "arc.json"
    assert json.loads(path.read_text()) == {"connected": 3} and read_results(tmp_path, "arc") == {"connected": 3}
