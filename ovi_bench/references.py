"""What one generation produced, as the output_fidelity suite compares it, and the stored references.

`Output` holds an engine's per-step and final latents (video and audio towers), its decoded frames and audio
and the prompt it fed its text encoder. `summarize` shrinks one to kilobytes (latents average-pooled, a few
thumbnail frames, the audio averaged in blocks) with digests of the full tensors; that is what
`ovi-bench baseline update` stores per hardware, in `<baselines>/<hardware>/references/<suite>.json`, so that
a fork is compared against the stored reference without running the reference engine again. A stored
reference keeps the dtype and device it was made with: `refusal` says why two outputs must not be compared
(bf16 results of two different GPUs, or two dtypes).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovi_bench.records import RunReport, canonical_json, decode_floats, write_atomic
from ovi_bench.schema import Format, SchemaError

STORED_REFERENCE = Format("stored reference", 1, "store it again: `ovi-bench baseline update` of a new run")
SCENARIO = "fidelity"  # the scenario whose cases record a reference output
PAYLOAD_METRIC = "fidelity.reference_output"
TOWERS = ("video", "audio")
# summarize: latents pooled to at most these sizes; frames and audio thinned to these.
VIDEO_POOL = (8, 4, 4, 4)  # channels, frames, height, width
AUDIO_POOL = 16  # latent positions (its 20 channels are kept)
THUMB_FRAMES, THUMB_SIDE, AUDIO_BLOCK = 4, 32, 64


@dataclass
class Output:
    steps: dict[str, list[torch.Tensor]]  # tower -> the latents after each step (float32, host)
    final: dict[str, torch.Tensor]  # tower -> the latents denoise returned
    frames: torch.Tensor  # uint8 [T, H, W, 3]
    sound: torch.Tensor  # float32 [samples]
    prompt: str | None  # what the engine fed its text encoder (None: the engine does not say)


def _pool_video(x: torch.Tensor) -> torch.Tensor:
    c, f, h, w = x.shape
    size = (min(f, VIDEO_POOL[1]), min(h, VIDEO_POOL[2]), min(w, VIDEO_POOL[3]))
    pooled = F.adaptive_avg_pool3d(x[None].float(), size)[0]
    groups = VIDEO_POOL[0] if c % VIDEO_POOL[0] == 0 else 1
    return pooled.reshape(groups, c // groups, *pooled.shape[1:]).mean(1)


def _pool_audio(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool1d(x.float().T[None], min(x.shape[0], AUDIO_POOL))[0].T


POOL = {"video": _pool_video, "audio": _pool_audio}


def _thumbnails(frames: torch.Tensor) -> torch.Tensor:
    picks = torch.linspace(0, frames.shape[0] - 1, min(THUMB_FRAMES, frames.shape[0])).round().long()
    chosen = frames[picks].permute(0, 3, 1, 2).float()
    side = (min(THUMB_SIDE, chosen.shape[2]), min(THUMB_SIDE, chosen.shape[3]))
    return F.adaptive_avg_pool2d(chosen, side).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def _blocks(sound: torch.Tensor) -> torch.Tensor:
    usable = sound.shape[0] // AUDIO_BLOCK * AUDIO_BLOCK
    return sound[:usable].float().reshape(-1, AUDIO_BLOCK).mean(1) if usable else sound.float()


def digests(output: Output) -> dict[str, str]:
    """sha256 of the full final latents, frames and audio: equal digests mean the same output, bit for bit."""
    tensors = {**{f"{t}_latents": output.final[t] for t in TOWERS}, "frames": output.frames,
               "audio": output.sound}
    return {name: hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest() for name, t in tensors.items()}


def summarize(output: Output) -> Output:
    """The output at kilobyte size: what a stored reference keeps and what it is compared on."""
    return Output(steps={t: [POOL[t](x) for x in xs] for t, xs in output.steps.items()},
                  final={t: POOL[t](x) for t, x in output.final.items()},
                  frames=_thumbnails(output.frames), sound=_blocks(output.sound), prompt=output.prompt)


def _tensor_to_json(t: torch.Tensor) -> dict[str, Any]:
    array = t.contiguous().numpy()
    return {"shape": list(array.shape), "dtype": str(array.dtype),
            "data": base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode("ascii")}


def _tensor_from_json(data: dict[str, Any]) -> torch.Tensor:
    raw = base64.b64decode(data["data"])
    array = np.frombuffer(raw, dtype=np.dtype(data["dtype"]).newbyteorder("<")).reshape(data["shape"])
    return torch.from_numpy(array.astype(np.dtype(data["dtype"])))


def output_to_json(output: Output) -> dict[str, Any]:
    return {"steps": {t: [_tensor_to_json(x) for x in xs] for t, xs in output.steps.items()},
            "final": {t: _tensor_to_json(x) for t, x in output.final.items()},
            "frames": _tensor_to_json(output.frames), "sound": _tensor_to_json(output.sound),
            "prompt": output.prompt}


def output_from_json(data: dict[str, Any]) -> Output:
    return Output(steps={t: [_tensor_from_json(x) for x in xs] for t, xs in data["steps"].items()},
                  final={t: _tensor_from_json(x) for t, x in data["final"].items()},
                  frames=_tensor_from_json(data["frames"]), sound=_tensor_from_json(data["sound"]),
                  prompt=data["prompt"])


@dataclass(frozen=True)
class StoredReference:
    """The reference engine's output of one case, summarized, with the noise floor measured on the same
    summaries (its fp32 vs bf16 run) and where it was made."""

    output: Output
    floor: dict[str, Any]  # fidelity.Differences.to_dict() of the summaries
    dtype: str  # the dtype the reference ran in
    floor_dtype: str  # the other dtype of the floor
    device: str  # the device's name (torch.cuda.get_device_name, or "cpu")
    digests: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"output": output_to_json(self.output), "floor": self.floor, "dtype": self.dtype,
                "floor_dtype": self.floor_dtype, "device": self.device, "digests": self.digests}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredReference:
        return cls(output=output_from_json(data["output"]), floor=decode_floats(data["floor"]),
                   dtype=data["dtype"],
                   floor_dtype=data["floor_dtype"], device=data["device"], digests=dict(data["digests"]))

    def refusal(self, dtype: str, device: str) -> str | None:
        """Why this run (dtype, device name) must not be compared with the stored reference, or None."""
        if dtype != self.dtype:
            return f"the stored reference ran in {self.dtype}, this run in {dtype}: store one in {dtype}"
        if dtype != "float32" and device != self.device:
            return (f"the stored reference is a {self.dtype} result of {self.device}, this run "
                    f"is on {device}: {self.dtype} results of two devices are not compared "
                    "(store a reference on this device: `ovi-bench baseline update`)")
        return None


def references_path(directory: Path, hardware: str, suite: str) -> Path:
    return Path(directory) / hardware / "references" / f"{suite}.json"


def _read_file(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read stored references ({exc})") from None
    STORED_REFERENCE.check(data, source=str(path))
    return data


def load_reference(path: Path, case_id: str) -> StoredReference:
    """The stored reference of one case; SchemaError when the file or the case is missing or unreadable."""
    cases = _read_file(path).get("cases", {})
    if case_id not in cases:
        raise SchemaError(f"{path}: no stored reference for {case_id}")
    try:
        return StoredReference.from_dict(cases[case_id])
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{path}: the stored reference of {case_id} is not valid ({exc})") from None


def stored_case_ids(path: Path) -> set[str]:
    return set(_read_file(path).get("cases", {})) if path.is_file() else set()


def update_references(report: RunReport, directory: Path, hardware: str | None = None, *,
                      write: bool = True) -> dict[str, list[str]]:
    """Store the reference output of every successful fidelity case of `report` that ran the reference
    engine (the payload its worker recorded); other cases stored before are kept. Returns the stored
    case ids per references file."""
    hardware = hardware or report.hardware
    stored: dict[str, list[str]] = {}
    for suite in report.suites:
        cases = [c for c in report.cases if c.suite == suite and c.status == "ok"
                 and PAYLOAD_METRIC in c.metrics]
        if not cases:
            continue
        path = references_path(directory, hardware, suite)
        data = _read_file(path) if path.is_file() else {"cases": {}}
        data = {"schema_version": STORED_REFERENCE.version, "suite": suite, "hardware": hardware,
                "provenance": {"run_id": report.run_id, "engine": report.engine, "weights": report.weights,
                               "git_commit": report.environment.git_commit, "date": report.environment.date},
                "cases": {**data["cases"], **{c.case_id: c.metrics[PAYLOAD_METRIC] for c in cases}}}
        stored[str(path)] = sorted(c.case_id for c in cases)
        if write:
            write_atomic(path, canonical_json(data))
    return stored


def attach_stored_reference(job: Any, directory: Path, hardware: str,
                            known: dict[Path, set[str]] | None = None) -> Any:
    """A fidelity job with `params.stored_reference` set to the file holding its case, when one is stored
    for this hardware and the suite asks for it (`reference: auto` or `stored`); other jobs unchanged.
    `known`: the case ids of each file already read, so that a run's jobs read each file once."""
    if (job.scenario != SCENARIO or job.params.get("reference") == "engine"
        or job.params.get("stored_reference")):
        return job
    path = references_path(directory, hardware, job.suite)
    known = {} if known is None else known
    if path not in known:
        known[path] = stored_case_ids(path)
    if job.case_id not in known[path]:
        return job
    return replace(job, params={**job.params, "stored_reference": str(path)})
