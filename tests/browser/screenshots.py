"""Screenshots of a run's reports for the README, taken with the browser tests' own Chromium and settings.

    .venv/bin/python tests/browser/screenshots.py runs/<run> docs/screens

Writes `index.png` (the run's index page) and `stage.png` (the first stage report with a plan: 02-arc when the run
has it), each the top of the page at 1280 px wide, and prints their paths. Nothing is fetched from the network:
the reports are static files.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ARGS, CHROMIUM  # noqa: E402

PAGES = {"index.png": ["index.html"], "stage.png": ["02-arc.html", "01-infrastructure.html", "00-preflight.html"]}
VIEW = {"width": 1280, "height": 900}


def capture(run_dir: Path, out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport=VIEW)
            page.route("http*://**", lambda route: route.abort())        # a report needs nothing from outside
            for name, candidates in PAGES.items():
                source = next((run_dir / c for c in candidates if (run_dir / c).is_file()), None)
                if source is None:
                    raise SystemExit(f"error: {run_dir} has none of {', '.join(candidates)}: is it a run folder?")
                page.goto(source.resolve().as_uri())
                page.wait_for_load_state("load")
                page.screenshot(path=str(out_dir / name))
                written.append(out_dir / name)
        finally:
            browser.close()
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    run_dir, out_dir = Path(argv[0]), Path(argv[1])
    if not (run_dir / "index.html").is_file():
        print(f"error: {run_dir} is not a run folder (no index.html); give runs/<run>", file=sys.stderr)
        return 2
    for path in capture(run_dir, out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
