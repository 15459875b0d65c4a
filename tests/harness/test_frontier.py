"""The OOM frontier (ovi_bench.frontier) on the CPU: the bisection over the memory model at the tiny preset
under small fake budgets, the confirmation runs' frames and verdicts (against a stand-in for Run), and the
command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ovi_bench.cli import main
from ovi_bench.estimate import EstimateRequest, estimate
from ovi_bench.frontier import MAX_SIDE, confirm, find_frontier, largest_area
from ovi_bench.hardware import HardwareProfile
from ovi_bench.suites import load_suite
from ovi_bench.variant_facts import SNAP


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _fake(usable: int) -> HardwareProfile:
    return HardwareProfile("fake", "a test budget", "cpu", usable, usable, sources={"usable": "this test"})


def test_bisection_finds_the_largest_fitting_frame_at_tiny() -> None:
    base = EstimateRequest("720x720_5s", "all_gpu", "tiny", "cpu")
    at_512 = estimate(EstimateRequest("720x720_5s", "all_gpu", "tiny", "cpu", area=512 * 512)).peak.bytes
    inside, outside = largest_area(base, "1:1", at_512)
    assert inside is not None and inside.frame == (512, 512) and inside.peak.bytes <= at_512
    assert outside.frame == (544, 544) and outside.peak.bytes > at_512  # the next 32 px snap
    points = find_frontier(_fake(at_512), "all_gpu", preset="tiny", variants=("720x720_5s",),
                           aspects=("16:9",))
    h, w = points[0].frame
    assert w > h and points[0].margin >= 0 and points[0].outside_frame is not None


def test_nothing_fits_when_a_stage_independent_of_the_clip_does_not() -> None:
    smallest = estimate(EstimateRequest("720x720_5s", "all_gpu", "tiny", "cpu", area=32 * 32))
    point = find_frontier(_fake(smallest.stage("load").bytes - 1), "all_gpu", preset="tiny",
                          variants=("720x720_5s",), aspects=("1:1",))[0]
    assert point.area is None and point.peak_stage == "load" and point.margin < 0
    huge = find_frontier(_fake(10**15), "all_gpu", preset="tiny", variants=("720x720_5s",),
                         aspects=("1:1",))[0]
    assert huge.frame == (MAX_SIDE, MAX_SIDE) and huge.outside_frame is None


def test_frontier_cli_writes_its_table_json_and_chart(tmp_path) -> None:
    out = tmp_path / "front"
    result = invoke("frontier", "--hardware", "consumer-24gb", "--policy", "cpu_offload", "--variant",
                    "960x960_10s", "--aspect", "1:1", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["schema_version"] == 2 and data["points"][0]["status"].startswith("estimated")
    assert data["points"][0]["frame"][0] >= 960  # 960x960_10s fits 24 GB with cpu_offload, by the estimate
    assert ("schema_version 2" in out.with_suffix(".md").read_text()
            and "<svg" in out.with_suffix(".svg").read_text())


def _tiny_peak(side: int) -> int:
    return estimate(EstimateRequest("720x720_5s", "all_gpu", "tiny", "cpu", area=side * side)).peak.bytes


def test_confirm_brackets_the_boundary_by_the_models_tolerance(tmp_path) -> None:
    budget = _tiny_peak(512)
    points = find_frontier(_fake(budget), "all_gpu", preset="tiny", variants=("720x720_5s",),
                           aspects=("1:1",))
    assert points[0].frame == (512, 512)
    inside, outside = _square_frames(budget, "inside", 1)[0], _square_frames(budget, "outside", 1)[0]
    assert inside[0] < 512 < outside[0]  # a bracket, not the boundary's two neighbours
    seen: dict[str, tuple[int, int]] = {}

    def run_case(path, info):  # a stand-in for Run: the suite must load, the case's status is the answer
        suite = load_suite(str(path))
        assert suite.budget == "profile" and suite.params["area"] == info["frame"][0] * info["frame"][1]
        assert (suite.params["steps"], suite.params["warmup_steps"]) == (1, 0)  # run for its status only
        seen[path.stem] = info["frame"]
        return "ok" if info["frame"] == inside else "oom"

    confirmed = confirm(points, "all_gpu", run_case, tmp_path, budget=budget, preset="tiny", device="cpu")
    assert seen == {"frontier_0_inside": inside, "frontier_0_outside": outside}
    assert confirmed[0].status.startswith("confirmed by runs within 5%")
    assert [(r.side, r.frame, r.status) for r in confirmed[0].runs] == [("inside", inside, "ok"),
                                                                       ("outside", outside, "oom")]
    estimated = [r.estimated_bytes for r in confirmed[0].runs]
    assert estimated[0] <= budget * 0.95 and estimated[1] > budget * 1.05


def _square_frames(budget: int, side: str, count: int) -> list[tuple[int, int]]:
    """By scanning every 32 px square: the first `count` distinct frames stepping away from the boundary by
    5% of the budget at a time, the largest estimated under budget x 0.95^k (inside) or the first estimated
    over budget x 1.05^k (outside)."""
    sides = range(SNAP, MAX_SIDE + 1, SNAP)
    frames: list[tuple[int, int]] = []
    k = 1
    while len(frames) < count:
        s = (max(x for x in sides if _tiny_peak(x) <= budget * 0.95**k) if side == "inside"
             else min(x for x in sides if _tiny_peak(x) > budget * 1.05**k))
        if (s, s) not in frames:
            frames.append((s, s))
        k += 1
    return frames


def _confirm_with(tmp_path, budget: int, status_of) -> tuple[list[tuple[str, tuple[int, int], str]], str]:
    points = find_frontier(_fake(budget), "all_gpu", preset="tiny", variants=("720x720_5s",),
                           aspects=("1:1",))
    point = confirm(points, "all_gpu", lambda path, info: status_of(info["frame"]), tmp_path, budget=budget,
                    preset="tiny", device="cpu")[0]
    return [(r.side, r.frame, r.status) for r in point.runs], point.status


def test_a_conservative_estimate_is_walked_outward_until_a_run_runs_out_of_memory(tmp_path) -> None:
    budget = _tiny_peak(512)
    inside = _square_frames(budget, "inside", 1)[0]
    out1, out2 = _square_frames(budget, "outside", 2)
    runs, status = _confirm_with(tmp_path, budget, lambda frame: "ok" if frame[0] <= out1[0] else "oom")
    assert runs == [("inside", inside, "ok"), ("outside", out1, "ok"), ("outside", out2, "oom")]
    assert status.startswith(f"conservative by runs: fits up to {out1[0]}x{out1[1]}, "
                             f"{out2[0]}x{out2[1]} ran out of memory")


def test_runs_that_always_fit_stop_after_the_extra_runs(tmp_path) -> None:
    runs, status = _confirm_with(tmp_path, _tiny_peak(512), lambda frame: "ok")
    assert [side for side, _, _ in runs] == ["inside", "outside", "outside", "outside"]  # 1 + EXTRA_RUNS
    assert status.startswith("conservative by runs") and "no OOM within 3 runs outside" in status


def test_an_optimistic_estimate_is_contradicted_and_walked_inward(tmp_path) -> None:
    budget = _tiny_peak(512)
    in1, in2 = _square_frames(budget, "inside", 2)
    runs, status = _confirm_with(tmp_path, budget, lambda frame: "ok" if frame[0] <= in2[0] else "oom")
    assert runs[:2] == [("inside", in1, "oom"), ("inside", in2, "ok")] and runs[2][0] == "outside"
    assert status.startswith("contradicted by runs, the estimate is optimistic")


def test_an_error_decides_nothing(tmp_path) -> None:
    runs, status = _confirm_with(tmp_path, _tiny_peak(512), lambda frame: "error")
    assert [(side, st) for side, _, st in runs] == [("inside", "error"), ("outside", "error")]
    assert status.startswith("not confirmed")


def test_a_boundary_within_the_tolerance_of_the_search_limit_is_not_confirmed(tmp_path) -> None:
    budget = int(_tiny_peak(MAX_SIDE) / 1.02)  # the largest frame is 2% over: a boundary, but not 5% over
    points = find_frontier(_fake(budget), "all_gpu", preset="tiny", variants=("720x720_5s",),
                           aspects=("1:1",))
    assert points[0].outside_frame is not None
    ran: list[str] = []
    confirmed = confirm(points, "all_gpu", lambda path, info: ran.append(path.stem) or "ok", tmp_path,
                        budget=budget, preset="tiny", device="cpu")
    assert ran == ["frontier_0_inside"] and confirmed[0].status.startswith("not confirmed")


def test_confirm_refuses_a_tiled_frontier_in_one_line() -> None:
    result = CliRunner().invoke(main, ["frontier", "--hardware", "consumer-24gb", "--policy", "cpu_offload",
                                       "--confirm", "--tiled"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "--tiled" in result.output


def test_a_later_error_does_not_hide_a_contradiction(tmp_path) -> None:
    statuses = iter(["oom", "error", "ok", "oom"])  # inside: oom, then an error; outside: ok, then oom
    runs, status = _confirm_with(tmp_path, _tiny_peak(512), lambda frame: next(statuses))
    assert [(side, st) for side, _, st in runs] == [("inside", "oom"), ("inside", "error"), ("outside", "ok"),
                                                    ("outside", "oom")]
    assert status.startswith("contradicted by runs")


def test_the_runner_counts_only_a_device_oom_on_a_gpu(monkeypatch, tmp_path) -> None:
    """The worker calls a host MemoryError an oom too; on a GPU that says nothing of the device's budget."""
    from types import SimpleNamespace

    from ovi_bench import cli
    from ovi_bench.run import Run

    def fake_start(error: str | None, status: str):
        case = SimpleNamespace(status=status, error=error)
        return lambda *args, **kw: SimpleNamespace(execute=lambda: [case])

    cases = [("OutOfMemoryError: CUDA out of memory", "oom", "cuda", "oom"),
             ("MemoryError: ", "oom", "cuda", "host oom"),
             ("MemoryError: ", "oom", "cpu", "oom"),
             (None, "ok", "cuda", "ok")]
    for error, status, device, expected in cases:
        monkeypatch.setattr(Run, "start", fake_start(error, status))
        runner = cli._frontier_runner("reference", "tiny", device, "consumer-24gb", tmp_path / "front")
        assert runner(tmp_path / "frontier_0_inside.yaml", {"frame": (32, 32)}) == expected
