"""repeated_generation: the live-tensor accounting the CPU leak check reads, and the suite through the CLI,
where a planted leak and a planted reload must fail their checks and the reference must pass."""

from __future__ import annotations

import pytest
import torch

from ovi_bench.scenarios.repeated import live_bytes
from tests.harness.test_fidelity import failed, run_suite

PLANTED = "tests.harness.planted_engines"


def test_live_bytes_counts_a_kept_tensor_exactly_once():
    before = live_bytes("cpu")
    kept = torch.ones(1 << 20, dtype=torch.uint8)
    view = kept[10:]  # shares the storage: not counted twice
    assert live_bytes("cpu") - before == 1 << 20
    del kept, view
    assert live_bytes("cpu") == before


def _suite(policy: str) -> str:
    return f"""schema_version: 1
name: repeated_test
description: one tiny repeated_generation case
scenario: repeated
matrix: {{variant: [720x720_5s], policy: [{policy}]}}
params: {{generations: 3, steps: 1, area: 1024, peak_floor: "64 MiB", leak_slack: "256 KiB"}}
checks:
  - {{metric: status, rule: expect_status, expected: ok}}
  - {{metric: repeat.peak_growth_bytes, rule: max, limit: spec.peak_allowed_growth_bytes}}
  - {{metric: repeat.leaked_bytes, rule: max, limit: spec.leak_allowed_bytes, note: "a leak"}}
  - {{metric: repeat.unexpected_reloads, rule: exact, expected: [], note: "a resident module was rebuilt"}}
"""


@pytest.mark.slow
def test_a_planted_leak_is_caught(tmp_path):
    proc, report = run_suite(tmp_path, _suite("all_gpu"), f"{PLANTED}:leaky")
    assert proc.returncode == 1, proc.stderr
    (message,) = failed(report)
    assert message == "repeat.leaked_bytes max: 2.00 MiB > limit 256.00 KiB (spec.leak_allowed_bytes): a leak"


@pytest.mark.slow
def test_a_planted_reload_of_a_resident_module_is_caught(tmp_path):
    proc, report = run_suite(tmp_path, _suite("keep_resident"), f"{PLANTED}:reloads_fusion")
    assert proc.returncode == 1, proc.stderr
    (message,) = failed(report)
    assert message == "repeat.unexpected_reloads exact: [fusion] != []: a resident module was rebuilt"


@pytest.mark.slow
def test_the_reference_measures_its_declared_reloads(tmp_path):
    proc, report = run_suite(tmp_path, _suite("all_gpu"), "reference")
    assert proc.returncode == 0, proc.stderr
    metrics = report["cases"][0]["metrics"]
    assert metrics["repeat.rebuilt_modules"] == [[], ["fusion", "text_encoder"], ["fusion", "text_encoder"]]
    assert metrics["repeat.reload_s"]["n"] == 2 and metrics["repeat.reload_module_bytes"] > 0
    assert metrics["repeat.leaked_bytes"] == 0
