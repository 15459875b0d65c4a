"""Provenance of every run: commit, versions, device, driver and the environment flags that matter."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ovi_bench.records import Environment


@dataclass
class EnvironmentConfig:
    device: str = "cpu"


class EnvironmentTracker:
    def __init__(self, config: EnvironmentConfig) -> None:
        self.device = torch.device(config.device)

    def capture(self) -> Environment:
        return Environment.capture(self.device.index or 0)
