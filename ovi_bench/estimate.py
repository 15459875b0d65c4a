"""The memory model: each stage's device peak for a variant x policy x decode, from the model's shapes alone.

A stage's peak is what stays resident through it (module bytes from `ovi_bench.model_shapes`, placed the way
the policy places them) plus the stage's working set (from the clip's token, pixel and sample counts in
`ovi_bench.variant_facts`). Where each module lives in each stage follows the reference engine's placement
(ovi_engine/placement.py, pipeline.py; the harness may not import it, so the rules are restated here in
`_STAGES`). The working-set coefficients are calibrated on torch's allocator peaks with synthetic:full
weights: the H100 peaks in git history (626c742: baselines/h100-80gb/oom_regression.json, every variant under
all_gpu and cpu_offload) and benchmarks/results/h100-80gb_2026-11-23/video_vae.json (tiled and untiled
decode), and, where the engine has changed since, H200 reports of the current engine
(benchmarks/results/h200-141gb_2026-12-0*/suites); each constant says where it comes from. They are written
per element of the widths they scale with, so the same formulas give the tiny preset's figures, which are
tiny and not calibrated.

`benchmarks/validate_estimate.py` compares the estimate with measured report.json files; the pipeline
scenario records `estimate_error.<stage>` so a suite check keeps the model honest as the engine changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ovi_bench.engines.base import POLICIES, EngineConfig
from ovi_bench.engines.checkout import PRESETS as CHECKOUT_PRESETS
from ovi_bench.hardware import HardwareProfile
from ovi_bench.model_shapes import DIMS, block_pair_bytes, group_elements, largest_tensor, module_bytes
from ovi_bench.schema import Format
from ovi_bench.variant_facts import AUDIO_CHANNELS, VARIANTS, VIDEO_CHANNELS, variant_facts

ESTIMATE = Format("memory estimate", 1, "estimate again with `ovi-bench estimate --format json`")
STAGES = ("load", "encode_text", "denoise", "release", "decode_video", "decode_audio")
MiB = 2**20
ESTIMATE_TOLERANCE = 0.05  # the error per stage the model promises (benchmarks/validate_estimate.py)
ELEMENT_BYTES = {"cuda": 2, "cpu": 4}  # dtype auto: bf16 on an accelerator, float32 on the CPU (EngineConfig)
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
PROMPTS = 2  # the prompt and the negative prompt, encoded together

# ---- calibrated terms (bf16, synthetic:full). `oom` = baselines/h100-80gb/oom_regression.json as committed
# at 626c742 (H100; its 5 s cases recorded at a24e1cd, its 960x960_10s cases at 4b2590d); `H200` = the reports
# under benchmarks/results/h200-141gb_2026-12-0*/suites (each named where used).
# Synthetic weights are drawn in float32 on the device, SYNTHETIC_THREADS tensors at a time
# (ovi_engine/weights.py synthesize; min(8, CPUs) there), each cast as soon as it is drawn, so a build
# peaks at the module plus the draws in flight. Modules built in one stage are built one after another, in
# _ALL's order (the engine's MODULES). Checkpoint loading would differ.
SYNTHETIC_THREADS = 8
# The text encoder, fusion model and video VAE: the draws in flight, as a share of the module built. Fitted on
# the one H200 stage that builds such a module with no working set beside it: sequential's load
# (peak_memory_10s_sequential, c12181e) peaked 0.703 GiB over the text encoder (10.58 GiB). How many draws
# are in flight depends on the threads' timing (the 8 largest tensors of one encoder block are 0.72 GiB in
# float32), so no shape gives it; no other stage checks it (all_gpu's load peaks at the audio codec's build,
# below; sequential's denoise and decode_video at their working sets). The 2.4% it had from oom's all_gpu
# load was that codec build too, then two float32 copies of the codec's VAE: at a24e1cd the draws were
# gathered beside the part's own float32 tensors, which f1ece55 fills in place.
DRAW_TRANSIENT = 0.0664  # of the bytes of the modules above that a stage builds on the device
# cpu_offload: oom peak.load - end.load is 6.99 GB when every module is drawn on the device for host arenas.
# (That peak, 8,401,190,912 B, is to the byte the text encoder's token embedding drawn in float32 twice, the
# draw and its scaled copy, before anything else is on the device. Since the engine draws tensors of 2^28
# elements or more alone (ovi_engine/weights.py DRAW_ALONE_ELEMENTS) that is the whole peak; before, other
# threads' draws added 0.09-0.79 GiB on the H200, by their timing.)
DRAW_TRANSIENT_FOR_HOST = 0.1905  # of the bytes a cpu_offload load builds for the host
# The audio codec is built another way (ovi_engine/audio_vae.py AudioCodec._materialize): each part in turn,
# the VAE then the vocoder, is made on the device in float32, drawn in place, its weight norm folded at that
# precision, and only then cast. Its build peaks at the larger of the VAE in float32 and the cast VAE beside
# the float32 vocoder, each with its draws in flight: SYNTHETIC_THREADS of the part's largest tensor in
# float32, no more of them than the part has (the VAE has 19 of 7.1 M elements, the vocoder one of 9.4 M).
# From the shapes alone: 0.850 GiB over what the stage held before, at the VAE. Measured on the H200:
# sequential's decode_audio, which builds the codec (first decode; the second finds it built), 0.859 GiB
# (peak_memory_10s_sequential, c12181e); all_gpu's load, the codec built last, 0.86-0.95 GiB over the modules
# built before it (its eight cases in the 2026-12-01 to 2026-12-02c reports).
CODEC_PARTS = ("vae", "vocoder")
# What the engine keeps besides module weights: oom end.load - modules = 23.8 MB when the fusion model is
# built on the device (its RoPE tables), 600 B when it is offloaded; end.encode_text adds 41.9 MB (the
# prompt embeddings and the blocks the allocator keeps for them, both policies); end.denoise adds the latents
# and 1.05 MB more.
TABLES_BYTES = 24_000_000
PROMPT_HELD_BYTES = 40 * MiB
AFTER_DENOISE_BYTES = 1 * MiB
# umT5 attention: scores of both prompts and the shared position bias, heads x L^2 in float32; oom
# peak.encode_text - end.load is 188.8 MB at 64 heads x 512 tokens, 0.938 of that product.
TEXT_ATTENTION_FACTOR = 0.938
# Denoise: H200 all_gpu peak.denoise - end.encode_text at 15,161 / 28,057 / 55,214 tokens (0.772 / 1.254 /
# 2.398 GiB; oom_regression, 2 steps: 2026-12-02b call2 at d6d7f46, 2026-12-02c call1 at 30f69b7, 2026-12-01
# job3 at 3d15db5) fits 7.139 copies of the hidden state (tokens x dim) plus 0.615 of one FFN chunk (the
# engine runs the FFN over at most 8192 tokens at a time, ovi_engine/dit.py FFN_CHUNK_TOKENS); residuals
# <= 27 MiB. cpu_offload's peak less its streamed pairs gives the same working set within 28 MiB at all three
# (2026-12-02b call3, 2026-12-02c call1 and call2). The H100 fit (oom, 6.152 + 0.602) was one copy less: its
# engine predates 9ef1b58, after which the first CFG pass works on a clone of the shared hidden state
# (ovi_engine/fusion.py forward_passes); bench_fusion's peak shows the same +1 copy on H100 FA3, H200 FA4 and
# H200 cuDNN. Not modelled: the solver's float32 state grows to the third step (peak_memory_10s, 3 steps,
# peaks one float32 latent, 0.04 GiB, over this at 960x960_10s) and stays there.
DENOISE_HIDDEN_COPIES = 7.139
DENOISE_FFN_CHUNK_COPIES = 0.615
FFN_CHUNK_TOKENS = 8192
# cpu_offload streams block pairs: its denoise peak is all_gpu's working set plus 2 pairs (0.730 GB a pair),
# the one computing and the one prefetched. H200, 720x720_5s, after the engine stopped keeping the pair that
# skip-layer guidance leaves out (cee60b7): peak.denoise 3.487 GiB, 0.104 GiB over 2 pairs + the working
# set, as all_gpu's own denoise is over its working set (0.100). Before the fix the H100 (720x720_5s,
# 960x960_5s) and H200 (960x960_10s) runs fitted 3 pairs: that pair was the third.
STREAMED_PAIRS_AT_PEAK = 2
# Video decode (chunked causal decode; per output pixel of the frame or tile being decoded, the decoder's
# top-resolution activations): peak over resident minus the output clip [3, frames, H, W] is 8,749 bytes per
# pixel, 17.09 x dec_dim (256) x 2 bytes, fitted over 704^2/960^2 untiled and 512^2 tiles at 121/241 frames
# (video_vae.json and oom peak.decode_video; residuals <= 20 MB).
VAE_DECODER_COPIES = 17.09
# Audio decode: oom peak.decode_audio - end.decode_video is 40.4 MB at 80,384 samples and 77.3 MB at 160,768:
# 9.57 copies of the vocoder's last stage (vocoder_channels/64 channels per sample) plus 3.47 MB.
VOCODER_COPIES = 9.57
AUDIO_CONSTANT_BYTES = 3_473_920
DEFAULT_TILE_PX = 512  # the tiled decode's default tile (ovi_engine.video_vae.Tiling), 64 px overlap


@dataclass(frozen=True)
class EstimateRequest:
    variant: str
    policy: str
    preset: str = "full"
    device_type: str = "cuda"
    tiled: bool = False
    area: int | None = None  # frame area override (the frontier); None: the variant's own
    height: int | None = None  # aspect ratio of the frame (scaled to the area), as the pipeline's params
    width: int | None = None
    tile_px: int = DEFAULT_TILE_PX
    dtype: str = "auto"  # the compute dtype, as EngineConfig.dtype

    @property
    def element_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype] if self.dtype != "auto" else ELEMENT_BYTES[self.device_type]

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:  # the name alone would derive a "1x1_5s": only Ovi's variants
            raise ValueError(f"unknown variant {self.variant!r} (known: {', '.join(VARIANTS)})")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r} (known: {', '.join(POLICIES)})")
        if self.preset not in DIMS:
            raise ValueError(f"unknown preset {self.preset!r} (known: {', '.join(DIMS)})")
        if self.device_type not in ELEMENT_BYTES:
            raise ValueError(f"unknown device type {self.device_type!r} (known: {', '.join(ELEMENT_BYTES)})")
        if self.dtype != "auto" and self.dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {self.dtype!r} (known: auto, {', '.join(DTYPE_BYTES)})")


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    bytes: int
    resident: dict[str, int]  # module (or part of one) -> bytes on the device through the stage
    terms: dict[str, int]  # the rest: held tensors and the stage's working set, by name


@dataclass(frozen=True)
class Fit:
    stage: str
    bytes: int
    budget: int
    margin: int  # budget - bytes; negative when it does not fit

    @property
    def fits(self) -> bool:
        return self.margin >= 0


@dataclass(frozen=True)
class Estimate:
    request: EstimateRequest
    frame: tuple[int, int]  # (height, width) in pixels
    video_tokens: int
    audio_samples: int
    stages: tuple[StageEstimate, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def stage(self, name: str) -> StageEstimate:
        return next(s for s in self.stages if s.stage == name)

    @property
    def peak(self) -> StageEstimate:
        return max(self.stages, key=lambda s: s.bytes)

    def fit(self, profile: HardwareProfile) -> list[Fit]:
        return [Fit(s.stage, s.bytes, profile.usable_bytes,
                    profile.usable_bytes - s.bytes) for s in self.stages]

    def to_dict(self, profile: HardwareProfile | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema_version": ESTIMATE.version, "request": asdict(self.request), "frame": list(self.frame),
            "video_tokens": self.video_tokens, "audio_samples": self.audio_samples,
            "stages": [asdict(s) for s in self.stages], "peak_stage": self.peak.stage,
            "peak_bytes": self.peak.bytes, "notes": list(self.notes)}
        if profile is not None:
            fits = self.fit(profile)
            data["hardware"] = {"profile": profile.name, "usable_bytes": profile.usable_bytes,
                                "source": profile.sources["usable"], "fits": all(f.fits for f in fits),
                                "stages": [{**asdict(f), "fits": f.fits} for f in fits]}
        return data


# Where the modules are in each stage, per policy (ovi_engine/placement.py POLICIES and Placement):
# module names, "fusion_rest" (the fusion model less its blocks), "pairs_at_peak" (the streamed block pairs
# during denoise), and the held terms that apply ("tables", "prompt", "latents").
_ALL = ("text_encoder", "fusion", "video_vae", "audio_codec")
_NO_TEXT = ("fusion", "video_vae", "audio_codec")
_CODECS = ("video_vae", "audio_codec")
_STAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "all_gpu": {
        "load": (*_ALL, "tables"), "encode_text": (*_ALL, "tables"),
        "denoise": (*_NO_TEXT, "tables", "prompt"), "release": (*_NO_TEXT, "tables", "prompt", "latents"),
        "decode_video": (*_CODECS, "tables", "prompt", "latents"),
        "decode_audio": (*_CODECS, "tables", "prompt", "latents")},
    "keep_resident": {
        "load": (*_ALL, "tables"), "encode_text": (*_ALL, "tables"),
        "denoise": (*_ALL, "tables", "prompt"), "release": (*_ALL, "tables", "prompt", "latents"),
        "decode_video": (*_ALL, "tables", "prompt", "latents"),
        "decode_audio": (*_ALL, "tables", "prompt", "latents")},
    "cpu_offload": {  # each module on the device for its own stage; the fusion model's rest stays there
        "load": ("fusion_rest",), "encode_text": ("fusion_rest", "text_encoder"),
        "denoise": ("fusion_rest", "pairs_at_peak", "prompt"),
        "release": ("fusion_rest", "prompt", "latents"),
        "decode_video": ("fusion_rest", "prompt", "latents", "video_vae"),
        "decode_audio": ("fusion_rest", "prompt", "latents", "audio_codec")},
    "sequential": {  # the fusion model built in denoise, the codecs when first needed, then kept: every
        # decode after the first (a second generation; the pipeline scenario's steady decode) finds the audio
        # codec built in the first decode_audio beside the VAE (H200 peak_memory_10s_sequential: decode_video
        # peaked the VAE's working set over both codecs)
        "load": ("text_encoder",), "encode_text": ("text_encoder",),
        "denoise": ("fusion", "tables", "prompt"), "release": ("fusion", "tables", "prompt", "latents"),
        "decode_video": (*_CODECS, "tables", "prompt", "latents"),
        "decode_audio": (*_CODECS, "tables", "prompt", "latents")},
}
# Modules a stage builds on the device (their synthetic draw is a transient of that stage).
_BUILDS: dict[str, dict[str, tuple[str, ...]]] = {"all_gpu": {"load": _ALL}, "keep_resident": {"load": _ALL},
           "sequential": {"load": ("text_encoder",), "denoise": ("fusion",), "decode_video": ("video_vae",),
                          "decode_audio": ("audio_codec",)}}


def codec_build_bytes(dims: dict[str, int], element_bytes: int) -> int:
    """The audio codec's device bytes at the peak of its build (CODEC_PARTS: each part made in float32, drawn
    with its draws in flight, then cast; the mel buffers are float32 from the start)."""
    held = group_elements("audio_codec", "mel_buffers", dims) * 4
    peak = 0
    for part in CODEC_PARTS:
        largest, count = largest_tensor("audio_codec", part, dims)
        in_flight = min(SYNTHETIC_THREADS, count) * largest * 4
        elements = group_elements("audio_codec", part, dims)
        peak = max(peak, held + elements * 4 + in_flight)
        held += elements * element_bytes
    return peak


def _build_excess(built: tuple[str, ...], modules: Mapping[str, int], codec_build: int) -> int:
    """What building `built` (in that order) adds at its peak over the stage's resident bytes, which hold them
    all: module i peaks while the ones after it are not there yet."""
    excess = 0
    for i, name in enumerate(built):
        peak = codec_build if name == "audio_codec" else modules[name] * (1 + DRAW_TRANSIENT)
        excess = max(excess, int(peak) - sum(modules[n] for n in built[i:]))
    return excess


def estimate(request: EstimateRequest) -> Estimate:
    facts = variant_facts(request.variant)
    dims = DIMS[request.preset]
    e = request.element_bytes
    height, width = facts.frame_size(request.height, request.width, request.area)
    tokens = facts.video_tokens(request.height, request.width, request.area) + facts.audio_latent_length
    latent_h, latent_w = facts.video_latent_shape(request.height, request.width, request.area)[2:]
    modules = {m: module_bytes(m, dims, e) for m in _ALL}
    codec_build = codec_build_bytes(dims, e)
    pair = block_pair_bytes(dims, e)
    parts = {**modules,
             "fusion_rest": sum(group_elements("fusion", g, dims) for g in ("video_rest", "audio_rest"))
             * e, "pairs_at_peak": STREAMED_PAIRS_AT_PEAK * pair}
    # The held constants were measured at full scale; another preset's are taken in proportion to its weights.
    scale = sum(modules.values()) / sum(module_bytes(m, DIMS["full"], e) for m in _ALL)
    held = {"tables": int(TABLES_BYTES * scale), "prompt": int(PROMPT_HELD_BYTES * scale),
            "latents": (VIDEO_CHANNELS * facts.video_latent_frames * latent_h * latent_w
                        + facts.audio_latent_length * AUDIO_CHANNELS) * e + int(AFTER_DENOISE_BYTES * scale)}
    text_len = CHECKOUT_PRESETS[request.preset].text_len
    tile_pixels = ((min(request.tile_px, height) * min(request.tile_px, width)) if request.tiled
                   else height * width)
    work = {
        "encode_text": ("text_attention",
                        TEXT_ATTENTION_FACTOR * (PROMPTS + 1) * dims["text_heads"] * text_len**2 * 4),
        "denoise": ("denoise_activations",
                    DENOISE_HIDDEN_COPIES * tokens * dims["dim"] * e
                    + DENOISE_FFN_CHUNK_COPIES * min(tokens, FFN_CHUNK_TOKENS) * dims["ffn_dim"] * e),
        "decode_video": ("vae_decode" + ("_tiled" if request.tiled else ""),
                         3 * facts.video_frames * height * width * e  # the decoded clip on the device
                         + VAE_DECODER_COPIES * dims["vae_dec_dim"] * e * tile_pixels),
        "decode_audio": ("vocoder", VOCODER_COPIES * dims["vocoder_channels"] // 64 * facts.audio_samples * e
                         + AUDIO_CONSTANT_BYTES * scale),
    }
    stages = []
    for stage in STAGES:
        names = _STAGES[request.policy][stage]
        resident = {n: parts[n] for n in names if n in parts}
        terms = {n: held[n] for n in names if n in held}
        built = _BUILDS.get(request.policy, {}).get(stage, ())
        draw = (_build_excess(built, modules, codec_build) if built
                else DRAW_TRANSIENT_FOR_HOST * sum(modules.values()) if request.policy == "cpu_offload"
                and stage == "load" else 0)
        name, working = work.get(stage, ("", 0))
        # a stage's transient peak: the synthetic draw (while building) or its working set, not both
        if draw > working:
            name, working = "synthetic_draw", draw
        if working:
            terms[name] = int(working)
        stages.append(StageEstimate(stage, sum(resident.values()) + sum(terms.values()), resident, terms))
    notes = [("module bytes from the checkpoint schemas (exact); working sets calibrated on H100 and H200 "
              "allocator peaks with synthetic weights")]
    if request.policy == "sequential":
        notes.append("sequential: placement restated from the engine, working sets from all_gpu; checked "
                     "against one measured run (H200, 960x960_10s)")
    if request.policy == "keep_resident":
        notes.append("keep_resident: placement restated from the engine, working sets from all_gpu; not "
                     "yet validated against a measured run")
    if request.preset != "full":
        notes.append(f"{request.preset} preset: module bytes are exact; the held constants "
                     "are the full-scale ones in proportion to the weights, not measured at this preset")
    return Estimate(request, (height, width), tokens - facts.audio_latent_length, facts.audio_samples,
                    tuple(stages), tuple(notes))


def request_for(config: EngineConfig, params: Mapping[str, Any]) -> EstimateRequest:
    """The estimate of a pipeline case: its variant, policy, preset, device, dtype and frame."""
    return EstimateRequest(config.variant, config.policy, "full" if config.checkpoint_dir else config.preset,
                           config.device.split(":")[0], area=config.area, height=params.get("height"),
                           width=params.get("width"), dtype=config.dtype)


def error_metrics(request: EstimateRequest, measured: Mapping[str, int | None]) -> dict[str, Any]:
    """`estimate.<stage>.bytes` and `estimate_error.<stage>` = |estimate - measured| / measured, for each
    stage measured (`measured`: the stage's peak.<stage>.bytes)."""
    metrics: dict[str, Any] = {}
    for stage in estimate(request).stages:
        metrics[f"estimate.{stage.stage}.bytes"] = stage.bytes
        peak = measured.get(stage.stage)
        if peak:
            metrics[f"estimate_error.{stage.stage}"] = abs(stage.bytes - peak) / peak
    return metrics
