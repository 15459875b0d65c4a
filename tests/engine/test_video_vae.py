"""Wan2.2 video VAE: checkpoint layout vs the upstream schema, frame arithmetic, streamed decode/encode vs an
independent whole-sequence reference written here from upstream's math, tiling, strict .pth loading."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ovi_engine.video_vae import (
    LATENT_MEAN,
    LATENT_STD,
    VIDEO_VAE_PRESETS,
    Tiling,
    WanVideoVAE,
    build_video_vae,
    load_video_vae,
    tile_spans,
)
from ovi_engine.weights import CheckpointError

SCHEMA = json.loads((Path(__file__).parents[1] / "reference" / "wan22_vae.schema.json").read_text())


@pytest.fixture(scope="module")
def tiny() -> WanVideoVAE:
    return build_video_vae("tiny", device="cpu", dtype=torch.float32, seed=1)


def latents(frames: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 48, frames, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- layout


def test_full_layout_equals_upstream_schema() -> None:
    model = build_video_vae("full")  # meta: no memory
    state = model.state_dict()
    expected = [(name, tuple(shape)) for name, shape, _ in SCHEMA["tensors"]]
    assert len(expected) == SCHEMA["num_tensors"] == 196
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected
    assert sum(p.numel() for p in model.parameters()) == SCHEMA["params"]
    assert sum(p.numel() for p in model.encoder.parameters()) == SCHEMA["param_split"]["encoder"]
    assert sum(p.numel() for p in model.decoder.parameters()) == SCHEMA["param_split"]["decoder"]
    assert all(v.is_meta and v.dtype == torch.bfloat16 for v in state.values())


def test_full_config_matches_schema_build_config() -> None:
    full, cfg = VIDEO_VAE_PRESETS["full"], SCHEMA["build_config"]
    assert (full.dim, full.dec_dim, full.z_dim, full.num_res_blocks) == (
        cfg["dim"],
        cfg["dec_dim"],
        cfg["z_dim"],
        cfg["num_res_blocks"],
    )
    assert list(full.dim_mult) == cfg["dim_mult"]
    assert list(full.temporal_downsample) == cfg["temperal_downsample"]


def test_tiny_keeps_structure_and_latent_width() -> None:
    full = build_video_vae("full").state_dict()
    tiny = build_video_vae("tiny").state_dict()
    assert list(full) == list(tiny)  # same code path, same keys
    assert VIDEO_VAE_PRESETS["tiny"].z_dim == 48
    assert all(len(full[k].shape) == len(tiny[k].shape) for k in full)


def test_latent_statistics_are_48_channels_and_applied(tiny: WanVideoVAE) -> None:
    assert len(LATENT_MEAN) == len(LATENT_STD) == 48
    assert torch.allclose(tiny.latent_mean, torch.tensor(LATENT_MEAN))
    assert torch.allclose(tiny.latent_inv_std * torch.tensor(LATENT_STD), torch.ones(48))


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(("frames", "decoded"), [(1, 1), (3, 9), (8, 29)])
def test_decode_frame_count_and_spatial_x16(tiny: WanVideoVAE, frames: int, decoded: int) -> None:
    assert decoded == 1 + 4 * (frames - 1)
    video = tiny.decode(latents(frames, 2, 3))
    assert video.shape == (1, 3, decoded, 32, 48)
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    assert video.abs().max() <= 1 and video.abs().mean() > 0.01  # clamped, not collapsed


def test_batch_items_decode_independently(tiny: WanVideoVAE) -> None:
    z = torch.cat([latents(2, 2, 2, seed=3), latents(2, 2, 2, seed=4)])
    both = tiny.decode(z)
    torch.testing.assert_close(both[1:], tiny.decode(z[1:]), rtol=0, atol=1e-5)
    assert not torch.allclose(both[0], both[1])


@pytest.mark.parametrize(("frames", "latent_frames"), [(1, 1), (9, 3)])
def test_encode_shapes_and_round_trip(tiny: WanVideoVAE, frames: int, latent_frames: int) -> None:
    video = torch.rand(1, 3, frames, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    z = tiny.encode(video)
    assert z.shape == (1, 48, latent_frames, 2, 3)
    assert torch.isfinite(z).all()
    assert tiny.decode(z).shape == video.shape


def test_bad_inputs_are_rejected(tiny: WanVideoVAE) -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        tiny.encode(torch.zeros(1, 3, 1, 24, 32))
    with pytest.raises(ValueError, match="48"):
        tiny.decode(torch.zeros(1, 16, 1, 2, 2))


# ------------------------------------------------------------- an independent whole-sequence reference
# Upstream's layers applied to the whole sequence at once (no chunks, no caches, upstream's own tensor
# layouts), with the first-chunk behaviour written as what it amounts to over the whole sequence.


def ref_causal(conv, x):
    kt, kh = conv.weight.shape[2], conv.weight.shape[3]
    return F.conv3d(F.pad(x, (kh // 2, kh // 2, kh // 2, kh // 2, kt - 1, 0)), conv.weight, conv.bias)


def ref_norm(norm, x):
    return F.normalize(x, dim=1) * x.shape[1] ** 0.5 * norm.gamma


def ref_per_frame(fn, x):
    t = x.shape[2]
    return rearrange(fn(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", t=t)


def ref_residual(block, x):
    r = block.residual
    h = ref_causal(r[2], F.silu(ref_norm(r[0], x)))
    h = ref_causal(r[6], F.silu(ref_norm(r[3], h)))
    return h + (x if isinstance(block.shortcut, torch.nn.Identity) else ref_causal(block.shortcut, x))


def ref_attention(att, x):
    def frame_attention(y):
        bt, c, h, w = y.shape
        y = F.normalize(y, dim=1) * c**0.5 * att.norm.gamma
        q, k, v = (
            F.conv2d(y, att.to_qkv.weight, att.to_qkv.bias)
            .reshape(bt, 1, 3 * c, -1)
            .permute(0, 1, 3, 2)
            .chunk(3, dim=-1)
        )
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).permute(0, 2, 1).reshape(bt, c, h, w)
        return F.conv2d(y, att.proj.weight, att.proj.bias)

    return x + ref_per_frame(frame_attention, x)


def ref_middle(middle, x):
    return ref_residual(middle[2], ref_attention(middle[1], ref_residual(middle[0], x)))


def ref_head(head, x):
    return ref_causal(head[2], F.silu(ref_norm(head[0], x)))


def ref_resample(res, x):
    conv = res.resample[1]
    if res.mode == "upsample3d":
        # frame 0 skips the time conv; the rest go through it causally, with zeros as their past
        b, c, t, h, w = x.shape
        y = ref_causal(res.time_conv, x[:, :, 1:]).reshape(b, 2, c, t - 1, h, w)
        y = torch.stack((y[:, 0], y[:, 1]), 3).reshape(b, c, 2 * (t - 1), h, w)
        x = torch.cat([x[:, :, :1], y], dim=2)
    if res.mode.startswith("up"):
        return ref_per_frame(
            lambda y: F.conv2d(
                F.interpolate(y, scale_factor=2.0, mode="nearest-exact"), conv.weight, conv.bias, padding=1
            ),
            x,
        )
    x = ref_per_frame(lambda y: F.conv2d(F.pad(y, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2), x)
    if res.mode == "downsample3d" and x.shape[2] >= 3:
        # frame 0 passes; then stride-2 windows over the whole sequence, each starting at an even frame
        x = torch.cat(
            [x[:, :, :1], F.conv3d(x, res.time_conv.weight, res.time_conv.bias, stride=(2, 1, 1))], 2
        )
    return x


def ref_dup_up(x, out_dim, ft, fs):
    b, c, t, h, w = x.shape
    x = x.repeat_interleave(out_dim * ft * fs * fs // c, dim=1)
    x = x.view(b, out_dim, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, out_dim, t * ft, h * fs, w * fs)[:, :, ft - 1 :]  # the first chunk drops ft-1 copies


def ref_avg_down(x, out_dim, ft, fs):
    x = F.pad(x, (0, 0, 0, 0, (ft - x.shape[2] % ft) % ft, 0))
    b, c, t, h, w = x.shape
    x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, out_dim, c * ft * fs * fs // out_dim, t // ft, h // fs, w // fs).mean(dim=2)


def ref_stage(blocks, x):
    for block in blocks:
        x = ref_resample(block, x) if hasattr(block, "mode") else ref_residual(block, x)
    return x


def ref_decode(model, z):
    z = z / model.latent_inv_std.view(1, -1, 1, 1, 1) + model.latent_mean.view(1, -1, 1, 1, 1)
    dec = model.decoder
    x = ref_middle(dec.middle, ref_causal(dec.conv1, ref_causal(model.conv2, z)))
    for level in dec.upsamples:
        y = ref_stage(level.upsamples, x)
        x = y + ref_dup_up(x, y.shape[1], level.factor_t, level.factor_s) if level.spatial else y
    x = ref_head(dec.head, x)
    return rearrange(x, "b (c r q) f h w -> b c f (h q) (w r)", q=2, r=2).clamp(-1, 1)


def ref_encode(model, video):
    enc, z = model.encoder, model.config.z_dim
    x = ref_causal(enc.conv1, rearrange(video, "b c f (h q) (w r) -> b (c r q) f h w", q=2, r=2))
    for level in enc.downsamples:
        y = ref_stage(level.downsamples, x)
        x = y + ref_avg_down(x, y.shape[1], level.factor_t, level.factor_s)
    mu = ref_causal(model.conv1, ref_head(enc.head, ref_middle(enc.middle, x)))[:, :z]
    return (mu - model.latent_mean.view(1, -1, 1, 1, 1)) * model.latent_inv_std.view(1, -1, 1, 1, 1)


def test_streamed_decode_equals_whole_sequence_reference(tiny: WanVideoVAE) -> None:
    z = latents(4, 3, 2, seed=5)
    expected = ref_decode(tiny, z)
    got = tiny.decode(z)
    assert got.shape == expected.shape == (1, 3, 13, 48, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)


def test_streamed_encode_equals_whole_sequence_reference(tiny: WanVideoVAE) -> None:
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(6)) * 2 - 1
    expected = ref_encode(tiny, video)
    assert expected.shape == (1, 48, 3, 2, 3)
    torch.testing.assert_close(tiny.encode(video), expected, rtol=0, atol=2e-5)


def test_decode_is_causal(tiny: WanVideoVAE) -> None:
    z = latents(5, 2, 2, seed=7)
    full = tiny.decode(z)
    for k in (1, 3):
        torch.testing.assert_close(tiny.decode(z[:, :, :k]), full[:, :, : 1 + 4 * (k - 1)], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(
    ("tile_px", "overlap_px", "message"),
    [
        (500, 64, "tile_px"),
        (512, 40, "overlap_px"),
        (0, 0, "tile_px"),
        (256, 256, "smaller"),
        (256, -16, "overlap"),
    ],
)
def test_tiling_validation(tile_px: int, overlap_px: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tiling(tile_px, overlap_px)


def test_one_tile_covering_the_frame_equals_untiled(tiny: WanVideoVAE) -> None:
    z = latents(2, 3, 4, seed=8)
    torch.testing.assert_close(tiny.decode(z, tile=Tiling(64, 16)), tiny.decode(z), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("n", "tile_px", "overlap_px"), [(60, 512, 64), (44, 512, 64), (61, 512, 64), (10, 64, 32)]
)
def test_tile_spans_cover_and_blend_without_steps(n: int, tile_px: int, overlap_px: int) -> None:
    spans = tile_spans(n, Tiling(tile_px, overlap_px))
    assert spans[0][0] == 0 and spans[-1][1] == n and len(spans) > 1
    total = torch.zeros(16 * n)
    for (start, stop, weight), nxt in zip(spans, [*spans[1:], None]):
        assert stop - start == tile_px // 16 and weight.shape == (16 * (stop - start),)
        if nxt is not None:
            assert stop - nxt[0] >= overlap_px // 16  # neighbours overlap at least as asked
        placed = torch.zeros(16 * n)
        placed[16 * start : 16 * stop] = weight
        assert (placed[1:] - placed[:-1]).abs().max() <= 1 / overlap_px + 1e-6  # ramps, no jump: no seam
        assert start == 0 or weight[0] <= 1 / overlap_px  # an inner edge starts from ~0
        assert stop == n or weight[-1] <= 1 / overlap_px
        total[16 * start : 16 * stop] += weight
    torch.testing.assert_close(total, torch.ones(16 * n))


def local_model() -> WanVideoVAE:
    """The tiny model made spatially local: only the centre tap of every 3x3 kernel, no attention output.
    Each output pixel then depends on its own latent pixel only, so tiled decoding must be exact."""
    model = build_video_vae("tiny", device="cpu", dtype=torch.float32, seed=1)
    for name, weight in model.decoder.named_parameters():
        if weight.dim() >= 4 and weight.shape[-1] == 3:
            centre = weight[..., 1:2, 1:2].clone()
            weight.zero_()[..., 1:2, 1:2] = centre
        if name.endswith("proj.weight"):
            weight.zero_()
    return model


def test_tiled_decode_places_and_blends_tiles_exactly_on_a_local_model() -> None:
    model, z = local_model(), latents(2, 6, 10, seed=9)
    untiled = model.decode(z)
    assert untiled.abs().mean() > 0.01
    torch.testing.assert_close(
        model.decode(z, tile=Tiling(tile_px=64, overlap_px=32)), untiled, rtol=0, atol=1e-5
    )


def test_tiled_decode_agrees_and_overlap_bands_are_no_worse(tiny: WanVideoVAE) -> None:
    # 12 latent columns, tiles of 8 with an overlap of 4: tiles [0, 8) and [4, 12),
    # blended over pixels 64..128
    z = latents(2, 2, 12, seed=9)
    untiled, tiled = tiny.decode(z), tiny.decode(z, tile=Tiling(tile_px=128, overlap_px=64))
    assert tiled.shape == untiled.shape == (1, 3, 5, 32, 192)
    column_error = (tiled - untiled).abs().mean(dim=(0, 1, 2, 3))
    band = torch.zeros(192, dtype=torch.bool)
    band[64:128] = True
    # the random decoder's receptive field spans more than a tile, so tiles are close, not exact
    assert column_error.mean() < 0.35 * untiled.abs().mean()
    assert column_error[band].mean() <= 1.5 * column_error[~band].mean()


# ------------------------------------------------------------------------------------ memory (meta)


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created by aten ops while they are alive, and their peak.

    On the meta device nothing is computed, so a full-size decode costs seconds on a CPU. Allocator
    rounding and cuDNN workspaces are not seen: the GPU benchmark measures those."""

    def __init__(self, resident: set[int]):
        super().__init__()
        self.resident, self.live, self.now, self.peak = resident, {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and (key := t.untyped_storage()._cdata) not in self.resident:
                if key not in self.live:
                    self.live[key] = [t.untyped_storage().nbytes(), 0]
                    self.now += self.live[key][0]
                    self.peak = max(self.peak, self.now)
                self.live[key][1] += 1
                weakref.finalize(t, self._release, key)
        return out

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[key]


@pytest.mark.parametrize(("tile", "target_gib"), [(None, 9.2), (Tiling(512, 64), 4.0)])
def test_full_scale_960_decode_working_set_fits_the_targets(tile: Tiling | None, target_gib: float) -> None:
    # The decode streams: its working set does not grow with the frame count, only the output does. So
    # two latent frames measure it, and a 61-frame decode adds its [1, 3, 241, 960, 960] bf16 output.
    model = build_video_vae("full")  # meta
    z = torch.zeros(1, 48, 2, 60, 60, device="meta")
    with LiveBytes({p.untyped_storage()._cdata for p in model.parameters()}) as counter:
        out = model.decode(z, tile=tile)
    working_set = counter.peak - out.numel() * out.element_size()
    assert working_set > 1 * 2**30  # the counter does see the activations
    output_61 = 3 * 241 * 960 * 960 * 2
    assert (working_set + output_61) / 2**30 <= target_gib - 0.5  # 0.5 GiB left for cuDNN workspaces


# ------------------------------------------------------------------------------------------- loading


def test_pth_round_trip_loads_strictly(tiny: WanVideoVAE, tmp_path: Path) -> None:
    path = tmp_path / "Wan2.2_VAE.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in tiny.state_dict().items()}, path)
    loaded = load_video_vae(path, "tiny", device="cpu", dtype=torch.float32)
    for key, value in tiny.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.to(torch.bfloat16).float(), rtol=0, atol=0)
    assert torch.allclose(loaded.latent_mean, tiny.latent_mean)  # computed buffers rebuilt
    assert loaded.decode(latents(1, 2, 2)).shape == (1, 3, 1, 32, 32)


def test_bad_checkpoints_name_the_tensors(tiny: WanVideoVAE, tmp_path: Path) -> None:
    state = dict(tiny.state_dict())
    del state["decoder.head.2.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    state["encoder.conv1.weight"] = torch.zeros(8, 3, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_video_vae(path, "tiny", device="cpu", dtype=torch.float32)
    message = str(err.value)
    for name in ("decoder.head.2.bias", "decoder.extra.weight", "encoder.conv1.weight", str(path)):
        assert name in message
    with pytest.raises(CheckpointError, match="misshaped"):
        load_video_vae(path, "tiny", device="cpu")
    # the full preset rejects a tiny file: every conv is misshaped
    with pytest.raises(CheckpointError, match="misshaped"):
        load_video_vae(path, "full", device="meta")
