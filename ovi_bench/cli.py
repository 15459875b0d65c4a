"""`ovi-bench`: each command validates its arguments at the edge, then calls a function that returns the
exit status. 0 all pass; 1 a check failed or a regression; 2 usage or input error; 3 the harness itself
could not run. Errors are one line (`--debug` shows the traceback).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_HARNESS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _user_errors() -> tuple[type[BaseException], ...]:
    from ovi_bench.engines import EngineSpecError
    from ovi_bench.journal import JournalError
    from ovi_bench.records import OutputError
    from ovi_bench.run import UsageError
    from ovi_bench.schema import SchemaError
    from ovi_bench.suites import SuiteError

    return (SuiteError, EngineSpecError, JournalError, SchemaError, OutputError, UsageError)


def _usage(message: str) -> Exception:
    from ovi_bench.run import UsageError

    return UsageError(message)


def _err(message: str) -> None:
    click.echo(message, err=True)


def command_status(func: Callable[..., int]) -> Callable[..., None]:
    """Turn a command's returned status and its exceptions into the process exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        debug = kwargs.pop("debug", False) or click.get_current_context().find_root().params.get("debug")
        try:
            status = func(*args, **kwargs)
        except _user_errors() as exc:
            if debug:
                traceback.print_exc()
            _err(f"error: {exc}")
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # the reader went away (`ovi-bench doctor | head`): end as a shell would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)
        except Exception as exc:  # noqa: BLE001 - the harness itself failed: one line, exit 3
            if debug:
                traceback.print_exc()
            _err(f"harness error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
            sys.exit(EXIT_HARNESS)
        sys.exit(status)

    return wrapper


debug_option = click.option("--debug", is_flag=True, help="Show tracebacks.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
def main(debug: bool) -> None:
    """Benchmark and validate Ovi engines: run suites, compare runs, manage baselines."""


# ---- run ---------------------------------------------------------------------------------------------------

@main.command()
@click.argument("suites", nargs=-1)
@click.option("--engine", default="reference", show_default=True,
              help="reference, fake, checkout:PATH or MODULE:FACTORY.")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path),
              help="Real weights (upstream ckpts/ layout).")
@click.option("--preset", type=click.Choice(["tiny", "full"]), default="tiny", show_default=True,
              help="Size of the synthetic weights when no --checkpoint-dir is given.")
@click.option("--variant", "variants", multiple=True, help="Variant(s) to run instead of the suite's.")
@click.option("--policy", help="Placement policy to run instead of the suite's.")
@click.option("--attention", "attention", multiple=True, help="Attention backend(s) instead of the suite's.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="auto", show_default=True,
              help="auto: bfloat16 on an accelerator, float32 on the CPU")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic weights.")
@click.option("--hardware", help="Hardware profile (default: detected from --device).")
@click.option("--baselines", type=click.Path(path_type=Path),
              help="Baselines directory (default: the project's baselines/, found like its suites/).")
@click.option("--allow-missing-baseline", is_flag=True,
              help="First run on new hardware: a suite with no baseline here does not fail the run.")
@click.option("--report-dir", type=click.Path(path_type=Path),
              help="Run directory (default reports/<run id>).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Denoise runs per case (more timing samples).")
@click.option("--timeout", help="Per-case time limit, e.g. '600 s' (default: the suite's, else 1 h).")
@click.option("--resume", type=click.Path(path_type=Path), help="Finish an interrupted run directory.")
@click.option("--budget", help="Memory budget per case: a size such as '64 GiB', or 'profile'.")
@click.option("--nproc", "nproc", type=int, multiple=True,
              help="Ranks per case (torchrun, one per GPU) instead of the suite's nproc axis.")
@debug_option
@command_status
def run(suites: tuple[str, ...], engine: str, checkpoint_dir: Path | None, preset: str,
        variants: tuple[str, ...], policy: str | None, attention: tuple[str, ...], device: str, dtype: str,
        seed: int, hardware: str | None, baselines: Path | None, allow_missing_baseline: bool,
        report_dir: Path | None, repeat: int, timeout: str | None, resume: Path | None, budget: str | None,
        nproc: tuple[int, ...]) -> int:
    """Run SUITE... (names from suites/ or YAML paths) and judge the results."""
    from ovi_bench.job import RunOptions
    from ovi_bench.run import Run
    from ovi_bench.units import parse_duration, parse_size

    if any(n < 1 for n in nproc):
        raise _usage(f"--nproc must be >= 1 (ranks per case), got {min(nproc)}")
    timeout_s = _parse(parse_duration, timeout, "--timeout")
    if timeout_s is not None and timeout_s <= 0:
        raise _usage(f"--timeout {timeout}: a time limit must be positive (e.g. '600 s')")
    if budget is not None and budget != "profile":
        _parse(parse_size, budget, "--budget")
    if resume is not None:
        return execute(Run.resume(resume, _err, suites=list(suites), timeout_s=timeout_s))
    if not suites:
        raise _usage("give at least one SUITE (see `ovi-bench list suites`) or --resume RUN_DIR")
    options = RunOptions(
        suites=list(suites), engine=engine, checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
        preset=preset, variants=list(variants), policy=policy, attention=list(attention), device=device,
        dtype=dtype, seed=seed, hardware=hardware, baselines=str(baselines) if baselines else None,
        allow_missing_baseline=allow_missing_baseline, repeat=repeat, timeout_s=timeout_s, budget=budget,
        nproc=list(nproc),
    )
    return execute(Run.start(options, report_dir, _err))


def _parse(parser: Callable[[Any], Any], value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return parser(value)
    except ValueError as exc:
        raise _usage(f"{option}: {exc}") from None


def execute(run: Any) -> int:
    """Run the cases missing from the journal, write the reports and print the verdict table."""
    from ovi_bench.report.terminal import render_terminal

    _err(f"baselines: {run.baselines_dir}")
    try:
        results = run.execute()
    except KeyboardInterrupt:
        _err(f"interrupted: finished cases are in {run.journal}; finish with `ovi-bench run "
             f"--resume {run.run_dir}`")
        return EXIT_INTERRUPTED
    report = run.report(results)
    _err(render_terminal(report, run.run_dir))
    if report.input_error is not None:
        _err(f"error: every case failed on the same input: {report.input_error}")
    return report.exit_status


# ---- compare, report, baseline -----------------------------------------------------------------------------

@main.command()
@click.argument("result_a", type=click.Path(path_type=Path))
@click.argument("result_b", type=click.Path(path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="Show every value, not only those that changed.")
@click.option("--format", "fmt", type=click.Choice(["text", "md", "json"]), default="text", show_default=True)
@click.option("--tolerance", default="5%", show_default=True,
              help="Numbers within this relative difference (times: their medians) count as unchanged.")
@command_status
def compare(result_a: Path, result_b: Path, show_all: bool, fmt: str, tolerance: str) -> int:
    """Compare two runs (run directories or report.json files): per suite and case, what changed."""
    from ovi_bench.compare import compare as compare_reports
    from ovi_bench.report import load_report
    from ovi_bench.units import parse_fraction

    comparison = compare_reports(load_report(result_a), load_report(result_b),
                                 _parse(parse_fraction, tolerance, "--tolerance"))
    click.echo(comparison.render(fmt, show_all))
    return EXIT_OK


@main.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "html", "junit", "json"]), default="md",
              show_default=True)
@command_status
def report(result: Path, fmt: str) -> int:
    """Print a run's report in one format."""
    from ovi_bench.report import RENDERERS, load_report

    name = {"md": "report.md", "html": "report.html", "junit": "junit.xml", "json": "report.json"}[fmt]
    click.echo(RENDERERS[name](load_report(result)))
    return EXIT_OK


@main.group()
def baseline() -> None:
    """Show or update the stored baselines (baselines/<hardware>/<suite>.json)."""


baselines_option = click.option("--baselines", type=click.Path(path_type=Path),
                                help="Baselines directory (default: the project's baselines/).")


def _baselines_dir(baselines: Path | None) -> Path:
    from ovi_bench.run import PROJECT_BASELINES

    return baselines or PROJECT_BASELINES


@baseline.command("show")
@click.option("--hardware", help="Only this hardware profile.")
@baselines_option
@command_status
def baseline_show(hardware: str | None, baselines: Path | None) -> int:
    from ovi_bench.baselines import baseline_files, load_baseline_file

    baselines = _baselines_dir(baselines)
    rows = []
    for path in baseline_files(baselines, hardware or "*"):
        stored = load_baseline_file(path)
        assert stored is not None
        prov = stored.provenance
        rows.append([stored.hardware, stored.suite, prov.get("processor") or "-", len(stored.cases),
                     prov.get("engine"), prov.get("weights"), (prov.get("git_commit") or "")[:10],
                     prov.get("date")])
    if not rows:
        click.echo(f"no baselines in {baselines}" + (f" for {hardware}" if hardware else ""))
    else:
        click.echo(tabulate(rows,
                            headers=["hardware", "suite", "processor", "cases", "engine", "weights", "commit",
                                     "date"]))
    return EXIT_OK


@baseline.command("update")
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--hardware", help="Store under this profile (default: the run's).")
@baselines_option
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
@click.option("--this-processor", is_flag=True,
              help="Store only this CPU model's times, beside the suite's baseline (processors/<model>/).")
@command_status
def baseline_update(result: Path, hardware: str | None, baselines: Path | None, dry_run: bool,
                    this_processor: bool) -> int:
    """Store RESULT's successful cases as the baseline, showing every value that changes; the reference
    outputs of its output_fidelity cases are stored too (references/<suite>.json). CPU times compare only
    on the processor model that recorded them: --this-processor adds another model's times alone."""
    from ovi_bench.baselines import update_baseline
    from ovi_bench.hardware import PROFILES
    from ovi_bench.references import update_references
    from ovi_bench.report import load_report
    from ovi_bench.suites import find_suite

    report = load_report(result)
    if hardware is not None and hardware not in PROFILES and hardware != report.hardware:
        raise _usage(f"--hardware {hardware!r}: not a known profile (known: "
                     f"{', '.join(PROFILES)}; this run's is {report.hardware})")
    checks = {suite: find_suite(suite).checks for suite in report.suites} if this_processor else None
    diff = update_baseline(report, _baselines_dir(baselines), hardware, write=not dry_run,
                           this_processor=checks)
    click.echo(diff.render())
    for suite, path in diff.paths.items():
        click.echo(f"{'would write' if dry_run else 'wrote'} {path} ({suite})")
    if this_processor:
        return EXIT_OK  # reference outputs are the engine's, not the processor's
    for store, cases in update_references(report, _baselines_dir(baselines), hardware,
                                          write=not dry_run).items():
        click.echo(f"{'would store' if dry_run else 'stored'} {len(cases)} reference output(s) in {store}")
    return EXIT_OK


@baseline.command("upgrade")
@baselines_option
@click.option("--dry-run", is_flag=True, help="Only say which files would be upgraded.")
@command_status
def baseline_upgrade(baselines: Path | None, dry_run: bool) -> int:
    """Rewrite baseline files of older schema versions in this ovi-bench's format (each suite's checks say
    which metrics a baseline keeps)."""
    from ovi_bench.baselines import baseline_files, upgrade_file
    from ovi_bench.schema import BASELINE
    from ovi_bench.suites import find_suite

    directory = _baselines_dir(baselines)
    paths = baseline_files(directory)
    if not paths:
        raise _usage(f"no baseline files in {directory}")
    for path in paths:
        version = upgrade_file(path, find_suite(path.stem).checks, write=not dry_run)
        if version is None:
            click.echo(f"{path}: already schema_version {BASELINE.version}")
        else:
            click.echo(f"{path}: schema_version {version} -> "
                       f"{BASELINE.version}{' (dry run)' if dry_run else ''}")
    return EXIT_OK


# ---- list, doctor ------------------------------------------------------------------------------------------

@main.command("list")
@click.argument("what",
                type=click.Choice(["suites", "engines", "backends", "variants", "policies", "hardware"]))
@click.option("--device", default="cpu", show_default=True, help="Device whose backends to probe.")
@click.option("--engine", default="reference", show_default=True, help="Engine whose backends to list.")
@command_status
def list_command(what: str, device: str, engine: str) -> int:
    """List what a run can be given."""
    click.echo(tabulate(*_listing(what, device, engine)))
    return EXIT_OK


def _listing(what: str, device: str, engine: str = "reference") -> tuple[list[list[Any]], list[str]]:
    if what == "suites":
        return _suite_rows(), ["suite", "scenario", "description"]
    if what == "engines":
        from ovi_bench.engines import ENGINES

        return ([[name, target] for name, target in ENGINES.items()],
                ["engine", "factory (or pass MODULE:FACTORY)"])
    if what == "backends":
        from ovi_bench.run import probe_capabilities

        attention = probe_capabilities(engine, device, "auto").attention
        return ([[name, "yes" if reason is None else "no", reason or ""]
                 for name, reason in attention.items()],
                ["backend", "available", f"reason ({engine} on {device})"])
    if what == "variants":
        from ovi_bench.variant_facts import VARIANTS, variant_facts

        facts = [variant_facts(name) for name in VARIANTS]
        return ([[f.name, f.video_latent_frames, f.audio_latent_length,
                  "x".join(map(str, f.video_latent_shape())), f.prompt_format] for f in facts],
                ["variant", "latent frames", "audio latents", "video latent", "prompt format"])
    if what == "policies":
        from ovi_bench.engines.base import POLICIES

        return [[name, description] for name, description in POLICIES.items()], ["policy", "description"]
    from ovi_bench.hardware import PROFILES
    from ovi_bench.units import format_size

    return ([[p.name, p.description, format_size(p.usable_bytes), "yes" if p.unified_memory else "no",
              ", ".join(f"{k}={format_size(v)}" for k, v in p.limits.items())] for p in PROFILES.values()],
            ["profile", "description", "usable", "unified", "limits"])


def _suite_rows() -> list[list[Any]]:
    """What `run` accepts: each suite file's name, its scenario (or the suites it includes) and the start of
    its description, cut at a word."""
    import textwrap

    import yaml

    from ovi_bench.suites import available_suites, load_suites, suite_path

    rows = []
    for name in available_suites():
        suites = load_suites(name)
        if len(suites) == 1 and suites[0].name == name:
            scenario = suites[0].scenario
        else:
            scenario = f"includes {len(suites)} suites"
        description = yaml.safe_load(suite_path(name).read_text(encoding="utf-8")).get("description", "")
        rows.append([name, scenario, textwrap.shorten(description, 80, placeholder=" ...")])
    return rows


@main.command()
@click.option("--device", default=None, help="Device to inspect (default: cuda if available, else cpu).")
@command_status
def doctor(device: str | None) -> int:
    """What this machine offers: torch, CUDA/HIP, device, memory, attention backends, flags, and traps."""
    from ovi_bench.doctor import default_device, doctor_report

    facts, warnings = doctor_report(device)
    click.echo(tabulate(facts, tablefmt="plain"))
    rows, headers = _listing("backends", device or default_device())
    click.echo("\nattention backends:\n" + tabulate(rows, headers=headers))
    for warning in warnings:
        click.echo(f"warning [{warning.code}]: {warning.message}")
    return EXIT_OK


# ---- qualify, check-bundle ---------------------------------------------------------------------------------

@main.command()
@click.argument("hardware")
@click.option("--device", default=None, help="Device to qualify (default: cuda if available, else cpu).")
@click.option("--preset", type=click.Choice(["tiny", "full"]), default="full", show_default=True,
              help="Size of the synthetic weights when no --checkpoint-dir is given (tiny: the smoke cuts).")
@click.option("--engine", default="reference", show_default=True,
              help="reference, fake, checkout:PATH or MODULE:FACTORY.")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path),
              help="Real weights (upstream ckpts/ layout).")
@click.option("--bundle-dir", type=click.Path(path_type=Path),
              help="Where the bundle goes, a new directory (default reports/qualify-<hardware>-<run id>).")
@click.option("--baselines", type=click.Path(path_type=Path),
              help="Baselines directory (default: the project's baselines/).")
@click.option("--allow-missing-baseline", is_flag=True,
              help="First qualification of new hardware: run although baselines are missing (not qualified "
                   "until they are reviewed and stored with `baseline update`).")
@click.option("--suites", "suites", help="Only these qualification suites, comma-separated.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted qualification of --bundle-dir: its finished runs are kept, the "
                   "interrupted one is finished from its journal.")
@debug_option
@command_status
def qualify(hardware: str, device: str | None, preset: str, engine: str, checkpoint_dir: Path | None,
            bundle_dir: Path | None, baselines: Path | None, allow_missing_baseline: bool,
            suites: str | None, resume: bool) -> int:
    """Qualify HARDWARE (a profile of `ovi-bench list hardware`): doctor, then every qualification suite,
    then one bundle that `ovi-bench check-bundle` verifies."""
    from ovi_bench.doctor import default_device
    from ovi_bench.qualify import QualifyOptions
    from ovi_bench.qualify import qualify as run_qualification

    options = QualifyOptions(
        hardware=hardware, device=device or default_device(), preset=preset, engine=engine,
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None, bundle_dir=bundle_dir,
        baselines=str(baselines) if baselines else None, allow_missing_baseline=allow_missing_baseline,
        suites=[name.strip() for name in suites.split(",") if name.strip()] if suites else [], resume=resume)
    began = time.monotonic()
    result = run_qualification(options, _err)
    _err(f"qualify took {(time.monotonic() - began) / 60:.1f} min wall time"
         + (" (this invocation; the runs finished before it are not counted)" if resume else ""))
    if result.bundle is not None:
        _err(f"bundle: {result.bundle} (summary.html; verify with `ovi-bench check-bundle {result.bundle}`)")
    subset = f" (only {', '.join(result.suites)})" if options.suites else ""
    if result.qualified:
        click.echo(f"qualified: {hardware}{subset}")
        return EXIT_OK
    click.echo(f"not qualified: {'; '.join(result.reasons)}")
    return EXIT_FAILED


@main.command("check-bundle")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--require", "required", multiple=True,
              help="A suite the bundle must hold and pass (repeatable; default: the manifest's list).")
@command_status
def check_bundle_command(bundle: Path, required: tuple[str, ...]) -> int:
    """Verify a qualification bundle: every file present and unchanged, every required suite passing."""
    from ovi_bench.bundle import check_bundle

    if not bundle.is_dir():
        raise _usage(f"check-bundle {bundle}: no such directory (give a bundle written by "
                     "`ovi-bench qualify`)")
    problems = check_bundle(bundle, list(required) or None)
    for problem in problems:
        click.echo(problem)
    if problems:
        return EXIT_FAILED
    click.echo(f"{bundle}: complete, unedited, qualified")
    return EXIT_OK



# ---- estimate, frontier (the memory model: ovi_bench.estimate, ovi_bench.frontier) -------------------------

def _profile(name: str) -> Any:
    from ovi_bench.hardware import get_profile

    try:
        return get_profile(name)
    except KeyError as exc:
        raise _usage(str(exc.args[0])) from None


@main.command()
@click.option("--variant", required=True, help="e.g. 960x960_10s (see `ovi-bench list variants`).")
@click.option("--policy", required=True, help="all_gpu, cpu_offload, keep_resident or sequential.")
@click.option("--hardware", default="consumer-24gb", show_default=True,
              help="Profile to fit (`list hardware`).")
@click.option("--tiled/--untiled", default=False, show_default=True, help="Spatially tiled video decode.")
@click.option("--preset", type=click.Choice(["tiny", "full"]), default="full", show_default=True)
@click.option("--area", type=click.IntRange(min=1), help="Frame area in pixels (default: the variant's).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@command_status
def estimate(variant: str, policy: str, hardware: str, tiled: bool, preset: str, area: int | None,
             fmt: str) -> int:
    """Predict each stage's memory peak from the model's shapes (no run) and whether it fits the profile."""
    import json

    from ovi_bench.estimate import EstimateRequest
    from ovi_bench.estimate import estimate as run_estimate

    profile = _profile(hardware)
    device = profile.device_type
    try:
        result = run_estimate(EstimateRequest(variant, policy, preset, device, tiled=tiled, area=area))
    except ValueError as exc:
        raise _usage(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(profile), indent=2))
        return EXIT_OK
    gib = 2**30
    rows = [[f.stage, f"{f.bytes / gib:.2f}", f"{f.margin / gib:+.2f}", "yes" if f.fits else "NO",
             ", ".join(f"{k} {v / gib:.2f}" for k, v in {**stage.resident, **stage.terms}.items())]
            for f, stage in zip(result.fit(profile), result.stages)]
    h, w = result.frame
    click.echo(f"{variant} {policy} at {h}x{w} ({result.video_tokens:,} video tokens), {preset} preset, "
               f"{'tiled' if tiled else 'untiled'} decode, on {profile.name} "
               f"({profile.usable_bytes / gib:.1f} GiB usable: {profile.sources['usable']})")
    click.echo(tabulate(rows, headers=["stage", "GiB", "margin GiB", "fits", "terms (GiB)"]))
    peak = result.peak
    verdict = "fits" if peak.bytes <= profile.usable_bytes else "does NOT fit"
    click.echo(f"verdict: {verdict}: peak {peak.bytes / gib:.2f} GiB in {peak.stage}, margin "
               f"{(profile.usable_bytes - peak.bytes) / gib:+.2f} GiB")
    for note in result.notes:
        click.echo(f"note: {note}")
    return EXIT_OK


@main.command()
@click.option("--hardware", required=True, help="Profile whose usable memory is the budget.")
@click.option("--policy", required=True, help="all_gpu, cpu_offload, keep_resident or sequential.")
@click.option("--engine", default="reference", show_default=True, help="Engine of the --confirm runs.")
@click.option("--confirm", is_flag=True,
              help="Run 5% inside (must pass) and 5% outside (must OOM) each boundary, further where a "
                   "run disagrees.")
@click.option("--device", default="cuda", show_default=True, help="Device of the --confirm runs.")
@click.option("--variant", "variants", multiple=True, help="Variant(s) (default: every one).")
@click.option("--aspect", "aspects", multiple=True, type=click.Choice(["1:1", "16:9", "9:16"]),
              help="Aspect ratio(s) (default: all three).")
@click.option("--tiled/--untiled", default=False, show_default=True)
@click.option("--preset", type=click.Choice(["tiny", "full"]), default="full", show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="Write OUT.json, OUT.md and OUT.svg (default reports/frontier_<hardware>_<policy>).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@command_status
def frontier(hardware: str, policy: str, engine: str, confirm: bool, device: str, variants: tuple[str, ...],
             aspects: tuple[str, ...], tiled: bool, preset: str, out: Path | None, fmt: str) -> int:
    """The largest clip that fits the profile under the policy: by the estimate, then (--confirm) by runs."""
    import json

    from ovi_bench import frontier as frontier_mod
    from ovi_bench.variant_facts import VARIANTS

    profile = _profile(hardware)
    if confirm and tiled:
        raise _usage("--confirm runs the pipeline scenario, which decodes untiled; drop --tiled (a tiled "
                     "frontier is estimated only)")
    try:  # an unknown variant or policy is refused by the estimate's request, before any run
        points = frontier_mod.find_frontier(profile, policy, preset=preset, tiled=tiled,
                                            variants=variants or VARIANTS,
                                            aspects=aspects or tuple(frontier_mod.ASPECTS))
    except ValueError as exc:
        raise _usage(str(exc)) from None
    out = out or Path("reports") / f"frontier_{profile.name}_{policy}"
    if confirm:
        points = frontier_mod.confirm(points, policy,
                                      _frontier_runner(engine, preset, device, profile.name, out),
                                      out.parent / f"{out.name}_runs", budget=profile.usable_bytes,
                                      preset=preset, device=profile.device_type)
    data = frontier_mod.frontier_dict(points, profile, policy, preset=preset, tiled=tiled, engine=engine)
    paths = frontier_mod.write_frontier(data, points, out)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(tabulate(frontier_mod.frontier_rows(points), headers=frontier_mod.FRONTIER_HEADERS))
        click.echo("wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


def _frontier_runner(engine: str, preset: str, device: str, hardware: str, out: Path) -> Callable[..., str]:
    """Runs one generated suite through ovi_bench.run.Run under the profile's budget; -> the case's status."""
    from ovi_bench.job import RunOptions
    from ovi_bench.run import Run

    def run_case(suite: Path, _: dict[str, Any]) -> str:
        options = RunOptions(suites=[str(suite)], engine=engine, preset=preset, device=device,
                             hardware=hardware, budget="profile", allow_missing_baseline=True,
                             baselines=str(out.parent / f"{out.name}_runs" / "baselines"))
        results = Run.start(options, out.parent / f"{out.name}_runs" / suite.stem, _err).execute()
        if not results:
            return "not run"
        case = results[0]
        # the worker calls a host MemoryError an oom too; on a GPU only the device's answers the question
        if case.status == "oom" and device != "cpu" and not (case.error or "").startswith("OutOfMemoryError"):
            return "host oom"
        return case.status

    return run_case


if __name__ == "__main__":
    main()
