"""Suite files: valid ones expand into the right cases; every error names the file and the line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ovi_bench.job import RunOptions
from ovi_bench.suites import SuiteError, load_suite, load_suites

VALID = """\
schema_version: 1
name: demo
description: two variants, two policies
scenario: pipeline
matrix:
  variant: [720x720_5s, 960x960_10s]
  policy: [all_gpu, keep_resident]
params: {steps: 3}
budget: 64 GiB
timeout: 90 s
checks:
  - {metric: video_latent_shape, rule: exact, expected: spec.video_latent_shape}
  - {metric: peak.total.alloc_bytes, rule: max, limit: "100 GB"}
  - {metric: peak.decode.alloc_bytes, rule: relative, tolerance: "2%", floor: "256 MiB"}
  - {metric: status, rule: expect_status, expected: oom, when: {policy: keep_resident}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_valid_suite_parses_units_and_expands_to_the_cartesian_product(tmp_path):
    suite = load_suite(str(write(tmp_path, VALID)))
    assert suite.budget == 64 * 2**30
    assert suite.timeout_s == 90.0
    assert suite.checks[1].limit == 100e9
    assert suite.checks[2].tolerance == pytest.approx(0.02) and suite.checks[2].floor == 256 * 2**20
    cases = suite.expand()
    assert len(cases) == 4
    assert {(c.axes["variant"], c.axes["policy"]) for c in cases} == {
        (v, p) for v in ("720x720_5s", "960x960_10s") for p in ("all_gpu", "keep_resident")}
    assert all(c.axes["attention"] == "auto" and c.params["steps"] == 3 for c in cases)
    assert len({c.case_id for c in cases}) == 4
    only = suite.expand(RunOptions(variants=["960x960_5s"]))
    assert [c.axes["variant"] for c in only] == ["960x960_5s", "960x960_5s"]


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("timeout: 90 s", "timeout: 90 s\ncolour: blue", "colour", "unknown key 'colour'"),
        ("budget: 64 GiB", "budget: 64 parsecs", "budget", "unknown size unit"),
        ("[720x720_5s, 960x960_10s]", "[720x720_5s, 1080p_5s]", "variant:", "unknown variant '1080p_5s'"),
        ("[all_gpu, keep_resident]", "[all_gpu, on_the_moon]", "policy:", "unknown policy 'on_the_moon'"),
        ('tolerance: "2%"', 'tolerance: "lots"', "tolerance", "got 'lots'"),
        ("rule: exact", "rule: roughly", "rule: roughly", "roughly"),
        ("params: {steps: 3}", "params: {stepz: 3}", "params", "takes no param 'stepz'"),
        ("when: {policy: keep_resident}", "when: {gpu: mi300}", "when", "when must map matrix axes"),
        ("scenario: pipeline", "scenario: teleport", "scenario", "unknown scenario 'teleport'"),
        ("schema_version: 1", "schema_version: 2", "schema_version", "schema_version 2"),
        ("  policy: [all_gpu", "   policy: [all_gpu", "policy", "invalid YAML"),
        ("params: {steps: 3}",
         "params: {steps: 3}\npresets:\n  full:\n    exclude:\n      - {policy: al_gpu}", "al_gpu",
         "exclude policy: 'al_gpu' is not a value of the matrix's policy axis"),
        ("params: {steps: 3}", "params: {steps: 3}\npresets:\n  full:\n    exclude: {policy: all_gpu}",
         "exclude", "exclude must be a list"),
    ],
)
def test_errors_name_file_and_line(tmp_path, old, new, needle, message):
    text = VALID.replace(old, new)
    assert text != VALID
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(str(path))
    text_lines = {line_of(text, needle), line_of(text, needle) - 1}  # YAML reports some errors on the key
    where, _, rest = str(info.value).partition(": ")
    assert where.startswith(str(path) + ":")
    assert int(where.rsplit(":", 1)[1]) in text_lines
    assert message in rest


def test_a_presets_exclude_leaves_out_the_points_it_names_there_only(tmp_path):
    text = VALID.replace("params: {steps: 3}", "params: {steps: 3}\npresets:\n  full:\n    exclude:\n"
                         "      - {variant: 960x960_10s, policy: keep_resident}")
    suite = load_suite(str(write(tmp_path, text)))
    cases = suite.expand(RunOptions(preset="full"))
    assert {(c.axes["variant"], c.axes["policy"]) for c in cases} == {
        ("720x720_5s", "all_gpu"), ("720x720_5s", "keep_resident"), ("960x960_10s", "all_gpu")}
    assert len(suite.expand(RunOptions(preset="tiny"))) == 4


def test_attention_backends_leaves_out_the_math_kernel_where_its_scores_fill_an_h200():
    full = load_suite("attention_backends").expand(RunOptions(preset="full"))
    cases = {(c.axes["variant"], c.axes["attention"]) for c in full}
    assert ("960x960_5s", "sdpa_math") not in cases
    assert {("720x720_5s", "sdpa_math"), ("960x960_10s", "sdpa_math"), ("960x960_5s", "sdpa")} <= cases


def test_unknown_suite_name_lists_the_known_ones():
    with pytest.raises(SuiteError, match="unknown suite 'nope'.*smoke"):
        load_suite("nope")


def test_unknown_attention_backend_is_rejected(tmp_path):
    text = VALID.replace("  policy: [all_gpu, keep_resident]", "  attention: [sdpa_math, warp_drive]")
    path = write(tmp_path, text)
    with pytest.raises(SuiteError,
                       match=rf"{path}:{line_of(text, 'attention')}: unknown attention 'warp_drive'"):
        load_suite(str(path))


def test_the_shipped_suites_load():
    for path in sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml")):
        assert all(suite.expand() for suite in load_suites(str(path)))
