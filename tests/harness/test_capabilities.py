"""What an engine can run, asked without paying for what is not asked: a worker reads only its case's
attention backend, and a run's parent probes only the backends its cases use (probing all of them costs
seconds on a GPU: flex compiles). Every registered backend is swapped for one that records its probe calls."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import ovi_engine.attention
from ovi_bench.engines.base import ATTENTION_BACKENDS
from ovi_bench.engines.reference import make_engine
from ovi_bench.run import _capabilities_dict
from ovi_engine.attention import Backend, available_backends

CPU = torch.device("cpu")


@pytest.fixture
def probed(monkeypatch) -> list[str]:
    calls: list[str] = []

    def recording(backend: Backend) -> Backend:
        def fn(q, k, v, k_lens):  # type: ignore[no-untyped-def]
            calls.append(backend.name)
            return backend.fn(q, k, v, k_lens)
        return replace(backend, fn=fn)

    monkeypatch.setattr(ovi_engine.attention, "BACKENDS",
                        {name: recording(b) for name, b in ovi_engine.attention.BACKENDS.items()})
    ovi_engine.attention._probe.cache_clear()
    ovi_engine.attention._auto.cache_clear()
    yield calls
    ovi_engine.attention._probe.cache_clear()
    ovi_engine.attention._auto.cache_clear()


def test_one_backends_status_probes_only_it_and_the_adapter_reads_lazily(probed):
    assert ovi_engine.attention.backend_status("sdpa_math", CPU).available
    assert set(probed) == {"sdpa_math"}
    capabilities = make_engine().capabilities("cpu", "auto")
    assert capabilities.why_not("attention", "auto") is None  # auto on the CPU: its one candidate, sdpa
    assert set(probed) == {"sdpa_math", "sdpa"}
    table = capabilities.to_dict()["attention"]  # a report's full table probes the rest
    assert set(table) == set(ATTENTION_BACKENDS) and "flex" in probed
    flex = available_backends(CPU)["flex"]
    assert table["flex"] == (None if flex.available else flex.reason)


def test_a_runs_parent_probes_only_the_backends_its_cases_use(probed):
    table = _capabilities_dict("reference", "cpu", "auto", {"sdpa_math", "auto"})["attention"]
    assert table == {"sdpa_math": None, "auto": None}
    assert set(probed) == {"sdpa_math", "sdpa"}


def test_a_probe_that_raises_keyerror_is_an_error_not_an_undeclared_backend(probed, monkeypatch):
    """`in` never probes, so a KeyError inside a backend's own check surfaces instead of reading as 'the
    engine does not declare it' (which would make the case a skip)."""
    def broken_check(device, dtype):  # type: ignore[no-untyped-def]
        return {}["sm_90"]

    backends = ovi_engine.attention.BACKENDS
    backends["xformers"] = replace(backends["xformers"], check=broken_check)
    capabilities = make_engine().capabilities("cpu", "auto")
    assert "xformers" in capabilities.attention and probed == []
    with pytest.raises(KeyError, match="sm_90"):
        capabilities.why_not("attention", "xformers")
