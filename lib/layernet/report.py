"""Run reports: code-free, self-contained HTML per stage, and the run's index page.

Plants are air-gapped, so a report must render with the network cut: no script, style, font or image is
loaded from anywhere; everything is inline.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import nbformat

from layernet import paths
from layernet.htmltable import duration

_REMOTE_TAG = re.compile(
    r"<script\b[^>]*\bsrc\s*=\s*(?:\"\"|''|[\"']?(?:https?:)?//[^>]*)[^>]*>\s*</script>"
    r"|<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>",
    re.IGNORECASE,
)


def notebook_to_html(nb_path: Path, html_path: Path, *, title: str) -> Path:
    """Export an executed notebook without code cells, except a cell that raised (kept so the error has context)."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(nb_path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
        tags = set(cell.metadata.get("tags", []))
        if not failed:
            tags.add("layernet-hide-input")
        cell.metadata["tags"] = sorted(tags)
        cell.outputs = [_with_alt_text(o) for o in cell.get("outputs", [])]
    exporter = HTMLExporter(template_name="lab")
    for trait in ("mathjax_url", "require_js_url", "jquery_url", "widget_renderer_url", "jupyter_widgets_base_url",
                  "mermaid_js_url", "mermaid_layout_elk_js_url"):
        if exporter.has_trait(trait):
            setattr(exporter, trait, "")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.embed_images = True
    remover = TagRemovePreprocessor(remove_input_tags={"layernet-hide-input"}, enabled=True)
    exporter.register_preprocessor(remover, enabled=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    body = make_offline(body)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def _with_alt_text(output):
    """An SVG picture whose output metadata carries `alt` becomes an inline <img> with that text alternative
    (the exporter would otherwise write a placeholder)."""
    data = output.get("data") or {}
    meta = output.get("metadata") or {}
    alt = (meta.get("image/svg+xml") or {}).get("alt") or meta.get("alt")
    if "image/svg+xml" not in data or not alt:
        return output
    svg = data["image/svg+xml"]
    svg = "".join(svg) if isinstance(svg, list) else svg
    b64 = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    img = f'<img alt="{html.escape(alt, quote=True)}" src="data:image/svg+xml;base64,{b64}">'
    return nbformat.v4.new_output("display_data", data={"text/html": img})


def make_offline(text: str) -> str:
    """Drop every tag that would load a script or stylesheet from the network."""
    return _REMOTE_TAG.sub("", text)


def remote_references(text: str) -> list[str]:
    """Every src/href in script, link or img tags that points at the network (used by tests and checks)."""
    found = []
    for m in re.finditer(r"<(script|link|img)\b[^>]*?\b(src|href)\s*=\s*[\"']?([^\"' >]+)", text, re.IGNORECASE):
        if re.match(r"(?:https?:)?//", m.group(3), re.IGNORECASE):
            found.append(f"<{m.group(1)} {m.group(2)}={m.group(3)}>")
    return found


_STATUS_COLOUR = {"passed": "#1a7f37", "failed": "#cf222e", "skipped": "#6e7781", "pending": "#6e7781", "running": "#9a6700",
                  "started": "#0969da"}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:64rem;color:#1f2328;padding:0 1rem}
main{display:block}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem} .sub{color:#59636e;margin-top:0}
table{border-collapse:collapse;width:100%;margin:1rem 0} th,td{text-align:left;vertical-align:top;padding:.45rem .6rem;
border-bottom:1px solid #d1d9e0;overflow-wrap:break-word} td.num,th.num{text-align:right;white-space:nowrap}
td a{overflow-wrap:anywhere}
th{background:#f6f8fa} .status{font-weight:600;color:#fff;border-radius:1rem;padding:.1rem .6rem;font-size:.85rem;white-space:nowrap}
.error{border:2px solid #cf222e;background:#ffebe9;padding:.8rem 1rem;border-radius:.4rem;margin:1rem 0}
.ok{border:2px solid #1a7f37;background:#dafbe1;padding:.8rem 1rem;border-radius:.4rem;margin:1rem 0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem;overflow-wrap:anywhere}
pre{white-space:pre-wrap;margin:.3rem 0 0}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2rem 1rem} dt{color:#59636e} dd{margin:0;min-width:0}
figure{margin:1rem 0} figure img{width:100%;max-width:48rem;height:auto;border:1px solid #d1d9e0;border-radius:.4rem}
figcaption{color:#59636e;font-size:.85rem}
details{margin:.3rem 0} summary{cursor:pointer} .summary{color:#59636e;font-size:.9rem}
"""

PICTURE = "site.svg"     # the site's topology picture, written into the run folder when the run starts


def write_picture(run_dir: Path, svg: str) -> Path:
    """Keep the site's picture with the run (the index shows it inline)."""
    path = Path(run_dir) / PICTURE
    path.write_text(svg, encoding="utf-8")
    return path


def stage_of(rel: str, stages: list[str]) -> str:
    """Which stage a file of the run folder belongs to ("" for the run's own files): its report and notebook
    (`NN-<stage>.*`), its folder (`<stage>/...`) and its results (`results/<stage>.json`, `results/<stage>-*`)."""
    parts = rel.split("/")
    names = sorted(stages, key=len, reverse=True)
    m = re.match(r"\d\d-(.+?)\.[^.]+$", parts[0]) if len(parts) == 1 else None
    if m and m.group(1) in stages:
        return m.group(1)
    if len(parts) > 1 and parts[0] in stages:
        return parts[0]
    if len(parts) == 2 and parts[0] == paths.RESULTS:
        stem = parts[1].rsplit(".", 1)[0]
        for name in names:
            if stem == name or stem.startswith(name + "-"):
                return name
    return ""


def _summary(results: dict) -> str:
    """A stage's recorded results on one line: numbers with their units, lists by their length, nothing unknown."""
    from layernet.htmltable import text, unit_of

    shown = []
    for k, v in (results or {}).items():
        name, unit = unit_of(k)
        if isinstance(v, (list, tuple)):
            if v:
                shown.append(f"{name}: {len(v)}")
        elif v is not None and not isinstance(v, dict):
            shown.append(f"{name}: {text(v, unit)}")
    return ", ".join(shown)


def write_index(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """index.html: the verdict first (the error when a stage failed), then the stages with their reports and
    results, the site's picture, the run's facts, and last the run folder's files grouped by stage."""
    esc = html.escape
    run_dir = Path(run_dir)
    stages = manifest.get("stages", [])
    names = [s["name"] for s in stages]
    failed = [s for s in stages if s.get("status") == "failed"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>layernet run {esc(manifest['run_id'])}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>layernet run: {esc(manifest['runbook'])}</h1>",
             f"<p class='sub'>{esc(manifest['run_id'])} &middot; site {esc(str(manifest['site'].get('name') or ''))} "
             f"<code>{esc(manifest['site']['path'])}</code>{' &middot; dry run' if manifest.get('dry_run') else ''}</p>"]
    if failed:
        s = failed[0]
        parts.append(f"<div class='error'><strong>Stage {esc(s['name'])} failed.</strong>"
                     f"<pre>{esc(s.get('error') or 'see the stage report')}</pre>"
                     + (f"<a href='{esc(s['report'])}'>Open the stage report</a>" if s.get("report") else "")
                     + "</div>")
    elif stages and all(s.get("status") == "passed" for s in stages):
        parts.append(f"<div class='ok'><strong>All {len(stages)} stage(s) passed.</strong></div>")
    elif stages and all(s.get("status") in ("passed", "skipped") for s in stages):
        passed = sum(s.get("status") == "passed" for s in stages)
        parts.append(f"<div class='ok'><strong>{passed} stage(s) passed, {len(stages) - passed} skipped.</strong></div>")
    elif manifest.get("session"):
        parts.append("<p class='summary'>A JupyterLab session's run (<code>make jupyter</code>): each stage's verdict "
                     "is at the end of its notebook; this page lists when each stage was first started in the session "
                     "and what it recorded" + ("" if manifest.get("finished") else
                                               ", and is written again when a notebook starts and when the session "
                                               "ends") + ".</p>")
    elif manifest.get("finished") is None:
        parts.append("<p class='summary'>The run is in progress: this page is written again after each stage.</p>")
    parts.append("<h2>Stages</h2><table><tr><th class='num'>#</th><th>stage</th><th>status</th><th class='num'>duration</th>"
                 "<th>results</th></tr>")
    for i, s in enumerate(stages):
        colour = _STATUS_COLOUR.get(s.get("status", "pending"), "#6e7781")
        dur = duration(s["duration_s"]) if s.get("duration_s") is not None else ""
        name = (f"<a href='{esc(s['report'])}'>{esc(s['name'])}</a>" if s.get("report") else esc(s["name"]))
        summary = esc(_summary(s.get("results") or {}) or s.get("note") or "")
        parts.append(f"<tr><td class='num'>{i:02d}</td><td>{name}</td>"
                     f"<td><span class='status' style='background:{colour}'>{esc(s.get('status', 'pending'))}</span></td>"
                     f"<td class='num'>{esc(dur)}</td><td class='summary'>{summary}</td></tr>")
    parts.append("</table>")
    picture = run_dir / PICTURE
    if picture.is_file():
        alt = (manifest.get("site") or {}).get("picture_alt") or f"Topology of site {manifest['site'].get('name') or ''}"
        b64 = base64.b64encode(picture.read_bytes()).decode("ascii")
        parts.append(f"<h2>Site</h2><figure><img alt='{esc(alt, quote=True)}' src='data:image/svg+xml;base64,{b64}'>"
                     f"<figcaption>{esc(alt)}</figcaption></figure>")
    parts.append("<h2>Run</h2><dl>")
    site = manifest["site"]
    rows = [("started", manifest.get("started")), ("finished", manifest.get("finished") or "running"),
            ("site sha256", site.get("sha256")), ("site overrides", ", ".join(site.get("overrides") or []) or "none"),
            ("target", site.get("target"))]
    rows += [(f"{k} version", v) for k, v in manifest.get("versions", {}).items()]
    for k, v in rows:
        parts.append(f"<dt>{esc(str(k))}</dt><dd><code>{esc(str(v))}</code></dd>")
    parts.append("</dl>")
    parts.append(_files(run_dir, stages, names))
    parts.append("</main></body></html>")
    path = run_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _files(run_dir: Path, stages: list[dict], names: list[str]) -> str:
    """The run folder's files, one collapsed group per stage (its report and notebook first), then the run's own."""
    esc = html.escape
    groups: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
    groups[""] = []
    for f in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "index.html"):
        rel = f.relative_to(run_dir).as_posix()
        groups[stage_of(rel, names)].append((rel, f.stat().st_size))
    out = ["<h2>Files</h2>"]
    order = [(f"{i:02d} {n}", n) for i, n in enumerate(names)] + [("run", "")]
    for title, key in order:
        files = sorted(groups[key], key=lambda x: (x[0].count("/"), x[0]))
        if not files:
            continue
        total = _size(sum(n for _, n in files))
        out.append(f"<details class='files' data-stage='{esc(key or 'run')}'><summary><strong>{esc(title)}</strong> "
                   f"<span class='summary'>{len(files)} file(s), {total}</span></summary>"
                   "<table><tr><th>file</th><th class='num'>size</th></tr>")
        for rel, n in files:
            out.append(f"<tr><td><a href='{esc(rel)}'>{esc(rel)}</a></td><td class='num'>{_size(n)}</td></tr>")
        out.append("</table></details>")
    return "".join(out)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
