"""Trackers on the CPU: per-stage peaks really reset at boundaries, nesting, failures, steps, metrics."""

from __future__ import annotations

import pytest
import torch

from ovi_bench.hardware import PROFILES, detect_profile, get_profile
from ovi_bench.metrics import stage_metrics
from ovi_bench.records import StageRecord
from ovi_bench.trackers import MemoryConfig, MemoryTracker, StageMeter, TimingConfig, TimingTracker
from ovi_bench.worker import classify_failure
from ovi_engine.checkpoints import CheckpointLayoutError
from ovi_engine.weights import CheckpointError

MiB = 2**20


@pytest.fixture
def meter():
    memory = MemoryTracker(MemoryConfig(device="cpu"))
    meter = StageMeter(memory, TimingTracker(TimingConfig(device="cpu")))
    yield meter
    memory.close()


def touch(n_bytes: int) -> torch.Tensor:
    return torch.ones(n_bytes, dtype=torch.uint8)  # ones: the pages are really written, so they are resident


def test_host_peak_is_per_stage(meter):
    with meter.stage("baseline"):
        pass
    with meter.stage("big"):
        block = touch(256 * MiB)
        del block
    with meter.stage("after"):
        pass
    base, big, after = (r.host_rss_peak for r in meter.records)
    assert big - base >= 200 * MiB  # the 256 MiB block shows up in its own stage ...
    assert big - after >= 200 * MiB  # ... and the peak was reset when the next stage began
    assert all(r.alloc_peak is None for r in meter.records)  # no allocator statistics on a CPU


def test_engine_events_nest_and_alias(meter):
    with meter.stage("decode"):
        meter.listener("decode_video", "start", {})
        block = touch(128 * MiB)
        del block
        meter.listener("decode_video", "end", {"frames": 121})
        meter.listener("decode_audio", "start", {})
        meter.listener("decode_audio", "end", {})
    with meter.stage("denoise"):
        meter.listener("denoise", "start", {"steps": 2})
        meter.listener("denoise", "end", {"reloaded": "fusion"})
    names = [r.name for r in meter.records]
    assert names == ["decode_video", "decode_audio", "decode", "denoise"]
    video, audio, decode, denoise = meter.records
    assert decode.host_rss_peak >= video.host_rss_peak  # the outer stage saw the inner peak
    assert video.host_rss_peak - audio.host_rss_peak >= 100 * MiB
    assert video.extra["engine"] == {"frames": 121}
    assert denoise.extra["engine"] == {"reloaded": "fusion"}


def test_failing_stage_is_recorded_and_named(meter):
    with pytest.raises(torch.OutOfMemoryError), meter.stage("decode"):
        meter.listener("decode_video", "start", {})
        raise torch.OutOfMemoryError("injected")
    assert meter.failed_stage == "decode_video"
    assert [(r.name, r.extra.get("failed")) for r in meter.records] == [("decode_video", True),
                                                                        ("decode", True)]


def test_step_timer_counts_every_step_within_the_stage(meter):
    seen = []
    with meter.stage("denoise"):
        timer = meter.timing.step_timer(notify=lambda step, total: seen.append((step, total)))
        for step in range(4):
            torch.ones(1000).sum()
            timer.on_step(step, 4)
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert len(timer.durations) == 4 and all(d >= 0 for d in timer.durations)
    assert sum(timer.durations) <= meter.records[0].wall_s


def test_stage_metrics_aggregate_repeats_and_total():
    stages = [
        StageRecord("load", 1.0, alloc_peak=10, alloc_end=8, host_rss_peak=100),
        StageRecord("denoise", 2.0, alloc_peak=30, alloc_end=9, host_rss_peak=120),
        StageRecord("denoise", 4.0, alloc_peak=25, alloc_end=7, host_rss_peak=90),
        StageRecord("release", 0.5, alloc_peak=9, alloc_end=2, host_rss_peak=95),
    ]
    metrics = stage_metrics(stages)
    assert metrics["peak.denoise.alloc_bytes"] == 30
    assert metrics["end.denoise.alloc_bytes"] == 7  # the last run's
    assert metrics["time.denoise.wall_s"].values == [2.0, 4.0]
    assert metrics["peak.total.alloc_bytes"] == 30 and metrics["peak.total.host_rss_bytes"] == 120
    assert metrics["end.release.alloc_bytes"] == 2
    assert "peak.total.reserved_bytes" not in metrics  # never measured, never invented


def test_failures_are_classified():
    engine = ("oom", "harness_or_engine")
    assert classify_failure(torch.OutOfMemoryError("x"), "denoise") == engine
    assert classify_failure(MemoryError(), "load") == engine
    host = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")
    assert classify_failure(host, "decode") == engine
    assert classify_failure(ValueError("bad"), "denoise") == ("error", "harness_or_engine")


class CheckpointLike(ValueError):  # as the reference engine's CheckpointError, TokenizerError, ...
    pass


@pytest.mark.parametrize(("exc", "stage", "kind"), [
    # a missing file or a rejected value before anything is computed: the user's input
    (FileNotFoundError("ckpts/x.pth"), "load", "input"),
    (CheckpointLike("x.safetensors: 3 missing: ..."), "load", "input"),
    (ValueError("params.reference is stored, but none is stored"), "setup", "input"),
    # the same types once computing started, and lookups anywhere: a bug of the engine or the harness
    (ValueError("bad"), "denoise", "harness_or_engine"),
    (FileNotFoundError("x"), "decode", "harness_or_engine"),
    (CheckpointLike("x"), "encode_text", "harness_or_engine"),
    # ... unless the exception says it is the user's input: the reference engine's file errors, which its
    # sequential policy raises where it builds the fusion model and the VAEs (denoise, decode)
    (CheckpointError("Wan2.2_VAE.pth: 1 unexpected: x"), "decode_video", "input"),
    (CheckpointLayoutError("ckpts: no fusion file"), "denoise", "input"),
    (ValueError("shapes differ"), None, "harness_or_engine"),  # after the last stage
    (KeyError("blocks.3"), "load", "harness_or_engine"),
    (IndexError("list index out of range"), "setup", "harness_or_engine"),
    (RuntimeError("x"), "load", "harness_or_engine"),
])
def test_only_a_bad_file_or_value_before_computing_is_an_input_error(exc, stage, kind):
    assert classify_failure(exc, stage) == ("error", kind)


def test_hardware_profiles():
    gfx = get_profile("gfx1151-128gb")
    assert gfx.unified_memory
    assert (gfx.limit("total_peak"), gfx.limit("after_release"), gfx.limit("decode")) == (100e9, 5e9, 30e9)
    assert all(p.usable_bytes <= p.total_bytes for p in PROFILES.values())
    assert detect_profile("cpu").name == "cpu-tiny"
    assert get_profile("h100-80gb").limit("decode") == 30e9  # the seed's decode target applies everywhere
    with pytest.raises(KeyError, match="no limit 'encode'"):
        get_profile("h100-80gb").limit("encode")
    with pytest.raises(KeyError, match="unknown hardware profile"):
        get_profile("tpu-v9")
