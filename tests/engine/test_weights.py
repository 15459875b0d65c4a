"""The shared checkpoint path: strict layout checks, file errors, synthetic determinism, fp8 upcast."""

from pathlib import Path

import pytest
import torch
from torch import nn

from ovi_engine import weights as W


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)
        self.norm = nn.LayerNorm(4)
        self.register_buffer("table", torch.zeros(3), persistent=False)

    def reset_computed_buffers(self) -> None:
        self.table.copy_(torch.tensor([1.0, 2.0, 3.0]))


def toy(seed: int = 0, dtype: torch.dtype = torch.float32) -> Toy:
    return W.synthesize(W.build_on_meta(Toy), seed=seed, device="cpu", dtype=dtype)


def test_synthetic_is_deterministic_per_seed_and_order_free() -> None:
    a, b, c = toy(3), toy(3), toy(4)
    assert torch.equal(a.proj.weight, b.proj.weight)
    assert not torch.equal(a.proj.weight, c.proj.weight)
    # defaults: biases zero, 1-D weights one, matrices scaled by 1/sqrt(fan_in)
    assert torch.count_nonzero(a.proj.bias) == 0 and torch.all(a.norm.weight == 1)
    assert abs(float(a.proj.weight.std()) - 6**-0.5) < 0.3
    assert torch.equal(a.table, torch.tensor([1.0, 2.0, 3.0]))  # computed buffer rebuilt
    assert not a.proj.weight.requires_grad


def test_rules_override_defaults() -> None:
    m = W.synthesize(W.build_on_meta(Toy), seed=0, device="cpu", dtype=torch.float32,
                     rules=[(r"norm\.weight$", lambda shape, gen: torch.full(shape, 0.5))])
    assert torch.all(m.norm.weight == 0.5)


def test_large_tensors_are_drawn_alone_and_the_values_do_not_change() -> None:
    """A build's peak must not depend on the threads' timing: a tensor at the size limit is drawn while no
    other draw is in flight (watched through a rule that counts the draws running at once)."""
    import threading
    import time

    running: list[str] = []
    overlapped: dict[str, list[str]] = {}
    lock = threading.Lock()

    def watched(shape, gen):
        name = f"{tuple(shape)}"
        with lock:
            running.append(name)
            overlapped[name] = list(running)
        time.sleep(0.02)
        with lock:
            running.remove(name)
        return torch.randn(shape, generator=gen)

    class Wide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.small = nn.ModuleList(nn.Linear(4, 4, bias=False) for _ in range(6))
            self.big = nn.Linear(64, 64, bias=False)  # 4096 elements

    def build(limit: int) -> nn.Module:
        return W.synthesize(W.build_on_meta(Wide), seed=1, device="cpu", dtype=torch.float32, threads=4,
                            rules=[(r"weight$", watched)], draw_alone_elements=limit)

    alone = build(4096)
    assert overlapped["(64, 64)"] == ["(64, 64)"]
    together = build(10**9)  # nothing is large enough: all seven in the pool
    assert max(len(v) for v in overlapped.values()) > 1
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), together.state_dict().values()))


def test_round_trip_with_metadata(tmp_path: Path) -> None:
    src = toy(7)
    path = W.save_checkpoint(src, tmp_path / "toy.safetensors", {"preset": "tiny", "seed": 7})
    assert W.read_metadata(path) == {"preset": "tiny", "seed": "7"}
    dst = W.load_into(W.build_on_meta(Toy), W.read_state(path), device="cpu", dtype=torch.float32,
                      source=str(path))
    assert torch.equal(dst.proj.weight, src.proj.weight)
    assert torch.equal(dst.table, src.table)


def test_pth_is_read_without_unpickling_code(tmp_path: Path) -> None:
    torch.save(toy().state_dict(), tmp_path / "toy.pth")
    assert set(W.read_state(tmp_path / "toy.pth")) == set(Toy().state_dict())

    class Evil:
        def __reduce__(self):  # would run code under a plain torch.load
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(W.CheckpointError, match="evil.pth") as refused:
        W.read_state(tmp_path / "evil.pth")
    # Issue 12.7: say the file holds code and is refused, never torch's advice to retry with
    # weights_only=False.
    message = str(refused.value)
    assert "holds Python objects or code" in message and "is refused" in message
    assert "weights_only" not in message and "\n" not in message


def test_layout_errors_name_every_tensor() -> None:
    state = dict(toy().state_dict())
    state.pop("proj.bias")
    state["extra.weight"] = torch.zeros(2)
    state["norm.weight"] = torch.zeros(5)
    with pytest.raises(W.CheckpointError) as err:
        W.load_into(W.build_on_meta(Toy), state, device="cpu", dtype=torch.float32, source="toy")
    msg = str(err.value)
    assert "missing: proj.bias" in msg and "unexpected: extra.weight" in msg
    assert "norm.weight [5] (expected [4])" in msg and "\n" not in msg


def test_other_model_and_corrupt_files(tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    W.save_checkpoint({"encoder.x": torch.zeros(2)}, other, {})
    with pytest.raises(W.CheckpointError, match="another model"):
        W.load_into(W.build_on_meta(Toy), W.read_state(other), device="cpu", dtype=torch.float32,
                    source=str(other))
    good = W.save_checkpoint(toy(), tmp_path / "good.safetensors", {})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(W.CheckpointError, match="truncated.safetensors"):
        W.read_state(truncated)
    with pytest.raises(W.CheckpointError, match="no such checkpoint"):
        W.read_state(tmp_path / "absent.safetensors")


def test_fp8_is_upcast_and_unrunnable_dtypes_refused() -> None:
    state = {k: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v
             for k, v in toy().state_dict().items()}
    m = W.load_into(W.build_on_meta(Toy), state, device="cpu", dtype=torch.bfloat16, source="fp8")
    assert m.proj.weight.dtype == torch.bfloat16
    assert torch.isfinite(m.proj(torch.randn(2, 6, dtype=torch.bfloat16))).all()
    state["proj.weight"] = state["proj.weight"].to(torch.float64)
    with pytest.raises(W.CheckpointError, match="cannot run"):
        W.load_into(W.build_on_meta(Toy), state, device="cpu", dtype=torch.bfloat16, source="f64")
