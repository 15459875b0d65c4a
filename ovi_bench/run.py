"""One `ovi-bench run`: started (everything validated, the run directory and journal header written) or
resumed from a journal, executed case by case, then judged and reported.

Validation happens before the first case: the suites, the engine and what it declares it supports, the axis
values, the device, the hardware profile and the baselines the checks will read. A case the engine cannot
run is recorded as `unsupported` or `skipped` with the engine's reason, without starting a worker.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ovi_bench.baselines import judge_run, load_baseline
from ovi_bench.engines import engine_factory
from ovi_bench.engines.base import DTYPES, Capabilities, check_inputs_hook
from ovi_bench.hardware import HardwareProfile, detect_profile, get_profile
from ovi_bench.job import Job, RunOptions
from ovi_bench.journal import JOURNAL_NAME, append_result, read_journal, write_header
from ovi_bench.launchers import Progress, run_case
from ovi_bench.records import CaseResult, Environment, OutputError, RunReport
from ovi_bench.references import attach_stored_reference
from ovi_bench.report import write_all
from ovi_bench.scenarios import get_scenario
from ovi_bench.suites import SUITES_DIR, Suite, load_suites, validate_axis
from ovi_bench.worker import unsupported_reason

PROJECT_BASELINES = SUITES_DIR.parent / "baselines"  # found the way suites are: from the package


class UsageError(ValueError):
    """A bad option value or input found before anything runs (unknown variant, device, profile ...)."""


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass
class Run:
    run_id: str
    run_dir: Path
    options: RunOptions
    suites: list[Suite]
    profile: HardwareProfile
    environment: Environment
    done: list[CaseResult]
    progress: Progress

    @property
    def journal(self) -> Path:
        return self.run_dir / JOURNAL_NAME

    @property
    def baselines_dir(self) -> Path:
        return Path(self.options.baselines) if self.options.baselines else PROJECT_BASELINES

    @classmethod
    def start(cls, options: RunOptions, run_dir: Path | None, progress: Progress) -> Run:
        suites, profile = validate(options)
        run_id, environment = new_run_id(), Environment.capture()
        run_dir = run_dir or Path("reports") / run_id
        run = cls(run_id, run_dir, options, suites, profile, environment, [], progress)
        if options.checkpoint_dir:
            run.check_inputs()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_header(run.journal, run_id, options, environment)
        except FileExistsError:
            raise UsageError(f"{run.journal} exists: use --resume {run_dir} or "
                             "another --report-dir") from None
        except OSError as exc:
            raise OutputError(f"cannot write report directory {run_dir}: {exc.strerror or exc}") from None
        return run

    @classmethod
    def resume(cls, run_dir: Path, progress: Progress, *, suites: list[str] | None = None,
               timeout_s: float | None = None) -> Run:
        path = run_dir / JOURNAL_NAME
        journal = read_journal(path, warn=progress)
        options = journal.options
        if suites and suites != options.suites:
            raise UsageError(f"--resume {run_dir}: that run is of {options.suites}, not {suites}")
        if timeout_s is not None:
            options.timeout_s = timeout_s
        loaded, profile = validate(options)
        with open(path, "r+b") as file:  # drop a torn last line so the next result starts on its own line
            file.truncate(journal.valid_bytes)
        return cls(journal.run_id, run_dir, options, loaded, profile, journal.environment, journal.done,
                   progress)

    def check_inputs(self) -> None:
        """What the engine can tell of its inputs before anything runs, once per distinct configuration."""
        check = check_inputs_hook(engine_factory(self.options.engine)())
        if check is None:
            return
        for config in {job.config for job in self.jobs()}:
            try:
                check(config)
            except ValueError as exc:
                raise UsageError(str(exc).splitlines()[0]) from None

    def jobs(self) -> list[Job]:
        """Every case; a fidelity case with a stored reference for this hardware is pointed at it."""
        known: dict[Path, set[str]] = {}
        return [attach_stored_reference(job, self.baselines_dir, self.profile.name, known)
                for suite in self.suites for job in suite.expand(self.options, self.profile)]

    def execute(self) -> list[CaseResult]:
        """Every case not already in the journal, appended to it as each ends."""
        jobs = self.jobs()
        capabilities = probe_capabilities(self.options.engine, self.options.device, self.options.dtype,
                                          backends={job.config.attention for job in jobs
                                                    if "attention" in get_scenario(job.scenario).axes})
        finished = {c.case_id: c for c in self.done}
        results = []
        for number, job in enumerate(jobs, start=1):
            label = f"[{number}/{len(jobs)}] {job.case_id}"
            if job.case_id in finished:
                self.progress(f"{label} already in the journal ({finished[job.case_id].status})")
                results.append(finished[job.case_id])
                continue
            scenario = get_scenario(job.scenario)
            refusal = unsupported_reason(job, capabilities, scenario.axes, scenario.features(job))
            if refusal is not None:
                result = CaseResult(case_id=job.case_id, suite=job.suite, params=job.case_params,
                                    status=refusal[0], error=refusal[1],
                                    started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            else:
                result = run_case(job, progress=self.progress, label=label)
            append_result(self.journal, result)
            where = f" in {result.stage}" if result.stage else ""
            why = f": {result.error}" if result.status in ("skipped", "unsupported") else ""
            self.progress(f"{label} {result.status}{where}{why} ({result.duration_s:.1f}s)")
            results.append(result)
        return results

    def report(self, results: list[CaseResult]) -> RunReport:
        """Derive cross-case metrics, judge every suite against its baselines, write every report format."""
        for suite in self.suites:
            derive = get_scenario(suite.scenario).derive
            if derive is not None:
                derive([c for c in results if c.suite == suite.name])
        report = RunReport(run_id=self.run_id, suites=[s.name for s in self.suites],
                           engine=self.options.engine,
                           weights=self.options.weights, hardware=self.profile.name,
                           environment=self.environment, cases=results,
                           allow_missing_baseline=self.options.allow_missing_baseline)
        scale = self.options.scale
        for suite in self.suites:
            left_out = [c.describe() for c in suite.checks if c not in suite.checks_at(scale)]
            if left_out:
                self.progress(f"{suite.name}: not judged at {scale} scale (they hold only at another): "
                              f"{', '.join(left_out)}")
            cases = [c for c in results if c.suite == suite.name]
            for check in suite.checks_at(scale):
                if (check.when or check.unless) and not any(check.applies_to(c) for c in cases):
                    condition = " ".join(f"{key} {value}" for key, value in
                                         (("when", check.when), ("unless", check.unless)) if value)
                    self.progress(f"{suite.name}: check {check.describe()} {condition} "
                                  "matched no case of this run")
        report = judge_run(report, {s.name: s.checks_at(scale) for s in self.suites}, self.baselines_dir,
                           profile=self.profile)
        write_all(report, self.run_dir)
        return report


def probe_capabilities(engine: str, device: str, dtype: str,
                       backends: Collection[str] | None = None) -> Capabilities:
    """What the engine declares on this device, asked once per run; `backends`: the attention backends the
    run asks for (None: all; probing one can cost seconds, flex compiles). On an accelerator the engine is
    built in a spawned process, so the parent never holds a device context while the cases measure memory."""
    if not device.startswith("cuda"):
        return _capabilities(engine, device, dtype)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return Capabilities.from_dict(pool.apply(_capabilities_dict, (engine, device, dtype, backends)))


def _capabilities(engine: str, device: str, dtype: str) -> Capabilities:
    return engine_factory(engine)().capabilities(device, dtype)


def _capabilities_dict(engine: str, device: str, dtype: str, backends: Collection[str] | None) -> dict:
    return _capabilities(engine, device, dtype).to_dict(attention=backends)


def validate(options: RunOptions) -> tuple[list[Suite], HardwareProfile]:
    """Everything that can be known before a case runs; a problem raises one line naming it and the fix."""
    suites = [suite for name in options.suites for suite in load_suites(name)]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise UsageError(f"two suites share a name: {names}")
    engine_factory(options.engine)
    if options.nproc and not any("nproc" in get_scenario(s.scenario).axes for s in suites):
        raise UsageError(f"--nproc: no suite of {options.suites} has an nproc axis (sequence_parallel has)")
    for axis, values in options.overrides().items():
        try:
            validate_axis(axis, values)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if options.dtype not in DTYPES:
        raise UsageError(f"--dtype {options.dtype!r}: use one of {', '.join(DTYPES)}")
    validate_device(options.device)
    if options.checkpoint_dir and not Path(options.checkpoint_dir).is_dir():
        raise UsageError(f"--checkpoint-dir {options.checkpoint_dir}: no such directory")
    try:
        profile = get_profile(options.hardware) if options.hardware else detect_profile(options.device)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    baselines = Path(options.baselines) if options.baselines else PROJECT_BASELINES
    if options.baselines and not baselines.is_dir() and not options.allow_missing_baseline:
        raise UsageError(f"--baselines {baselines}: no such directory (a first run on new hardware: "
                         "add --allow-missing-baseline)")
    for suite in suites:  # a broken baseline file is found now, not after hours of cases
        load_baseline(baselines, profile.name, suite.name)
        if not suite.expand(options, profile):
            raise UsageError(f"{suite.name}: no case to run (the suite's exclude leaves out every point of "
                             "the matrix these options choose): pick other --variant/--attention/--policy")
    return suites, profile


def validate_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r}: not a device (use cpu, cuda or cuda:N)") from None
    if parsed.type == "cpu":
        return
    if parsed.type != "cuda":
        raise UsageError(f"--device {device!r}: ovi-bench runs on cpu or cuda (ROCm devices are cuda too)")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA/HIP device on this machine (use --device cpu)")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")


__all__ = ["PROJECT_BASELINES", "Run", "UsageError", "probe_capabilities", "validate", "validate_device"]
