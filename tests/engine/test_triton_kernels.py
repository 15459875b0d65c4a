"""The Triton kernels (q/k RMSNorm + RoPE, gated residual, LayerNorm with a multiply-add) against fp32
math, and where dit.py uses them.

The kernels run on a CUDA GPU, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, in a
subprocess, since the variable must be set before the kernels are defined). Without Triton (CPU-only torch,
as on CI) the kernel tests skip; the H200 run of benchmarks/results/h200-141gb_2026-12-03c ran them there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ovi_engine import dit, triton_kernels

# (batch, tokens, width, heads): Ovi's 24 x 128 heads, a width that is not a power of two, a tiny layout
SHAPES = [(1, 5, 3072, 24), (2, 7, 96, 3), (1, 3, 64, 2)]
# (batch, time groups, tokens per group, width) of gated residuals and LayerNorms on a slice of groups
RESIDUAL_SHAPES = [(1, 3, 4, 3072), (2, 2, 5, 96)]

CHECK = textwrap.dedent("""
    import torch
    from ovi_engine import dit, triton_kernels
    device = "{device}"
    for b, tokens, width, heads in {shapes}:
        gen = torch.Generator().manual_seed(tokens)
        x = torch.randn(b, tokens, width, generator=gen)
        weight = torch.rand(width, generator=gen) + 0.5
        angles = torch.rand(tokens, 1, width // heads // 2, generator=gen) * 6
        cos, sin = angles.cos().to(device), angles.sin().to(device)
        # independent reference: fp32 norm, then each (even, odd) pair rotated as complex numbers
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight
        pairs = torch.view_as_complex(normed.unflatten(-1, (heads, -1, 2)).contiguous())
        roped = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2)
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
            out, plain = triton_kernels.norm_rope(x.to(device, dtype), weight.to(device, dtype), 1e-6,
                                                    cos, sin, heads, with_plain=True)
            alone, none = triton_kernels.norm_rope(x.to(device, dtype), weight.to(device, dtype), 1e-6,
                                                     cos, sin, heads)
            assert out.dtype == dtype and out.shape == (b, tokens, heads, width // heads) and none is None
            torch.testing.assert_close(out.float().cpu(), roped, rtol=tol, atol=tol)
            torch.testing.assert_close(plain.float().cpu(), normed.unflatten(-1, (heads, -1)), rtol=tol,
                                       atol=tol)
            assert torch.equal(alone, out)
    for b, groups, tokens, width in {residual_shapes}:
        gen = torch.Generator().manual_seed(groups)
        hidden = torch.randn(b, groups + 2, tokens, width, generator=gen)
        y = torch.randn(b, groups, tokens, width, generator=gen)
        table = torch.randn(b, groups + 2, 6, width, generator=gen)  # gates are views of the modulation
        for dtype in (torch.float32, torch.bfloat16):
            x = hidden.to(device, dtype)
            gate = table.to(device).split(1, dim=2)[2][:, 1:groups + 1]  # fp32, as the modulation is
            want = hidden.to(dtype).float()
            want[:, 1:groups + 1] += y.to(dtype).float() * gate.cpu()
            triton_kernels.gated_residual_(x[:, 1:groups + 1], y.to(device, dtype), gate)
            tol = 1e-6 if dtype == torch.float32 else 1e-2
            torch.testing.assert_close(x.float().cpu(), want.to(dtype).float(), rtol=tol, atol=tol)
            assert torch.equal(x[:, 0].cpu(), hidden[:, 0].to(dtype))  # outside the slice: untouched
        # LayerNorm on a slice of groups: fp64 statistics by hand, then a row per group (modulation) or a
        # [C] weight and bias broadcast everywhere (nn.LayerNorm); bf16 also against eager torch's path
        part = hidden[:, 1:groups + 1].double()
        centred = part - part.mean(-1, keepdim=True)
        normed = centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
        shift, scale = (t[:, 1:groups + 1] for t in table.double().split(1, dim=2)[:2])
        weight, bias = table[0, 0, 3].double(), table[0, 0, 4].double()
        for dtype in (torch.float32, torch.bfloat16):
            x = hidden.to(device, dtype)[:, 1:groups + 1]
            row_shift, row_scale = shift.to(dtype), scale.to(dtype)
            mod = triton_kernels.layer_norm(x, 1 + row_scale.to(device), row_shift.to(device), 1e-6,
                                            round_normed=True)
            aff = triton_kernels.layer_norm(x, weight.to(device, dtype), bias.to(device, dtype), 1e-6,
                                            round_normed=False)
            assert mod.dtype == aff.dtype == dtype and mod.shape == aff.shape == x.shape
            params32 = weight.float().to(device), bias.float().to(device)  # as F.layer_norm allows
            kept = triton_kernels.layer_norm(x, *params32, 1e-6, round_normed=False, out_dtype=dtype)
            assert kept.dtype == dtype
            assert mod.is_contiguous() and aff.is_contiguous()
            tol = 1e-5 if dtype == torch.float32 else 5e-2
            want_mod = normed * (1 + row_scale.double()) + row_shift.double()
            torch.testing.assert_close(mod.double().cpu(), want_mod, rtol=tol, atol=tol)
            torch.testing.assert_close(aff.double().cpu(), normed * weight + bias, rtol=tol, atol=tol)
            if dtype == torch.bfloat16:
                # modulate rounds the norm before its multiply-add: emulate both orders in fp32, with the
                # kernel's own cast (the interpreter truncates to bf16; a GPU rounds to nearest, as torch)
                def to_bf16(t):
                    if device == "cuda":
                        return t.to(dtype).float()
                    return (t.contiguous().view(torch.int32) & -65536).view(torch.float32)

                x32 = x.float().cpu()
                centred32 = x32 - x32.mean(-1, keepdim=True)
                normed32 = centred32 * torch.rsqrt(centred32.pow(2).mean(-1, keepdim=True) + 1e-6)
                mul32, add32 = (1 + row_scale).float(), row_shift.float()
                rounded = to_bf16(to_bf16(normed32) * mul32 + add32)
                unrounded = to_bf16(normed32 * mul32 + add32)
                got = mod.float().cpu()
                assert (got == rounded).float().mean() >= 0.99, (got - rounded).abs().max()
                assert (got == unrounded).float().mean() <= 0.95  # the two orders are told apart
                # eager rounds where the kernel does: equal but for a last bit
                eager_mod = dit.modulate(x.cpu(), row_shift, row_scale, 1e-6)
                eager_aff = torch.nn.functional.layer_norm(x.cpu(), (width,), weight.to(dtype),
                                                           bias.to(dtype), 1e-6)
                # the interpreter truncates when it casts to bf16 (a GPU rounds to nearest, as torch does)
                bits = 8e-3 if device == "cuda" else 4e-2
                for got, want in ((mod, eager_mod), (aff, eager_aff)):
                    torch.testing.assert_close(got.cpu(), want, rtol=bits, atol=bits)
    print("ok")
""")


def run_check(device: str, env: dict[str, str]) -> None:
    script = CHECK.format(device=device, shapes=SHAPES, residual_shapes=RESIDUAL_SHAPES)
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.skipif(not triton_kernels.AVAILABLE, reason="Triton is not installed (CPU-only torch)")
def test_kernels_under_the_interpreter_equal_fp32_math() -> None:
    run_check("cpu", {"TRITON_INTERPRET": "1"})


@pytest.mark.skipif(not (torch.cuda.is_available() and triton_kernels.AVAILABLE), reason="needs a CUDA GPU")
def test_kernels_on_the_gpu_equal_fp32_math() -> None:
    run_check("cuda", {})


def test_compiled_helpers_use_the_kernel_only_for_nvidia_gpu_tensors(monkeypatch) -> None:
    """Where the hand-written kernel runs: compiled helpers, a CUDA tensor, not ROCm, Triton importable."""
    monkeypatch.setattr(triton_kernels, "AVAILABLE", True)
    cuda_like = torch.empty(0, device="meta")
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: t.device.type == "meta"))
    monkeypatch.setattr(torch.version, "hip", None)
    assert dit._hand_fused(cuda_like) and not dit._hand_fused(torch.empty(0))
    monkeypatch.setattr(torch.version, "hip", "6.4")
    assert not dit._hand_fused(cuda_like)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(triton_kernels, "AVAILABLE", False)
    assert not dit._hand_fused(cuda_like)


def test_cross_attention_query_paths_agree(monkeypatch) -> None:
    """norm_with_rope: eager leaves the rotation to the caller; compiled returns both from one read; the
    kernel path (here a stand-in that records its call) returns (plain, roped) in the same order."""
    torch.manual_seed(0)
    norm = torch.nn.RMSNorm(64, eps=1e-6)
    x, angles = torch.randn(1, 5, 64), torch.rand(5, 1, 16) * 6
    cos, sin = angles.cos(), angles.sin()
    plain, roped = dit.norm_with_rope(norm, x, cos, sin, 2)
    assert roped is None
    monkeypatch.setattr(dit, "_compiled_norm_with_rope", dit.rms_norm_with_rope)  # as compile_helpers sets
    both = dit.norm_with_rope(norm, x, cos, sin, 2)
    torch.testing.assert_close(both[0], plain)
    torch.testing.assert_close(both[1], dit.apply_rope(plain.clone(), cos, sin))
    calls = []

    def kernel(x, weight, eps, cos, sin, heads, with_plain=False):
        calls.append(with_plain)
        p, r = dit.rms_norm_with_rope(x, weight, eps, cos, sin, heads)
        return r, p if with_plain else None

    monkeypatch.setattr(triton_kernels, "norm_rope", kernel)
    monkeypatch.setattr(dit, "_hand_fused", lambda t: True)
    by_kernel = dit.norm_with_rope(norm, x, cos, sin, 2)
    assert calls == [True]
    torch.testing.assert_close(by_kernel[0], both[0])
    torch.testing.assert_close(by_kernel[1], both[1])


def test_gated_residual_goes_to_the_kernel_only_with_compiled_helpers_on_the_gpu(monkeypatch) -> None:
    x, y, gate = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8), torch.randn(1, 2, 1, 8)
    want = x + y * gate
    dit.gated_residual_(x, y, gate)  # no compiled helpers: eager addcmul_
    torch.testing.assert_close(x, want)
    calls = []
    monkeypatch.setattr(triton_kernels, "gated_residual_", lambda *args: calls.append(args))
    monkeypatch.setattr(dit, "_hand_fused", lambda t: True)
    dit.gated_residual_(x, y, gate)
    assert calls == []  # eager helpers still: the kernel is part of the compiled set
    monkeypatch.setattr(dit, "_compiled_norm_rope", dit.rms_norm_rope)
    dit.gated_residual_(x, y, gate)
    assert len(calls) == 1 and calls[0][0] is x


def test_layer_norms_go_to_the_kernel_only_with_compiled_helpers_on_the_gpu(monkeypatch) -> None:
    """dit.modulated and dit.layer_norm: eager (or compiled) torch until the kernels are on; then the kernel,
    with modulate's 1 + scale and rounding, or the LayerNorm's own weight, bias and eps."""
    torch.manual_seed(0)
    x, shift, scale = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 8)
    norm = torch.nn.LayerNorm(8, eps=1e-5)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    tokens = x.flatten(1, 2)
    torch.testing.assert_close(dit.modulated(x, shift, scale, 1e-6), dit.modulate(x, shift, scale, 1e-6))
    torch.testing.assert_close(dit.layer_norm(norm, tokens), norm(tokens))
    calls = []

    def kernel(x, mul, add, eps, round_normed, out_dtype=None):
        calls.append((x.shape, eps, round_normed, out_dtype))
        normed = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
        return normed * mul + add

    monkeypatch.setattr(triton_kernels, "layer_norm", kernel)
    monkeypatch.setattr(dit, "_hand_fused", lambda t: True)
    dit.modulated(x, shift, scale, 1e-6)
    dit.layer_norm(norm, tokens)
    assert calls == []  # eager helpers still: the kernels are part of the compiled set
    monkeypatch.setattr(dit, "_compiled_norm_rope", dit.rms_norm_rope)
    torch.testing.assert_close(dit.modulated(x, shift, scale, 1e-6), dit.modulate(x, shift, scale, 1e-6))
    torch.testing.assert_close(dit.layer_norm(norm, tokens), norm(tokens))
    assert calls == [(x.shape, 1e-6, True, None), ((2, 1, 12, 8), 1e-5, False, torch.float32)]
