"""The checkout engine end to end at the tiny preset on the CPU: upstream Ovi 1.1 and 1.0 run from their own
code, judged against the harness's own derivation (ovi_bench.variant_facts); a planted bug in a copy of a
checkout is caught; each failure of a checkout is one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ovi_bench.baselines import judge, load_baseline
from ovi_bench.engines import EngineSpecError, engine_factory
from ovi_bench.engines.base import EngineConfig
from ovi_bench.engines.checkout import CheckoutEngine, CheckoutError
from ovi_bench.job import RunOptions
from ovi_bench.records import CaseResult
from ovi_bench.run import PROJECT_BASELINES
from ovi_bench.suites import load_suites
from ovi_bench.variant_facts import variant_facts
from tests.harness.in_process import run_in_process

UPSTREAM = Path("/work/shared/upstream")
AREA = 1024  # 32x32 frames: latent lengths do not depend on it
PROMPT_960 = "A cat plays the piano. <AUDCAP>Piano music.<ENDAUDCAP>"  # the 720 model's form
PROMPT_720 = "A cat plays the piano.\nAudio: Piano music."  # the 960 models' form

pytestmark = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="needs shared/upstream")


def loaded(path: Path, variant: str) -> CheckoutEngine:
    engine = CheckoutEngine(path)
    engine.load(EngineConfig(variant=variant, preset="tiny", device="cpu", area=AREA, seed=3))
    return engine


def latent_shapes(engine: CheckoutEngine, prompt: str, **denoise: object) -> tuple[list[int], list[int]]:
    latents = engine.denoise(engine.encode_text(prompt), steps=1, seed=0, **denoise)  # type: ignore[arg-type]
    return list(latents.video.shape), list(latents.audio.shape)


def expected_shapes(variant: str, height: int, width: int) -> tuple[list[int], list[int]]:
    facts = variant_facts(variant)
    return facts.video_latent_shape(height, width, AREA), facts.audio_latent_shape()


@pytest.fixture(scope="module")
def ovi11_5s() -> CheckoutEngine:
    return loaded(UPSTREAM / "ovi-1.1", "720x720_5s")


def test_11_10s_variant_its_prompt_format_and_i2v(tmp_path: Path) -> None:
    from ovi_bench.scenarios.spec import write_image

    engine = loaded(UPSTREAM / "ovi-1.1", "960x960_10s")
    text = engine.encode_text(PROMPT_960)
    assert text.prompt == "A cat plays the piano. Audio: Piano music."
    assert (latent_shapes(engine, PROMPT_960, height=960, width=960)
            == expected_shapes("960x960_10s", 960, 960))
    image = write_image(tmp_path / "frame.ppm", 720, 720)
    assert latent_shapes(engine, PROMPT_960, image=image) == expected_shapes("960x960_10s", 720, 720)
    assert engine.describe()["fusion_file_requested"] == "model_960x960_10s.safetensors"


def test_10_runs_its_one_model_and_refuses_the_960_variants() -> None:
    engine = CheckoutEngine(UPSTREAM / "ovi-1.0")
    caps = engine.capabilities("cpu", "auto")
    assert caps.why_not("variants", "720x720_5s") is None
    for variant in ("960x960_5s", "960x960_10s"):
        assert "no variant table" in caps.why_not("variants", variant)
    # 1.0 snaps a request to max(its area, 720²): the own-area check is not its rule
    assert "max(its area, 720²)" in caps.why_not("features", "variant_area")
    with pytest.raises(CheckoutError, match="960x960_10s: the checkout has no variant table"):
        engine.load(EngineConfig(variant="960x960_10s", area=AREA))
    engine = loaded(UPSTREAM / "ovi-1.0", "720x720_5s")
    assert engine.encode_text(PROMPT_720).prompt == PROMPT_720  # 1.0 has no formatter: the prompt as given
    assert (latent_shapes(engine, PROMPT_720, height=704, width=1280)
            == expected_shapes("720x720_5s", 704, 1280))
    assert engine.describe()["variant"]["prompt_format"] == "as given"


def test_capabilities_name_what_the_checkout_cannot_do(ovi11_5s: CheckoutEngine) -> None:
    caps = ovi11_5s.capabilities("cpu", "auto")
    assert caps.why_not("features", "variant_area") is None  # its variant table holds each video_area
    assert "xDiT" in caps.why_not("features", "sequence_parallel")
    assert "torch.cuda.synchronize" in caps.why_not("policies", "cpu_offload")
    assert "cpu_offload" in caps.why_not("policies", "sequential")
    assert (caps.why_not("attention", "auto") is None
            and "cannot be switched" in caps.why_not("attention", "sdpa_math"))
    assert ovi11_5s.attention_kernel("auto", "cpu", "auto").fn is not None


def test_the_checkouts_bf16_attention_is_not_judged_against_the_cpus_float32_baseline() -> None:
    # flash_attention casts the CPU's float32 to bf16 (declared by the adapter): its error and its time are
    # shown as changed beside the reference engine's float32 baseline, not as regressions (CI, 2026-12-03)
    (suite,) = [s for s in load_suites("smoke") if s.name == "smoke.attention_backends"]
    (job,) = [j for j in suite.expand(RunOptions(preset="tiny")) if j.case_params["attention"] == "auto"]
    metrics = run_in_process(job, lambda: CheckoutEngine(UPSTREAM / "ovi-1.1"))[0]
    assert metrics["attention.dtype"] == "float32" and metrics["attention.kernel_dtype"] == "bfloat16"
    assert metrics["attention.kernel_problems"] == []
    assert metrics["attention.video_self.rel_err"] > 1e-3  # bf16's error, beyond the baseline's floor
    stored = load_baseline(PROJECT_BASELINES, "cpu-tiny", suite.name)
    assert stored is not None and stored.cases[job.case_id]["attention.kernel_dtype"] == "float32"
    case = CaseResult(job.case_id, suite.name, job.case_params, "ok", metrics=metrics)
    verdicts = {(v.metric, v.rule): v for v in judge([case], suite.checks_at("tiny"), stored)}
    assert verdicts[("attention.video_self.rel_err", "relative")].status == "changed"
    assert verdicts[("time.attention.video_self_s", "time")].status == "changed"
    assert not [v.message for v in verdicts.values() if v.failed]


def copy_checkout(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def test_a_planted_10s_bug_is_caught(tmp_path: Path) -> None:
    """The seed's bug: the 10 s model given the 5 s audio latent length."""
    checkout = copy_checkout(UPSTREAM / "ovi-1.1", tmp_path)
    engine_file = checkout / "ovi" / "ovi_fusion_engine.py"
    source = engine_file.read_text()
    assert source.count('"audio_latent_length": 314') == 1
    engine_file.write_text(source.replace('"audio_latent_length": 314', '"audio_latent_length": 157'))
    engine = loaded(checkout, "960x960_10s")
    _, audio = latent_shapes(engine, PROMPT_960, height=960, width=960)
    assert audio == [157, 20] != expected_shapes("960x960_10s", 960, 960)[1]
    assert (engine.describe()["variant"]["audio_latent_length"]
            != variant_facts("960x960_10s").audio_latent_length)


def test_a_path_without_ovi_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(EngineSpecError, match=r"no ovi/ package here") as caught:
        engine_factory(f"checkout:{tmp_path}")
    assert "\n" not in str(caught.value)


def test_an_import_error_in_the_checkout_is_one_line(tmp_path: Path) -> None:
    checkout = copy_checkout(UPSTREAM / "ovi-1.1", tmp_path)
    engine_file = checkout / "ovi" / "ovi_fusion_engine.py"
    engine_file.write_text("import ovi_no_such_module\n" + engine_file.read_text())
    factory = engine_factory(f"checkout:{checkout}")
    with pytest.raises(CheckoutError,
                       match=r"cannot import ovi.ovi_fusion_engine \(ModuleNotFoundError") as caught:
        factory().load(EngineConfig(variant="720x720_5s"))
    assert "\n" not in str(caught.value)


def test_a_missing_checkpoint_file_is_one_line(tmp_path: Path) -> None:
    engine = CheckoutEngine(UPSTREAM / "ovi-1.1")
    with pytest.raises(CheckoutError, match=r"OviFusionEngine\(\) failed: .*Wan2.2_VAE.pth") as caught:
        engine.load(EngineConfig(variant="720x720_5s", checkpoint_dir=tmp_path, area=AREA))
    assert "\n" not in str(caught.value)


def test_an_exception_inside_generate_is_not_a_silent_none(ovi11_5s: CheckoutEngine) -> None:
    """upstream's generate() logs the traceback and returns None; the engine raises its last line."""
    with pytest.raises(CheckoutError, match=r"generate\(\) failed .*NotImplementedError: Unsupported solver"):
        ovi11_5s.denoise(ovi11_5s.encode_text(PROMPT_720), steps=1, seed=0, solver="no-such-solver")


# Last: it releases the shared engine's text encoder and fusion model.
def test_11_stages_follow_the_variant_facts(ovi11_5s: CheckoutEngine) -> None:
    text = ovi11_5s.encode_text(PROMPT_720)
    # the checkout's formatter
    assert text.prompt == "A cat plays the piano.\n<AUDCAP>Piano music.<ENDAUDCAP>"
    steps: list[tuple[int, int]] = []
    latents = ovi11_5s.denoise(text, steps=2, seed=0, height=704, width=1280,
                               on_step=lambda i, n: steps.append((i, n)))
    assert steps == [(0, 2), (1, 2)]
    assert (list(latents.video.shape), list(latents.audio.shape)) == expected_shapes("720x720_5s", 704, 1280)
    ovi11_5s.release()
    media = ovi11_5s.decode_latents(latents)
    facts = variant_facts("720x720_5s")
    assert (media.video_frames, media.audio_samples) == (facts.video_frames, facts.audio_samples)
    described = ovi11_5s.describe()
    assert described["fusion_file_requested"] == "model.safetensors"
    assert {k: v for k, v in facts.summary().items() if k != "name"}.items() <= described["variant"].items()
    assert any("flash_attention" in note for note in described["substitutions"])
    assert any(note.startswith("weights: synthetic at the tiny preset")
               for note in described["substitutions"])


def test_flash_attention_counts_as_available_only_when_its_function_exists() -> None:
    # FlashAttention-4 alone installs `flash_attn` (as flash_attn.cute) without flash_attn_varlen_func, so
    # upstream's FLASH_ATTN_2_AVAILABLE is true while its flash_attention cannot run.
    from types import SimpleNamespace

    from ovi_bench.engines.checkout import flash_attn_runs

    fa4_only = SimpleNamespace(FLASH_ATTN_2_AVAILABLE=True, FLASH_ATTN_3_AVAILABLE=False,
                               flash_attn=SimpleNamespace(cute=object()))
    fa2 = SimpleNamespace(FLASH_ATTN_2_AVAILABLE=True, FLASH_ATTN_3_AVAILABLE=False,
                          flash_attn=SimpleNamespace(flash_attn_varlen_func=print))
    fa3 = SimpleNamespace(FLASH_ATTN_2_AVAILABLE=False, FLASH_ATTN_3_AVAILABLE=True,
                          flash_attn_interface=SimpleNamespace(flash_attn_varlen_func=print))
    neither = SimpleNamespace(FLASH_ATTN_2_AVAILABLE=False, FLASH_ATTN_3_AVAILABLE=False)
    assert [flash_attn_runs(m) for m in (fa4_only, fa2, fa3, neither)] == [False, True, True, False]


def test_cpu_offload_decodes_with_the_decoders_on_the_device() -> None:
    """Found on the H200: under cpu_offload generate() ends with both decoders offloaded to the host, so
    decode_latents fed CUDA latents to host weights. It must bring them to the device as generate() does
    before its own decode, and offload them after. Devices are recorded, not real: this runs on a CPU."""
    from types import SimpleNamespace

    import torch

    moves: list[tuple[str, str]] = []

    class Decoder:
        def __init__(self, name: str, samples: int):
            self.name, self.samples, self.device = name, samples, "cpu"
            self.model = self  # the video VAE's weights live in `.model`

        def to(self, device: str) -> Decoder:
            moves.append((self.name, device))
            self.device = device
            return self

        def wrapped_decode(self, z: torch.Tensor) -> torch.Tensor:
            if self.device != "cuda:0":
                raise RuntimeError(f"{self.name} weights on {self.device}, latents on cuda:0")
            return torch.zeros(1, 3, 5, 4, 4) if self.name == "video" else torch.zeros(1, self.samples)

    def offload_to_cpu(module: Decoder) -> None:
        module.to("cpu")

    engine = CheckoutEngine(UPSTREAM / "ovi-1.1")
    engine.config = EngineConfig(variant="720x720_5s", preset="tiny", device="cuda", policy="cpu_offload")
    engine.engine = SimpleNamespace(cpu_offload=True, device="cuda:0", offload_to_cpu=offload_to_cpu,
                                    vae_model_video=Decoder("video", 0), vae_model_audio=Decoder("audio", 80))
    latents = SimpleNamespace(video=torch.zeros(16, 2, 4, 4, dtype=torch.bfloat16),
                              audio=torch.zeros(10, 20, dtype=torch.bfloat16))
    media = engine.decode_latents(latents)  # type: ignore[arg-type]
    assert (media.video_frames, media.audio_samples) == (5, 80)
    assert moves == [("video", "cuda:0"), ("audio", "cuda:0"), ("video", "cpu"), ("audio", "cpu")]


def test_fusion_weights_land_on_the_host_like_the_checkouts_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found on the H200: the stand-in filled the fusion model on the GPU, so upstream's cpu_offload load
    peaked at 23.8 GiB on the device, where its own loader reads the file to the host and never touches the
    GPU. The tensors go to the host; the numbers are still drawn on the run's device (parity, speed)."""
    import torch
    from torch import nn

    from ovi_bench import synthetic
    from ovi_bench.engines.checkout import Builders

    calls: list[dict] = []
    monkeypatch.setattr(synthetic, "fill", lambda module, **kw: calls.append(kw) or module)
    builders = Builders(preset=None, seed=3, device=torch.device("cuda"), dtype=torch.bfloat16,  # type: ignore[arg-type]
                        tokenizer=lambda **kw: None)
    builders.load_fusion(nn.Linear(2, 2, device="meta"), "ckpts/Ovi/model.safetensors", from_meta=True)
    assert [(torch.device(c["device"]), torch.device(c["draw_on"])) for c in calls] == [
        (torch.device("cpu"), torch.device("cuda"))]
    assert builders.requested == ["model.safetensors"]
