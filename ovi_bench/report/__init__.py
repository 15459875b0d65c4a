"""Write a run's reports into its run directory and read them back.

report.json is canonical; report.md, report.html and junit.xml are views of the same RunReport.
"""

from __future__ import annotations

from pathlib import Path

from ovi_bench.records import OutputError, RunReport, write_atomic
from ovi_bench.report.html import render_html
from ovi_bench.report.json import read_json, render_json
from ovi_bench.report.junit import render_junit
from ovi_bench.report.markdown import render_markdown

RENDERERS = {"report.json": render_json, "report.md": render_markdown, "report.html": render_html,
             "junit.xml": render_junit}


def write_all(report: RunReport, run_dir: Path) -> dict[str, Path]:
    """Write every format into `run_dir` (created if needed); an unwritable directory raises OutputError."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create report directory {run_dir}: {exc.strerror or exc}") from None
    written = {}
    for name, render in RENDERERS.items():
        write_atomic(run_dir / name, render(report))
        written[name] = run_dir / name
    return written


def load_report(path: Path) -> RunReport:
    """A run report from a run directory or its report.json; SchemaError if it is not one we can read."""
    path = Path(path)
    return read_json(path / "report.json" if path.is_dir() else path)
