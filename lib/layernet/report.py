"""Run reports: code-free, self-contained HTML per stage, and the run's index page.

Plants are air-gapped, so a report must render with the network cut: no script, style, font or image is
loaded from anywhere; everything is inline.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

import nbformat

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


_STATUS_COLOUR = {"passed": "#1a7f37", "failed": "#cf222e", "skipped": "#6e7781", "pending": "#6e7781", "running": "#9a6700"}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:64rem;color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} .sub{color:#59636e;margin-top:0}
table{border-collapse:collapse;width:100%;margin:1rem 0} th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #d1d9e0}
th{background:#f6f8fa} .status{font-weight:600;color:#fff;border-radius:1rem;padding:.1rem .6rem;font-size:.85rem}
.error{border:2px solid #cf222e;background:#ffebe9;padding:.8rem 1rem;border-radius:.4rem;margin:1rem 0}
.ok{border:2px solid #1a7f37;background:#dafbe1;padding:.8rem 1rem;border-radius:.4rem;margin:1rem 0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem} pre{white-space:pre-wrap;margin:.3rem 0 0}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem} dt{color:#59636e} dd{margin:0}
"""


def write_index(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """index.html: the run at a glance, the error (if any) at the top, one row per stage with its report."""
    esc = html.escape
    stages = manifest.get("stages", [])
    failed = [s for s in stages if s.get("status") == "failed"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>layernet run {esc(manifest['run_id'])}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>layernet run: {esc(manifest['runbook'])}</h1>",
             f"<p class='sub'>{esc(manifest['run_id'])} &middot; site <code>{esc(manifest['site']['path'])}</code>"
             f"{' &middot; dry run' if manifest.get('dry_run') else ''}</p>"]
    if failed:
        s = failed[0]
        parts.append(f"<div class='error'><strong>Stage {esc(s['name'])} failed.</strong>"
                     f"<pre>{esc(s.get('error') or 'see the stage report')}</pre>"
                     f"<a href='{esc(s.get('report') or '')}'>Open the stage report</a></div>")
    elif stages and all(s.get("status") == "passed" for s in stages):
        parts.append(f"<div class='ok'><strong>All {len(stages)} stage(s) passed.</strong></div>")
    parts.append("<table><tr><th>#</th><th>stage</th><th>status</th><th>duration</th><th>report</th><th>summary</th></tr>")
    for i, s in enumerate(stages):
        colour = _STATUS_COLOUR.get(s.get("status", "pending"), "#6e7781")
        dur = f"{s['duration_s']:.1f} s" if s.get("duration_s") is not None else ""
        link = f"<a href='{esc(s['report'])}'>{esc(s['report'])}</a>" if s.get("report") else ""
        summary = ", ".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in (s.get("results") or {}).items()
                            if isinstance(v, (int, float, str, bool)))
        parts.append(f"<tr><td>{i:02d}</td><td>{esc(s['name'])}</td>"
                     f"<td><span class='status' style='background:{colour}'>{esc(s.get('status', 'pending'))}</span></td>"
                     f"<td>{dur}</td><td>{link}</td><td>{summary}</td></tr>")
    parts.append("</table><h2>Run</h2><dl>")
    site = manifest["site"]
    rows = [("started", manifest.get("started")), ("finished", manifest.get("finished")),
            ("site sha256", site.get("sha256")), ("site overrides", ", ".join(site.get("overrides") or []) or "none"),
            ("target", site.get("target"))]
    rows += [(f"{k} version", v) for k, v in manifest.get("versions", {}).items()]
    for k, v in rows:
        parts.append(f"<dt>{esc(str(k))}</dt><dd><code>{esc(str(v))}</code></dd>")
    parts.append("</dl><h2>Files</h2><table><tr><th>file</th><th>size</th></tr>")
    for f in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "index.html"):
        rel = f.relative_to(run_dir).as_posix()
        parts.append(f"<tr><td><a href='{esc(rel)}'>{esc(rel)}</a></td><td>{_size(f.stat().st_size)}</td></tr>")
    parts.append("</table></body></html>")
    path = run_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
