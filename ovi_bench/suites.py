"""Load and validate suite files (suites/*.yaml); every error names the file and the line.

Sizes, percentages and durations are parsed here (checks by `baselines.parse_check`), so a bad value fails before anything runs. A suite
expands into cases: the cartesian product of its matrix, with the command line's overrides applied.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ovi_bench.baselines import Check, CheckError, parse_check
from ovi_bench.engines.base import POLICIES, VARIANTS
from ovi_bench.scenarios import SCENARIO_MODULES, get_scenario
from ovi_bench.units import parse_duration, parse_size

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
SUITE_SCHEMA_VERSION = 1
TOP_KEYS = ("schema_version", "name", "description", "scenario", "matrix", "params", "budget", "timeout",
            "checks")
class SuiteError(ValueError):
    """A suite that cannot be found or is invalid; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Case:
    case_id: str
    suite: str
    scenario: str
    axes: dict[str, Any]  # one point of the matrix, e.g. {"variant": "720x720_5s", "policy": "all_gpu"}
    params: dict[str, Any]

    def to_params(self) -> dict[str, Any]:
        return {**self.axes, **self.params}


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

    def expand(self, overrides: dict[str, list[Any]] | None = None) -> list[Case]:
        """The cases of this suite; an override replaces the matrix's values for that axis."""
        scenario = get_scenario(self.scenario)
        matrix = {axis: [scenario.axis_defaults[axis]] for axis in scenario.axes}
        matrix.update(self.matrix)
        matrix.update({axis: values for axis, values in (overrides or {}).items() if values})
        params = {**scenario.params, **self.params}
        cases = []
        for values in itertools.product(*matrix.values()):
            axes = dict(zip(matrix, values))
            label = ",".join(f"{k}={v}" for k, v in axes.items())
            cases.append(Case(f"{self.name}[{label}]", self.name, self.scenario, axes, params))
        return cases


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


def load_suite(name_or_path: str, *, known_backends: tuple[str, ...] | None = None) -> Suite:
    path = suite_path(name_or_path)
    try:
        data = yaml.load(path.read_text(), Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise SuiteError(f"{path}:{line}: invalid YAML: {exc.problem or exc.context}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SuiteError(f"{path}: cannot read suite: {exc}") from None
    return _parse_suite(path, data, known_backends)


def _parse_suite(path: Path, data: Any, known_backends: tuple[str, ...] | None) -> Suite:
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
    if not isinstance(data["name"], str) or not data["name"]:
        raise fail(lines["name"], "name must be a non-empty string")
    if data["scenario"] not in SCENARIO_MODULES:
        raise fail(lines["scenario"], f"unknown scenario {data['scenario']!r} "
                                      f"(known: {', '.join(SCENARIO_MODULES)})")
    scenario = get_scenario(data["scenario"])

    matrix_data = data.get("matrix") or _Mapping()
    if not isinstance(matrix_data, _Mapping):
        raise fail(lines.get("matrix", data.line), "matrix must map axis names to lists of values")
    matrix: dict[str, list[Any]] = {}
    for axis, values in matrix_data.items():
        line = matrix_data.lines[axis]
        if axis not in scenario.axes:
            raise fail(line, f"scenario {scenario.name!r} has no axis {axis!r} (axes: {', '.join(scenario.axes)})")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise fail(line, f"axis {axis!r} has no values")
        try:
            validate_axis(axis, values, known_backends)
        except ValueError as exc:
            raise fail(line, str(exc)) from None
        matrix[axis] = values

    params = data.get("params") or _Mapping()
    if not isinstance(params, _Mapping):
        raise fail(lines.get("params", data.line), "params must be a mapping")
    for key in params:
        if key not in scenario.params:
            raise fail(params.lines[key], f"scenario {scenario.name!r} takes no param {key!r} "
                                          f"(params: {', '.join(scenario.params)})")

    budget: int | str | None = data.get("budget")
    if budget is not None and budget != "profile":
        try:
            budget = parse_size(budget)
        except ValueError as exc:
            raise fail(lines["budget"], f"budget: {exc} (or 'profile')") from None
    timeout_s = None
    if data.get("timeout") is not None:
        try:
            timeout_s = parse_duration(data["timeout"])
        except ValueError as exc:
            raise fail(lines["timeout"], f"timeout: {exc}") from None

    checks_data = data.get("checks") or []
    if not isinstance(checks_data, list):
        raise fail(lines.get("checks", data.line), "checks must be a list of {metric, rule, ...}")
    checks = [_parse_check(item, fail, set(scenario.axes)) for item in checks_data]
    return Suite(name=data["name"], description=str(data["description"]).strip(), scenario=scenario.name,
                 matrix=matrix, params=dict(params), checks=checks, budget=budget, timeout_s=timeout_s,
                 path=path)


def validate_axis(axis: str, values: list[Any], known_backends: tuple[str, ...] | None = None) -> None:
    known: tuple[str, ...] | None = {"variant": VARIANTS, "policy": POLICIES}.get(axis)
    if axis == "attention":
        known = known_backends
    for value in values:
        if known is not None and value not in known:
            raise ValueError(f"unknown {axis} {value!r} (known: {', '.join(known)})")


def _parse_check(item: Any, fail: Any, axes: set[str]) -> Check:
    line = item.line if isinstance(item, _Mapping) else 0
    when = item.get("when") if isinstance(item, _Mapping) else None
    if isinstance(when, dict) and any(key not in axes for key in when):
        raise fail(item.lines["when"], f"when must map matrix axes ({', '.join(sorted(axes))}) to values")
    try:
        return parse_check(item)
    except CheckError as exc:
        raise fail(line, str(exc)) from None
