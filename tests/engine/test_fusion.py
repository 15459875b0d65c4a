"""The fusion transformer: exact upstream schema at full size, and the forward's semantics at tiny size."""

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ovi_engine.dit import apply_rope, rope_angles, rotate_pairs
from ovi_engine.fusion import FUSION_PRESETS, FusionConfig, Pass, build_fusion_model, load_fusion_model
from ovi_engine.weights import CheckpointError, save_checkpoint

SCHEMA = Path(__file__).parents[1] / "reference" / "ovi_fusion_11b.schema.json"
TINY = FUSION_PRESETS["tiny"]


def test_full_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    expected = {name: (tuple(shape), dtype) for name, shape, dtype in schema["tensors"]}
    model = build_fusion_model("full")  # meta: no memory
    found = {name: (tuple(t.shape), str(t.dtype).removeprefix("torch."))
             for name, t in model.state_dict().items()}
    assert sorted(set(expected) - set(found)) == [] and sorted(set(found) - set(expected)) == []
    assert {k: v for k, v in found.items() if v != expected[k]} == {}
    assert len(found) == schema["num_tensors"] == 2073
    assert sum(p.numel() for p in model.parameters()) == schema["params"]
    assert all(p.is_meta for p in model.parameters())


def inputs(config: FusionConfig = TINY, frames: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    text = config.text_dim
    context = torch.randn(1, 24, text, generator=gen)
    context[:, 20:] = 0  # zero past the prompt, as the text encoder hands it over (then padded to 32)
    return {
        "video": torch.randn(1, 48, frames, 6, 8, generator=gen),
        "audio": torch.randn(1, 12, 20, generator=gen),
        "video_context": context,
        "audio_context": torch.randn(1, 24, text, generator=gen),
    }


@pytest.fixture(scope="module")
def tiny():
    return build_fusion_model("tiny", device="cpu", seed=0)


def run(model, t: float = 600.0, **kw):
    x = inputs()
    with torch.inference_mode():
        return model(x["video"], x["audio"], torch.tensor([t]), x["video_context"], x["audio_context"], **kw)


@pytest.mark.parametrize("first_frame_clean", [False, True], ids=["t2v", "i2v"])
def test_tiny_forward_shapes(tiny, first_frame_clean: bool) -> None:
    video, audio = run(tiny, first_frame_clean=first_frame_clean)
    assert video.shape == (1, 48, 3, 6, 8) and audio.shape == (1, 12, 20)
    assert video.dtype == audio.dtype == torch.bfloat16
    assert torch.isfinite(video.float()).all() and torch.isfinite(audio.float()).all()


def test_first_frame_clean_gives_its_tokens_t0(tiny) -> None:
    x = inputs()
    t = 600.0
    with torch.inference_mode():
        clean = tiny(x["video"], x["audio"], torch.tensor([t]), x["video_context"], x["audio_context"],
                     first_frame_clean=True)
        # Upstream's formulation: a timestep per token, zero on the first frame's h*w tokens.
        vm, am = tiny.video_model, tiny.audio_model
        grid = (3, 3, 4)
        per_token = torch.full((1, math.prod(grid)), t)
        per_token[:, : grid[1] * grid[2]] = 0
        v = vm.prepare(x["video"], per_token, x["video_context"])
        a = am.prepare(x["audio"], torch.tensor([[t]]), x["audio_context"])
        for pair in tiny.block_pairs:
            pair(v, a, "auto")
        reference = vm.finish(v), am.finish(a)
        plain = tiny(x["video"], x["audio"], torch.tensor([t]), x["video_context"], x["audio_context"])
    for ours, ref in zip(clean, reference):
        torch.testing.assert_close(ours.float(), ref.float(), atol=2e-2, rtol=2e-2)
    assert not torch.allclose(clean[0].float(), plain[0].float(), atol=1e-2)


def test_first_frame_clean_is_moot_at_t0(tiny) -> None:
    for ours, ref in zip(run(tiny, t=0.0, first_frame_clean=True), run(tiny, t=0.0)):
        assert torch.equal(ours, ref)


def test_skip_block_equals_model_without_that_pair(tiny) -> None:
    skipped = run(tiny, skip_block=1)
    full = run(tiny)
    assert not torch.equal(skipped[0], full[0]) and not torch.equal(skipped[1], full[1])

    two = FusionConfig(*(dataclasses.replace(c, num_layers=2) for c in (TINY.video, TINY.audio)))
    shorter = build_fusion_model(two, device="cpu", seed=1)
    state = {name.replace(".blocks.2.", ".blocks.1."): tensor
             for name, tensor in tiny.state_dict().items() if ".blocks.1." not in name}
    shorter.load_state_dict(state, strict=True)
    for ours, ref in zip(skipped, run(shorter)):
        assert torch.equal(ours, ref)


# ---- RoPE against a direct transcription of VARIANTS.md (complex128, full head_dim) ---------------
def rope_params(positions: int, dims: int, scaling: float = 1.0) -> torch.Tensor:
    freqs = scaling / 10000 ** (torch.arange(0, dims, 2, dtype=torch.float64) / dims)
    angles = torch.outer(torch.arange(positions, dtype=torch.float64), freqs)
    return torch.polar(torch.ones_like(angles), angles)  # [positions, dims/2] complex128


def reference_video_rope(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    t_table, h_table, w_table = rope_params(1024, 44), rope_params(1024, 42), rope_params(1024, 42)
    out = torch.empty_like(x, dtype=torch.float64)
    f, h, w = grid
    for token in range(f * h * w):
        fi, rest = divmod(token, h * w)
        hi, wi = divmod(rest, w)
        table = torch.cat([t_table[fi], h_table[hi], w_table[wi]])  # 22 + 21 + 21 pairs
        pairs = torch.view_as_complex(x[:, token].double().reshape(*x.shape[:1], x.shape[2], 64, 2))
        out[:, token] = torch.view_as_real(pairs * table).flatten(-2)
    return out


def reference_audio_rope(x: torch.Tensor) -> torch.Tensor:
    table = rope_params(1024, 44, scaling=0.19676)  # only the first 22 pairs rotate
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:3], 64, 2)).clone()
    pairs[..., :22] *= table[: x.shape[1], None, :]
    return torch.view_as_real(pairs).flatten(-2)


@pytest.mark.parametrize("rotate", [apply_rope, rotate_pairs], ids=["eager", "compilable"])
def test_video_rope_matches_reference(rotate) -> None:
    grid = (3, 4, 5)
    x = torch.randn(2, math.prod(grid), 3, 128, generator=torch.Generator().manual_seed(0))
    angles = rope_angles(grid, 128, 1.0, "cpu")[:, None]
    ours = rotate(x.clone(), angles.cos().float(), angles.sin().float())
    torch.testing.assert_close(ours.double(), reference_video_rope(x, grid), atol=1e-5, rtol=1e-5)


def test_audio_rope_matches_reference() -> None:
    x = torch.randn(1, 40, 2, 128, generator=torch.Generator().manual_seed(1))
    angles = rope_angles((40,), 128, 0.19676, "cpu")[:, None]
    ours = apply_rope(x.clone(), angles.cos().float(), angles.sin().float())
    torch.testing.assert_close(ours.double(), reference_audio_rope(x), atol=1e-5, rtol=1e-5)
    assert torch.equal(ours[..., 44:], x[..., 44:])  # pairs 22..63 pass through untouched


def test_weights_round_trip(tiny, tmp_path: Path) -> None:
    path = save_checkpoint(tiny, tmp_path / "fusion.safetensors", {"preset": "tiny"})
    loaded = load_fusion_model(str(path), preset="tiny", device="cpu")
    for ours, ref in zip(run(loaded), run(tiny)):
        assert torch.equal(ours, ref)

    state = dict(tiny.state_dict())
    del state["audio_model.blocks.2.cross_attn.k_fusion.weight"]
    save_checkpoint(state, tmp_path / "broken.safetensors", {})
    with pytest.raises(CheckpointError,
                       match=r"missing: audio_model\.blocks\.2\.cross_attn\.k_fusion\.weight"):
        load_fusion_model(str(tmp_path / "broken.safetensors"), preset="tiny", device="cpu")


def test_synthetic_weights_stay_finite_through_30_pairs() -> None:
    deep = FusionConfig(*(dataclasses.replace(c, num_layers=30) for c in (TINY.video, TINY.audio)))
    model = build_fusion_model(deep, device="cpu", seed=3)
    for out in run(model, t=999.0):
        assert torch.isfinite(out.float()).all()
        assert 0.1 < float(out.float().std()) < 10  # O(1) velocities, neither vanished nor blown up


def test_benchmark_runs_at_tiny_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(__file__).parents[2] / "benchmarks" / "bench_fusion.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as when run as a script: its siblings import
    spec = importlib.util.spec_from_file_location("bench_fusion", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_fusion", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--preset", "tiny", "--device", "cpu", "--variants", "960x960_10s", "--steps-timed",
                       "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema_version"] == 1 and report["attention_resolved"] == "sdpa"
    result = report["variants"]["960x960_10s"]
    assert (len(result["samples_s"]) == 2
            and min(result["samples_s"]) <= result["median_s"] <= max(result["samples_s"]))
    assert result["video_tokens"] == 3 * 2 * 3 and result["audio_tokens"] == 10  # [48,3,4,6] in 1x2x2 patches
    with pytest.raises(SystemExit):
        bench.main(["--variants", "1080p", "--out", str(out)])


def query_inputs(tokens: int, heads: int, seed: int) -> tuple[torch.Tensor, torch.nn.RMSNorm, torch.Tensor]:
    """Projected queries [1, tokens, heads*32], an RMSNorm with non-trivial weights, RoPE
    angles [tokens,1,16]."""
    torch.manual_seed(seed)
    x = torch.randn(1, tokens, heads * 32)
    norm = torch.nn.RMSNorm(heads * 32, eps=1e-6)
    norm.weight.data.uniform_(0.5, 1.5)
    return x, norm, torch.rand(tokens, 1, 16) * 6


def test_fused_helpers_equal_their_eager_paths() -> None:
    """What `compile_helpers` compiles must compute what the eager path computes."""
    from ovi_engine import dit

    x, norm, angles = query_inputs(tokens=12, heads=4, seed=5)
    eager = dit.norm_rope(norm, x.clone(), angles.cos(), angles.sin(), heads=4)
    fused = dit.rms_norm_rope(x, norm.weight, 1e-6, angles.cos(), angles.sin(), heads=4)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)
    layer = torch.nn.Linear(32, 48)
    h = torch.randn(3, 32)
    torch.testing.assert_close(dit.linear_gelu(layer, h),
                               torch.nn.functional.gelu(layer(h), approximate="tanh"))


def test_query_normed_both_ways_equals_the_eager_steps() -> None:
    """The cross-attention query: normed for the text, normed + RoPE for the other tower, from one read."""
    from ovi_engine import dit

    x, norm, angles = query_inputs(tokens=10, heads=3, seed=6)
    plain, roped = dit.rms_norm_with_rope(x, norm.weight, 1e-6, angles.cos(), angles.sin(), heads=3)
    torch.testing.assert_close(plain, norm(x).unflatten(-1, (3, -1)))
    torch.testing.assert_close(roped,
                               dit.apply_rope(norm(x).unflatten(-1, (3, -1)), angles.cos(), angles.sin()))
    assert not torch.equal(plain, roped)


def test_profile_sorts_kernels_into_families(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step profile's families: FA3 (a CUTLASS kernel) and cuDNN's SDPA are attention, cuBLAS is GEMM."""
    path = Path(__file__).parents[2] / "benchmarks" / "profile_fusion.py"
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location("profile_fusion", path)
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)
    assert profile.family("void cutlass::device_kernel<flash::FlashAttnFwdSm90<...>>") == "attention"
    assert profile.family("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16") == "attention"
    assert profile.family("nvjet_tst_256x128_64x4_1x2_h_bz_coopB_NNT") == "gemm"
    assert profile.family("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64") == "gemm"
    assert profile.family("triton_poi_fused_add_addcmul_native_layer_norm_0") == "other"
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            profile.main(["--out", "/dev/null"])


@pytest.mark.parametrize("skips", [(None, 1), (None, 0), (2, None, 1)],
                         ids=["cfg_slg", "skip_pair0", "three"])
def test_passes_sharing_their_start_equal_separate_forwards(tiny, skips) -> None:
    """forward_passes computes the text-free start once (pair 0's self-attentions unless a pass skips
    pair 0); every prediction must still equal its own forward, with its own contexts."""
    x = inputs()
    t = torch.tensor([600.0])
    gen = torch.Generator().manual_seed(9)
    contexts = [(torch.randn(x["video_context"].shape, generator=gen), torch.randn(x["audio_context"].shape,
                                                                                  generator=gen))
                for _ in skips]
    with torch.inference_mode():
        shared = tiny.forward_passes(x["video"], x["audio"], t,
                                     [Pass(v, a, skip) for (v, a), skip in zip(contexts, skips)])
        separate = [tiny(x["video"], x["audio"], t, v, a, skip_block=skip)
                    for (v, a), skip in zip(contexts, skips)]
    assert len(shared) == len(skips)
    for got, want in zip(shared, separate):
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(shared[0][0], shared[1][0])  # the passes did differ


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch):
    path = Path(__file__).parents[2] / "benchmarks" / f"{name}.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as when run as a script: its siblings import
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("skip", [1, 0, None], ids=["slg", "skip_pair0", "no_slg"])
def test_fa4_tile_sweep_weighs_the_attention_calls_a_step_makes(tiny, monkeypatch, skip) -> None:
    """fa4_tiles.py ranks tiles by sum(calls per step x time): its call counts must be the ones a step of the
    model makes, counted here by wrapping the attention the blocks call."""
    from collections import Counter

    from ovi_engine import dit

    sweep = load_benchmark("fa4_tiles", monkeypatch)
    seen: Counter[tuple[int, int]] = Counter()
    attend = dit.attend

    def counting(q, k, v, **kw):
        seen[q.shape[1], k.shape[1]] += 1
        return attend(q, k, v, **kw)

    monkeypatch.setattr(dit, "attend", counting)
    x = inputs()
    with torch.inference_mode():
        tiny.forward_passes(x["video"], x["audio"], torch.tensor([600.0]),
                            [Pass(x["video_context"], x["audio_context"]),
                             Pass(x["video_context"], x["audio_context"], skip_block=skip)])
    video, audio, text = 3 * 3 * 4, 12, TINY.video.text_len
    calls = sweep.step_calls(video, audio, text, TINY.num_layers, skip_block=skip)
    assert {(c.lq, c.lk): c.per_step for c in calls} == dict(seen)


def test_fa4_tile_sweep_ranks_by_step_time_and_writes_the_table(monkeypatch, tmp_path) -> None:
    sweep = load_benchmark("fa4_tiles", monkeypatch)
    from ovi_engine.attention.flash_attn_4 import Fa4Tile, read_tiles, tile_entry

    calls = [sweep.Call("video_self", 100, 100, 10), sweep.Call("audio_to_video", 5, 100, 20)]
    by_call = {"video_self": {"own": {"median_ms": 2.0}, "a": {"median_ms": 1.0}, "b": {"median_ms": 0.5}},
               "audio_to_video": {"own": {"median_ms": 1.0}, "a": {"median_ms": 1.1},
                                  "b": {"refused": "no"}}}
    # b is fastest where it ran but refused a shape the step needs: it is not ranked
    assert sweep.rank(calls, by_call) == pytest.approx({"a": 0.032, "own": 0.040})
    table = tmp_path / "fa4_tiles.json"
    table.write_text(json.dumps({"schema_version": 1, "tiles": [
        tile_entry("8.0", 128, Fa4Tile(128, 64))]}))
    sweep.update_table(table, "9.0", tile_entry("9.0", 128, Fa4Tile(128, 176), device="H200"))
    assert read_tiles(table) == {("8.0", 128): Fa4Tile(128, 64), ("9.0", 128): Fa4Tile(128, 176)}
    sweep.update_table(table, "9.0", None)  # FA4's own choice won: this GPU's entry goes
    assert read_tiles(table) == {("8.0", 128): Fa4Tile(128, 64)}
