"""`ovi-bench`: each command validates its arguments at the edge, then calls a function that returns the
exit status. 0 all pass; 1 a check failed or a regression; 2 usage or input error; 3 the harness itself
could not run. Errors are one line (`--debug` shows the traceback).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_HARNESS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
ENV_FLAGS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL",
             "HSA_OVERRIDE_GFX_VERSION")


def _user_errors() -> tuple[type[BaseException], ...]:
    from ovi_bench.engines import EngineSpecError
    from ovi_bench.records import OutputError, SchemaError
    from ovi_bench.runner import JournalError
    from ovi_bench.suites import SuiteError

    return (SuiteError, EngineSpecError, JournalError, SchemaError, OutputError, UsageError)


class UsageError(ValueError):
    """A bad option value found after click's own parsing (unknown variant, backend, profile ...)."""


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
@click.option("--engine", default="reference", show_default=True, help="reference, fake, or MODULE:FACTORY.")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), help="Real weights (upstream ckpts/ layout).")
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
@click.option("--baselines", type=click.Path(path_type=Path), default=Path("baselines"), show_default=True)
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run directory (default reports/<run id>).")
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
        seed: int, hardware: str | None, baselines: Path, report_dir: Path | None, repeat: int,
        timeout: str | None, resume: Path | None, budget: str | None, nproc: tuple[int, ...]) -> int:
    """Run SUITE... (names from suites/ or YAML paths) and judge the results."""
    from ovi_bench.runner import JOURNAL_NAME, RunOptions, read_journal
    from ovi_bench.units import parse_duration, parse_size

    if any(n < 1 for n in nproc):
        raise UsageError(f"--nproc must be >= 1 (ranks per case), got {min(nproc)}")
    timeout_s = _parse(parse_duration, timeout, "--timeout")
    if budget is not None and budget != "profile":
        _parse(parse_size, budget, "--budget")
    if resume is not None:
        header, done = read_journal(resume / JOURNAL_NAME)
        if suites and list(suites) != header["suites"]:
            raise UsageError(f"--resume {resume}: that run is of {header['suites']}, not {list(suites)}")
        options = RunOptions.from_dict(header["options"])
        if timeout_s is not None:
            options.timeout_s = timeout_s
        return run_suites(options, resume, header=header, done=done)
    if not suites:
        raise UsageError("give at least one SUITE (see `ovi-bench list suites`) or --resume RUN_DIR")
    options = RunOptions(
        suites=list(suites), engine=engine, checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
        preset=preset, variants=list(variants), policy=policy, attention=list(attention), device=device,
        dtype=dtype, seed=seed, hardware=hardware, baselines=str(baselines), repeat=repeat, timeout_s=timeout_s,
        budget=budget, nproc=list(nproc),
    )
    return run_suites(options, report_dir)


def _parse(parser: Callable[[Any], Any], value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return parser(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def run_suites(options: Any, run_dir: Path | None, *, header: dict[str, Any] | None = None,
               done: list[Any] | None = None) -> int:
    """Validate everything, then run the cases missing from the journal and write the reports."""
    from ovi_bench.engines import engine_factory
    from ovi_bench.hardware import detect_profile, get_profile
    from ovi_bench.records import Environment, OutputError
    from ovi_bench.report import write_all
    from ovi_bench.report.terminal import render_terminal
    from ovi_bench.runner import JOURNAL_NAME, build_report, new_run_id, run_cases, write_header
    from ovi_bench.scenarios import get_scenario
    from ovi_bench.suites import load_suites, validate_axis

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
    if options.checkpoint_dir and not Path(options.checkpoint_dir).is_dir():
        raise UsageError(f"--checkpoint-dir {options.checkpoint_dir}: no such directory")
    try:
        profile = get_profile(options.hardware) if options.hardware else detect_profile(options.device)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None

    if header is not None:
        run_id, environment = header["run_id"], Environment.from_dict(header["environment"])
    else:
        run_id, environment = new_run_id(), Environment.capture()
    run_dir = run_dir or Path("reports") / run_id
    journal = run_dir / JOURNAL_NAME
    if header is None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_header(journal, run_id, options, environment)
        except FileExistsError:
            raise UsageError(f"{journal} exists: use --resume {run_dir} or another --report-dir") from None
        except OSError as exc:
            raise OutputError(f"cannot write report directory {run_dir}: {exc.strerror or exc}") from None

    try:
        results = run_cases(suites, options, profile, journal, done or [], _err)
    except KeyboardInterrupt:
        _err(f"interrupted: finished cases are in {journal}; finish with `ovi-bench run --resume {run_dir}`")
        return EXIT_INTERRUPTED
    report = build_report(run_id, suites, options, profile, environment, results)
    write_all(report, run_dir)
    _err(render_terminal(report, run_dir))
    return report.exit_status


# ---- compare, report, baseline -------------------------------------------------------------------------------

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


@baseline.command("show")
@click.option("--hardware", help="Only this hardware profile.")
@click.option("--baselines", type=click.Path(path_type=Path), default=Path("baselines"), show_default=True)
@command_status
def baseline_show(hardware: str | None, baselines: Path) -> int:
    from ovi_bench.baselines import load_baseline

    rows = []
    for path in sorted(baselines.glob(f"{hardware or '*'}/*.json")):
        stored = load_baseline(baselines, path.parent.name, path.stem)
        assert stored is not None
        prov = stored.provenance
        rows.append([path.parent.name, stored.suite, len(stored.cases), prov.get("engine"), prov.get("weights"),
                     (prov.get("git_commit") or "")[:10], prov.get("date")])
    if not rows:
        click.echo(f"no baselines in {baselines}" + (f" for {hardware}" if hardware else ""))
    else:
        click.echo(tabulate(rows, headers=["hardware", "suite", "cases", "engine", "weights", "commit", "date"]))
    return EXIT_OK


@baseline.command("update")
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--hardware", help="Store under this profile (default: the run's).")
@click.option("--baselines", type=click.Path(path_type=Path), default=Path("baselines"), show_default=True)
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
@command_status
def baseline_update(result: Path, hardware: str | None, baselines: Path, dry_run: bool) -> int:
    """Store RESULT's successful cases as the baseline, showing every value that changes."""
    from ovi_bench.baselines import update_baseline
    from ovi_bench.report import load_report

    diff = update_baseline(load_report(result), baselines, hardware, write=not dry_run)
    click.echo(diff.render())
    for suite, path in diff.paths.items():
        click.echo(f"{'would write' if dry_run else 'wrote'} {path} ({suite})")
    return EXIT_OK


# ---- list, doctor ----------------------------------------------------------------------------------------------

@main.command("list")
@click.argument("what", type=click.Choice(["suites", "engines", "backends", "variants", "policies", "hardware"]))
@click.option("--device", default="cpu", show_default=True, help="Device whose backends to probe.")
@command_status
def list_command(what: str, device: str) -> int:
    """List what a run can be given."""
    click.echo(tabulate(*_listing(what, device)))
    return EXIT_OK


def _listing(what: str, device: str) -> tuple[list[list[Any]], list[str]]:
    if what == "suites":
        return _suite_rows(), ["suite", "scenario", "description"]
    if what == "engines":
        from ovi_bench.engines import ENGINES

        return [[name, target] for name, target in ENGINES.items()], ["engine", "factory (or pass MODULE:FACTORY)"]
    if what == "backends":
        from ovi_engine.attention import available_backends

        statuses = available_backends(device)
        return ([[s.name, "yes" if s.available else "no", s.kernel or "", s.reason or ""] for s in statuses.values()],
                ["backend", "available", "kernel", "reason"])
    if what == "variants":
        from ovi_engine.variants import VARIANTS

        return ([[s.name, s.video_latent_frames, s.audio_latent_length, "x".join(map(str, s.video_latent_shape())),
                  s.checkpoint_dtype] for s in VARIANTS.values()],
                ["variant", "latent frames", "audio latents", "video latent", "checkpoint dtype"])
    if what == "policies":
        from ovi_engine.placement import POLICIES

        return [[p.name, p.description] for p in POLICIES.values()], ["policy", "description"]
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
    """What this machine offers: torch, CUDA/HIP, device, memory, attention backends, flags."""
    click.echo(tabulate(doctor_facts(device), tablefmt="plain"))
    rows, headers = _listing("backends", device or _default_device())
    click.echo("\nattention backends:\n" + tabulate(rows, headers=headers))
    return EXIT_OK


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def doctor_facts(device: str | None = None) -> list[list[str]]:
    import platform

    import torch

    from ovi_bench.hardware import detect_profile, device_architecture
    from ovi_bench.units import format_size

    device = device or _default_device()
    facts = [["python", platform.python_version()], ["torch", torch.__version__],
             ["cuda", torch.version.cuda or "-"], ["hip", getattr(torch.version, "hip", None) or "-"],
             ["device", device]]
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        facts += [["device name", props.name],
                  ["architecture", device_architecture(props)],
                  ["memory total", format_size(total)], ["memory free", format_size(free)],
                  ["unified memory", "yes" if getattr(props, "is_integrated", False) else "no"]]
    else:
        import psutil

        memory = psutil.virtual_memory()
        facts += [["memory total", format_size(memory.total)], ["memory free", format_size(memory.available)],
                  ["unified memory", "n/a (host only)"]]
    facts.append(["hardware profile", detect_profile(device).name])
    flags = {k: v for k, v in os.environ.items() if k in ENV_FLAGS or k.startswith("MIOPEN_")}
    for name in (*ENV_FLAGS, *sorted(k for k in flags if k.startswith("MIOPEN_"))):
        facts.append([name, flags.get(name, "(unset)")])
    return facts


if __name__ == "__main__":
    main()
