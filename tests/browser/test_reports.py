"""Every report of a deploy run on the lab, opened in a real browser as a person would: no console errors, no
request leaves the file, every chart and picture renders, nothing is wider than the page's main column, no
"nan"/"None"/"NaT", and every plan row's exact request is one click away and kept in the run folder.

The deploy run is the session's (tests/conftest.py `deploy_run`), shared with tests/lab/test_deploy_runbook.py;
run under the lab lock like every lab test: flock /tmp/layernet-lab.lock .venv/bin/pytest -q tests/browser
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from layernet.stages.base import request_text

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")]

REPORTS = ["index.html", "00-preflight.html", "01-infrastructure.html", "02-arc.html", "03-aio.html",
           "04-telemetry.html", "05-audit.html"]
PLANS = {"02-arc.html": "arc", "03-aio.html": "aio", "04-telemetry.html": "telemetry"}
WIDTH = 1280
NOT_A_VALUE = re.compile(r"\b(nan|NaN|None|NaT)\b")

# measured in the page: every element (an <svg> counts as one) against the main column, with every <details> open
MEASURE = """() => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  const main = document.querySelector('main') || document.body;
  const box = main.getBoundingClientRect();
  const wide = [];
  for (const el of main.querySelectorAll('*')) {
    if (el.closest('svg') && el.tagName.toLowerCase() !== 'svg') continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > box.right + 1 || r.left < box.left - 1) {
      wide.push(`${el.tagName.toLowerCase()}.${el.className && el.className.baseVal === undefined ? el.className : ''}`
                + ` ${Math.round(r.left)}..${Math.round(r.right)} (column ${Math.round(box.left)}..${Math.round(box.right)}):`
                + ` ${(el.innerText || el.textContent || '').slice(0, 80)}`);
    }
  }
  const charts = [...document.querySelectorAll('.plotly-graph-div')].map(div => {
    const svg = div.querySelector('svg.main-svg');
    const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    return {id: div.id, drawn: !!svg && r.width > 50 && r.height > 50 && div.querySelectorAll('.trace, .sankey').length > 0};
  });
  const images = [...document.images].map(i => ({alt: i.alt, drawn: i.complete && i.naturalWidth > 0}));
  // a table in a cell's output that did not come through the report helper (pandas' own HTML, a Styler)
  const foreign = [...document.querySelectorAll('.jp-OutputArea-output table:not(.ln-t)')]
    .map(t => (t.innerText || '').slice(0, 80));
  return {wide, charts, images, foreign,
          page_width: document.documentElement.scrollWidth, view_width: window.innerWidth};
}"""


@dataclass
class Opened:
    name: str
    console_errors: list[str] = field(default_factory=list)
    requests_out: list[str] = field(default_factory=list)
    wide: list[str] = field(default_factory=list)
    charts: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    foreign_tables: list[str] = field(default_factory=list)
    text: str = ""
    page_width: int = 0
    view_width: int = 0
    plan_rows: list[dict] = field(default_factory=list)


def _plan_rows(page) -> list[dict]:
    """Each plan row: the one-line summary, and after one click on it the request shown and its file link."""
    rows = []
    for tr in page.locator(".ln-plan tbody tr").all():
        cells = tr.locator("td")
        row = {"level": cells.nth(1).inner_text(), "plan": cells.nth(2).inner_text(), "summary": "", "shown": "",
               "visible": False, "file": None}
        summary = tr.locator("details > summary")
        if summary.count():
            details = tr.locator("details")
            if details.get_attribute("open") is not None:
                summary.click()                          # closed again, so the click below opens it
            row["summary"] = summary.inner_text()
            summary.click()
            pre = tr.locator("details pre")
            row["visible"] = pre.is_visible()
            row["shown"] = pre.inner_text()
            link = tr.locator("details a")
            row["file"] = link.get_attribute("href") if link.count() else None
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def run_dir(deploy_run) -> Path:
    return deploy_run.run_dir


@pytest.fixture(scope="module")
def opened(run_dir, browser) -> dict[str, Opened]:
    """Each report opened once, offline: every request other than the file itself is recorded and refused."""
    out = {}
    for name in REPORTS:
        path = run_dir / name
        if not path.is_file():
            continue
        o = Opened(name)
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        url = path.resolve().as_uri()

        # anything with a network scheme is refused; any request at all but the file itself is recorded
        page.route(re.compile(r"^(?!file:|data:|blob:|about:)"), lambda r: r.abort())
        page.on("request", lambda r, url=url, o=o: o.requests_out.append(r.url)
                if r.url != url and not r.url.startswith(("data:", "blob:", "about:")) else None)
        page.on("console", lambda m, o=o: o.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e, o=o: o.console_errors.append(str(e)))
        page.goto(url, wait_until="load")
        page.wait_for_timeout(300)
        o.text = page.evaluate("document.body.innerText")   # as first shown: the exact requests are a click away
        if name in PLANS:
            o.plan_rows = _plan_rows(page)
        got = page.evaluate(MEASURE)
        o.wide, o.charts, o.images, o.foreign_tables = got["wide"], got["charts"], got["images"], got["foreign"]
        o.page_width, o.view_width = got["page_width"], got["view_width"]
        page.close()
        out[name] = o
    return out


def test_the_run_passed_and_wrote_every_report(deploy_run, run_dir):
    assert deploy_run.proc.returncode == 0, deploy_run.proc.stdout[-3000:] + deploy_run.proc.stderr[-3000:]
    assert [n for n in REPORTS if not (run_dir / n).is_file()] == []


@pytest.mark.parametrize("name", REPORTS)
def test_a_report_in_the_browser(opened, name):
    if name not in opened:
        pytest.fail(f"{name} was not written: the run stopped before that stage (see the index)")
    o = opened[name]
    assert o.console_errors == [], o.console_errors[:5]
    assert o.requests_out == [], o.requests_out[:5]          # offline: nothing but the file itself
    assert [i for i in o.images if not i["drawn"]] == []
    assert [c for c in o.charts if not c["drawn"]] == []
    assert o.foreign_tables == [], o.foreign_tables[:3]      # every table through the one helper (escaped)
    assert o.page_width <= o.view_width, f"the page scrolls sideways: {o.page_width} px for {o.view_width}"
    assert o.wide == [], "\n".join(o.wide[:10])
    bad = [line for line in o.text.splitlines() if NOT_A_VALUE.search(line)]
    assert bad == [], bad[:10]


def test_charts_and_pictures_are_there(opened):
    assert len(opened["00-preflight.html"].images) >= 1                    # the topology
    assert len(opened["index.html"].images) == 1                           # the site picture
    assert len(opened["02-arc.html"].images) + len(opened["03-aio.html"].images) >= 2   # the crossings
    assert len(opened["04-telemetry.html"].charts) >= 2                    # Sankey and latency
    assert len(opened["05-audit.html"].charts) >= 3                        # over time, destinations, Sankey


def test_the_index_leads_with_the_verdict_the_stages_and_the_site(opened):
    text = opened["index.html"].text
    at = [text.index(s) for s in ("All 6 stage(s) passed", "Stages", "Site", "Files")]
    assert at == sorted(at)
    assert re.search(r"\n\s*02\s+arc\s+passed", text)


@pytest.mark.parametrize("name", list(PLANS))
def test_every_plan_row_shows_what_apply_sends(opened, run_dir, name):
    from layernet.lab.azure import subscription_id
    from layernet.site import load_site

    if name not in opened:
        pytest.fail(f"{name} was not written")
    stage = PLANS[name]
    steps = json.loads((run_dir / stage / "plan.json").read_text())["steps"]
    rows = opened[name].plan_rows
    assert len(rows) == len(steps) > 0
    sub = subscription_id(load_site(Path(__file__).resolve().parents[2] / "params" / "lab.yaml"))
    for step, row in zip(steps, rows):
        assert (row["level"], row["plan"]) == (step["level"], "skip" if step["skip"] else "change")
        if not step["detail"]:
            continue
        assert f"{step['action']} {step['target']}" in row["summary"] and "\n" not in row["summary"].strip()
        assert row["visible"] and row["shown"].strip() == request_text(step["detail"]).strip()
        assert (run_dir / row["file"]).read_text() == step["detail"] + "\n"
        if re.match(r"(PUT|POST|PATCH|DELETE) /subscriptions/", step["detail"]):
            assert f"/subscriptions/{sub}/" in row["shown"], row["shown"][:200]
    shown = "\n".join(r["shown"] + r["summary"] for r in rows)
    assert "/subscriptions//" not in shown


def test_the_arc_verdict_counts_levels(opened):
    assert "all 3 level(s) Connected to Azure Arc" in opened["02-arc.html"].text


def test_the_readme_screenshots_come_from_a_run(run_dir, tmp_path):
    """tests/browser/screenshots.py (which made docs/screens/) writes the index and a stage report of a real run."""
    import struct
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("screenshots.py")), str(run_dir),
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("index.png", "stage.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (1280, 900)
    bad = subprocess.run([sys.executable, str(Path(__file__).with_name("screenshots.py")), str(tmp_path), str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a run folder" in bad.stderr
