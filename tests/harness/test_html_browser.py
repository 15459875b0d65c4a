"""The HTML report opened in a real headless browser at 1280 px: its tables fit (no cell cut off or hidden
behind a scrollbar), each suite's section has an SVG chart with data, and it paints pixels.

Uses Debian's chromium (`apt-get install -y chromium`; .ci/run installs it); skipped with the reason when it
is absent."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ovi_bench.records import CaseResult, RunReport, Samples, StageRecord, Verdict
from ovi_bench.report import write_all
from tests.harness.test_reports import EVIL_ID, make_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (apt-get install -y chromium)")

# Run in the page after load: opens every <details>, then lists each table cell that reaches past the
# viewport or its own box, and each box whose content is wider than itself (hidden behind a scrollbar).
MEASURE = """<script>
document.querySelectorAll("details").forEach(d => { d.open = true; });
const width = document.documentElement.clientWidth, cut = [];
for (const cell of document.querySelectorAll("td, th")) {
  if (cell.getBoundingClientRect().right > width + 0.5 || cell.scrollWidth > cell.clientWidth + 1)
    cut.push(cell.closest("table").id + ": " + cell.textContent.slice(0, 50));
}
for (const box of document.querySelectorAll("main div, figure"))
  if (box.scrollWidth > box.clientWidth + 1) cut.push("box: " + box.innerHTML.slice(0, 50));
const out = document.createElement("pre");
out.id = "measured";
out.textContent = JSON.stringify({width: width, cut: cut});
document.body.appendChild(out);
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             "--window-size=1280,2400", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90, check=True)


def smoke_like_report() -> RunReport:
    """make_report plus what the smoke run has: long case ids, long metric names and messages, an attention
    suite (the chart that said "no data") and a pipeline suite with many stages."""
    report = make_report()
    stages = ["load", "encode_text", "denoise", "release", "decode_video", "decode_audio", "decode",
              "attention_video_self", "attention_video_to_audio", "attention_audio_to_video",
              "attention_video_to_text", "attention_audio_self", "single_rank_reference"]
    pipeline = CaseResult("smoke.peak_memory_10s[variant=960x960_10s,policy=all_gpu,attention=auto]",
                          "smoke.peak_memory_10s", {"variant": "960x960_10s"}, "ok",
                          stages=[StageRecord(name, 0.1 * (i + 1), host_rss_peak=(250 + 8 * i) * 2**20)
                                  for i, name in enumerate(stages)])
    attention = [CaseResult(f"smoke.attention_backends[variant=960x960_10s,attention={backend}]",
                            "smoke.attention_backends", {"attention": backend}, "ok",
                            metrics={"time.attention.video_to_audio_s": Samples([t, t * 1.1, t * 0.9]),
                                     "attention.video_to_audio.tokens": [61, 314]})
                 for backend, t in (("auto", 1.5e-4), ("sdpa_math", 5.6e-2))]
    report.cases += [pipeline, *attention]
    report.suites += ["smoke.peak_memory_10s", "smoke.attention_backends"]
    message = ("time.attention.video_to_audio_s time: median 150 µs vs baseline 7.09 ms (0.021x), "
               "beyond 1.5x (Mann-Whitney p=0.000291 <= 0.05)")
    metric = "time.attention.video_to_audio_s"
    report.verdicts.append(Verdict(attention[0].case_id, metric, "time", "improved",
                                   attention[0].metrics[metric], Samples([7.09e-3, 7.1e-3, 7.0e-3]), message))
    return report


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("browser")
    write_all(smoke_like_report(), tmp_path / "run")
    return tmp_path, tmp_path / "run" / "report.html"


def test_no_table_cell_is_cut_off_at_1280_px(page: tuple[Path, Path]) -> None:
    tmp_path, html = page
    measured = tmp_path / "measured.html"
    measured.write_text(html.read_text().replace("</body>", MEASURE + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", measured.as_uri()).stdout
    result = json.loads(dom.split('<pre id="measured">')[1].split("</pre>")[0].replace("&amp;", "&")
                        .replace("&lt;", "<").replace("&gt;", ">"))
    assert result["width"] == 1280
    assert result["cut"] == []


def test_each_suite_section_has_a_chart_with_data(page: tuple[Path, Path]) -> None:
    tmp_path, html = page
    dom = chromium(tmp_path, "--dump-dom", html.as_uri()).stdout
    sections = dom.split('<section class="suite" id="suite-')[1:]
    assert len(sections) == 3
    expected = {"variant_latents": ["30.00 GiB", "7.75 s"],
                "smoke.peak_memory_10s": ["346.00 MiB", "decode"],
                "smoke.attention_backends": ["video_to_audio 61x314", "auto", "sdpa_math", "56 ms"]}
    for section, (suite, labels) in zip(sections, expected.items()):
        section = section.split("</section>")[0]
        assert f"<h2>{suite} (" in section
        figures = section.split('<figure class="chart"')[1:]
        assert figures and all("<svg" in f and '<g id="chart-' in f for f in figures)
        assert all(f">{label}<" in section for label in labels), suite
    assert "no data" not in dom
    tables = ("table-suites", "table-to-read", "table-stages", "table-run", "table-checks", "table-metrics")
    for table in tables:
        assert f'<table id="{table}">' in dom
    # the case id with markup arrives as text, not as a script element
    assert "<script>" not in dom and "&lt;script&gt;" in dom and EVIL_ID not in dom


def test_screenshot_is_not_blank(page: tuple[Path, Path]) -> None:
    image_module = pytest.importorskip("PIL.Image")
    tmp_path, html = page
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", html.as_uri())
    with image_module.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 2400)
        colors = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, table rules and the chart palette, not a blank page
    first_case = (0x1F, 0x77, 0xB4)  # matplotlib's tab10 blue: the first case's bars
    assert any(color == first_case for _, color in colors)
