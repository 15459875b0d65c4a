"""The HTML report opened in a real headless browser shows its tables and SVG charts, and paints pixels.

Uses Debian's chromium (`apt-get install -y chromium`); skipped with the reason when it is absent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ovi_bench.report import write_all
from tests.harness.test_reports import EVIL_ID, make_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90, check=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("browser")
    write_all(make_report(), tmp_path / "run")
    return tmp_path, tmp_path / "run" / "report.html"


def test_rendered_dom_has_tables_and_charts(page: tuple[Path, Path]) -> None:
    tmp_path, html = page
    dom = chromium(tmp_path, "--dump-dom", html.as_uri()).stdout
    for table in ("table-run", "table-summary", "table-cases", "table-verdicts", "table-metrics", "table-stages"):
        assert f'<table id="{table}">' in dom
    for chart in ("chart-memory", "chart-speed-time.denoise.step_s", "chart-baseline"):
        figure = dom.split(f'<figure id="{chart}">')[1].split("</figure>")[0]
        assert "<svg" in figure and "<rect" in figure
    assert dom.count('<g class="bar">') == 8 + 2 + 2  # stages + timed cases + baseline comparisons
    # the case id with markup arrives as text, not as a script element
    assert "<script>" not in dom and "&lt;script&gt;" in dom and EVIL_ID not in dom


def test_screenshot_is_not_blank(page: tuple[Path, Path]) -> None:
    image_module = pytest.importorskip("PIL.Image")
    tmp_path, html = page
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", html.as_uri())
    with image_module.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 2400)
        colors = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, table rules and the chart palette, not a blank page
    red_bar = (0xE4, 0x57, 0x56)  # the regression bar of the baseline chart
    assert any(color == red_bar for _, color in colors)
