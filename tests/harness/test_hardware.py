"""Hardware profiles: every limit says where it comes from, the 24 and 32 GB cards are detected by size,
and a baseline of another profile or device is refused with the reason."""

from __future__ import annotations

import types

import pytest
import torch

from ovi_bench.hardware import (
    GB,
    PROFILES,
    GiB,
    HardwareProfile,
    baseline_mismatch,
    detect_profile,
    get_profile,
)


def test_every_limit_and_the_usable_size_have_a_source():
    for profile in PROFILES.values():
        for name in ("usable", *profile.limits):
            assert profile.source(name).strip(), (profile.name, name)
    with pytest.raises(KeyError, match="no limit 'encode'"):
        get_profile("gfx1151-128gb").source("encode")


def test_a_profile_without_sources_is_refused():
    with pytest.raises(ValueError, match="no source for usable, decode"):
        HardwareProfile("x", "x", "cuda", 8 * GiB, 7 * GiB, limits={"decode": GiB})


def test_existing_readers_still_work():
    gfx = get_profile("gfx1151-128gb")
    assert gfx.limits["total_peak"] == gfx.limit("total_peak") == 100 * GB and gfx.limit("usable") == 110 * GB
    assert "seed" in gfx.source("total_peak") and gfx.to_dict()["sources"]["decode"] == gfx.source("decode")


@pytest.mark.parametrize(("name", "total", "usable"), [("consumer-24gb", 24 * GiB, 22 * GiB),
                                                       ("consumer-32gb", 32 * GiB, 30 * GiB)])
def test_consumer_cards(name, total, usable):
    profile = get_profile(name)
    assert (profile.total_bytes, profile.usable_bytes, profile.unified_memory) == (total, usable, False)
    assert profile.limit("decode") <= profile.usable_bytes and profile.limit("total_peak") == usable
    assert "estimate" in profile.source("usable")


def fake_device(monkeypatch, name: str, total: int, *, integrated: bool = False) -> None:
    props = types.SimpleNamespace(name=name, total_memory=total, major=8, minor=9, is_integrated=integrated)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
    monkeypatch.setattr(torch.version, "hip", None)


@pytest.mark.parametrize(("card", "total", "expected"), [
    ("NVIDIA GeForce RTX 4090", 25_386_352_640, "consumer-24gb"),  # 23.6 GiB as the runtime reports it
    ("NVIDIA GeForce RTX 5090", 34_190_917_632, "consumer-32gb"),
    ("NVIDIA L4", 23 * GiB - 2 * GiB, "cuda-nvidia-l4"),
])
def test_cards_are_detected_by_size(monkeypatch, card, total, expected):
    fake_device(monkeypatch, card, total)
    profile = detect_profile("cuda:0")
    assert profile.name == expected and profile.source("usable")


ENV = {"device_name": "NVIDIA H100 80GB HBM3", "device_arch": "sm_90", "unified_memory": False}


def test_baseline_of_another_profile_is_refused():
    reason = baseline_mismatch("h100-80gb", ENV, "gfx1151-128gb", {**ENV, "device_arch": "gfx1151"})
    assert reason is not None and "'h100-80gb'" in reason and "'gfx1151-128gb'" in reason


def test_baseline_of_another_device_under_the_same_profile_is_refused():
    strix = {"device_name": "AMD Radeon Graphics", "device_arch": "gfx1151", "unified_memory": True}
    reason = baseline_mismatch("gfx1151-128gb", ENV, "gfx1151-128gb", strix)
    assert reason is not None and "device_name" in reason


def test_matching_or_older_baselines_are_accepted():
    assert baseline_mismatch("h100-80gb", ENV, "h100-80gb", dict(ENV)) is None
    assert baseline_mismatch("h100-80gb", None, "h100-80gb", ENV) is None  # no environment stored
    assert baseline_mismatch("h100-80gb", {"device_name": ENV["device_name"]}, "h100-80gb", ENV) is None
