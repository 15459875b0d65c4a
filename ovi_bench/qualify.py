"""`ovi-bench qualify HARDWARE`: what a machine must pass, in order, into one bundle (ovi_bench.bundle).

1. Before anything runs (a problem is bad input, `UsageError`): the profile exists, the device exists and
   is that profile's (`detect_profile`), the engine resolves, every suite's run options validate, each
   suite with baseline checks has a baseline for the profile (or `allow_missing_baseline`), and the bundle
   directory is new.
2. The doctor: a warning that makes the measurements meaningless (`STOPPING_WARNINGS`: the memory cannot
   hold the 10 s clip, SDPA will run the math kernel, the footprint cannot be read) stops the qualification
   with its reason; the others are recorded in the bundle's environment.json.
3. Each suite as its own `Run` (start, execute, report) with progress on the terminal, into a staging
   directory beside the bundle (`<bundle>.runs/`), which is removed once the bundle holds the runs. With
   `resume` an interrupted qualification goes on there: finished runs are kept, the interrupted one is
   finished from its journal (a full-scale qualification can outlast one session on a lent machine).
4. `write_bundle`: every report, the environment and doctor's findings, the profile, the suite and
   baseline files used (stored fidelity references too; with hashes) and summary.html; qualified when
   every suite passed.

The suites are `QUALIFY_SUITES` that exist in suites/ (output_fidelity once it is there). At the tiny
preset each runs as its cut in the smoke suite (`smoke.<suite>`, 6 CPU cases with committed cpu-tiny
baselines) where smoke has one: the whole matrices at tiny include oom_regression's keep_resident case,
which cannot run out of memory at tiny sizes and fails by design (docs/suites.md, Known limits). At full
scale a suite runs as its cut in suites/qualify.yaml where that has one (output_fidelity, whose whole
matrix would take most of an hour on an H200).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ovi_bench.baselines import baseline_metrics, baseline_path, load_baseline
from ovi_bench.bundle import write_bundle
from ovi_bench.doctor import DoctorWarning, doctor_report
from ovi_bench.engines import engine_factory
from ovi_bench.hardware import HardwareProfile, detect_profile, get_profile
from ovi_bench.job import RunOptions
from ovi_bench.journal import JOURNAL_NAME
from ovi_bench.launchers import Progress
from ovi_bench.records import Environment
from ovi_bench.references import references_path
from ovi_bench.report.terminal import render_terminal
from ovi_bench.run import PROJECT_BASELINES, Run, UsageError, new_run_id, validate, validate_device
from ovi_bench.suites import SUITES_DIR, Suite, load_suites, suite_path

QUALIFY_SUITES = ("attention_backends", "variant_latents", "oom_regression", "peak_memory_10s",
                  "output_fidelity")
# Doctor warnings under which a qualification would measure nothing worth judging (doctor.py's codes).
STOPPING_WARNINGS = {
    "gtt_too_small": "the 960x960_10s peak cannot fit in GTT",
    "pages_limit_too_small": "ttm's pages_limit caps the GPU below the 960x960_10s peak",
    "aotriton_flag": "SDPA will run the math kernel, which needs ~145 GB at 960x960_10s",
    "no_sysfs_card": "the VRAM + GTT footprint the limits are judged on cannot be read",
}
Doctor = Callable[[str], tuple[list[list[str]], list[DoctorWarning]]]


@dataclass
class QualifyOptions:
    hardware: str
    device: str
    preset: str = "full"
    engine: str = "reference"
    checkpoint_dir: str | None = None
    bundle_dir: Path | None = None  # None: reports/qualify-<hardware>-<run id>
    baselines: str | None = None  # None: the project's baselines/
    allow_missing_baseline: bool = False
    suites: list[str] = field(default_factory=list)  # a subset of the qualification's suites; empty: all
    resume: bool = False  # continue the qualification staged beside bundle_dir: finished runs are kept

    def run_options(self, suite: str) -> RunOptions:
        return RunOptions(suites=[suite], engine=self.engine, checkpoint_dir=self.checkpoint_dir,
                          preset=self.preset, device=self.device, hardware=self.hardware,
                          baselines=self.baselines, allow_missing_baseline=self.allow_missing_baseline)


@dataclass
class Qualification:
    qualified: bool
    reasons: list[str]  # why not
    suites: list[str]  # what was required
    bundle: Path | None = None  # None: stopped before anything ran
    warnings: list[DoctorWarning] = field(default_factory=list)  # recorded, not stopping


def qualification_suites(preset: str, chosen: Sequence[str] = ()) -> list[str]:
    """The suites to run, in order: those of QUALIFY_SUITES in suites/ (`chosen`: only these), each as its
    cut where there is one: in smoke at the tiny preset, in qualify (suites/qualify.yaml) otherwise."""
    names = [name for name in QUALIFY_SUITES if (SUITES_DIR / f"{name}.yaml").is_file()]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise UsageError(f"--suites {','.join(unknown)}: not a qualification suite (choose from "
                         f"{', '.join(names)})")
    names = [name for name in names if not chosen or name in chosen]
    cut_file = "smoke" if preset == "tiny" else "qualify"
    cuts = {suite.name for suite in load_suites(cut_file)}
    return [f"{cut_file}.{name}" if f"{cut_file}.{name}" in cuts else name for name in names]


def suite_files(name: str, suite: Suite) -> list[Path]:
    """The files a suite comes from: its own, and for an included one (smoke.x) the including file too."""
    files = [suite_path(name.partition(".")[0])] if "." in name else []
    return [*files, *([suite.path] if suite.path else [])]


def check_inputs(options: QualifyOptions,
                 names: Sequence[str]) -> tuple[HardwareProfile, dict[str, Suite], Path]:
    """Everything that can be wrong before a case runs (UsageError: one line, what and the fix)."""
    try:
        profile = get_profile(options.hardware)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    validate_device(options.device)
    device_type = "cuda" if options.device.startswith("cuda") else "cpu"
    if profile.device_type != device_type:
        raise UsageError(f"hardware {profile.name} is a {profile.device_type} profile, --device "
                         f"{options.device} is not (use --device "
                         f"{'cuda' if profile.device_type == 'cuda' else 'cpu'})")
    detected = detect_profile(options.device)
    if detected.name != profile.name:
        raise UsageError(f"--device {options.device} is detected as {detected.name} "
                         f"({detected.description}), not {profile.name}: qualify it as {detected.name}, or "
                         f"run on a {profile.name}")
    engine_factory(options.engine)
    suites: dict[str, Suite] = {}
    baselines = Path(options.baselines) if options.baselines else PROJECT_BASELINES
    missing = []
    for name in names:
        (suite,), _ = validate(options.run_options(name))
        suites[name] = suite
        scale = options.run_options(name).scale
        if baseline_metrics(suite.checks_at(scale)) and load_baseline(baselines, profile.name, name) is None:
            missing.append(name)
    if missing and not options.allow_missing_baseline:
        raise UsageError(f"no baseline for {profile.name} of {', '.join(missing)} in "
                         f"{baselines}: for a first qualification of this hardware add "
                         "--allow-missing-baseline (docs/suites.md, Qualify)")
    if options.resume:
        staged = staging_dir(options.bundle_dir) if options.bundle_dir else None
        if staged is None or not staged.is_dir():
            raise UsageError(f"--resume: {staged or 'no --bundle-dir'}: no staged qualification there; give "
                             "the --bundle-dir of the interrupted one")
        unknown = sorted(p.name for p in staged.iterdir() if p.name not in names)
        if unknown:
            raise UsageError(f"--resume: {staged} holds runs of {', '.join(unknown)}, not of this "
                             f"qualification's suites ({', '.join(names)})")
    bundle = options.bundle_dir or Path("reports") / f"qualify-{profile.name}-{new_run_id()}"
    for path in (bundle, *(() if options.resume else (staging_dir(bundle),))):
        if path.exists() and any(path.iterdir()):
            raise UsageError(f"{path} is not empty: give a new --bundle-dir")
    return profile, suites, bundle


def staging_dir(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".runs")


def run_suite(options: QualifyOptions, name: str, run_dir: Path, progress: Progress) -> Path:
    """One suite's run: kept when a resumed qualification finished it (its report is written), continued
    from its journal when it was interrupted, else started."""
    if options.resume and (run_dir / "report.json").is_file():
        progress(f"{name}: finished before, kept ({run_dir})")
        return run_dir
    if options.resume and (run_dir / JOURNAL_NAME).is_file():
        run = Run.resume(run_dir, progress)
    else:
        run = Run.start(options.run_options(name), run_dir, progress)
    report = run.report(run.execute())
    progress(render_terminal(report, run.run_dir))
    return run.run_dir


def qualify(options: QualifyOptions, progress: Progress, *, doctor: Doctor = doctor_report) -> Qualification:
    """Check the inputs and the machine, run every suite, write the bundle; see the module's docstring."""
    names = qualification_suites(options.preset, options.suites)
    profile, suites, bundle = check_inputs(options, names)
    facts, warnings = doctor(options.device)
    stopping = [w for w in warnings if w.code in STOPPING_WARNINGS]
    recorded = [w for w in warnings if w.code not in STOPPING_WARNINGS]
    for warning in warnings:
        progress(f"doctor [{warning.code}]: {warning.message}")
    if stopping:
        reasons = [f"doctor [{w.code}]: {STOPPING_WARNINGS[w.code]}: {w.message}" for w in stopping]
        return Qualification(False, reasons, names, warnings=recorded)

    staging = staging_dir(bundle)
    run_dirs = []
    try:
        for number, name in enumerate(names, start=1):
            progress(f"== qualify {profile.name} [{number}/{len(names)}] {name}")
            run_dirs.append(run_suite(options, name, staging / name, progress))
    except KeyboardInterrupt:
        progress(f"interrupted: the finished runs are in {staging}; continue with `ovi-bench qualify "
                 f"{options.hardware} --bundle-dir {bundle} --resume` (and the same options)")
        raise
    baselines = Path(options.baselines) if options.baselines else PROJECT_BASELINES
    environment: dict[str, Any] = {**Environment.capture().to_dict(),
                                   "doctor": {"facts": facts, "warnings": [asdict(w) for w in warnings]}}
    files = list(dict.fromkeys(path for name, suite in suites.items() for path in suite_files(name, suite)))
    used = [path for name in names for path in (baseline_path(baselines, profile.name, name),
                                                 references_path(baselines, profile.name, name))
            if path.is_file()]
    manifest = write_bundle(bundle, run_dirs=run_dirs, environment=environment, profile=profile,
                            suite_files=files, baseline_files=used, required_suites=names)
    shutil.rmtree(staging)
    return Qualification(manifest["qualified"], manifest["reasons"], names, bundle, recorded)
