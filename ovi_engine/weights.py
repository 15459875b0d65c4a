"""Checkpoint I/O shared by every module of the engine.

Modules are built on the ``meta`` device and then either filled from a checkpoint (strict: every key and
shape must match the module's own ``state_dict``) or from deterministic synthetic weights. Both paths go
through this file so that a user sees the same kind of error whatever they load.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

Draw = Callable[[torch.Size, torch.Generator], torch.Tensor]
Rule = tuple[str, Draw]
M = TypeVar("M", bound=nn.Module)
C = TypeVar("C")

# Dtypes a checkpoint may store; anything else (e.g. int8 from a quantizer) cannot run in this engine.
LOADABLE_DTYPES = {torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2}
_LISTED = 8  # names listed per problem kind before "… and N more"
_DRAW_ON: ContextVar[torch.device | None] = ContextVar("draw_synthetic_on", default=None)
_HOST_STORAGE: ContextVar[Callable[[nn.Module], None] | None] = ContextVar("host_storage", default=None)
# Threads drawing synthetic tensors: torch releases the GIL in its kernels and copies, so draws overlap.
SYNTHETIC_THREADS = min(8, os.cpu_count() or 1)
# Tensors of 2^28 elements or more (1 GiB in float32; umT5's token embedding, 1.05 G elements, is the one) are
# drawn alone, before the threads start. Drawn beside others, their float32 transient met a varying number of
# other draws, and the build's peak varied from run to run (cpu_offload's load on the H200: 7.98-8.61 GiB
# around an 8.40 GB draw).
DRAW_ALONE_ELEMENTS = 2**28


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says which file and which tensors."""

    is_input_error = True  # the user's file, whichever stage reads it (sequential builds modules late)


def _listing(kind: str, names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    more = f" … and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return f"{len(names)} {kind}: {shown}{more}"


def check_layout(
    expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]], *, source: str
) -> None:
    """Raise CheckpointError naming every missing, unexpected and misshaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{k} {list(found[k])} (expected {list(expected[k])})"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    problems = [
        _listing(kind, names)
        for kind, names in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped))
        if names
    ]
    if problems:
        hint = ""
        if missing and len(missing) == len(expected):
            hint = " (no key matches: is this a checkpoint of another model?)"
        raise CheckpointError(f"{source}: " + "; ".join(problems) + hint)


def read_state(
    path: str | Path, *, device: str | torch.device = "cpu", nested_key: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (memory-mapped) or a ``.pth``/``.pt`` file (weights only, never code).

    ``nested_key``: a ``.pth`` may keep its tensors one level down (BigVGAN's ``best_netG.pt`` under
    ``'generator'``); a flat file is accepted too."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device=str(device))
        state = torch.load(path, map_location=device, weights_only=True, mmap=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:  # torch's weights-only unpickler met something other than tensors
        raise CheckpointError(f"{path}: the file holds Python objects or code beside its "
                              "tensors and is refused (only plain weights are loaded; re-save it with "
                              "torch.save(state_dict) or as .safetensors)") from exc
    except Exception as exc:  # truncated or corrupt: one clear line either way
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({first_line})") from exc
    if nested_key is not None and isinstance(state, Mapping) and isinstance(state.get(nested_key), Mapping):
        state = state[nested_key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a flat mapping of tensor names to tensors")
    return dict(state)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file ({} for other formats)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read safetensors header ({exc})") from exc


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    source: str,
) -> nn.Module:
    """Strictly load ``state`` into ``module`` (which may live on ``meta``), cast to ``dtype`` on ``device``.

    Floating tensors are cast to ``dtype`` (so an fp8 file computes in bf16); integer buffers keep theirs.
    A module whose tensors already exist (e.g. in a host arena) is filled in place.
    """
    give_host_storage(module, device)
    expected = module.state_dict()
    check_layout({k: v.shape for k, v in expected.items()}, {k: v.shape for k, v in state.items()},
                 source=source)
    bad = sorted(k for k, v in state.items() if v.dtype not in LOADABLE_DTYPES and v.is_floating_point())
    if bad:
        raise CheckpointError(
            f"{source}: tensors of a dtype this engine cannot run ({state[bad[0]].dtype}): "
            + _listing("tensors", bad).split(": ", 1)[1]
        )
    if _materialized(module):  # copy_ casts each tensor to its destination's dtype and device
        module.load_state_dict(state, strict=True)
    else:
        converted = {
            k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
            for k, v in state.items()
        }
        module.load_state_dict(converted, strict=True, assign=True)
    materialize_computed_buffers(module, device)
    return module.eval().requires_grad_(False)


def load_file(module: M, path: str | Path, *, device: str | torch.device, dtype: torch.dtype) -> M:
    """Read a checkpoint file and load it strictly into ``module`` (errors name the file)."""
    load_into(module, read_state(path), device=device, dtype=dtype, source=str(path))
    return module


def _generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return gen


def _default_init(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    device = gen.device
    if name.endswith("bias"):
        return torch.zeros(shape, device=device)
    if len(shape) <= 1:
        return torch.ones(shape, device=device)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=gen, device=device) / math.sqrt(fan_in)


@torch.no_grad()
def synthesize(
    module: nn.Module,
    *,
    seed: int,
    device: str | torch.device,
    dtype: torch.dtype,
    rules: Sequence[Rule] = (),
    generate_on: str | torch.device | None = None,
    threads: int = SYNTHETIC_THREADS,
    draw_alone_elements: int = DRAW_ALONE_ELEMENTS,
) -> nn.Module:
    """Give a (meta) module deterministic weights: the same seed gives the same tensors on one device type.

    Each tensor draws from its own generator, seeded from ``(seed, name)``, so the result depends neither on
    the order of parameters nor on how many ``threads`` draw them. ``rules`` are ``(regex, fn(shape,
    generator))`` pairs tried first. Each tensor is cast to ``dtype`` as soon as it is drawn, so the peak is
    the final size of the module plus one draw per thread; tensors of ``draw_alone_elements`` or more are
    drawn one at a time first, so that their transient does not depend on the threads' timing.
    ``generate_on`` (default: the ``draw_synthetic_on`` context, else ``device``) lets a GPU draw the numbers
    for a module kept on the host.
    A module whose tensors already exist (e.g. in a host arena) is filled in place.
    """
    device = torch.device(device)
    gen_device = torch.device(generate_on) if generate_on is not None else (_DRAW_ON.get() or device)
    if gen_device.type == "cuda" and gen_device.index is None:  # the worker threads' current device is 0
        gen_device = torch.device("cuda", torch.cuda.current_device())
    compiled = [(re.compile(pattern), fn) for pattern, fn in rules]
    give_host_storage(module, device)
    state = module.state_dict()
    in_place = _materialized(module)
    inference = torch.is_inference_mode_enabled()  # grad modes are per thread: carry the caller's over

    def draw(name: str) -> torch.Tensor:
        tensor = state[name]
        with torch.inference_mode(inference), torch.no_grad():
            gen = _generator(seed, name, gen_device)
            fn = next((f for rx, f in compiled if rx.search(name)), None)
            value = fn(tensor.shape, gen) if fn is not None else _default_init(name, tensor.shape, gen)
            if in_place:  # cast where drawn: a casting GPU-to-host copy_ goes through fresh pageable memory
                return tensor.copy_(value.to(tensor.dtype))
            return value.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)

    alone = [name for name, t in state.items() if t.numel() >= draw_alone_elements]
    values = {name: draw(name) for name in alone}
    rest = [name for name in state if name not in values]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        values.update(zip(rest, pool.map(draw, rest)))
    if not in_place:
        module.load_state_dict(values, strict=True, assign=True)
    materialize_computed_buffers(module, device)
    return module.eval().requires_grad_(False)


def _materialized(module: nn.Module) -> bool:
    return not any(t.is_meta for t in module.state_dict().values())


@contextmanager
def host_storage(give: Callable[[nn.Module], None]) -> Iterator[None]:
    """Within this block, a meta module about to be filled on the CPU first gets its tensors from
    ``give(module)`` (e.g. views into one pinned arena) and is then filled in place, with no second copy."""
    token = _HOST_STORAGE.set(give)
    try:
        yield
    finally:
        _HOST_STORAGE.reset(token)


def give_host_storage(module: nn.Module, device: str | torch.device) -> None:
    give = _HOST_STORAGE.get()
    if give is not None and torch.device(device).type == "cpu" and not _materialized(module):
        give(module)


@contextmanager
def draw_synthetic_on(device: str | torch.device) -> Iterator[None]:
    """Within this block, synthetic weights are drawn on ``device`` whatever device they are kept on."""
    token = _DRAW_ON.set(torch.device(device))
    try:
        yield
    finally:
        _DRAW_ON.reset(token)


def materialize_computed_buffers(module: nn.Module, device: str | torch.device) -> None:
    """Non-persistent buffers (RoPE tables, mel filters…) are not in checkpoints: rebuild them on ``device``.

    A module owning such buffers defines ``reset_computed_buffers()``, called after they are allocated.
    """
    for sub in module.modules():
        for key, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_meta:
                sub._buffers[key] = torch.empty(buf.shape, dtype=buf.dtype, device=device)
        reset = getattr(sub, "reset_computed_buffers", None)
        if callable(reset):
            reset()


def save_checkpoint(
    module_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, Any]
) -> Path:
    """Write a safetensors file with string metadata (e.g. preset, variant, seed)."""
    from safetensors.torch import save_file

    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in metadata.items()})
    return path


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
                   "xavier_normal_", "kaiming_uniform_", "kaiming_normal_")


@contextmanager
def no_init() -> Iterator[None]:
    """torch.nn's default initialisers are pointless on meta tensors (every weight is loaded or synthesized
    later), and their first call there costs ~1.5 s of one-time dispatch set-up in every fresh process."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    for name in _INIT_FUNCTIONS:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def build_on_meta(factory: Callable[[], M]) -> M:
    """Construct a module without allocating (or initialising) its weights."""
    with torch.device("meta"), no_init():
        return factory()


def normal(std: float | Callable[[torch.Size], float]) -> Draw:
    """A synthetic-weight rule: normal(0, std), std a number or a function of the tensor's shape."""
    return lambda shape, gen: torch.randn(shape, generator=gen, device=gen.device) * (
        std(shape) if callable(std) else std
    )


def fan_in_normal(gain: float) -> Draw:
    """normal(0, gain / sqrt(fan_in)): the default init scaled by ``gain``."""
    return normal(lambda shape: gain / math.sqrt(math.prod(shape[1:])))


def resolve_preset(preset: str | C, presets: Mapping[str, C], what: str) -> C:
    """A config given by name (one of ``presets``) or directly; an unknown name lists the known ones."""
    if not isinstance(preset, str):
        return preset
    if preset not in presets:
        raise ValueError(f"unknown {what} preset {preset!r}; known: {', '.join(presets)}")
    return presets[preset]


def build_module(
    factory: Callable[[], M],
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    seed: int | None,
    rules: Sequence[Rule] = (),
) -> M:
    """Every builder's shape: on ``meta`` (or with ``seed=None``) an empty module to load a checkpoint into,
    else deterministic synthetic weights from ``seed`` on ``device``."""
    model = build_on_meta(factory).to(dtype).eval().requires_grad_(False)
    if seed is None or torch.device(device).type == "meta":
        return model
    synthesize(model, seed=seed, device=device, dtype=dtype, rules=rules)
    return model


def module_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())
