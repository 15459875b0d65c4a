"""Issue 11.5: each file format has its own version; an older baseline is brought forward by
`ovi-bench baseline upgrade` (the tested path, on a v1 file as the project committed it), a newer one is
refused as written by a newer ovi-bench."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovi_bench.baselines import baseline_metrics, load_baseline, upgrade_file
from ovi_bench.cli import main
from ovi_bench.schema import BASELINE, BENCHMARK, COMPARISON, JOURNAL, REPORT, SchemaError
from ovi_bench.suites import find_suite

V1 = Path(__file__).parent / "data" / "baseline_v1.smoke.peak_memory_10s.json"


def test_every_format_has_its_own_version_and_name():
    formats = (REPORT, JOURNAL, BASELINE, COMPARISON, BENCHMARK)
    assert len({f.name for f in formats}) == len(formats)
    assert all(isinstance(f.version, int) and f.version >= 1 for f in formats)


def test_a_v1_baseline_upgrades_to_the_metrics_its_checks_read(tmp_path):
    old = json.loads(V1.read_text())
    assert old["schema_version"] == 1
    path = tmp_path / "cpu-tiny" / "smoke.peak_memory_10s.json"
    path.parent.mkdir()
    shutil.copy(V1, path)
    with pytest.raises(SchemaError, match="older than this ovi-bench's .*ovi-bench baseline upgrade"):
        load_baseline(tmp_path, "cpu-tiny", "smoke.peak_memory_10s")
    checks = find_suite("smoke.peak_memory_10s").checks
    assert upgrade_file(path, checks) == 1
    upgraded = load_baseline(tmp_path, "cpu-tiny", "smoke.peak_memory_10s")
    assert upgraded is not None
    keep = set(baseline_metrics(checks))
    for case_id, metrics in upgraded.cases.items():
        # only what a baseline check reads, with the values the v1 file held
        assert set(metrics) == keep & set(old["cases"][case_id])
        assert all(json.dumps(old["cases"][case_id][k]) == json.dumps(metrics[k]) for k in metrics
                   if not isinstance(old["cases"][case_id][k], dict))
    assert len(old["cases"][case_id]) > len(metrics)  # v1 kept every metric
    assert upgrade_file(path, checks) is None  # already current


def test_baseline_upgrade_command_rewrites_older_files_and_refuses_newer(tmp_path):
    directory = tmp_path / "baselines" / "cpu-tiny"
    directory.mkdir(parents=True)
    shutil.copy(V1, directory / "smoke.peak_memory_10s.json")
    result = CliRunner().invoke(main, ["baseline", "upgrade", "--baselines", str(tmp_path / "baselines")])
    assert result.exit_code == 0 and "schema_version 1 -> 2" in result.output
    data = json.loads((directory / "smoke.peak_memory_10s.json").read_text())
    data["schema_version"] = BASELINE.version + 1
    (directory / "smoke.peak_memory_10s.json").write_text(json.dumps(data))
    newer = CliRunner().invoke(main, ["baseline", "upgrade", "--baselines", str(tmp_path / "baselines")])
    assert newer.exit_code == 2 and "written by a newer ovi-bench" in newer.output
