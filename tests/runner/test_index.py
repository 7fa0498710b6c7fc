"""The run's index page: the verdict, the stages and the site's picture first, the files grouped per stage."""
from __future__ import annotations

import base64
import re
from pathlib import Path

from layernet.report import remote_references, stage_of, write_index, write_picture

STAGES = ["preflight", "infrastructure", "arc", "aio", "telemetry", "audit"]


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "20261205T045813Z-deploy-c62f09"
    files = ["manifest.json", "results/probes.json"]
    for i, name in enumerate(STAGES):
        files += [f"{i:02d}-{name}.ipynb", f"{i:02d}-{name}.html", f"results/{name}.json"]
    files += [f"aio/resources/level{n}/instances~x{k}.json" for n in (2, 3, 4) for k in range(16)]
    files += ["arc/plan.json", "arc/plan/01-site-register-provider.txt", "audit/exports/connections.csv"]
    for f in files:
        (run / f).parent.mkdir(parents=True, exist_ok=True)
        (run / f).write_text("x" * 10)
    write_picture(run, "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><title>t</title></svg>")
    return run


def _manifest(status: dict[str, str], error: str = "") -> dict:
    return {"run_id": "20261205T045813Z-deploy-c62f09", "runbook": "deploy",
            "site": {"path": "/p/params/lab.yaml", "name": "lab", "sha256": "ab", "target": "lab", "overrides": [],
                     "picture_alt": "Topology of site lab: level2 -> level3 -> level4 -> internet"},
            "started": "2026-12-05T04:58:13+00:00", "finished": "2026-12-05T05:01:00+00:00", "versions": {},
            "stages": [{"name": n, "status": status.get(n, "passed"), "duration_s": 20.46, "report": f"{i:02d}-{n}.html",
                        "error": error if status.get(n) == "failed" else None,
                        "results": {"levels": 3, "connected": 3, "e2e_p50_ms": 0.2150000001, "failed": [],
                                    "probe_match": None}}
                       for i, n in enumerate(STAGES)]}


def test_the_verdict_the_stages_and_the_site_come_before_the_files(tmp_path: Path):
    run = _run_folder(tmp_path)
    page = write_index(run, _manifest({})).read_text()
    at = {what: page.index(marker) for what, marker in [
        ("verdict", "All 6 stage(s) passed"), ("stages", "<h2>Stages</h2>"), ("site", "<h2>Site</h2>"),
        ("files", "<h2>Files</h2>")]}
    assert at["verdict"] < at["stages"] < at["site"] < at["files"]
    stages = page[at["stages"]:at["site"]]
    assert [re.sub(r"<[^>]+>", "", m) for m in re.findall(r"<a href='\d\d-[a-z]+\.html'>[a-z]+</a>", stages)] == STAGES
    assert "20.5 s" in stages and "e2e p50: 0.215 ms" in stages and "probe match" not in stages
    assert not re.search(r"\b(nan|None|NaT)\b", re.sub(r"<[^>]+>", " ", page))
    img = re.search(r"<img alt='Topology of site lab: level2 -&gt; level3 -&gt; level4 -&gt; internet' "
                    r"src='data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)'>", page)
    assert img and base64.b64decode(img.group(1)).startswith(b"<svg")
    assert remote_references(page) == []


def test_files_are_grouped_per_stage(tmp_path: Path):
    run = _run_folder(tmp_path)
    page = write_index(run, _manifest({})).read_text()
    files = page[page.index("<h2>Files</h2>"):]
    groups = re.findall(r"<details class='files' data-stage='([a-z]+)'><summary><strong>([^<]+)</strong> "
                        r"<span class='summary'>(\d+) file\(s\)", files)
    assert [g[0] for g in groups] == STAGES + ["run"]
    count = {g[0]: int(g[2]) for g in groups}
    assert count["aio"] == 3 + 48 and count["arc"] == 3 + 2 and count["audit"] == 4 and count["preflight"] == 3
    assert count["run"] == 3                  # manifest.json, results/probes.json, site.svg
    aio = files[files.index("data-stage='aio'"):files.index("data-stage='telemetry'")]
    assert aio.index("03-aio.html") < aio.index("aio/resources/level2/")   # the report first
    assert files.count("<details") == len(STAGES) + 1 and "<details open" not in files


def test_a_failed_stage_leads_the_page(tmp_path: Path):
    run = _run_folder(tmp_path)
    page = write_index(run, _manifest({"telemetry": "failed", "audit": "skipped"},
                                      error="StageFailed: <level2> & broker")).read_text()
    assert page.index("class='error'") < page.index("<h2>Stages</h2>")
    assert "Stage telemetry failed." in page and "StageFailed: &lt;level2&gt; &amp; broker" in page


def test_stage_of():
    assert stage_of("02-arc.html", STAGES) == "arc"
    assert stage_of("arc/plan/01-x.txt", STAGES) == "arc"
    assert stage_of("results/aio.json", STAGES) == "aio"
    assert stage_of("results/harden-dns.csv", ["hardening", "harden"]) == "harden"
    assert stage_of("results/probes.json", STAGES) == ""
    assert stage_of("manifest.json", STAGES) == "" and stage_of("07-other.html", STAGES) == ""


def test_a_run_in_progress_says_so_and_shows_no_empty_values(tmp_path: Path):
    run = _run_folder(tmp_path)
    m = _manifest({n: "pending" for n in STAGES[2:]})
    m["finished"] = None
    for s in m["stages"][2:]:
        s.update(duration_s=None, report=None, results={})
    page = write_index(run, m).read_text()
    assert "The run is in progress" in page and "All 6 stage(s) passed" not in page
    assert "<dd><code>running</code></dd>" in page
    assert not re.search(r"\b(nan|None|NaT)\b", re.sub(r"<[^>]+>", " ", page))
