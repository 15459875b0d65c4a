"""Attention registry: every CPU backend against an independent float64 softmax(QK^T/sqrt(d))V."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import zlib
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import ovi_engine.attention
from ovi_engine.attention import (
    BACKENDS,
    AttentionUnavailable,
    Backend,
    attend,
    attention_flops,
    available_backends,
    register,
    resolve,
)
from ovi_engine.attention.bench import AttentionInputs, measure

CPU = torch.device("cpu")
CPU_BACKENDS = ["auto"] + [
    name for name, s in available_backends(CPU).items() if s.available and name != "auto"
]
BF16_REL_TOL = 1e-2  # bf16 output rounding alone is ~2e-3 relative

# (heads, head_dim, batch, lq, lk): Ovi's 24 x 128 with short lengths, and a tiny 2 x 32 layout
LAYOUTS = {
    "ovi_self": (24, 128, 1, 64, 64),
    "ovi_video_to_audio": (24, 128, 1, 300, 20),
    "tiny_video_to_audio": (2, 32, 1, 300, 20),
    "tiny_audio_to_video": (2, 32, 1, 20, 300),
    "tiny_self_batch2": (2, 32, 2, 40, 40),
}


def float64_attention(q, k, v, k_lens=None):
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if k_lens is not None:
        padded = torch.arange(k.shape[1])[None, :] >= k_lens[:, None]  # [B, Lk]
        scores = scores.masked_fill(padded[:, None, None, :], float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)


def rel_err(out, want):
    return ((out.double() - want).norm() / want.norm()).item()


def random_qkv(seed, heads, head_dim, batch, lq, lk, dtype=torch.bfloat16):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, n, heads, head_dim, generator=gen).to(dtype) for n in (lq, lk, lk))


@pytest.fixture
def seed(request) -> int:
    return zlib.crc32(request.node.name.encode())  # fresh inputs per test case


@pytest.fixture
def scratch_registry(monkeypatch):
    """Backends registered by a test disappear after it."""
    monkeypatch.setattr(ovi_engine.attention, "BACKENDS", dict(BACKENDS))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_matches_float64(backend, layout, seed):
    q, k, v = random_qkv(seed, *LAYOUTS[layout])
    out = attend(q, k, v, backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_err(out, float64_attention(q, k, v)) < BF16_REL_TOL


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "heads, head_dim, lq, k_lens",
    [(24, 128, 48, [32, 17]), (2, 32, 300, [20, 5]), (2, 32, 40, [11])],
    ids=["ovi_text_batch2", "tiny_text_batch2", "tiny_text_batch1"],
)
def test_padded_keys_are_ignored(backend, heads, head_dim, lq, k_lens, seed):
    lk = max(k_lens) + 7
    q, k, v = random_qkv(seed, heads, head_dim, len(k_lens), lq, lk)
    for b, n in enumerate(k_lens):  # loud padding: any leak shows up as a large error
        k[b, n:] = 30.0
        v[b, n:] = 1000.0
    lens = torch.tensor(k_lens)
    want = float64_attention(q, k, v, lens)
    out = attend(q, k, v, backend=backend, k_lens=lens)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_err(out, want) < BF16_REL_TOL
    impl = BACKENDS[resolve(backend, CPU, q.dtype)]
    if impl.masks:  # its own masking too, not only the registry's slicing fallback
        assert rel_err(impl.fn(q, k, v, lens), want) < BF16_REL_TOL


def test_auto_resolves_to_a_concrete_backend():
    name = resolve("auto", "cpu", torch.bfloat16)
    assert name == "sdpa" and name in BACKENDS
    auto = available_backends("cpu")["auto"]
    assert (auto.kernel.startswith(f"{name}: ")
            and auto.first_call_s == available_backends("cpu")[name].first_call_s)


def test_unavailable_backends_say_why_and_raise():
    statuses = available_backends(CPU)
    assert set(statuses) == {"auto", *BACKENDS}
    unavailable = [s for s in statuses.values() if not s.available]
    assert {"sdpa_cudnn", "sdpa_efficient", "flash_attn_3"} <= {s.name for s in unavailable}
    for status in unavailable:
        assert status.reason
        with pytest.raises(AttentionUnavailable, match=f"'{status.name}'.*{status.reason[:20]}"):
            resolve(status.name, CPU, torch.bfloat16)
    q = torch.zeros(1, 4, 2, 32, dtype=torch.bfloat16)
    with pytest.raises(AttentionUnavailable, match="sdpa_cudnn.*use --attention"):
        attend(q, q, q, backend="sdpa_cudnn")
    with pytest.raises(AttentionUnavailable, match="unknown attention backend 'nope'"):
        resolve("nope", CPU, torch.bfloat16)


@pytest.mark.skipif(importlib.util.find_spec("sageattention") is not None, reason="sageattention installed")
def test_missing_package_names_the_install_command():
    assert "pip install sageattention" in available_backends(CPU)["sage"].reason


def test_pinned_sdpa_kernel_raises_instead_of_falling_back():
    q = torch.zeros(1, 4, 2, 32, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError):  # CPU has no efficient kernel; math must not be used silently
        BACKENDS["sdpa_efficient"].fn(q, q, q, None)


def test_registry_accepts_a_backend_and_slices_keys_for_it(seed, scratch_registry):
    seen_masks = []

    def no_mask_math(q, k, v, k_lens):
        seen_masks.append(k_lens)
        return BACKENDS["sdpa_math"].fn(q, k, v, None)

    register(Backend(name="test_plugin_no_mask", kernel="test", fn=no_mask_math))
    with pytest.raises(ValueError):
        register(Backend(name="test_plugin_no_mask", kernel="test", fn=no_mask_math))
    assert available_backends(CPU)["test_plugin_no_mask"].available
    q, k, v = random_qkv(seed, 2, 32, 2, 24, 16)
    lens = torch.tensor([16, 9])
    seen_masks.clear()
    out = attend(q, k, v, backend="test_plugin_no_mask", k_lens=lens)
    assert seen_masks == [None, None]  # one call per batch element, keys sliced
    assert rel_err(out, float64_attention(q, k, v, lens)) < BF16_REL_TOL


def test_probe_rejects_refusing_and_wrong_backends(scratch_registry):
    def refuses(q, k, v, k_lens):
        raise RuntimeError("no kernel for this head dim")

    def wrong(q, k, v, k_lens):
        return torch.zeros_like(q)

    register(Backend(name="test_refuses", kernel="test", fn=refuses))
    register(Backend(name="test_wrong", kernel="test", fn=wrong))
    statuses = available_backends(CPU)
    assert (
        not statuses["test_refuses"].available
        and "no kernel for this head dim" in statuses["test_refuses"].reason
    )
    assert not statuses["test_wrong"].available and "wrong result" in statuses["test_wrong"].reason


def test_attention_flops_matches_torch_flop_counter():
    q, k, v = random_qkv(0, 3, 8, 1, 5, 7, dtype=torch.float32)
    with FlopCounterMode(display=False) as counter:
        probs = (q.transpose(1, 2) @ k.permute(0, 2, 3, 1)).softmax(-1)
        probs @ v.transpose(1, 2)
    assert attention_flops(5, 7, 3, 8) == counter.get_total_flops()


def test_measure_reports_consistent_figures():
    inputs = AttentionInputs.random(40, 12, 2, 32, torch.bfloat16, "cpu", seed=7)
    result = measure("auto", inputs, reps=3, warmup=1)
    assert result.resolved == "sdpa" and len(result.times_ms) == 3
    flops = 4 * 2 * 40 * 12 * 32
    assert result.tflops == pytest.approx(flops / (sorted(result.times_ms)[1] * 1e-3) / 1e12)
    assert result.rel_err < BF16_REL_TOL
    assert rel_err(inputs.reference, float64_attention(inputs.q, inputs.k, inputs.v)) < 1e-5
    with pytest.raises(AttentionUnavailable):
        measure("sdpa_cudnn", inputs)


def test_bench_script_tiny_cpu(tmp_path, monkeypatch):
    path = Path(__file__).parents[2] / "benchmarks" / "bench_attention.py"
    spec = importlib.util.spec_from_file_location("bench_attention", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_attention", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    out = tmp_path / "attention.json"
    argv = ["--device", "cpu", "--tiny", "--backends", "sdpa,sdpa_cudnn", "--reps", "1", "--warmup", "0"]
    assert bench.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["auto"] == "sdpa" and report["heads"] == 2 and report["head_dim"] == 32
    rows = report["results"]
    assert len(rows) == 2 * 6  # two backends x six distinct attention shapes
    for row in rows:
        if row["backend"] == "sdpa":
            assert row["rel_err"] < BF16_REL_TOL and row["tflops"] > 0 and row["share_of_matmul"] > 0
        else:
            assert "needs a CUDA GPU" in row["skipped"]


def test_package_version_names_a_source_build() -> None:
    from ovi_engine.attention.base import package_version

    assert package_version("no-such-dist-xyz", module="json") == "json (source build, no package metadata)"
    assert (package_version("no-such-dist-xyz", module="no_such_module_xyz")
            == "no-such-dist-xyz (not installed)")
    assert package_version("pytest").startswith("pytest ")


@pytest.mark.parametrize("returns_lse", [False, True], ids=["tensor", "tuple"])
def test_fa3_wrapper_passes_blhd_through(monkeypatch, returns_lse: bool) -> None:
    """FlashAttention-3 takes [B, L, H, D] as we do; builds differ in returning out or (out, lse)."""
    import types

    from ovi_engine.attention.flash_attn import fa3
    from ovi_engine.attention.reference import reference_attention

    def flash_attn_func(q, k, v):
        out = reference_attention(q, k, v, None)
        return (out, torch.zeros(q.shape[0], q.shape[2], q.shape[1])) if returns_lse else out

    monkeypatch.setitem(sys.modules, "flash_attn_interface",
                        types.SimpleNamespace(flash_attn_func=flash_attn_func))
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, n, 2, 16, generator=gen) for n in (5, 7, 7))
    torch.testing.assert_close(fa3(q, k, v, None), reference_attention(q, k, v, None))


def _fake(name: str) -> Backend:
    return Backend(name=name, kernel=f"fake {name}",
                   fn=lambda q, k, v, k_lens: BACKENDS["sdpa_math"].fn(q, k, v, None))


def test_auto_picks_the_fastest_probed_candidate_and_says_by_how_much(scratch_registry, monkeypatch):
    for name in ("test_slow", "test_fast", "test_unlisted"):
        register(_fake(name))
    register(Backend(name="test_refuses", kernel="fake", fn=lambda q, k, v, k_lens: 1 / 0))
    timed: list[str] = []

    def fake_ms(backend, device, dtype):
        timed.append(backend.name)
        return {"test_slow": 3.0, "test_fast": 1.5, "test_unlisted": 0.1}[backend.name]

    monkeypatch.setattr(ovi_engine.attention, "auto_order",
                        lambda device: ["test_refuses", "test_slow", "test_fast"])
    monkeypatch.setattr(ovi_engine.attention, "AUTO_TIMED_DEVICES", {"cpu"})
    monkeypatch.setattr(ovi_engine.attention, "_measure_ms", fake_ms)
    ovi_engine.attention._auto.cache_clear()
    assert resolve("auto", CPU, torch.bfloat16) == "test_fast"
    status = available_backends(CPU)["auto"]
    assert status.kernel.startswith("test_fast: fastest") and "test_slow 3 ms, 2.00x slower" in status.kernel
    assert sorted(timed) == ["test_fast", "test_slow"]  # once each (cached), the refusing one never timed
    assert status.first_call_s == available_backends(CPU)["test_fast"].first_call_s is not None
    ovi_engine.attention._auto.cache_clear()


def test_auto_on_the_cpu_takes_sdpa_without_timing(monkeypatch):
    monkeypatch.setattr(ovi_engine.attention, "_measure_ms", lambda *a: pytest.fail("timed on the CPU"))
    ovi_engine.attention._auto.cache_clear()
    assert resolve("auto", CPU, torch.float32) == "sdpa"


def test_probe_times_the_first_call_apart(scratch_registry, monkeypatch):
    calls = []

    def counted(q, k, v, k_lens):
        calls.append(q.shape)
        return BACKENDS["sdpa_math"].fn(q, k, v, None)

    register(Backend(name="test_counted", kernel="fake", fn=counted))
    status = available_backends(CPU)["test_counted"]
    assert (status.available and status.first_call_s is not None and status.first_call_s >= 0
            and len(calls) == 1)
    assert available_backends(CPU)["sdpa_cudnn"].first_call_s is None  # refused before any call


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None,
                    reason="a flash_attn package is installed")
def test_fa4_says_how_to_install_it():
    status = available_backends(CPU)["flash_attn_4"]
    assert not status.available and "flash_attn.cute is not installed" in status.reason
    assert "flash-attn-4==4.0.0b40" in status.reason


def test_fa4_reasons_for_device_dtype_and_arch(monkeypatch):
    import types

    from ovi_engine.attention import flash_attn_4

    monkeypatch.setattr(flash_attn_4, "missing_fa4", lambda: None)  # as if installed
    assert "needs a CUDA GPU" in flash_attn_4.check(CPU, torch.bfloat16)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    cuda = torch.device("cuda", 0)
    assert "supports float16/bfloat16 only" in flash_attn_4.check(cuda, torch.float32)
    assert "sm90 or newer), this is sm86" in flash_attn_4.check(cuda, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (10, 0))
    assert flash_attn_4.check(cuda, torch.bfloat16) is None
    # the wrapper passes [B, L, H, D] through and drops the log-sum-exp
    from ovi_engine.attention.reference import reference_attention

    fake = types.ModuleType("flash_attn.cute")
    fake.flash_attn_func = lambda q, k, v: (reference_attention(q, k, v, None), None)
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", fake)
    q, k, v = random_qkv(5, 2, 16, 1, 5, 7, dtype=torch.float32)
    torch.testing.assert_close(flash_attn_4.fa4(q, k, v, None), reference_attention(q, k, v, None))


def _fake_fa4(monkeypatch) -> list[dict]:
    """flash_attn.cute as a module pair that computes fp32 attention and records how it was called."""
    import types

    from ovi_engine.attention.reference import reference_attention

    calls: list[dict] = []
    cute = types.ModuleType("flash_attn.cute")
    cute.flash_attn_func = lambda q, k, v: (calls.append({}), (reference_attention(q, k, v, None), None))[1]
    interface = types.ModuleType("flash_attn.cute.interface")

    def _flash_attn_fwd(q, k, v, **launch):
        calls.append(launch)
        return reference_attention(q, k, v, None), None, None, None, None

    interface._flash_attn_fwd = _flash_attn_fwd
    for name, module in (("flash_attn", types.ModuleType("flash_attn")), ("flash_attn.cute", cute),
                         ("flash_attn.cute.interface", interface)):
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_fa4_asks_for_the_tuned_tile_of_this_gpu_and_head_dim(monkeypatch, tmp_path):
    from ovi_engine.attention import flash_attn_4 as fa4
    from ovi_engine.attention.reference import reference_attention

    tile = fa4.Fa4Tile(128, 176, num_splits=0)
    table = tmp_path / "fa4_tiles.json"
    table.write_text(json.dumps({"schema_version": 1, "tiles": [
        fa4.tile_entry("9.0", 128, tile, device="NVIDIA H200", step_attention_s={"fa4_default": 3.3})]}))
    monkeypatch.setattr(fa4, "_tiles", lambda: fa4.read_tiles(table))
    calls = _fake_fa4(monkeypatch)
    capability = {"value": "9.0"}
    monkeypatch.setattr(fa4, "capability_of", lambda t: capability["value"])
    q, k, v = random_qkv(5, 2, 128, 1, 5, 7, dtype=torch.float32)
    torch.testing.assert_close(fa4.fa4(q, k, v, None), reference_attention(q, k, v, None))
    assert calls[-1] == {"tile_mn": (128, 176), "mma_pv_is_rs": True, "intra_wg_overlap": True,
                         "num_splits": 0}
    # another GPU generation, another head dim, or no GPU: FA4's own choice
    for cap, head_dim in (("10.0", 128), ("9.0", 64), (None, 128)):
        capability["value"] = cap
        q, k, v = random_qkv(6, 2, head_dim, 1, 5, 7, dtype=torch.float32)
        fa4.fa4(q, k, v, None)
        assert calls[-1] == {}, (cap, head_dim)
    assert tile.label() == "128x176 RS overlap auto splits"
    assert fa4.Fa4Tile(192, 128, intra_wg_overlap=False).label() == "192x128 RS"


def test_fa4_tiles_file_shipped_is_readable_and_a_foreign_schema_is_refused(tmp_path):
    from ovi_engine.attention import flash_attn_4 as fa4

    for (capability, head_dim), tile in fa4.read_tiles().items():  # the committed table
        assert capability.count(".") == 1 and head_dim % 8 == 0 and tile.tile_m % 64 == 0
    other = tmp_path / "fa4_tiles.json"
    other.write_text(json.dumps({"schema_version": 2, "tiles": []}))
    with pytest.raises(ValueError, match="schema_version 2"):
        fa4.read_tiles(other)


def test_auto_times_each_shape_and_adds_the_medians(monkeypatch):
    """_measure_ms: every (Lq, Lk) of AUTO_SHAPES at AUTO_HEADS x AUTO_HEAD_DIM, the median of its reps."""
    import ovi_engine.attention.bench as attention_bench

    shapes: list[tuple[int, ...]] = []
    backend = Backend(name="test_shapes", kernel="fake",
                      fn=lambda q, k, v, k_lens: shapes.append((*q.shape, k.shape[1], v.shape[1])))
    times = iter([[4.0, 1.0, 2.0], [0.5, 9.0, 0.25]])  # medians 2.0 and 0.5

    def fake_time_ms(fn, device, reps, warmup):
        assert reps == ovi_engine.attention.AUTO_REPS and warmup == 1
        fn()
        return next(times)

    monkeypatch.setattr(ovi_engine.attention, "AUTO_SHAPES", ((6, 6), (6, 3)))
    monkeypatch.setattr(ovi_engine.attention, "AUTO_HEADS", 2)
    monkeypatch.setattr(ovi_engine.attention, "AUTO_HEAD_DIM", 16)
    monkeypatch.setattr(attention_bench, "time_ms", fake_time_ms)
    assert ovi_engine.attention._measure_ms(backend, CPU, torch.float32) == 2.0 + 0.5
    assert shapes == [(1, 6, 2, 16, 6, 6), (1, 6, 2, 16, 3, 3)]
