"""Qualification bundles: one directory a person can send, read and verify.

`write_bundle` copies the run directories of each suite's run, writes the environment and hardware
profile, copies the suite and baseline files used, and writes `manifest.json` (its own schema version,
the sha256 of every other file, which suites were required and how each ended, qualified or not and
why) and `summary.html` (the same verdict for a person). `check_bundle` verifies one: every listed file
present and unchanged, nothing added, the manifest's schema version, and every required suite present
and passing, recomputed from the copied reports rather than taken from the manifest. The hashes show
what was edited after the run; they do not prove who wrote the bundle (it is not signed).

Layout: manifest.json, summary.html, environment.json, profile.json, runs/<run id>/..., suites/<file>,
baselines/<hardware>/<file>.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from ovi_bench.hardware import HardwareProfile
from ovi_bench.records import RunReport, SchemaError, canonical_json, write_atomic
from ovi_bench.report import load_report

BUNDLE_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SUMMARY = "summary.html"


@dataclass
class SuiteOutcome:
    suite: str
    outcome: str  # pass | fail | missing
    run: str | None = None  # the run's directory inside the bundle
    cases: int = 0
    failed: list[str] = field(default_factory=list)  # one line per failed check or errored case
    case_time_s: float = 0.0  # its cases' durations summed: a run resumed across machines has no wall time


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def suite_outcomes(reports: Mapping[str, RunReport], required: Sequence[str]) -> dict[str, SuiteOutcome]:
    """Per suite (the required ones first, then any other the reports ran): how it ended.

    A suite passes when it ran at least one case, none failed or errored (skipped cases do not fail it, as
    in a run's exit status) and its baseline checks had a baseline (a first run with
    --allow-missing-baseline is not a qualification). `reports` maps each run's directory in the bundle to
    its report.
    """
    outcomes: dict[str, SuiteOutcome] = {}
    for run, report in reports.items():
        for suite in report.suites:
            if suite in outcomes:
                raise ValueError(f"suite {suite!r} is in two runs: {outcomes[suite].run} and {run}")
            cases = [c for c in report.cases if c.suite == suite]
            failed = []
            for case in cases:
                outcome = report.outcomes[case.case_id]
                if outcome == "error":
                    first_line = next(iter((case.error or "").splitlines()), "")
                    failed.append(f"{case.case_id}: {case.status} in {case.stage or '-'}: {first_line}")
                failed += [f"{v.case_id}: {v.metric} {v.rule} {v.status}: {v.message}"
                           for v in report.verdicts_for(case.case_id) if v.failed]
            if suite in report.missing_baselines:
                failed.append(f"no baseline for {report.hardware}: its baseline checks were not judged")
            passed = bool(cases) and not failed
            if not cases:
                failed.append("no case of this suite ran")
            outcomes[suite] = SuiteOutcome(suite, "pass" if passed else "fail", run, len(cases), failed,
                                           round(sum(c.duration_s for c in cases), 1))
    ordered = {suite: outcomes.pop(suite, SuiteOutcome(suite, "missing")) for suite in required}
    return {**ordered, **outcomes}


def qualification(outcomes: Mapping[str, SuiteOutcome], required: Sequence[str]) -> tuple[bool, list[str]]:
    """(qualified, the reasons it is not): every required suite present and passing."""
    reasons = []
    for suite in required:
        outcome = outcomes.get(suite)
        if outcome is None or outcome.outcome == "missing":
            reasons.append(f"required suite {suite} did not run")
        elif outcome.outcome != "pass":
            reasons.append(f"required suite {suite} failed: " + "; ".join(outcome.failed[:3])
                           + (f" (and {len(outcome.failed) - 3} more)" if len(outcome.failed) > 3 else ""))
    return not reasons, reasons


def _copy(source: Path, bundle: Path, name: str) -> str:
    target = bundle / name
    if target.exists():
        raise ValueError(f"two inputs would be copied to {name} in the bundle")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return name


def _baseline_name(path: Path, hardware: str) -> str:
    """baselines/<hardware>/... : the file's path from its (last) hardware folder on."""
    folders = path.parts[:-1]
    if hardware not in folders:
        raise ValueError(f"{path} is not a baseline of {hardware} (no {hardware}/ folder in its path)")
    start = max(i for i, folder in enumerate(folders) if folder == hardware)
    return "/".join(("baselines", *path.parts[start:]))


def write_bundle(bundle: Path, *, run_dirs: Sequence[Path], environment: Mapping[str, Any],
                 profile: HardwareProfile, suite_files: Sequence[Path], baseline_files: Sequence[Path],
                 required_suites: Sequence[str]) -> dict[str, Any]:
    """Write a qualification bundle into `bundle` (a new or empty directory); returns the manifest.

    `baseline_files` are `<dir>/<hardware>/<suite>.json` and `<dir>/<hardware>/references/<suite>.json`
    paths (baselines and stored fidelity references) and keep what follows `<dir>/`.
    """
    bundle = Path(bundle)
    if bundle.exists() and any(bundle.iterdir()):
        raise ValueError(f"{bundle} is not empty: a bundle is written into a new directory")
    bundle.mkdir(parents=True, exist_ok=True)
    reports: dict[str, RunReport] = {}
    for run_dir in map(Path, run_dirs):
        report = load_report(run_dir)
        name = f"runs/{report.run_id}"
        if name in reports:
            raise ValueError(f"run {report.run_id} is given twice")
        for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
            _copy(path, bundle, f"{name}/{path.relative_to(run_dir).as_posix()}")
        reports[name] = report
    inputs = {"suites": {_copy(p, bundle, f"suites/{p.name}"): sha256(p) for p in map(Path, suite_files)},
              "baselines": {_copy(p, bundle, _baseline_name(p, profile.name)): sha256(p)
                            for p in map(Path, baseline_files)}}
    write_atomic(bundle / "environment.json",
                 canonical_json({"schema_version": BUNDLE_SCHEMA_VERSION, "environment": dict(environment)}))
    write_atomic(bundle / "profile.json",
                 canonical_json({"schema_version": BUNDLE_SCHEMA_VERSION, "profile": profile.to_dict()}))
    outcomes = suite_outcomes(reports, required_suites)
    qualified, reasons = qualification(outcomes, required_suites)
    manifest: dict[str, Any] = {
        "schema_version": BUNDLE_SCHEMA_VERSION, "hardware": profile.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "required_suites": list(required_suites), "qualified": qualified, "reasons": reasons,
        "suites": {suite: asdict(outcome) for suite, outcome in outcomes.items()}, "inputs": inputs,
    }
    write_atomic(bundle / SUMMARY, render_summary(manifest, environment))
    manifest["files"] = {path.relative_to(bundle).as_posix(): sha256(path)
                         for path in sorted(bundle.rglob("*")) if path.is_file()}
    write_atomic(bundle / MANIFEST, canonical_json(manifest))
    return manifest


CSS = """body { font: 15px/1.5 system-ui, sans-serif; max-width: 960px; margin: 24px auto; padding: 0 16px;
color: #1f2328; } h1 { font-size: 22px; } .verdict { font-size: 20px; font-weight: 600; padding: 10px 14px;
border-radius: 6px; color: #fff; } .yes { background: #1a7f37; } .no { background: #cf222e; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 5px 8px;
border-bottom: 1px solid #d0d7de; vertical-align: top; } td.pass { color: #1a7f37; }
td.fail, td.missing { color: #cf222e; font-weight: 600; } code { font-size: 13px; }"""


def render_summary(manifest: Mapping[str, Any], environment: Mapping[str, Any]) -> str:
    """One self-contained page: qualified or not and why, then each suite with its failed checks."""
    qualified = manifest["qualified"]
    verdict = (f'<p class="verdict {"yes" if qualified else "no"}">{escape(manifest["hardware"])}: '
               f'{"qualified" if qualified else "not qualified"}</p>')
    why = "".join(f"<li>{escape(reason)}</li>" for reason in manifest["reasons"]) or \
        "<li>every required suite ran and passed</li>"
    rows = []
    for suite, outcome in manifest["suites"].items():
        required = "yes" if suite in manifest["required_suites"] else "no"
        failed = "<br>".join(escape(line) for line in outcome["failed"]) or "-"
        minutes = f'{outcome.get("case_time_s", 0) / 60:.1f}'
        rows.append(f'<tr><td>{escape(suite)}</td><td>{required}</td><td '
                    f'class="{escape(outcome["outcome"])}">{escape(outcome["outcome"])}</td><td>{outcome["cases"]}</td>'
                    f'<td>{minutes}</td><td>{failed}</td></tr>')
    total_min = sum(o.get("case_time_s", 0) for o in manifest["suites"].values()) / 60
    facts = [(key, environment.get(key)) for key in ("device_name", "device_arch", "torch", "hip", "cuda",
                                                    "driver", "git_commit", "date")]
    env_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts if v)
    inputs = "".join(f"<tr><td><code>{escape(name)}</code></td><td><code>{digest[:16]}</code></td></tr>"
                     for group in manifest["inputs"].values() for name, digest in group.items())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>ovi-bench qualification: '
            f'{escape(manifest["hardware"])}</title><style>{CSS}</style></head><body>'
            f'<h1>ovi-bench qualification bundle</h1>{verdict}<h2>Why</h2><ul>{why}</ul>'
            f'<h2>Suites</h2><table><tr><th>suite</th><th>required</th><th>outcome</th><th>cases</th>'
            f'<th>case time (min)</th><th>failed checks</th></tr>{"".join(rows)}</table>'
            f'<p>Case time in all: {total_min:.1f} min (the cases\' durations summed; a qualification '
            'resumed on another machine or day has no single wall time).</p>'
            f'<h2>Environment</h2><table>{env_rows}</table>'
            '<h2>Suite and baseline files used '
            f'(sha256)</h2><table>{inputs or "<tr><td>none</td></tr>"}</table><p>Created '
            f'{escape(manifest["created"])}, bundle schema {manifest["schema_version"]}. Verify with '
            '<code>ovi-bench check-bundle DIR</code>.</p></body></html>\n')


def check_bundle(bundle: Path, required_suites: Sequence[str] | None = None) -> list[str]:
    """The problems found in a bundle (empty: it is complete, unedited and qualifies).

    `required_suites`: the suites the checker insists on (default: the manifest's own list).
    """
    bundle = Path(bundle)
    try:
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{MANIFEST}: cannot read ({exc})"]
    if not isinstance(manifest, dict) or manifest.get("schema_version") != BUNDLE_SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        return [f"{MANIFEST}: bundle schema_version {found!r}, this checker reads {BUNDLE_SCHEMA_VERSION}"]
    problems = []
    listed: dict[str, str] = manifest.get("files", {})
    for name, digest in sorted(listed.items()):
        path = bundle / name
        if not path.is_file():
            problems.append(f"missing file {name}")
        elif sha256(path) != digest:
            problems.append(f"{name}: sha256 differs from the manifest (edited after the run)")
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {MANIFEST}
    problems += [f"{name}: not in the manifest (added after the run)"
                 for name in sorted(present - set(listed))]
    for group, files in manifest.get("inputs", {}).items():
        problems += [f"{name}: {group} input hash differs from the file's"
                     for name, digest in files.items() if listed.get(name) != digest]
    reports: dict[str, RunReport] = {}
    for name in sorted(n for n in listed if n.startswith("runs/") and n.endswith("/report.json")):
        if (bundle / name).is_file():
            try:
                reports[name.rsplit("/", 1)[0]] = load_report(bundle / name)
            except SchemaError as exc:
                problems.append(str(exc))
    required = list(required_suites if required_suites is not None else manifest.get("required_suites", []))
    try:
        outcomes = suite_outcomes(reports, required)
    except ValueError as exc:
        return [*problems, str(exc)]
    problems += qualification(outcomes, required)[1]
    claimed = manifest.get("suites", {})
    for suite, outcome in outcomes.items():
        if suite in claimed and claimed[suite].get("outcome") != outcome.outcome:
            problems.append(f"suite {suite}: the manifest says {claimed[suite].get('outcome')}, "
                            f"its report says {outcome.outcome}")
    return problems
