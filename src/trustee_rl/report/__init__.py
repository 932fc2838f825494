"""The run report: one self-contained HTML file (inline CSS, SVG and a little JS) about a run.

`data` reads the run store (read-only), `views` shapes what each section shows, `charts` lays out
the line charts, and `render` fills the Jinja2 templates in `templates/`, escaping every value.
The store is only read, so a report can be built while a run is still writing to it; episodes not
judged yet show as "pending".
"""

from __future__ import annotations

from pathlib import Path

from trustee_rl.report.data import load_run
from trustee_rl.report.render import render
from trustee_rl.report.views import BROWSER_CAP, page

__all__ = ["REPORT_FILE", "build_report", "write_report"]

REPORT_FILE = "report.html"


def build_report(run_dir: Path, browser_cap: int = BROWSER_CAP) -> str:
    """The report's HTML; the episode browser holds at most `browser_cap` episodes."""
    return render(page(load_run(run_dir), browser_cap))


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Build the report of the run in `run_dir` and write it to `out` (default: in the run dir)."""
    text = build_report(run_dir)
    path = out or run_dir / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
