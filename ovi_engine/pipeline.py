"""OviPipeline: prompt (and an optional first frame) in, video with audio out, in explicit stages.

load -> encode_text -> denoise -> release -> decode_latents (decode_video, decode_audio). Each stage emits a
start and an end event to any listener, so a harness can measure it without the engine knowing; the
placement policy decides where each module lives in each stage.
"""

from __future__ import annotations

import dataclasses
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ovi_engine import placement as placement_mod
from ovi_engine.audio_vae import build_audio_codec
from ovi_engine.checkpoints import CheckpointFiles, find_checkpoints
from ovi_engine.fusion import FUSION_PRESETS, FusionModel, build_fusion_model
from ovi_engine.parallel import enable_sequence_parallel, init_sequence_parallel
from ovi_engine.prompts import format_prompt
from ovi_engine.sampling import (
    DEFAULT_AUDIO_GUIDANCE,
    DEFAULT_SHIFT,
    DEFAULT_SLG_LAYER,
    DEFAULT_SOLVER,
    DEFAULT_STEPS,
    DEFAULT_VIDEO_GUIDANCE,
    sample,
)
from ovi_engine.text_encoder import (
    TEXT_ENCODER_PRESETS,
    ByteTokenizer,
    TextEncoder,
    build_text_encoder,
    load_tokenizer,
    warm_up_kernels,
)
from ovi_engine.variants import VariantSpec, detect_variant, get_variant
from ovi_engine.video_vae import build_video_vae
from ovi_engine.weights import draw_synthetic_on, load_file, read_state, save_checkpoint

# Ovi's defaults (ovi/configs/inference/inference_fusion.yaml).
DEFAULT_NEGATIVE_PROMPT = "jitter, bad hands, blur, distortion"
DEFAULT_NEGATIVE_AUDIO = "robotic, muffled, echo, distorted"


@dataclass
class PipelineConfig:
    variant: str | None = None  # None: detect from the checkpoint
    preset: str | None = None  # module sizes; None: "full" for a checkpoint dir, else "tiny" (synthetic)
    checkpoint_dir: Path | None = None
    policy: str = "all_gpu"
    attention: str = "auto"
    device: str = "cpu"
    dtype: torch.dtype | None = None  # None: bfloat16 on an accelerator, float32 on the CPU
    seed: int = 0  # seed of the synthetic weights
    area: int | None = None  # frame area override for cheap CPU runs; None = the variant's own
    solver: str = DEFAULT_SOLVER
    shift: float = DEFAULT_SHIFT
    video_guidance: float = DEFAULT_VIDEO_GUIDANCE
    audio_guidance: float = DEFAULT_AUDIO_GUIDANCE
    slg_layer: int | None = DEFAULT_SLG_LAYER
    sequence_parallel: bool = False  # denoise over all the ranks torchrun started (parallel.py)


@dataclass(frozen=True)
class StageEvent:
    stage: str
    phase: str  # "start" | "end"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextEmbeddings:
    positive: torch.Tensor  # [1, text_len, dim], zero-padded as Ovi feeds them
    negative: torch.Tensor
    prompt: str  # after conversion to the variant's format


@dataclass
class Latents:
    video: torch.Tensor  # [48, F, h, w]
    audio: torch.Tensor  # [L, 20]
    variant: str

    def save(self, path: str | Path) -> Path:
        return save_checkpoint({"video": self.video, "audio": self.audio}, path,
                               {"ovi_variant": self.variant})

    @classmethod
    def load(cls, path: str | Path) -> Latents:
        from ovi_engine.weights import read_metadata

        state = read_state(path)
        return cls(state["video"], state["audio"], read_metadata(path).get("ovi_variant", ""))


@dataclass
class Media:
    video: torch.Tensor  # uint8 [T, H, W, 3]
    audio: torch.Tensor  # float32 [samples] in [-1, 1]
    fps: int
    sample_rate: int

    @property
    def video_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def audio_samples(self) -> int:
        return int(self.audio.shape[0])

    def save_mp4(self, path: str | Path) -> Path:
        """H.264 + AAC at the variant's frame rate (needs PyAV: pip install 'ovi-bench[video]')."""
        from ovi_engine.media import write_mp4

        return write_mp4(Path(path), self.video.numpy(), self.fps, self.audio.numpy(), self.sample_rate)

    def save_frames_wav(self, directory: str | Path) -> Path:
        """frames.npy (uint8 [T,H,W,3]) and audio.wav (16-bit PCM): no extra dependency."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        import numpy as np

        np.save(directory / "frames.npy", self.video.numpy())
        pcm = (self.audio.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
        with wave.open(str(directory / "audio.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            w.writeframes(pcm.tobytes())
        return directory


Listener = Callable[[StageEvent], None]


class OviPipeline:
    def __init__(self, config: PipelineConfig) -> None:
        # Under torchrun every rank computes on its own GPU (cuda:LOCAL_RANK), from the first module on.
        self.sequence_parallel = init_sequence_parallel(config.device) if config.sequence_parallel else None
        self.device = self.sequence_parallel.device if self.sequence_parallel else torch.device(config.device)
        # CPU kernels for bf16 convolutions are an order of magnitude slower than float32 ones
        self.dtype: torch.dtype = (config.dtype
                                   or (torch.float32 if self.device.type == "cpu" else torch.bfloat16))
        self.config = dataclasses.replace(config, dtype=self.dtype)
        self.allocator = placement_mod.configure_allocator(self.device)
        self.files: CheckpointFiles | None = None
        if config.checkpoint_dir is not None:
            self.files = find_checkpoints(Path(config.checkpoint_dir), config.variant)
            detection = detect_variant(self.files.fusion, explicit=config.variant)
            self.spec: VariantSpec = detection.variant
            self.variant_detected_by = detection.how
        else:
            self.spec = get_variant(config.variant or "720x720_5s")
            self.variant_detected_by = "explicit" if config.variant else "default"
        self.policy = placement_mod.get_policy(config.policy)
        self.listeners: list[Listener] = []
        slots = {
            name: placement_mod.ModuleSlot(name, build)
            for name, build in (
                ("text_encoder", self._build_text_encoder),
                ("fusion", self._build_fusion),
                ("video_vae", self._build_video_vae),
                ("audio_codec", self._build_audio_codec),
            )
        }
        self.placement = placement_mod.Placement(self.policy, slots, self.device,
                                                 stream_blocks=_fusion_blocks)
        self.tokenizer = self._make_tokenizer()

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint_dir(cls, path: str | Path, variant: str | None = None, **kw: Any) -> OviPipeline:
        return cls(PipelineConfig(variant=variant, checkpoint_dir=Path(path), **kw))

    @property
    def weights(self) -> str:
        return f"checkpoint:{self.config.checkpoint_dir}" if self.files else f"synthetic:{self._preset}"

    def _build(self, builder: Callable[..., torch.nn.Module], device: torch.device, preset: Any,
               path: Path | None) -> torch.nn.Module:
        """Read a checkpoint strictly, or draw synthetic weights (on the accelerator, even for the host)."""
        dtype = self.dtype
        if path is not None:
            model = builder(preset, device="meta", dtype=dtype, seed=None)
            return load_file(model, path, device=device, dtype=dtype)
        with draw_synthetic_on(self.device):
            return builder(preset, device=device, dtype=dtype, seed=self.config.seed)

    def _build_fusion(self, device: torch.device) -> torch.nn.Module:
        model = self._build(build_fusion_model, device, self._preset, self._file("fusion"))
        if self.sequence_parallel is not None:
            assert isinstance(model, FusionModel)
            enable_sequence_parallel(model, self.sequence_parallel)
        return model

    def _build_text_encoder(self, device: torch.device) -> torch.nn.Module:
        return self._build(build_text_encoder, device, self._text_config(), self._file("text_encoder"))

    def _build_video_vae(self, device: torch.device) -> torch.nn.Module:
        return self._build(build_video_vae, device, self._preset, self._file("video_vae"))

    def _build_audio_codec(self, device: torch.device) -> torch.nn.Module:
        if self.files is None:
            return self._build(build_audio_codec, device, self._preset, None)
        codec = build_audio_codec(self._preset, device=device, dtype=self.dtype, seed=None)
        return codec.load_vae(self.files.audio_vae).load_vocoder(self.files.vocoder)

    def _file(self, part: str) -> Path | None:
        return getattr(self.files, part) if self.files else None

    def _module(self, name: str) -> Any:
        """The module a stage needs; the placement policy has made it available."""
        module = self.placement.slots[name].module
        assert module is not None, f"{name} is not loaded"
        return module

    @property
    def _preset(self) -> str:
        return self.config.preset or ("full" if self.files else "tiny")

    def _text_config(self) -> Any:
        """The text encoder's output width must be the fusion model's text width, at every preset."""
        text_dim = FUSION_PRESETS[self._preset].text_dim
        return dataclasses.replace(TEXT_ENCODER_PRESETS[self._preset], dim=text_dim)

    def _make_tokenizer(self) -> Any:
        if self.files is not None:
            return load_tokenizer(self.files.tokenizer)
        return ByteTokenizer(self._text_config().vocab_size)

    # ---- stages -------------------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    @contextmanager
    def _stage(self, name: str, **info: Any) -> Iterator[dict[str, Any]]:
        for listener in self.listeners:
            listener(StageEvent(name, "start", dict(info)))
        slots = self.placement.slots
        loads_before = {n: len(slot.load_s) for n, slot in slots.items()}
        self.placement.enter(name)
        out: dict[str, Any] = dict(info)
        # Modules this stage built (a first load, or a reload of one released earlier) and how long each took.
        built = {n: slots[n].load_s[-1]
                 for n, before in loads_before.items() if len(slots[n].load_s) > before}
        for key, reload in (("load_s", False), ("reload_s", True)):
            times = {n: s for n, s in built.items() if (loads_before[n] > 0) == reload}
            if times:
                out[key] = times
        yield out
        self.placement.leave(name)
        for listener in self.listeners:
            listener(StageEvent(name, "end", out))

    def load(self) -> None:
        """Build (or read) the modules the policy keeps resident, and on a GPU run the text encoder's shapes
        once; reports how long each load and that warm-up took."""
        with self._stage("load") as info:
            self.placement.load()
            info["load_s"] = {n: s.load_s[-1] for n, s in self.placement.slots.items() if s.load_s}
            if self.device.type == "cuda":  # cuBLAS's and attention's first-use setup, once, here
                start = time.perf_counter()
                warm_up_kernels(self._text_config(), self.device, self.dtype)
                info["warm_up_s"] = time.perf_counter() - start

    @torch.inference_mode()
    def encode_text(self, prompt: str, negative_prompt: str | None = None) -> TextEmbeddings:
        prompt = format_prompt(prompt, self.spec.prompt_format)
        negative = negative_prompt if negative_prompt is not None else DEFAULT_NEGATIVE_PROMPT
        with self._stage("encode_text") as info:
            encoder = TextEncoder(self._module("text_encoder"), self.tokenizer)
            embeddings, lengths = encoder.encode([prompt, negative])
            info["tokens"] = [int(x) for x in lengths]
        return TextEmbeddings(embeddings[:1], embeddings[1:], prompt)

    @torch.inference_mode()
    def denoise(
        self,
        text: TextEmbeddings,
        *,
        steps: int = DEFAULT_STEPS,
        seed: int = 0,
        solver: str | None = None,
        image: torch.Tensor | str | Path | None = None,
        height: int | None = None,
        width: int | None = None,
        on_step: Callable[[int, int], None] | None = None,
        on_latents: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        slg_layer: int | None = None,
    ) -> Latents:
        """t2v, or i2v when ``image`` (uint8 [H,W,3] tensor or an image file) gives the first frame.
        on_latents(i, video, audio) sees each step's latents (sampling.sample); slg_layer, when given,
        replaces the configured skip-layer guidance block for this call (<= 0: none)."""
        first_frame = self._encode_image(image) if image is not None else None
        video_shape = self.spec.video_latent_shape(height, width, self.config.area)
        if first_frame is not None:  # the image's own latent size (it was already fitted to the area)
            video_shape = (*video_shape[:2], *first_frame.shape[-2:])
        video_noise, audio_noise = initial_noise(video_shape, self.spec.audio_latent_shape(), seed,
                                                 self.device, self.dtype)
        with self._stage("denoise", steps=steps, video_shape=list(video_shape),
                         audio_shape=list(self.spec.audio_latent_shape())):
            model = self._module("fusion")
            video, audio = sample(
                model,
                solver=solver or self.config.solver,
                steps=steps,
                shift=self.config.shift,
                video_noise=video_noise.unsqueeze(0),
                audio_noise=audio_noise.unsqueeze(0),
                pos_context=text.positive.to(self.device),
                neg_context=text.negative.to(self.device),
                video_guidance=self.config.video_guidance,
                audio_guidance=self.config.audio_guidance,
                slg_layer=self.config.slg_layer if slg_layer is None else slg_layer,
                first_frame_latent=first_frame,
                attention=self.config.attention,
                on_step=on_step,
                on_latents=on_latents,
            )
        return Latents(video[0], audio[0], self.spec.name)

    def _encode_image(self, image: torch.Tensor | str | Path) -> torch.Tensor:
        """The first frame, resized to the variant's area (multiple of 32), encoded to [1, 48, 1, h, w]."""
        from ovi_engine.media import read_image, resize_to_area

        pixels = read_image(image) if not isinstance(image, torch.Tensor) else image
        pixels = resize_to_area(pixels, self.spec, self.config.area)  # float [3, H, W] in [-1, 1]
        with self._stage("encode_image"):
            vae = self._module("video_vae")
            frame = pixels.to(self.device, self.dtype)[None, :, None]
            return vae.encode(frame)

    def release(self) -> None:
        """Free what decoding does not need (policy permitting) and return the cache to the driver."""
        with self._stage("release") as info:
            self.placement.release()
            info["placement"] = [p.__dict__ for p in self.placement.report()]

    @torch.inference_mode()
    def decode_latents(self, latents: Latents, *, tile: Any = None) -> Media:
        """Decode saved or fresh latents; never rebuilds the fusion model or the text encoder."""
        with self._stage("decode_video", frames=self.spec.video_frames):
            vae = self._module("video_vae")
            video = vae.decode(latents.video.to(self.device, self.dtype)[None], tile=tile)[0]
            frames = to_uint8_frames(video)
            del video
        with self._stage("decode_audio", samples=self.spec.audio_samples):
            codec = self._module("audio_codec")
            audio = codec.decode(latents.audio.to(self.device, self.dtype)[None])[0].float().cpu()
        return Media(frames, audio, self.spec.fps, self.spec.sample_rate)

    def generate(self, prompt: str, *, negative_prompt: str | None = None, steps: int = DEFAULT_STEPS,
                 seed: int = 0,
                 image: Any = None, height: int | None = None, width: int | None = None) -> Media:
        if not any(s.module is not None for s in self.placement.slots.values()):
            self.load()
        text = self.encode_text(prompt, negative_prompt)
        latents = self.denoise(text, steps=steps, seed=seed, image=image, height=height, width=width)
        self.release()
        return self.decode_latents(latents)

    def placement_report(self) -> list[placement_mod.ModulePlacement]:
        return self.placement.report()

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.spec.describe(),
            "variant_detected_by": self.variant_detected_by,
            "policy": self.policy.name,
            "reloads_per_generation": list(self.policy.reloads_per_generation),
            "placement": [p.__dict__ for p in self.placement.report()],
            "attention": self.config.attention,
            "weights": self.weights,
            "preset": self._preset,
            "allocator": self.allocator,
        }


def initial_noise(video_shape: tuple[int, ...], audio_shape: tuple[int, ...], seed: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's rule (OviFusionEngine.generate), so that any engine given a seed starts from the same noise:
    video [48, F, h, w] then audio [L, 20], each drawn directly in the compute dtype on the compute device
    from its own torch.Generator(device) seeded with ``seed`` (audio does not continue video's stream)."""

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        generator = torch.Generator(device=device).manual_seed(seed)
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    return draw(video_shape), draw(audio_shape)


def to_uint8_frames(video: torch.Tensor, frames_per_chunk: int = 16) -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3] on the host, a few frames at a time (a float32 copy of a
    whole 960x960_10s clip would be 2.5 GiB on the device)."""
    out = torch.empty((video.shape[1], video.shape[2], video.shape[3], 3), dtype=torch.uint8)
    for start in range(0, video.shape[1], frames_per_chunk):
        part = video[:, start : start + frames_per_chunk].float().clamp_(-1, 1).add_(1).mul_(127.5).round_()
        out[start : start + frames_per_chunk] = part.to(torch.uint8).permute(1, 2, 3, 0).cpu()
    return out


def _fusion_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The fusion model's block pairs in execution order: the unit that cpu_offload streams."""
    return list(model.block_pairs)  # type: ignore[arg-type]
