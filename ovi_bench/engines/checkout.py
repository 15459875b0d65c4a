"""The checkout engine: upstream Ovi (or a fork keeping its `ovi/` package and `OviFusionEngine`) run from
its own code behind the Engine interface (`--engine checkout:PATH`).

What runs is the checkout's: `OviFusionEngine.__init__` (its variant table, latent lengths, prompt formatter,
fp8 checks), `generate()` (its schedulers, CFG, SLG and sampling loop), its model classes and its codecs.
The adapter supplies weights, cuts `generate()` into the harness's stages and observes; each thing it
substitutes is recorded and listed by `describe()["substitutions"]`:

- weights: the checkout's `init_*`/`load_fusion_checkpoint` loaders (full-scale configs, paths relative to
  the working directory) are replaced by builders that call the checkout's own classes at the preset's
  dimensions and fill them with `ovi_bench.synthetic` (the reference engine's rule, same seed, same
  tensors). With `checkpoint_dir`, the checkout's own loaders run on the user's files.
- the tokenizer: a file-free byte-level stand-in unless the checkpoint dir has the umT5 tokenizer files.
- attention: `flash_attention` becomes an SDPA call of the same semantics when flash-attn is absent.
- import-time GPU defaults (`torch.cuda.current_device()` in a default argument) and optional imports on
  paths generation never takes (FluxPipeline, open_clip, optimum-quanto, torchvision's Normalize).
- on the CPU: the checkout casts its VAEs to bf16 and relies on CUDA autocast, so they run in the run dtype.

Stages: `encode_text` formats the prompt with the checkout's own formatter and runs its text encoder;
`denoise` runs `generate()` with those embeddings replayed, each scheduler's `step` wrapped (`on_step`),
and its two decoder calls captured (the latents they receive are the stage's output); `decode_latents`
hands those latents to the same decoders.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ovi_bench import synthetic
from ovi_bench.engines.base import (
    ATTENTION_BACKENDS,
    FEATURES,
    POLICIES,
    AttentionKernel,
    Capabilities,
    EngineConfig,
    StageListener,
)
from ovi_bench.variant_facts import FILE_NAMES, VARIANTS, variant_facts

FPS, SAMPLE_RATE = 24, 16_000  # what upstream's save_video writes; the checkout's engine does not state them
TEXT_LEN_FULL = 512


class CheckoutError(RuntimeError):
    """The checkout cannot run this case: one line saying why (the worker makes it the case's result)."""


@dataclass(frozen=True)
class Preset:
    """Module sizes the checkout's constructors are called with. These must be the reference engine's
    presets of the same name (tests/harness/test_checkout_parity.py shows they agree); "full" keeps the
    checkout's own configs."""

    fusion: dict[str, Any] = field(default_factory=dict)  # overrides of ovi/configs/model/dit/*.json
    text_encoder: dict[str, Any] = field(default_factory=dict)  # overrides of umt5_xxl's cfg
    text_len: int = TEXT_LEN_FULL
    video_vae: dict[str, Any] = field(default_factory=dict)  # WanVAE_ arguments
    audio_vae_dim: int = 384  # MMAudio VAE_16k hidden_dim
    vocoder_channels: int = 1536  # BigVGAN upsample_initial_channel


PRESETS: dict[str, Preset] = {
    "full": Preset(),
    "tiny": Preset(
        fusion={"dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 3, "freq_dim": 32, "text_dim": 64,
                "text_len": 32},
        text_encoder={"vocab_size": 384, "dim": 64, "dim_attn": 64, "dim_ffn": 160, "num_heads": 4,
                      "encoder_layers": 2},
        text_len=32, video_vae={"dim": 8, "dec_dim": 8}, audio_vae_dim=16, vocoder_channels=64),
}


# ---- the checkout as a Python package --------------------------------------------------------------------
def checkout_root(path: str | Path) -> Path:
    """The absolute checkout directory; CheckoutError when it holds no `ovi/` package."""
    root = Path(path).expanduser().resolve()
    if not (root / "ovi" / "__init__.py").is_file():
        raise CheckoutError(f"{root}: no ovi/ package here (expected an upstream Ovi clone or a fork of it)")
    return root


@contextlib.contextmanager
def working_directory(root: Path) -> Iterator[None]:
    """The checkout reads its configs relative to the working directory (ovi/configs/...)."""
    previous = os.getcwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, saved)


def _stand_in_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    return module


def _unavailable(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise CheckoutError(f"{what} is a stand-in of the checkout engine (not installed); "
                            "this path needs it")
    return refuse


# Optional imports on paths generation never takes: (module, the attribute the checkout imports from it)
# -> a stand-in installed only while the checkout imports, and only when the real one cannot be imported.
OPTIONAL_IMPORTS: dict[str, tuple[str, ...]] = {
    "optimum.quanto": ("freeze", "qint8", "quantize"),  # only with qint8, which the adapter never sets
    "open_clip": ("create_model_from_pretrained",),  # MMAudio's CLIP features, not its VAE
    "torchvision.transforms": ("Normalize",),  # idem
}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def optional_import_stand_ins(notes: list[str]) -> Iterator[None]:
    installed: list[str] = []
    for name, attrs in OPTIONAL_IMPORTS.items():
        if _importable(name):
            continue
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if prefix not in sys.modules:
                sys.modules[prefix] = _stand_in_module(prefix)
                installed.append(prefix)
        for attr in attrs:
            setattr(sys.modules[name], attr, _unavailable(f"{name}.{attr}"))
        notes.append(f"import {name}: not installed, a stand-in that refuses if called (a path generation "
                     "never takes)")
    diffusers = importlib.import_module("diffusers")
    saved_flux = diffusers.__dict__.get("FluxPipeline")
    diffusers.FluxPipeline = _unavailable("diffusers.FluxPipeline")  # its lazy import costs seconds
    notes.append("diffusers.FluxPipeline: a stand-in that refuses if called (only t2i2v mode, "
                 "never set, uses it)")
    try:
        yield
    finally:
        for prefix in reversed(installed):
            sys.modules.pop(prefix, None)
        if saved_flux is None:
            del diffusers.FluxPipeline
        else:
            diffusers.FluxPipeline = saved_flux


@contextlib.contextmanager
def cuda_device_default(notes: list[str]) -> Iterator[None]:
    """1.1's t5.py evaluates torch.cuda.current_device() in a default argument, at import."""
    if torch.cuda.is_available():
        yield
        return

    def current_device() -> int:
        note = ("torch.cuda.current_device(): 0 while the checkout imports (no CUDA; a default "
                "argument needs it)")
        if note not in notes:
            notes.append(note)
        return 0

    with patched(torch.cuda, "current_device", current_device):
        yield


def _purge_ovi_modules() -> None:
    """One `ovi` package per process: another checkout's modules go before this one is imported."""
    for name in [n for n in sys.modules if n == "ovi" or n.startswith("ovi.")]:
        del sys.modules[name]


def import_checkout(root: Path, notes: list[str]) -> types.ModuleType:
    """Import the checkout's `ovi.ovi_fusion_engine` (with stand-ins where needed);
    CheckoutError on failure."""
    _purge_ovi_modules()
    sys.path.insert(0, str(root))
    try:
        with working_directory(root), optional_import_stand_ins(notes), cuda_device_default(notes):
            module = importlib.import_module("ovi.ovi_fusion_engine")
    except Exception as exc:
        raise CheckoutError(f"{root}: cannot import ovi.ovi_fusion_engine ({_one_line(exc)})") from exc
    finally:
        sys.path.remove(str(root))
    if getattr(module, "OviFusionEngine", None) is None:
        raise CheckoutError(f"{root}: ovi.ovi_fusion_engine defines no OviFusionEngine")
    return module


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# ---- attention ----------------------------------------------------------------------------------------
def sdpa_flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_lens: Any = None,
                         k_lens: Any = None, dropout_p: float = 0.0, softmax_scale: float | None = None,
                         q_scale: float | None = None, causal: bool = False,
                         window_size: tuple[int, int] = (-1, -1), deterministic: bool = False,
                         dtype: torch.dtype = torch.bfloat16, version: int | None = None) -> torch.Tensor:
    """Upstream's flash_attention through torch SDPA: [B, L, H, D] in and out, q/k/v cast to `dtype` unless
    already half (as flash-attn computes), keys past k_lens masked, the output in q's dtype."""
    if tuple(window_size) != (-1, -1):
        raise NotImplementedError("sliding-window attention has no SDPA stand-in")
    b, lq, lk, out_dtype = q.size(0), q.size(1), k.size(1), q.dtype
    if q_lens is not None and any(int(n) != lq for n in q_lens):
        raise NotImplementedError("padded queries (q_lens) have no SDPA stand-in")
    half = (torch.float16, torch.bfloat16)
    q, k, v = (t if t.dtype in half else t.to(dtype) for t in (q, k, v))
    q, k = q.to(v.dtype), k.to(v.dtype)
    if q_scale is not None:
        q = q * q_scale
    mask = None
    if k_lens is not None:
        keys = torch.arange(lk, device=k.device)
        mask = (keys[None, :] < torch.as_tensor(k_lens, device=k.device)[:, None]).view(b, 1, 1, lk)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask,
                                         dropout_p=dropout_p, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2).to(out_dtype)


def flash_attn_runs(attention: Any) -> bool:
    """Whether the checkout's flash_attention can call what it calls. Upstream sets FLASH_ATTN_2_AVAILABLE
    when `import flash_attn` succeeds, which FlashAttention-4 alone (`flash_attn.cute`, no
    flash_attn_varlen_func) also makes true: seen on the H200, every upstream case then failed in denoise."""
    def has(flag: str, module: str) -> bool:
        return bool(getattr(attention, flag, False)) and hasattr(getattr(attention, module, None),
                                                                 "flash_attn_varlen_func")

    return (has("FLASH_ATTN_3_AVAILABLE", "flash_attn_interface")
            or has("FLASH_ATTN_2_AVAILABLE", "flash_attn"))


def replace_flash_attention(notes: list[str]) -> Callable[..., Any]:
    """The checkout's attention entry point: its own flash_attention when flash-attn runs here, else the SDPA
    stand-in, bound wherever the checkout imported the name."""
    attention = sys.modules["ovi.modules.attention"]
    original = attention.flash_attention
    if flash_attn_runs(attention) and torch.cuda.is_available():
        return original
    bound = [name for name, module in list(sys.modules.items())
             if (name == "ovi" or name.startswith("ovi."))
             and getattr(module, "flash_attention", None) is original]
    for name in bound:
        sys.modules[name].flash_attention = sdpa_flash_attention
    notes.append("attention: flash_attention (asserts CUDA and flash-attn) replaced by an SDPA "
                 f"call of the same semantics in {', '.join(sorted(bound))}")
    return sdpa_flash_attention


# ---- weights at a preset -------------------------------------------------------------------------------
@dataclass
class Builders:
    """Stand-ins for the checkout's `init_*` loaders: its own classes at the preset's dimensions, filled with
    the harness's synthetic weights. `requested` records the checkpoint files the checkout asked for."""

    preset: Preset
    seed: int
    device: torch.device
    dtype: torch.dtype
    tokenizer: Callable[..., Any]
    requested: list[str] = field(default_factory=list)

    def fusion(self, rank: Any = 0, meta_init: bool = False) -> tuple[nn.Module, dict, dict]:
        import json

        from ovi.modules.fusion import FusionModel

        configs = []
        for name in ("video", "audio"):
            with open(f"ovi/configs/model/dit/{name}.json") as f:  # the checkout's configs, cwd-relative
                configs.append({**json.load(f), **self.preset.fusion})
        with torch.device("meta"):
            model = FusionModel(*configs)
        return model, configs[0], configs[1]

    def load_fusion(self, model: nn.Module, checkpoint_path: str, from_meta: bool = False) -> None:
        """Where the checkout's loader puts the tensors: on the host (it reads the file to the CPU and its
        engine then moves the model, to the device or, under cpu_offload, nowhere), drawn on the device."""
        self.requested.append(os.path.basename(checkpoint_path))
        synthetic.fill(model, seed=self.seed, device="cpu", dtype=self.dtype, rules=synthetic.FUSION_RULES,
                       draw_on=self.device)

    def video_vae(self, ckpt_dir: str, rank: Any = 0) -> Any:
        vae2_2 = sys.modules["ovi.modules.vae2_2"]

        def build(pretrained_path: Any = None, **cfg: Any) -> nn.Module:
            with torch.device("meta"):
                model = vae2_2.WanVAE_(**{**cfg, **self.preset.video_vae})
            return synthetic.fill(model, seed=self.seed, device=self.device, dtype=torch.float32,
                                  rules=synthetic.VIDEO_VAE_RULES)

        with patched(vae2_2, "_video_vae", build):
            return vae2_2.Wan2_2_VAE(device=rank)

    def audio_codec(self, ckpt_dir: str, rank: Any = 0) -> Any:
        features = sys.modules["ovi.modules.mmaudio.features_utils"]
        autoencoder = sys.modules["ovi.modules.mmaudio.ext.autoencoder.autoencoder"]
        bigvgan = sys.modules["ovi.modules.mmaudio.ext.bigvgan.bigvgan"]
        from omegaconf import OmegaConf

        def codec(*, mode: str, need_vae_encoder: bool = True, **paths: Any) -> nn.Module:
            if mode != "16k":
                raise CheckoutError(f"the adapter builds the 16k MMAudio codec, not {mode!r}")
            module = autoencoder.AutoEncoderModule.__new__(autoencoder.AutoEncoderModule)
            nn.Module.__init__(module)
            vae = autoencoder.VAE(data_dim=80, embed_dim=20, hidden_dim=self.preset.audio_vae_dim)
            module.vae = self._fill_folded(vae, synthetic.AUDIO_VAE_RULES).eval()
            config = OmegaConf.load(bigvgan._bigvgan_vocoder_path)
            config.upsample_initial_channel = self.preset.vocoder_channels
            vocoder = bigvgan.BigVGAN.__new__(bigvgan.BigVGAN)
            nn.Module.__init__(vocoder)
            vocoder.vocoder = self._fill_folded(bigvgan.BigVGANVocoder(config),
                                                synthetic.VOCODER_RULES).eval()
            vocoder.weight_norm_removed = True
            module.vocoder = vocoder.eval()
            if not need_vae_encoder:
                del module.vae.encoder
            return module.requires_grad_(False)

        with patched(features, "AutoEncoderModule", codec):
            return features.FeaturesUtils(tod_vae_ckpt=None, bigvgan_vocoder_ckpt=None, mode="16k",
                                          need_vae_encoder=True).to(rank)

    def _fill_folded(self, module: nn.Module, rules: tuple[synthetic.Rule, ...]) -> nn.Module:
        """Codec parts hold weights before weight normalization: filled in float32 where they live, then
        folded by the part's own remove_weight_norm, as a checkpoint would be."""
        synthetic.fill(module, seed=self.seed, device=self.device, dtype=torch.float32, rules=rules)
        module.remove_weight_norm()
        return module

    def text_encoder(self, ckpt_dir: str, rank: Any, cpu_offload: bool = False) -> Any:
        t5 = sys.modules["ovi.modules.t5"]
        model = t5.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=torch.float32, device="meta",
                            **self.preset.text_encoder)
        c = model
        rules = synthetic.text_encoder_rules(c.dim, c.dim_attn, c.num_heads, c.num_buckets)
        synthetic.fill(model, seed=self.seed, device="cpu" if cpu_offload else self.device, dtype=self.dtype,
                       rules=rules, draw_on=self.device)
        encoder = t5.T5EncoderModel.__new__(t5.T5EncoderModel)  # its __init__ builds at full size from a file
        encoder.__dict__.update(text_len=self.preset.text_len, dtype=self.dtype, device=rank,
                                checkpoint_path=None,
                                tokenizer_path=None, model=model.eval().requires_grad_(False),
                                tokenizer=self.tokenizer(seq_len=self.preset.text_len))
        return encoder


@dataclass
class ByteTokenizer:
    """File-free stand-in for the umT5 tokenizer, called as the checkout calls its HuggingfaceTokenizer:
    the checkout's own text cleaning, then UTF-8 bytes shifted past T5's special ids (pad 0, eos 1, unk 2),
    wrapped into the vocabulary (the reference engine's ByteTokenizer rule), right-padded to seq_len."""

    vocab_size: int
    seq_len: int
    clean: Callable[[str], str]

    def __call__(self, texts: list[str], return_mask: bool = False, **kwargs: Any) -> Any:
        ids = torch.zeros((len(texts), self.seq_len), dtype=torch.long)
        span = self.vocab_size - 3
        for row, text in enumerate(texts):
            tokens = [3 + b % span for b in self.clean(text).encode()][: self.seq_len - 1] + [1]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        mask = (ids != 0).long()
        return (ids, mask) if return_mask else ids


def byte_tokenizer_factory(vocab_size: int) -> Callable[..., ByteTokenizer]:
    tokenizers = sys.modules["ovi.modules.tokenizers"]

    def clean(text: str) -> str:  # HuggingfaceTokenizer's clean='whitespace'
        return tokenizers.whitespace_clean(tokenizers.basic_clean(text))

    return lambda name=None, seq_len=TEXT_LEN_FULL, **kwargs: ByteTokenizer(vocab_size, seq_len, clean)


def has_tokenizer_files(checkpoint_dir: Path | None) -> bool:
    folder = checkpoint_dir / "Wan2.2-TI2V-5B" / "google" / "umt5-xxl" if checkpoint_dir else None
    return bool(folder and any(folder.glob("tokenizer*")))


# ---- stages --------------------------------------------------------------------------------------------
@dataclass
class CheckoutText:
    prompt: str  # as the checkout's formatter left it
    negative_prompt: str
    embeddings: list[torch.Tensor]  # [positive, video negative, audio negative], as generate() encodes them


@dataclass
class CheckoutLatents:
    video: torch.Tensor  # [48, F, h, w]
    audio: torch.Tensor  # [L, 20]


@dataclass
class CheckoutMedia:
    video: torch.Tensor  # [3, frames, H, W] in [-1, 1]
    audio: torch.Tensor  # [samples]
    video_frames: int
    audio_samples: int
    fps: float = FPS
    sample_rate: int = SAMPLE_RATE


@dataclass
class ReplayedTextModel:
    """Stands in for the checkout's text encoder inside generate(): returns what encode_text computed."""

    text: CheckoutText
    device: Any
    model: nn.Module = field(default_factory=nn.Module)  # cpu_offload moves `.model` about

    def __call__(self, texts: list[str], device: Any) -> list[torch.Tensor]:
        expected = [self.text.prompt, self.text.negative_prompt, self.text.negative_prompt]
        if list(texts) != expected:
            raise CheckoutError(f"generate() encoded {texts!r}, not the prompts of encode_text {expected!r}")
        return self.text.embeddings


class ErrorLog(logging.Handler):
    """generate() logs its exception and returns None: keep the last error it logged."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        lines = [line for line in record.getMessage().strip().splitlines() if line.strip()]
        self.last = lines[-1].strip() if lines else record.levelname


@dataclass
class DecodeCapture:
    """generate()'s two decoder calls, captured: the latents are the denoise stage's output."""

    video: torch.Tensor | None = None
    audio: torch.Tensor | None = None

    def video_decoder(self, latents: torch.Tensor) -> torch.Tensor:
        self.video = latents.detach().clone()
        return torch.zeros(1, 1)

    def audio_decoder(self, latents: torch.Tensor) -> torch.Tensor:
        self.audio = latents.detach().clone()
        return torch.zeros(1)


@contextlib.contextmanager
def decoders_on_device(engine: Any) -> Iterator[None]:
    """Under cpu_offload generate() brings both decoders to the device just before its decode and offloads
    them again at its end, so they are on the host when decode_latents runs; repeat its moves around it."""
    if not engine.cpu_offload:
        yield
        return
    engine.vae_model_video.model = engine.vae_model_video.model.to(engine.device)
    engine.vae_model_audio = engine.vae_model_audio.to(engine.device)
    try:
        yield
    finally:
        engine.offload_to_cpu(engine.vae_model_video.model)
        engine.offload_to_cpu(engine.vae_model_audio)


class StepObserver:
    """Wraps each scheduler generate() creates, so that `on_step(i, steps)` follows the last scheduler's
    i-th step (video and audio step once each per denoising step). generate() makes the video scheduler
    first, then the audio one; `on_step_latents(i, video, audio)` gets what their i-th steps returned."""

    def __init__(self, engine: Any, on_step: Callable[[int, int], None] | None,
                 on_step_latents: Callable[[int, Any, Any], None] | None = None):
        self.make = engine.get_scheduler_time_steps
        self.on_step = on_step
        self.on_step_latents = on_step_latents
        self.counts: list[int] = []
        self.latest: list[Any] = []  # per scheduler, the sample its last step returned (batch item 0)
        self.steps = 0

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        scheduler, timesteps = self.make(*args, **kwargs)
        index = len(self.counts)
        self.counts.append(0)
        self.latest.append(None)
        self.steps = len(timesteps)
        step = scheduler.step

        def observed_step(*a: Any, **kw: Any) -> Any:
            out = step(*a, **kw)
            self.counts[index] += 1
            self.latest[index] = (out[0] if isinstance(out, tuple) else out.prev_sample)[0]
            if self.counts[index] == min(self.counts):
                if self.on_step_latents is not None:
                    self.on_step_latents(self.counts[index] - 1, *self.latest[:2])
                if self.on_step is not None:
                    self.on_step(self.counts[index] - 1, self.steps)
            return out

        scheduler.step = observed_step
        return scheduler, timesteps


class CheckoutEngine:
    """One checkout's OviFusionEngine behind the Engine interface (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.root = checkout_root(path)
        self.module: types.ModuleType | None = None
        self.engine: Any = None
        self.config: EngineConfig | None = None
        self.notes: list[str] = []  # substitutions, in the order they were made
        self.attention: Callable[..., Any] | None = None
        self.requested: list[str] = []
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.listeners: list[StageListener] = []

    # -- what the checkout has --------------------------------------------------------------------------
    def _import(self) -> types.ModuleType:
        if self.module is None:
            self.module = import_checkout(self.root, self.notes)
            self.attention = replace_flash_attention(self.notes)
        return self.module

    def variant_table(self) -> dict[str, dict[str, Any]] | None:
        """The checkout's NAME_TO_MODEL_SPECS_MAP (Ovi 1.1 and later); None when it has none (Ovi 1.0)."""
        return getattr(self._import(), "NAME_TO_MODEL_SPECS_MAP", None)

    def capabilities(self, device: str, dtype: str) -> Capabilities:
        table = self.variant_table()
        variants: dict[str, str | None] = {}
        for name in VARIANTS:
            model = name.removesuffix("_fp8")
            if table is None:
                variants[name] = None if model == "720x720_5s" else (
                    "the checkout has no variant table (NAME_TO_MODEL_SPECS_MAP): it runs one "
                    "720x720_5s model")
            else:
                variants[name] = None if model in table else "not in the checkout's NAME_TO_MODEL_SPECS_MAP"
        cuda = torch.device(device).type == "cuda"
        policies: dict[str, str | None] = dict.fromkeys(
            POLICIES, "the checkout has no such placement (its one flag is cpu_offload)")
        policies["all_gpu"] = None
        policies["cpu_offload"] = (None if cuda
                                   else "the checkout's offload_to_cpu calls torch.cuda.synchronize()")
        resolved = self._resolved_attention()
        attention: dict[str, str | None] = {
            b: f"the checkout has one attention entry point ({resolved}); it cannot be switched to {b}"
            for b in ATTENTION_BACKENDS}
        attention["auto"] = None
        features = {
            "sequence_parallel": "needs upstream's xDiT dependency (xfuser), not installed"
                if not _importable("xfuser")
            else "the checkout engine does not start the checkout's xDiT sequence-parallel path",
            "i2v": None,
            "step_latents": None,  # each scheduler's step observed (StepObserver)
            "slg_layer": None,  # generate()'s own slg_layer argument
            "attention_kernel": None,  # the checkout's own attention entry point (attention_kernel)
            "prompt_conversion": (
                None if table is not None and any("formatter" in spec for spec in table.values())
                else "the checkout has no prompt formatter (Ovi 1.0): prompts are used as given"),
            "variant_area": (
                None if table is not None and any("video_area" in spec for spec in table.values())
                else "the checkout has no per-variant area (Ovi 1.0 snaps a request to max(its area, 720²)): "
                     "a request larger than 720² runs at its own size"),
        }
        return Capabilities(variants=variants, policies=policies, attention=attention,
                            features={f: features.get(f, "not declared") for f in FEATURES})

    def _resolved_attention(self) -> str:
        self._import()
        return ("sdpa (stand-in for flash_attention)" if self.attention is sdpa_flash_attention
                else "flash_attention")

    def attention_kernel(self, backend: str, device: str, dtype: str) -> AttentionKernel:
        reason = self.capabilities(device, dtype).why_not("attention", backend)
        if reason is not None:
            raise CheckoutError(reason)
        kernel = self.attention
        # flash_attention (and its stand-in) casts inputs that are not half to its `dtype`, bf16 by default
        computes_in = None if dtype in ("float16", "bfloat16") else "bfloat16"
        return AttentionKernel(backend, self._resolved_attention(), lambda q, k, v: kernel(q, k, v),
                               computes_in=computes_in)

    # -- stages ------------------------------------------------------------------------------------------
    def load(self, config: EngineConfig) -> None:
        module = self._import()
        reason = self.capabilities(config.device, config.dtype).why_not("variants", config.variant)
        if reason is not None:
            raise CheckoutError(f"variant {config.variant}: {reason}")
        self.config = config
        device = torch.device(config.device)
        dtype = _run_dtype(config.dtype, device)
        run_config = module.OmegaConf.merge(module.DEFAULT_CONFIG, {
            "model_name": config.variant.removesuffix("_fp8"), "fp8": config.variant.endswith("_fp8"),
            "cpu_offload": config.policy == "cpu_offload", "qint8": False, "mode": "t2v",
            "ckpt_dir": str(config.checkpoint_dir.resolve()) if config.checkpoint_dir
                else self._placeholder_dir(),
        })
        tokenizer = None if has_tokenizer_files(config.checkpoint_dir) else byte_tokenizer_factory(
            PRESETS[config.preset].text_encoder.get("vocab_size", 256384) if not config.checkpoint_dir
                else 256384)
        with contextlib.ExitStack() as stack:
            stack.enter_context(working_directory(self.root))
            if config.checkpoint_dir is None:
                self._substitute_loaders(stack, module, config, device, dtype, tokenizer)
            elif tokenizer is not None:
                stack.enter_context(patched(sys.modules["ovi.modules.t5"], "HuggingfaceTokenizer", tokenizer))
                self.notes.append("tokenizer: no umT5 tokenizer files in the checkpoint dir; the "
                                  "byte-level stand-in")
            try:
                self.engine = module.OviFusionEngine(config=run_config, device=_engine_device(device),
                                                     target_dtype=dtype)
            except Exception as exc:
                raise CheckoutError(f"the checkout's OviFusionEngine() failed: {_one_line(exc)}") from exc
        if device.type == "cpu":
            video_vae = self.engine.vae_model_video
            video_vae.model = video_vae.model.float()
            self.engine.vae_model_audio = self.engine.vae_model_audio.float()
            encode = video_vae.wrapped_encode  # i2v: generate() hands it the first frame in the run dtype
            video_vae.wrapped_encode = lambda frames: encode(frames.float())
            self.notes.append("decoders in float32 on the CPU, latents cast to it (the checkout "
                              "casts its VAEs to bf16 and relies on CUDA autocast)")

    def _placeholder_dir(self) -> str:
        """A ckpt_dir whose Ovi/ holds an empty file per known fusion file name: OviFusionEngine.__init__
        checks that its file exists before (the substituted) loading; which one it asks for is recorded."""
        self._workdir = tempfile.TemporaryDirectory(prefix="ovi-checkout-")
        ovi_dir = Path(self._workdir.name) / "Ovi"
        ovi_dir.mkdir()
        for names in FILE_NAMES.values():
            (ovi_dir / names[0]).touch()
        return self._workdir.name

    def _substitute_loaders(self, stack: contextlib.ExitStack, module: types.ModuleType, config: EngineConfig,
                            device: torch.device, dtype: torch.dtype, tokenizer: Any) -> None:
        if config.preset not in PRESETS:
            raise CheckoutError(f"unknown preset {config.preset!r} (the checkout engine knows "
                                f"{sorted(PRESETS)})")
        builders = Builders(PRESETS[config.preset], config.seed, device, dtype, tokenizer, self.requested)
        for name, builder in (("init_fusion_score_model_ovi", builders.fusion),
                              ("load_fusion_checkpoint", builders.load_fusion),
                              ("init_wan_vae_2_2", builders.video_vae),
                              ("init_mmaudio_vae", builders.audio_codec),
                              ("init_text_model", builders.text_encoder)):
            if not hasattr(module, name):
                raise CheckoutError(f"ovi.ovi_fusion_engine has no {name}: the checkout "
                                    "engine cannot give it synthetic weights (use --checkpoint-dir)")
            stack.enter_context(patched(module, name, builder))
        self.notes.append(f"weights: synthetic at the {config.preset} preset (seed {config.seed}, "
                          "ovi_bench.synthetic), built by the checkout's own classes; its "
                          "init_*/load_fusion_checkpoint not called")
        self.notes.append("tokenizer: byte-level stand-in for umT5 (no tokenizer files; the "
                          "checkout's own cleaning)")
        if config.variant.endswith("_fp8"):
            self.notes.append("fp8: synthetic fusion weights in the run dtype, not float8")

    def encode_text(self, prompt: str, negative_prompt: str | None = None) -> CheckoutText:
        engine = self._loaded()
        formatter = getattr(engine, "text_formatter", None)  # Ovi 1.0 has none: the prompt is used as given
        formatted = formatter(prompt) if formatter else prompt
        negative = negative_prompt if negative_prompt is not None else ""
        text_model = engine.text_model
        if engine.cpu_offload:
            text_model.model = text_model.model.to(engine.device)
        with torch.inference_mode():
            embeddings = text_model([formatted, negative, negative], text_model.device)
        if engine.cpu_offload:
            engine.offload_to_cpu(text_model.model)
        return CheckoutText(formatted, negative,
                            [e.to(engine.target_dtype).to(engine.device) for e in embeddings])

    def denoise(self, text: CheckoutText, *, steps: int, seed: int, solver: str = "unipc",
                image: Path | None = None, height: int | None = None, width: int | None = None,
                on_step: Callable[[int, int], None] | None = None,
                on_step_latents: Callable[[int, Any, Any], None] | None = None,
                slg_layer: int | None = None) -> CheckoutLatents:
        engine, config = self._loaded(), self.config
        assert config is not None
        side = variant_facts(config.variant).side
        capture, errors = DecodeCapture(), ErrorLog()
        defaults = self.module.DEFAULT_CONFIG  # type: ignore[union-attr]
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(engine, "text_model",
                                        ReplayedTextModel(text, engine.text_model.device)
                                        if engine.text_model is not None else None))
            stack.enter_context(patched(engine, "get_scheduler_time_steps",
                                        StepObserver(engine, on_step, on_step_latents)))
            stack.enter_context(patched(engine.vae_model_video, "wrapped_decode", capture.video_decoder))
            stack.enter_context(patched(engine.vae_model_audio, "wrapped_decode", capture.audio_decoder))
            if config.area:
                self._override_area(stack, config.area)
            logging.getLogger().addHandler(errors)
            stack.callback(logging.getLogger().removeHandler, errors)
            result = engine.generate(
                text_prompt=text.prompt, image_path=str(image) if image else None,
                video_frame_height_width=[height or side, width or side], seed=seed, solver_name=solver,
                sample_steps=steps, shift=defaults.get("shift", 5.0),
                video_guidance_scale=defaults.get("video_guidance_scale", 5.0),
                audio_guidance_scale=defaults.get("audio_guidance_scale", 4.0),
                slg_layer=defaults.get("slg_layer", 9) if slg_layer is None else slg_layer,
                video_negative_prompt=text.negative_prompt,
                audio_negative_prompt=text.negative_prompt)
        if result is None:
            raise CheckoutError("the checkout's generate() failed and returned None: "
                                f"{errors.last or 'no error logged'}")
        if capture.video is None or capture.audio is None:
            raise CheckoutError("the checkout's generate() returned without decoding: no latents to hand on")
        return CheckoutLatents(capture.video.squeeze(0), capture.audio.squeeze(0).transpose(0, 1))

    def _override_area(self, stack: contextlib.ExitStack, area: int) -> None:
        """The harness's CPU area override: the checkout's own snapping and resizing, called with `area`."""
        module = self.module
        snap, resize = module.snap_hw_to_multiple_of_32, module.preprocess_image_tensor  # type: ignore[union-attr]
        stack.enter_context(patched(module, "snap_hw_to_multiple_of_32",
                                    lambda h, w, area_=None, **kw: snap(h, w, area=area)))
        stack.enter_context(patched(module, "preprocess_image_tensor",
                                    lambda *a, **kw: resize(*a, **{**kw, "resize_total_area": area})))
        note = (f"frame area: {area} (the harness's area override) passed to the checkout's "
                "snap/resize functions")
        if note not in self.notes:
            self.notes.append(note)

    def release(self) -> None:
        """The checkout frees nothing itself: drop its text encoder and fusion model
        (decode needs neither)."""
        engine = self._loaded()
        engine.text_model = None
        engine.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def decode_latents(self, latents: CheckoutLatents) -> CheckoutMedia:
        engine = self._loaded()
        cast = torch.float32 if torch.device(self.config.device).type == "cpu" else latents.video.dtype  # type: ignore[union-attr]
        with torch.inference_mode(), decoders_on_device(engine):
            with self._stage("decode_audio"):
                audio = engine.vae_model_audio.wrapped_decode(
                    latents.audio.to(cast).unsqueeze(0).transpose(1, 2))
            with self._stage("decode_video"):
                video = engine.vae_model_video.wrapped_decode(latents.video.to(cast).unsqueeze(0))
        if audio is None or video is None:
            raise CheckoutError("the checkout's decoders returned None (they log the exception and go on)")
        audio, video = audio.squeeze().float().cpu(), video.squeeze(0).float().cpu()
        return CheckoutMedia(video, audio, video_frames=int(video.shape[1]),
                             audio_samples=int(audio.shape[-1]))

    def add_stage_listener(self, listener: StageListener) -> None:
        self.listeners.append(listener)

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Announce an inner stage (the order the checkout decodes in: audio, then video)."""
        for listener in self.listeners:
            listener(name, "start", {})
        yield
        for listener in self.listeners:
            listener(name, "end", {})

    def describe(self) -> dict:
        engine, config = self.engine, self.config
        description: dict[str, Any] = {
            "engine": "checkout", "path": str(self.root), "commit": _git_commit(self.root),
            "weights": (f"checkpoint:{config.checkpoint_dir}" if config and config.checkpoint_dir
                        else f"synthetic:{config.preset}" if config else None),
            "attention": self._resolved_attention() if self.module else None,
            "substitutions": list(self.notes),
            "unmatched_names": [],  # every component is built with the reference engine's checkpoint names
        }
        if engine is not None and config is not None:
            description["variant"] = self._variant_description()
            description["fusion_file_requested"] = self.requested[-1] if self.requested else None
            description["placement"] = self._placement()
        return description

    def _variant_description(self) -> dict[str, Any]:
        """The variant as the checkout runs it: its latent lengths, target area and prompt format; frames and
        samples through its codecs' strides."""
        engine = self.engine
        video_frames = (1 + 2 ** sum(engine.vae_model_video.model.temperal_upsample)
                        * (engine.video_latent_length - 1))
        audio_samples = engine.audio_latent_length * engine.vae_model_audio.mel_converter.hop_size * 2
        return {
            "video_latent_frames": engine.video_latent_length,
            "audio_latent_length": engine.audio_latent_length,
            "video_frames": video_frames, "audio_samples": audio_samples, "fps": FPS,
            "sample_rate": SAMPLE_RATE,
            "duration_s": video_frames // FPS, "area": getattr(engine, "target_area", 720 * 720),
            "prompt_format": self._prompt_format(), "fp8": self.config.variant.endswith("_fp8"),  # type: ignore[union-attr]
        }

    def _prompt_format(self) -> str:
        formatter = getattr(self.engine, "text_formatter", None) or (lambda text: text)
        if "<AUDCAP>a<ENDAUDCAP>" in formatter("v\nAudio: a"):
            return "audcap"
        converted = formatter("v <AUDCAP>a<ENDAUDCAP>")
        # "Audio: <description>" to the end of the prompt, on its own line or not (1.1 converts in place)
        return "audio_line" if re.search(r"Audio: a\s*$", converted) else "as given"

    def _placement(self) -> list[dict[str, Any]]:
        engine = self.engine
        parts = {"text_encoder": getattr(engine.text_model, "model", None), "fusion": engine.model,
                 "video_vae": engine.vae_model_video.model, "audio_codec": engine.vae_model_audio}
        rows = []
        for name, part in parts.items():
            if not isinstance(part, nn.Module) or next(part.parameters(), None) is None:
                rows.append({"module": name, "device": "released", "bytes": 0})
                continue
            rows.append({"module": name, "device": str(next(part.parameters()).device),
                         "bytes": sum(t.numel() * t.element_size() for t in part.state_dict().values())})
        return rows

    def _loaded(self) -> Any:
        if self.engine is None:
            raise CheckoutError("the checkout engine is not loaded: call load() first")
        return self.engine


def _run_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" is bf16 on the CPU too: the checkout's time embedding is hard-coded to bf16 (it asserts it)
    and mixes dtypes where CUDA autocast would cast, so its fusion model cannot run in float32 there."""
    return torch.bfloat16 if name == "auto" else getattr(torch, name)


def _engine_device(device: torch.device) -> Any:
    """The device as the checkout expects it: a CUDA index (its `rank`), or the device name."""
    return device.index or 0 if device.type == "cuda" else device.type


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def make_engine(path: str | Path) -> CheckoutEngine:
    return CheckoutEngine(path)
