"""Load and validate suite files (suites/*.yaml); every error names the file and the line.

Sizes, percentages and durations are parsed here (checks by `baselines.parse_check`), so a bad value fails
before anything runs. A suite expands into cases: the cartesian product of its matrix, with the command
line's overrides applied. `presets:` gives params, a budget and matrix axes per weight preset (tiny CPU runs
decode small frames and run fewer ranks, full-scale runs the variant's own). A file with `include:` instead of
a scenario runs other suites with overrides (the smoke suite): each included suite keeps its own checks and is
named `<file>.<suite>`.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ovi_bench.baselines import REFERENCE, Check, CheckError, parse_check
from ovi_bench.engines.base import ATTENTION_BACKENDS, POLICIES, PRESETS, EngineConfig
from ovi_bench.hardware import HardwareProfile
from ovi_bench.job import DEFAULT_TIMEOUT_S, Job, RunOptions
from ovi_bench.metrics import STAGE_METRICS, find
from ovi_bench.scenarios import SCENARIO_MODULES, Scenario, get_scenario
from ovi_bench.units import parse_duration, parse_size
from ovi_bench.variant_facts import VARIANTS

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
SUITE_SCHEMA_VERSION = 1
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # a suite's name is a file name under baselines/
TOP_KEYS = ("schema_version", "name", "description", "scenario", "matrix", "params", "presets", "budget",
            "timeout", "checks")
INCLUDE_TOP_KEYS = ("schema_version", "name", "description", "include", "timeout")
INCLUDE_KEYS = ("suite", "matrix", "params", "budget", "timeout")
PRESET_KEYS = ("params", "budget", "matrix", "exclude")


class SuiteError(ValueError):
    """A suite that cannot be found or is invalid; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    scenario: str
    matrix: dict[str, list[Any]]
    params: dict[str, Any]
    checks: list[Check]
    budget: int | str | None = None  # bytes, or "profile" (the hardware profile's usable memory)
    timeout_s: float | None = None
    path: Path | None = None
    # preset -> {params, budget, matrix, exclude (points of the matrix not run there: [{axis: value}])}
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def checks_at(self, scale: str) -> list[Check]:
        """The checks that hold at this scale (a check may say it holds only at full scale)."""
        return [c for c in self.checks if c.scale in (None, scale)]

    def budget_for(self, preset: str) -> int | str | None:
        return self.presets.get(preset, {}).get("budget", self.budget)

    def expand(self, options: RunOptions | None = None, profile: HardwareProfile | None = None) -> list[Job]:
        """One Job per point of the matrix at the options' preset, every axis and default resolved; the
        options' axes replace the matrix's values for that axis."""
        options = options or RunOptions()
        scenario = get_scenario(self.scenario)
        preset = self.presets.get(options.preset, {})
        matrix = {axis: [scenario.axis_defaults[axis]] for axis in scenario.axes}
        matrix.update(self.matrix)
        matrix.update(preset.get("matrix", {}))
        matrix.update({axis: values
                       for axis, values in options.overrides().items() if values and axis in matrix})
        params = {**scenario.params, **self.params, **preset.get("params", {})}
        budget = options.budget if options.budget is not None else self.budget_for(options.preset)
        if budget == "profile":
            if profile is None:
                raise ValueError(f"suite {self.name}: budget 'profile' needs a hardware profile")
            budget = profile.usable_bytes
        jobs = []
        for values in itertools.product(*matrix.values()):
            axes = dict(zip(matrix, values))
            if any(all(axes.get(axis) == value for axis, value in point.items())
                   for point in preset.get("exclude", [])):
                continue
            config = EngineConfig(
                variant=axes["variant"], preset=options.preset, checkpoint_dir=_path(options.checkpoint_dir),
                policy=axes.get("policy", "all_gpu"), attention=axes.get("attention", "auto"),
                device=options.device, dtype=options.dtype, seed=options.seed, area=params.get("area"),
                sequence_parallel=int(axes.get("nproc", 1)) > 1)
            label = ",".join(f"{k}={v}" for k, v in axes.items())
            jobs.append(Job(
                case_id=f"{self.name}[{label}]", suite=self.name, scenario=self.scenario,
                engine=options.engine, config=config, axes=axes, params=params, repeat=options.repeat,
                budget_bytes=parse_size(budget) if isinstance(budget, str) else budget,
                unified_memory=bool(profile and profile.unified_memory),
                timeout_s=options.timeout_s or self.timeout_s or DEFAULT_TIMEOUT_S))
        return jobs


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key."""

    line: int = 0
    lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line = node.start_mark.line + 1
    mapping.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def suite_path(name_or_path: str) -> Path:
    """A name from suites/ or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SuiteError(f"{path}: no such suite file")
        return path
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = ", ".join(available_suites()) or "none"
        raise SuiteError(f"unknown suite {name_or_path!r} (suites in {SUITES_DIR}: {known})")
    return candidate


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def find_suite(name: str) -> Suite:
    """The suite a baseline or report names: `<suite>` from suites/, or `<file>.<suite>` included by a file
    of suites/ (smoke.attention_backends)."""
    file, _, _ = name.partition(".")
    for suite in _load_file(suite_path(file if (SUITES_DIR / f"{file}.yaml").is_file() else name)):
        if suite.name == name:
            return suite
    raise SuiteError(f"no suite named {name!r} in {SUITES_DIR}")


def load_suite(name_or_path: str) -> Suite:
    """One suite file with a scenario (a file with `include:` stands for several: use `load_suites`)."""
    path = suite_path(name_or_path)
    data = _read(path)
    if isinstance(data, _Mapping) and "include" in data:
        raise SuiteError(f"{path}: includes other suites; load it with load_suites")
    return _parse_suite(path, data)


def load_suites(name_or_path: str) -> list[Suite]:
    """The suites a file stands for: itself, or each suite it includes, with the include's overrides;
    `<file>.<suite>` (smoke.attention_backends) is one suite a file of suites/ includes."""
    file, dot, _ = name_or_path.partition(".")
    if dot and not Path(name_or_path).exists() and (SUITES_DIR / f"{file}.yaml").is_file():
        return [find_suite(name_or_path)]
    return _load_file(suite_path(name_or_path))


def _load_file(path: Path) -> list[Suite]:
    data = _read(path)
    if isinstance(data, _Mapping) and "include" in data:
        return _parse_include(path, data)
    return [_parse_suite(path, data)]


def _read(path: Path) -> Any:
    try:
        data = yaml.load(path.read_text(), Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise SuiteError(f"{path}:{line}: invalid YAML: {exc.problem or exc.context}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SuiteError(f"{path}: cannot read suite: {exc}") from None
    return data


def _parse_include(path: Path, data: _Mapping) -> list[Suite]:
    def fail(line: int, message: str) -> SuiteError:
        return SuiteError(f"{path}:{line}: {message}")

    for key in data:
        if key not in INCLUDE_TOP_KEYS:
            raise fail(data.lines[key], f"unknown key {key!r} in a suite that includes others "
                                        f"(allowed: {', '.join(INCLUDE_TOP_KEYS)})")
    for key in ("schema_version", "name", "description"):
        if key not in data:
            raise fail(data.line, f"missing required key {key!r}")
    if not isinstance(data["name"], str) or not PLAIN_NAME.match(data["name"]):
        raise fail(data.lines["name"],
                   f"name {data['name']!r} must be a plain identifier (letters, digits, _ and -)")
    if data["schema_version"] != SUITE_SCHEMA_VERSION:
        raise fail(data.lines["schema_version"], f"schema_version {data['schema_version']!r}, this ovi-bench "
                                                 f"reads suites of schema_version {SUITE_SCHEMA_VERSION}")
    entries = data["include"]
    if not isinstance(entries, list) or not entries:
        raise fail(data.lines["include"],
                   "include must be a list of {suite, matrix, params, budget, timeout}")
    suites = []
    for entry in entries:
        line = entry.line if isinstance(entry, _Mapping) else data.lines["include"]
        if not isinstance(entry, _Mapping) or not isinstance(entry.get("suite"), str):
            raise fail(line, "each include needs 'suite: <name>'")
        unknown = [k for k in entry if k not in INCLUDE_KEYS]
        if unknown:
            raise fail(entry.lines[unknown[0]], f"unknown key {unknown[0]!r} in include "
                                                f"(allowed: {', '.join(INCLUDE_KEYS)})")
        try:
            base = load_suites(entry["suite"])
        except SuiteError as exc:
            raise fail(entry.lines["suite"], f"include {entry['suite']!r}: {exc}") from None
        if len(base) != 1:
            raise fail(entry.lines["suite"],
                       f"{entry['suite']!r} includes other suites; include a plain suite")
        included = base[0]
        scenario = get_scenario(included.scenario)
        matrix = _parse_matrix(entry.get("matrix"), entry.lines.get("matrix", line), scenario, fail)
        params = _parse_params(entry.get("params"), entry.lines.get("params", line), scenario, fail)
        budget = _parse_budget(entry.get("budget"), lambda msg, entry=entry: fail(entry.lines["budget"], msg))
        timeout_s = _parse_timeout(entry.get("timeout", data.get("timeout")),
                                   entry.lines.get("timeout", data.lines.get("timeout", line)), fail)
        # The include's params, budget and matrix axes win over the included suite's, at every preset.
        presets = {p: {"params": {**v["params"], **params}, "exclude": v.get("exclude", []),
                       "matrix": {axis: vs for axis, vs in v.get("matrix", {}).items() if axis not in matrix},
                       **({"budget": v["budget"]} if "budget" in v and budget is None else {})}
                   for p, v in included.presets.items()}
        suites.append(replace(
            included, name=f"{data['name']}.{included.name}", matrix={**included.matrix, **matrix},
            params={**included.params, **params}, presets=presets,
            budget=budget if budget is not None else included.budget,
            timeout_s=timeout_s or included.timeout_s,
        ))
    return suites


def _parse_suite(path: Path, data: Any) -> Suite:
    def fail(line: int, message: str) -> SuiteError:
        return SuiteError(f"{path}:{line}: {message}")

    if not isinstance(data, _Mapping):
        raise fail(1, "a suite file must be a mapping with name, scenario, matrix, params and checks")
    lines = data.lines
    for key in data:
        if key not in TOP_KEYS:
            raise fail(lines[key], f"unknown key {key!r} (allowed: {', '.join(TOP_KEYS)})")
    for key in ("schema_version", "name", "description", "scenario"):
        if key not in data:
            raise fail(data.line, f"missing required key {key!r}")
    if data["schema_version"] != SUITE_SCHEMA_VERSION:
        raise fail(lines["schema_version"], f"schema_version {data['schema_version']!r}, this ovi-bench "
                                            f"reads suites of schema_version {SUITE_SCHEMA_VERSION}")
    if not isinstance(data["name"], str) or not PLAIN_NAME.match(data["name"]):
        raise fail(lines["name"],
                   f"name {data['name']!r} must be a plain identifier (letters, digits, _ and -): "
                                  "it names the suite's baseline file")
    if data["scenario"] not in SCENARIO_MODULES:
        raise fail(lines["scenario"], f"unknown scenario {data['scenario']!r} "
                                      f"(known: {', '.join(SCENARIO_MODULES)})")
    scenario = get_scenario(data["scenario"])

    matrix = _parse_matrix(data.get("matrix"), lines.get("matrix", data.line), scenario, fail)
    params = _parse_params(data.get("params"), lines.get("params", data.line), scenario, fail)
    budget = _parse_budget(data.get("budget"), lambda msg: fail(lines["budget"], msg))
    presets = _parse_presets(data.get("presets"), lines.get("presets", data.line), scenario, matrix, fail)
    timeout_s = _parse_timeout(data.get("timeout"), lines.get("timeout", data.line), fail)

    checks_data = data.get("checks") or []
    if not isinstance(checks_data, list):
        raise fail(lines.get("checks", data.line), "checks must be a list of {metric, rule, ...}")
    if not checks_data:
        raise fail(lines.get("checks", data.line), "the suite has no checks: a suite that checks nothing can "
                                                    "neither pass nor fail (add checks: [...])")
    checks = [_parse_check(item, fail, scenario) for item in checks_data]
    checks += implicit_checks(scenario, checks)
    return Suite(name=data["name"], description=str(data["description"]).strip(), scenario=scenario.name,
                 matrix=matrix, params=params, checks=checks, budget=budget, timeout_s=timeout_s,
                 path=path, presets=presets)


def _parse_matrix(data: Any, line: int, scenario: Any,
                  fail: Any) -> dict[str, list[Any]]:
    if data is None:
        return {}
    if not isinstance(data, _Mapping):
        raise fail(line, "matrix must map axis names to lists of values")
    matrix: dict[str, list[Any]] = {}
    for axis, values in data.items():
        where = data.lines[axis]
        if axis not in scenario.axes:
            raise fail(where,
                       f"scenario {scenario.name!r} has no axis {axis!r} (axes: {', '.join(scenario.axes)})")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise fail(where, f"axis {axis!r} has no values")
        try:
            validate_axis(axis, values)
        except ValueError as exc:
            raise fail(where, str(exc)) from None
        matrix[axis] = values
    return matrix


def _parse_exclude(data: Any, line: int, matrix: dict[str, list[Any]], fail: Any) -> list[dict[str, Any]]:
    """A preset's `exclude: [{axis: value, ...}]`: points of the matrix that do not run at that preset. Each
    names values the matrix has, so that a typo cannot leave a case running that was meant to be left out."""
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(point, _Mapping) and point for point in data):
        raise fail(line, "exclude must be a list of {axis: value} mappings")
    for point in data:
        for axis, value in point.items():
            if value not in matrix.get(axis, []):
                raise fail(point.lines[axis], f"exclude {axis}: {value!r} is not a value of the matrix's "
                                              f"{axis} axis ({', '.join(map(str, matrix.get(axis, [])))})")
    return [dict(point) for point in data]


def _parse_params(data: Any, line: int, scenario: Any, fail: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, _Mapping):
        raise fail(line, "params must be a mapping")
    for key, value in data.items():
        if key not in scenario.params:
            raise fail(data.lines[key], f"scenario {scenario.name!r} takes no param {key!r} "
                                        f"(params: {', '.join(scenario.params)})")
        expected = _param_type(scenario.params[key])
        wrong_bool = isinstance(value, bool) and bool not in (expected or (bool,))
        if expected is not None and value is not None and (wrong_bool or not isinstance(value, expected)):
            names = " or ".join(t.__name__ for t in expected)
            raise fail(data.lines[key], f"param {key} must be {names} (like its default "
                                        f"{scenario.params[key]!r}), got {value!r}")
    return dict(data)


def _param_type(default: Any) -> tuple[type, ...] | None:
    """What a param's value must be, from its default (None: anything). A number default takes either kind
    of number; a bool is not a number here."""
    if default is None:
        return None
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, (int, float)):
        return (int, float)
    return (type(default),)


def _parse_timeout(value: Any, line: int, fail: Any) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise fail(line, f"timeout: {exc}") from None


def _parse_budget(value: Any, fail: Any) -> int | str | None:
    if value is None or value == "profile":
        return value
    try:
        return parse_size(value)
    except ValueError as exc:
        raise fail(f"budget: {exc} (or 'profile')") from None


def _parse_presets(data: Any, line: int, scenario: Any, matrix: dict[str, list[Any]],
                   fail: Any) -> dict[str, dict[str, Any]]:
    """`presets: {tiny: {params: {...}, budget: ..., matrix: {...}, exclude: [...]}}`: what changes with
    the weight preset."""
    if data is None:
        return {}
    if not isinstance(data, _Mapping):
        raise fail(line, "presets must map a preset name (tiny, full) to {params, budget, matrix, exclude}")
    presets: dict[str, dict[str, Any]] = {}
    for preset, entry in data.items():
        where = data.lines[preset]
        if preset not in PRESETS:
            raise fail(where, f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        if not isinstance(entry, _Mapping) or any(k not in PRESET_KEYS for k in entry):
            raise fail(where, f"preset {preset!r} must be a mapping with {', '.join(PRESET_KEYS)}")
        own = _parse_matrix(entry.get("matrix"), entry.lines.get("matrix", where), scenario, fail)
        presets[preset] = {"params": _parse_params(entry.get("params"), where, scenario, fail), "matrix": own,
                           "exclude": _parse_exclude(entry.get("exclude"), entry.lines.get("exclude", where),
                                                     {**matrix, **own}, fail)}
        if "budget" in entry:
            presets[preset]["budget"] = _parse_budget(
                entry["budget"], lambda msg, entry=entry: fail(entry.lines["budget"], msg))
    return presets


def validate_axis(axis: str, values: list[Any]) -> None:
    """Axis values must be words of the harness's vocabulary; whether an engine supports them is the
    engine's to declare (checked per case)."""
    known = {"variant": VARIANTS, "policy": tuple(POLICIES), "attention": ATTENTION_BACKENDS}.get(axis)
    for value in values:
        if known is not None and value not in known:
            raise ValueError(f"unknown {axis} {value!r} (known: {', '.join(known)})")
        if axis == "nproc" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"nproc must be a whole number of ranks >= 1, got {value!r}")


def _parse_check(item: Any, fail: Any, scenario: Scenario) -> Check:
    line = item.line if isinstance(item, _Mapping) else 0
    axes = set(scenario.axes)
    for key in ("when", "unless"):
        condition = item.get(key) if isinstance(item, _Mapping) else None
        if condition is None:
            continue
        if not isinstance(condition, dict) or any(axis not in axes for axis in condition):
            raise fail(item.lines[key], f"{key} must map matrix axes ({', '.join(sorted(axes))}) to values")
        for axis, value in condition.items():
            try:
                validate_axis(axis, [value])
            except ValueError as exc:
                raise fail(item.lines[key], f"{key}: {exc}") from None
    try:
        check = parse_check(item)
    except CheckError as exc:
        raise fail(line, str(exc)) from None
    named = [] if check.rule == "expect_status" else [check.metric, *check.like]
    named += [ref for ref in (check.expected, check.limit) if isinstance(ref, str) and ref.startswith("spec.")
              and REFERENCE.match(ref)]
    for metric in named:
        if find(metric, (*scenario.metrics, *STAGE_METRICS)) is None:
            raise fail(line, f"check on {metric!r}, a metric scenario {scenario.name!r} does not record"
                             f"{_closest(metric, scenario)}")
    return check


def implicit_checks(scenario: Scenario, explicit: list[Check]) -> list[Check]:
    """Every expectation the scenario records is compared with what it expects, whether the suite file says
    so or not (a fact recorded beside its expected value and never compared hides a bug)."""
    stated = {(c.metric, c.rule, str(c.expected if c.rule == "exact" else c.limit)) for c in explicit}
    implicit = []
    for metric in scenario.metrics:
        for observed in metric.expects:
            key = "expected" if metric.rule == "exact" else "limit"
            if (observed, metric.rule, metric.name) not in stated:
                implicit.append(replace(parse_check({"metric": observed, "rule": metric.rule,
                                                     key: metric.name,
                                                     "note": "every recorded expectation is compared"}),
                                        implicit=True))
    return implicit


def _closest(metric: str, scenario: Scenario) -> str:
    names = [m.name for m in (*scenario.metrics, *STAGE_METRICS)]
    close = difflib.get_close_matches(metric, names, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else f" (it records: {', '.join(names)})"
