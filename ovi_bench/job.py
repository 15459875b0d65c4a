"""What a run is asked for (`RunOptions`) and what one case is (`Job`), each in one typed record.

`RunOptions` is the command line's request, stored in the journal header so that `--resume` repeats it.
`Suite.expand` turns it into one frozen `Job` per case with every axis and default resolved once; the Job is
what the launcher sends to the worker (`to_dict`/`from_dict` across the process boundary), what the engine
is built from (`Job.config`) and what the journal and the report record of the case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ovi_bench.engines.base import EngineConfig

DEFAULT_TIMEOUT_S = 3600.0


@dataclass
class RunOptions:
    """Everything `ovi-bench run` was asked for. Empty lists and None mean "the suite's own"."""

    suites: list[str] = field(default_factory=list)
    engine: str = "reference"
    checkpoint_dir: str | None = None
    preset: str = "tiny"
    variants: list[str] = field(default_factory=list)
    policy: str | None = None
    attention: list[str] = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "auto"  # auto: bfloat16 on an accelerator, float32 on the CPU (the engine decides)
    seed: int = 0
    hardware: str | None = None  # None: detected from the device
    baselines: str | None = None  # None: the project's baselines/ directory
    allow_missing_baseline: bool = False
    repeat: int = 1
    timeout_s: float | None = None  # None: the suite's timeout, else DEFAULT_TIMEOUT_S
    budget: str | None = None  # a size or "profile"; None: the suite's budget
    nproc: list[int] = field(default_factory=list)  # ranks per case, instead of the suite's nproc axis

    def overrides(self) -> dict[str, list[Any]]:
        """Matrix axes the command line replaces (an empty list replaces nothing)."""
        return {"variant": self.variants, "policy": [self.policy] if self.policy else [],
                "attention": self.attention, "nproc": self.nproc}

    @property
    def scale(self) -> str:
        """What the weights' sizes are: real checkpoints are full scale, synthetic ones their preset's."""
        return "full" if self.checkpoint_dir else self.preset

    @property
    def weights(self) -> str:
        return f"checkpoint:{self.checkpoint_dir}" if self.checkpoint_dir else f"synthetic:{self.preset}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunOptions:
        return cls(**data)


@dataclass(frozen=True)
class Job:
    """One case, fully resolved: which scenario runs which engine on what, within which limits."""

    case_id: str
    suite: str
    scenario: str
    engine: str  # the --engine spec; the worker builds the engine from it
    config: EngineConfig
    axes: Mapping[str, Any]  # this case's point of the suite's matrix, e.g. {"variant": ..., "policy": ...}
    params: Mapping[str, Any]  # the scenario's params after the suite's, the preset's and the include's
    repeat: int = 1
    budget_bytes: int | None = None  # a real memory limit in the worker; None: none
    unified_memory: bool = False  # the device shares the host's memory (gfx1151)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def nproc(self) -> int:
        return int(self.axes.get("nproc", 1))

    @property
    def case_params(self) -> dict[str, Any]:
        """The case's axes and params together: what checks' `when:` and `params.<key>` read."""
        return {**self.axes, **self.params}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "config": self.config.to_dict(), "axes": dict(self.axes),
                "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        return cls(**{**data, "config": EngineConfig.from_dict(data["config"])})
