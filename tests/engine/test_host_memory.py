"""Host arenas (cpu_offload's host storage) on the CPU: views alias one aligned buffer, modules compute the
same, meta modules are filled in place; synthetic weights do not depend on the number of drawing threads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ovi_engine import OviPipeline, PipelineConfig
from ovi_engine.fusion import FUSION_PRESETS, FusionModel, build_fusion_model
from ovi_engine.host_memory import HostArena
from ovi_engine.weights import build_on_meta, host_storage, synthesize


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 3)
        self.b = nn.Linear(5, 3, bias=False)
        self.b.weight = self.a.weight  # one tensor registered twice: packed once
        self.register_buffer("scale", torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.a(x) + self.b(x)) * self.scale.float()


def tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def start_of(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@pytest.mark.parametrize("alignment", [64, 256])
def test_arena_aliases_one_aligned_buffer_and_outputs_are_unchanged(alignment: int) -> None:
    torch.manual_seed(0)
    model = Tied().eval()
    x = torch.randn(4, 5)
    before = model(x)
    sizes = [t.numel() * t.element_size() for t in tensors(model)]  # weight (tied), a.bias, scale
    arena = HostArena([model], pin=False, alignment=alignment)
    assert arena.nbytes == sum(-(-n // alignment) * alignment for n in sizes) and len(arena.tensors) == 3
    base = arena.host.data_ptr()
    assert all(start_of(t) == base and (t.data_ptr() - base) % alignment == 0 for t in tensors(model))
    assert model.b.weight is model.a.weight and isinstance(model.a.weight, nn.Parameter)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)

    arena.to(torch.device("cpu"))  # the device move, with the CPU standing in for the device
    assert all(start_of(t) == arena.device_buffer.data_ptr() != base for t in tensors(model))
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    arena.to_host()
    assert all(start_of(t) == base for t in tensors(model)) and arena.device_buffer is None
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_a_meta_module_is_filled_in_place_in_its_arena() -> None:
    arenas: list[HostArena] = []
    with host_storage(lambda module: arenas.append(HostArena([module], pin=False))):
        packed = build_fusion_model("tiny", device="cpu", dtype=torch.float32, seed=5)
    plain = build_fusion_model("tiny", device="cpu", dtype=torch.float32, seed=5)
    assert len(arenas) == 1
    assert all(start_of(t) == arenas[0].host.data_ptr() for t in tensors(packed))
    expected = plain.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in packed.state_dict().items())


@pytest.mark.parametrize("threads", [2, 5])
def test_parallel_synthesis_draws_the_same_tensors_as_serial(threads: int) -> None:
    config = FUSION_PRESETS["tiny"]

    def draw(threads: int) -> dict[str, torch.Tensor]:
        model = build_on_meta(lambda: FusionModel(config))
        return synthesize(model, seed=3, device="cpu", dtype=torch.bfloat16, threads=threads,
                          rules=FusionModel.SYNTHETIC_RULES).state_dict()

    serial, parallel = draw(1), draw(threads)
    assert set(parallel) == set(serial)
    assert all(torch.equal(value, serial[name]) for name, value in parallel.items())


def test_cpu_offload_keeps_modules_in_arenas_and_moves_the_text_encoder_in_one_copy(monkeypatch) -> None:
    pipe = OviPipeline(PipelineConfig(variant="720x720_5s", preset="tiny", policy="cpu_offload",
                                      area=32 * 32))
    pipe.load()
    slots = pipe.placement.slots
    for name, slot in slots.items():
        storages = {a.host.data_ptr() for a in slot.arenas}
        if name == "fusion":  # the blocks' arenas belong to the streamer; the rest's stays on the device
            storages |= {a.host.data_ptr() for a in pipe.placement.streamers["fusion"].arenas}
            storages |= {a.device_buffer.data_ptr() for a in slot.arenas}
        assert {start_of(t) for t in tensors(slot.module)} <= storages, name
    moves: list[int] = []
    original = HostArena.to
    monkeypatch.setattr(HostArena, "to",
                        lambda self, *a, **kw: (moves.append(id(self)), original(self, *a, **kw)))
    pipe.encode_text("a prompt")
    assert moves == [id(a) for a in slots["text_encoder"].arenas] and len(moves) == 1
    assert ({start_of(t) for t in tensors(slots["text_encoder"].module)}
            == {slots["text_encoder"].arenas[0].host.data_ptr()})


def test_offload_benchmark_script_runs_on_the_cpu(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "offload.json"
    subprocess.run([sys.executable, "benchmarks/bench_offload.py", "--preset", "tiny", "--device", "cpu",
                    "--variant", "720x720_5s", "--prompts", "2", "--out", str(out)],
                   check=True, cwd=Path(__file__).parents[2], capture_output=True)
    result = json.loads(out.read_text())
    assert set(result["module_bytes"]) == {"text_encoder", "fusion", "video_vae", "audio_codec"}
    assert result["arena_bytes"] >= sum(result["module_bytes"].values()) and not result["arenas_pinned"]
    assert len(result["encode_text_s"]) == 2 and result["load_s"] > 0


@pytest.mark.parametrize("slg_layer", [1, 2])  # a middle pair and the last of the tiny model's three
def test_cpu_offload_returns_every_streamed_block_to_the_host_after_denoise(slg_layer: int,
                                                                           monkeypatch) -> None:
    # The unconditional pass skips pair slg_layer, which the pair before it has already prefetched; that copy
    # must not stay on the device through decode and into the next generation.
    pipe = OviPipeline(PipelineConfig(variant="720x720_5s", preset="tiny", policy="cpu_offload",
                                      area=32 * 32))
    pipe.load()
    streamer = pipe.placement.streamers["fusion"]
    fetched: list[int] = []
    original = HostArena.to
    index = {id(a): i for i, a in enumerate(streamer.arenas)}

    def to(self: HostArena, *args: object, **kwargs: object) -> None:
        fetched.append(index.get(id(self), -1))
        original(self, *args, **kwargs)

    monkeypatch.setattr(HostArena, "to", to)
    pipe.denoise(pipe.encode_text("a prompt"), steps=2, slg_layer=slg_layer)
    assert slg_layer in fetched  # the skipped pair was prefetched: the case this test is about
    assert [i for i, a in enumerate(streamer.arenas) if a.device_buffer is not None] == []
    assert streamer.ready == {}
