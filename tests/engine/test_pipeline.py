"""The whole pipeline at the tiny preset on the CPU: t2v and i2v to a playable MP4, placement policies seen
through real tensor lifetimes, checkpoint directories in upstream and ComfyUI layouts, saved latents."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch

from ovi_engine import OviPipeline, PipelineConfig
from ovi_engine.audio_vae import (
    AUDIO_CODEC_PRESETS,
    VAE,
    VAE_SYNTHETIC_RULES,
    Vocoder,
    vocoder_synthetic_rules,
)
from ovi_engine.checkpoints import CheckpointLayoutError
from ovi_engine.fusion import build_fusion_model
from ovi_engine.pipeline import Latents
from ovi_engine.text_encoder import TEXT_ENCODER_PRESETS, build_text_encoder
from ovi_engine.video_vae import build_video_vae
from ovi_engine.weights import build_on_meta, save_checkpoint, synthesize

AREA = 32 * 32  # small frames: lengths (frames, samples) stay the variant's own
PROMPT = "A drummer plays <S>one two three<E>. <AUDCAP>drums, a voice counting<ENDAUDCAP>"


def tiny(variant: str, policy: str = "all_gpu", area: int = AREA, **kw) -> OviPipeline:
    return OviPipeline(PipelineConfig(variant=variant, preset="tiny", policy=policy, area=area, **kw))


@pytest.mark.parametrize(("variant", "frames", "samples"),
                         [("720x720_5s", 121, 80_384), ("960x960_10s", 241, 160_768)])
def test_t2v_writes_a_playable_mp4_of_the_variants_duration(tmp_path: Path, variant, frames, samples) -> None:
    av = pytest.importorskip("av")
    from ovi_engine.media import probe_mp4

    pipe = tiny(variant)
    media = pipe.generate(PROMPT, steps=2, seed=3)
    assert (media.video_frames, media.audio_samples) == (frames, samples)
    assert media.video.dtype == torch.uint8 and media.video.shape[-1] == 3
    info = probe_mp4(media.save_mp4(tmp_path / "out.mp4"))
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac") and av is not None
    assert info["video_frames"] == frames and info["fps"] == 24
    # AAC pads its last frame: the track holds every sample, plus at most one 1024-sample frame
    assert samples <= info["audio_samples"] < samples + 1024 * 2
    out = media.save_frames_wav(tmp_path / "frames")
    assert (out / "audio.wav").stat().st_size == 44 + 2 * samples


def test_i2v_keeps_the_first_frame_latent(tmp_path: Path) -> None:
    pipe = tiny("720x720_5s", area=64 * 64)
    pipe.load()
    image = (torch.rand(72, 128, 3) * 255).to(torch.uint8)  # 16:9, resized to the area: 64x96 pixels
    text = pipe.encode_text(PROMPT)
    latents = pipe.denoise(text, steps=2, seed=1, image=image)
    first = pipe._encode_image(image)[0]
    assert latents.video.shape == (48, 31, 4, 6)
    torch.testing.assert_close(latents.video[:, :1], first.to(latents.video.dtype))
    t2v = pipe.denoise(text, steps=2, seed=1)
    assert not torch.equal(t2v.video[:, :1], latents.video[:, :1])


def test_a_binary_ppm_first_frame_reads_without_pyav(tmp_path: Path, monkeypatch) -> None:
    """The harness's i2v frames are PPM: read natively, so a machine without PyAV runs variant_latents."""
    from ovi_engine.media import read_image

    pixels = (torch.arange(5 * 7 * 3) * 7 % 256).to(torch.uint8).view(5, 7, 3)
    path = tmp_path / "frame.ppm"
    path.write_bytes(b"P6\n# made by a test\n7 5\n255\n" + pixels.numpy().tobytes())
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # import av now fails
    assert torch.equal(read_image(path), pixels)
    path.write_bytes(b"P6 7 5 255\n" + pixels.numpy().tobytes()[:-1])
    with pytest.raises(ValueError, match="holds 105 bytes of pixels, found 104"):
        read_image(path)
    # anything else still goes to PyAV, which is missing here: another format, a 16-bit PPM
    for other in (b"\x89PNG\r\n", b"P6 7 5 65535\n" + bytes(210)):
        path.write_bytes(other)
        with pytest.raises(RuntimeError, match="needs PyAV"):
            read_image(path)


def test_the_native_ppm_reader_agrees_with_pyav(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    from ovi_engine.media import read_image

    gen = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (72, 128, 3), generator=gen, dtype=torch.uint8)
    path = tmp_path / "first_frame.ppm"  # the header as the harness writes its i2v frames
    path.write_bytes(b"P6 128 72 255\n" + pixels.numpy().tobytes())
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert torch.equal(torch.from_numpy(decoded), pixels) and torch.equal(read_image(path), pixels)


def _decode_witness(pipe: OviPipeline) -> dict[str, bool]:
    """Whether the fusion model and text encoder are still alive (weakly referenced) when decoding starts."""
    refs = {name: weakref.ref(next(pipe.placement.slots[name].module.parameters()))
            for name in ("fusion", "text_encoder")}
    alive: dict[str, bool] = {}

    def listen(event) -> None:
        if event.stage == "decode_video" and event.phase == "start":
            gc.collect()
            alive.update({name: ref() is not None for name, ref in refs.items()})

    pipe.add_listener(listen)
    return alive


@pytest.mark.parametrize(("policy", "kept"), [("all_gpu", False), ("keep_resident", True)])
def test_policy_decides_what_lives_through_decode(policy: str, kept: bool) -> None:
    pipe = tiny("720x720_5s", policy)
    pipe.load()
    alive = _decode_witness(pipe)
    pipe.generate(PROMPT, steps=1)
    assert alive == {"fusion": kept, "text_encoder": kept}
    where = {p.module: p.device for p in pipe.placement_report()}
    assert (where["fusion"] == "released") is not kept and where["video_vae"] == "cpu"


def test_all_gpu_reloads_only_what_a_second_generation_needs() -> None:
    pipe = tiny("720x720_5s")
    events = []
    pipe.add_listener(lambda e: events.append(e))
    pipe.generate(PROMPT, steps=1)
    loads = {name: len(slot.load_s) for name, slot in pipe.placement.slots.items()}
    pipe.generate(PROMPT, steps=1)
    again = {name: len(slot.load_s) - loads[name] for name, slot in pipe.placement.slots.items()}
    assert again == {"text_encoder": 1, "fusion": 1, "video_vae": 0, "audio_codec": 0}
    reloads = {name: s for e in events if e.phase == "end" for name, s in e.info.get("reload_s", {}).items()}
    assert set(reloads) == {"text_encoder", "fusion"} and all(s >= 0 for s in reloads.values())


def test_cpu_offload_streams_fusion_blocks_and_matches_all_gpu() -> None:
    results = {}
    for policy in ("all_gpu", "cpu_offload"):
        pipe = tiny("720x720_5s", policy)
        pipe.load()
        assert all(p.device == "cpu" for p in pipe.placement_report())  # every module built at load
        results[policy] = pipe.denoise(pipe.encode_text(PROMPT), steps=2, seed=4)
    torch.testing.assert_close(results["cpu_offload"].video, results["all_gpu"].video)
    torch.testing.assert_close(results["cpu_offload"].audio, results["all_gpu"].audio)


def test_sequential_never_holds_the_text_encoder_and_the_fusion_model_together() -> None:
    pipe = tiny("720x720_5s", "sequential")
    slots = pipe.placement.slots
    resident: list[tuple[str, str, set[str]]] = []
    pipe.add_listener(lambda e: resident.append((e.stage, e.phase, {
        p.module for p in pipe.placement_report() if p.device not in ("released", "not loaded")})))
    text_weights: list[weakref.ref] = []
    text_alive: list[bool] = []
    build_text, build_fusion = slots["text_encoder"].build, slots["fusion"].build

    def track_text(device: torch.device) -> torch.nn.Module:
        module = build_text(device)
        text_weights.append(weakref.ref(next(module.parameters())))
        return module

    def witness(device: torch.device) -> torch.nn.Module:
        gc.collect()  # the text encoder's weights must be gone, not merely unreferenced by the slot
        text_alive.append(any(ref() is not None for ref in text_weights))
        return build_fusion(device)

    slots["text_encoder"].build, slots["fusion"].build = track_text, witness
    pipe.load()
    text = pipe.encode_text(PROMPT)
    latents = pipe.denoise(text, steps=2, seed=4)
    pipe.release()
    pipe.decode_latents(latents)
    assert text_alive == [False]
    assert not any({"text_encoder", "fusion"} <= modules for _, _, modules in resident)
    assert resident[:2] == [("load", "start", set()), ("load", "end", {"text_encoder"})]
    assert ("denoise", "start", {"fusion"}) not in resident  # built by denoise itself, after its start event
    assert pipe.describe()["reloads_per_generation"] == ["text_encoder", "fusion"]

    reference = tiny("720x720_5s", "all_gpu")
    reference.load()
    expected = reference.denoise(reference.encode_text(PROMPT), steps=2, seed=4)
    torch.testing.assert_close(latents.video, expected.video, rtol=0, atol=0)
    torch.testing.assert_close(latents.audio, expected.audio, rtol=0, atol=0)


def test_sequential_reloads_the_text_encoder_for_each_prompt_and_reports_first_loads() -> None:
    pipe = tiny("720x720_5s", "sequential")
    ends = []
    pipe.add_listener(lambda e: ends.append(e) if e.phase == "end" else None)
    pipe.load()
    pipe.encode_text(PROMPT)
    first_denoise = pipe.denoise(pipe.encode_text("another prompt"), steps=1)
    info = {e.stage: [] for e in ends}
    for e in ends:
        info[e.stage].append(e.info)
    assert ("reload_s" not in info["encode_text"][0]
            and set(info["encode_text"][1]["reload_s"]) == {"text_encoder"})
    assert set(info["denoise"][0]["load_s"]) == {"fusion"} and "reload_s" not in info["denoise"][0]
    assert len(pipe.placement.slots["text_encoder"].load_s) == 2 and first_denoise.video.isfinite().all()


def test_saved_latents_decode_without_the_fusion_model(tmp_path: Path) -> None:
    pipe = tiny("960x960_10s")
    pipe.load()
    latents = pipe.denoise(pipe.encode_text(PROMPT), steps=1)
    path = latents.save(tmp_path / "latents.safetensors")
    fresh = tiny("960x960_10s")  # a new pipeline that never builds the fusion model
    events = []
    fresh.add_listener(events.append)
    media = fresh.decode_latents(Latents.load(path))
    assert not any("reload_s" in e.info for e in events)  # building the VAEs the first time is no reload
    assert media.video_frames == 241
    assert fresh.placement.slots["fusion"].module is None
    assert Latents.load(path).variant == "960x960_10s"


# ---- checkpoint directories ------------------------------------------------------------------------------
def _write_tokenizer(directory: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2,
             **{w: 3 + i for i, w in enumerate(["a", "drummer", "plays", "one", "two"])}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(directory)


def _write_checkpoints(root: Path, layout: str) -> dict[str, Path]:
    cfg = AUDIO_CODEC_PRESETS["tiny"]
    text_cfg = TEXT_ENCODER_PRESETS["tiny"]
    if layout == "upstream":
        paths = {
            "fusion": root / "Ovi" / "model_960x960_10s.safetensors",
            "text": root / "Wan2.2-TI2V-5B" / "models_t5_umt5-xxl-enc-bf16.pth",
            "tokenizer": root / "Wan2.2-TI2V-5B" / "google" / "umt5-xxl",
            "vae": root / "Wan2.2-TI2V-5B" / "Wan2.2_VAE.pth",
            "audio": root / "MMAudio" / "ext_weights" / "v1-16.pth",
            "vocoder": root / "MMAudio" / "ext_weights" / "best_netG.pt",
        }
    else:  # ComfyUI models folder
        paths = {
            "fusion": root / "diffusion_models" / "Ovi-960x960-10s.safetensors",
            "text": root / "text_encoders" / "models_t5_umt5-xxl-enc-bf16.pth",
            "tokenizer": root / "text_encoders" / "umt5-xxl",
            "vae": root / "vae" / "Wan2.2_VAE.pth",
            "audio": root / "vae" / "mmaudio" / "v1-16.pth",
            "vocoder": root / "vae" / "mmaudio" / "best_netG.pt",
        }
    for p in paths.values():
        (p if p.suffix == "" else p.parent).mkdir(parents=True, exist_ok=True)
    save_checkpoint(build_fusion_model("tiny", device="cpu", dtype=torch.float32, seed=11), paths["fusion"],
                    {})
    torch.save(build_text_encoder(text_cfg, device="cpu", dtype=torch.float32, seed=12).state_dict(),
               paths["text"])
    torch.save(build_video_vae("tiny", device="cpu", dtype=torch.float32, seed=13).state_dict(), paths["vae"])
    vae = synthesize(build_on_meta(lambda: VAE(cfg)), seed=14, device="cpu", dtype=torch.float32,
                     rules=VAE_SYNTHETIC_RULES)
    torch.save(vae.state_dict(), paths["audio"])
    vocoder = synthesize(build_on_meta(lambda: Vocoder(cfg)), seed=15, device="cpu", dtype=torch.float32,
                         rules=vocoder_synthetic_rules(cfg))
    torch.save({"generator": vocoder.state_dict()}, paths["vocoder"])
    _write_tokenizer(paths["tokenizer"])
    return paths


@pytest.mark.parametrize("layout", ["upstream", "comfyui"])
def test_checkpoint_directory_loads_every_module(tmp_path: Path, layout: str) -> None:
    paths = _write_checkpoints(tmp_path, layout)
    pipe = OviPipeline.from_checkpoint_dir(tmp_path, preset="tiny", area=AREA)
    assert pipe.spec.name == "960x960_10s" and pipe.variant_detected_by == "file name"
    assert pipe.weights.startswith("checkpoint:")
    media = pipe.generate("a drummer plays one two", steps=1)
    assert (media.video_frames, media.audio_samples) == (241, 160_768)
    reference = build_fusion_model("tiny", device="cpu", dtype=torch.float32, seed=11)
    pipe2 = OviPipeline.from_checkpoint_dir(tmp_path, preset="tiny", area=AREA, policy="keep_resident")
    pipe2.load()
    loaded = pipe2.placement.slots["fusion"].module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    assert paths["fusion"].is_file()


def test_checkpoint_directory_errors_name_what_is_missing(tmp_path: Path) -> None:
    paths = _write_checkpoints(tmp_path, "upstream")
    paths["vocoder"].unlink()
    with pytest.raises(CheckpointLayoutError, match=r"missing vocoder \(one of best_netG.pt\)"):
        OviPipeline.from_checkpoint_dir(tmp_path, preset="tiny")
    with pytest.raises(CheckpointLayoutError, match="does not exist"):
        OviPipeline.from_checkpoint_dir(tmp_path / "nowhere")


def test_pipeline_benchmark_script_runs_on_the_cpu(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "benchmarks/bench_pipeline.py", "--preset", "tiny", "--device", "cpu",
                    "--area", str(AREA), "--variant", "960x960_10s", "--steps", "1", "--out", str(out)],
                   check=True, cwd=Path(__file__).parents[2], capture_output=True)
    result = json.loads(out.read_text())
    assert [s["stage"] for s in result["stages"]] == [
        "load", "encode_text", "denoise", "release", "decode_video", "decode_audio"]
    assert (result["video_frames"], result["audio_samples"]) == (241, 160_768)


def test_initial_noise_is_upstreams_rule(monkeypatch) -> None:
    """Each tensor from its own torch.Generator(device).manual_seed(seed), drawn in the compute dtype."""
    import ovi_engine.pipeline as pipeline_mod

    seen = {}

    def capture(model, *, video_noise, audio_noise, **kw):
        seen.update(video=video_noise, audio=audio_noise)
        return video_noise, audio_noise

    monkeypatch.setattr(pipeline_mod, "sample", capture)
    for dtype in (torch.float32, torch.bfloat16):
        pipe = tiny("720x720_5s", dtype=dtype)
        pipe.load()
        pipe.denoise(pipe.encode_text(PROMPT), steps=1, seed=123)
        video_shape, audio_shape = tuple(seen["video"].shape[1:]), tuple(seen["audio"].shape[1:])
        assert (video_shape, audio_shape) == ((48, 31, 2, 2), (157, 20))
        video = torch.randn(video_shape, generator=torch.Generator("cpu").manual_seed(123), device="cpu",
                            dtype=dtype)
        audio = torch.randn(audio_shape, generator=torch.Generator("cpu").manual_seed(123), device="cpu",
                            dtype=dtype)
        assert seen["video"].dtype == seen["audio"].dtype == dtype
        torch.testing.assert_close(seen["video"][0], video, rtol=0, atol=0)
        torch.testing.assert_close(seen["audio"][0], audio, rtol=0, atol=0)


def test_the_engine_turns_on_expandable_segments_unless_the_user_chose(monkeypatch) -> None:
    """A CPU run cannot show fragmentation, so this checks the decision and the call the engine makes on an
    NVIDIA GPU (the 22 GiB frontier run that needed it is in benchmarks/results)."""
    from ovi_engine import placement

    calls: list[str] = []
    monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", calls.append, raising=False)
    monkeypatch.setattr(torch.version, "hip", None)
    for var in placement.ALLOC_CONF_VARS:
        monkeypatch.delenv(var, raising=False)
    cuda = torch.device("cuda", 0)

    assert placement.configure_allocator(torch.device("cpu")) == "host" and calls == []
    assert placement.configure_allocator(cuda) == "expandable_segments (set by the engine)"
    assert calls == ["expandable_segments:True"]

    for user in ("expandable_segments:False", "max_split_size_mb:512", "backend:cudaMallocAsync"):
        # any setting of the user's: the engine's call would reset the options it does not name
        monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", user)
        assert placement.configure_allocator(cuda) == f"PYTORCH_CUDA_ALLOC_CONF={user} (the user's)"
    assert len(calls) == 1
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    monkeypatch.setattr(torch.version, "hip", "7.0")
    assert placement.configure_allocator(cuda).startswith("default (ROCm") and len(calls) == 1
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.delattr(torch._C, "_accelerator_setAllocatorSettings", raising=False)  # torch before 2.9
    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", calls.append)
    assert placement.configure_allocator(cuda).startswith("expandable_segments") and len(calls) == 2
    assert tiny("720x720_5s").describe()["allocator"] == "host"
