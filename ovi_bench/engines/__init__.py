"""Engine registry: a short name, `checkout:PATH` (an upstream Ovi checkout or fork) or `MODULE:FACTORY`,
where FACTORY() returns an Engine."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable

from ovi_bench.engines.base import Engine, EngineConfig

ENGINES = {
    "reference": "ovi_bench.engines.reference:make_engine",
    "fake": "ovi_bench.engines.fake:make_engine",  # shapes only, faults on demand: for testing the harness
}


class EngineSpecError(ValueError):
    """The --engine value names no engine that can be built."""


def engine_factory(spec: str) -> Callable[[], Engine]:
    """Resolve `reference`, `checkout:PATH` or `package.module:factory` to the factory, importing the module.

    Like `python -m`, a module in the current directory can be named (e.g. docs.example_engine). A checkout's
    PATH is made absolute here, so the factory does not depend on the worker's working directory."""
    if spec.startswith("checkout:"):
        from ovi_bench.engines import checkout

        try:
            root = checkout.checkout_root(spec.removeprefix("checkout:"))
        except checkout.CheckoutError as exc:
            raise EngineSpecError(f"engine {spec!r}: {exc}") from None
        return functools.partial(checkout.make_engine, root)
    target = ENGINES.get(spec, spec)
    if spec not in ENGINES and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise EngineSpecError(f"unknown engine {spec!r}: use one of {sorted(ENGINES)}, checkout:PATH or "
                              "MODULE:FACTORY")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineSpecError(f"engine {spec!r}: cannot import {module_name!r} ({exc})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EngineSpecError(f"engine {spec!r}: {module_name!r} has no callable {attr!r}")
    return factory


__all__ = ["ENGINES", "Engine", "EngineConfig", "EngineSpecError", "engine_factory"]
