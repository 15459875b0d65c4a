"""Solvers against diffusers' schedulers configured as upstream Ovi builds them, plus analytic checks.

The oracle schedules are written here with numpy from upstream's formulas (ovi/utils/fm_solvers*.py,
ovi_fusion_engine.get_scheduler_time_steps); the stepping math is diffusers'.
"""

import numpy as np
import pytest
import torch

from ovi_engine.solvers import SOLVERS, make_solver

schedulers = pytest.importorskip("diffusers.schedulers")

STEPS = (1, 2, 3, 10, 50)
SHIFTS = (1.0, 5.0)


def _shift(sigmas: np.ndarray, shift: float) -> np.ndarray:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def oracle(name: str, steps: int, shift: float):
    if name == "unipc":
        # Ovi's FlowUniPCMultistepScheduler: grid from float32(0.999) to 0, shift applied in set_timesteps.
        sched = schedulers.UniPCMultistepScheduler(
            num_train_timesteps=1000,
            solver_order=2,
            prediction_type="flow_prediction",
            predict_x0=True,
            solver_type="bh2",
            lower_order_final=True,
            final_sigmas_type="zero",
            use_flow_sigmas=True,
            flow_shift=shift,
        )
        sched.set_timesteps(sigmas=np.linspace(float(np.float32(0.999)), 0, steps + 1)[:-1])
    elif name == "dpm++":
        # Ovi's get_sampling_sigmas: grid from 1 to 0 (diffusers' own flow grid starts at 0.999), so the
        # schedule is set by hand; the update rules stay diffusers'.
        sched = schedulers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            solver_order=2,
            prediction_type="flow_prediction",
            algorithm_type="dpmsolver++",
            solver_type="midpoint",
            lower_order_final=True,
            final_sigmas_type="zero",
            use_flow_sigmas=True,
            flow_shift=shift,
        )
        sched.set_timesteps(steps)
        sigmas = _shift(np.linspace(1, 0, steps + 1)[:steps], shift)
        sched.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
        sched.timesteps = torch.from_numpy(sigmas * 1000).to(torch.int64)
    else:
        sched = schedulers.FlowMatchEulerDiscreteScheduler(shift=shift)
        sched.set_timesteps(steps)
    sched.set_begin_index(0)
    return sched


def velocity(x: torch.Tensor, t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A fixed linear 'model' of the sample and t, so each step's output depends on the history."""
    return 0.7 * x - 0.4 * torch.roll(x, 1, dims=-1) + (t / 1000) * bias


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("name", SOLVERS)
def test_schedule_matches_oracle(name: str, steps: int, shift: float) -> None:
    ours, ref = make_solver(name, steps, shift), oracle(name, steps, shift)
    assert ours.timesteps.dtype == torch.float32 and ours.sigmas.dtype == torch.float32
    assert torch.equal(ours.timesteps, ref.timesteps.float())
    assert torch.equal(ours.sigmas, ref.sigmas)


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("name", SOLVERS)
def test_trajectory_matches_oracle(name: str, steps: int, shift: float) -> None:
    gen = torch.Generator().manual_seed(steps * 10 + int(shift))
    shape = (1, 3, 2, 4, 5) if steps % 2 else (1, 6, 7)  # video-like and audio-like latents
    x_ours = x_ref = torch.randn(shape, generator=gen)
    bias = torch.randn(shape, generator=gen)
    ours, ref = make_solver(name, steps, shift), oracle(name, steps, shift)
    for i, t in enumerate(ours.timesteps):
        x_ours = ours.step(velocity(x_ours, t, bias), i, x_ours)
        x_ref = ref.step(velocity(x_ref, t, bias), ref.timesteps[i], x_ref, return_dict=False)[0]
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-5, atol=1e-5, msg=lambda m, i=i: f"step {i}: {m}")


@pytest.mark.parametrize("steps", (1, 2, 5, 50))
@pytest.mark.parametrize("name", SOLVERS)
def test_lands_on_data_of_straight_line_flow(name: str, steps: int) -> None:
    # For one data point x0 the exact velocity at (x, sigma) is (x - x0) / sigma: the straight line
    # from x through x0. Every solver must end on x0, from any start.
    gen = torch.Generator().manual_seed(steps)
    x0, x = torch.randn(2, 4, 6, dtype=torch.float64, generator=gen)
    solver = make_solver(name, steps, shift=5.0)
    for i in range(steps):
        x = solver.step((x - x0) / solver.sigmas[i].item(), i, x)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", SOLVERS)
def test_upstream_timestep_facts(name: str) -> None:
    # 50 steps, shift 5: the first t is 1000 * shift(sigma_max) (sigma_max 0.999 for unipc, else 1)
    # truncated for the integer schedules; the last sigma is 0.
    solver = make_solver(name, 50)
    first = {"unipc": 999.0, "dpm++": 1000.0, "euler": 1000.0}[name]
    assert solver.timesteps.shape == (50,) and solver.sigmas.shape == (51,)
    assert solver.timesteps[0].item() == first and solver.sigmas[-1].item() == 0.0
    assert torch.all(solver.timesteps[1:] < solver.timesteps[:-1])


@pytest.mark.parametrize("name", SOLVERS)
def test_dtype_reset_and_index_order(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 8, generator=gen).bfloat16()
    v = torch.randn(1, 3, 8, generator=gen).bfloat16()
    solver = make_solver(name, 4)
    first = [solver.step(v, i, x) for i in range(4)]
    assert all(out.dtype == torch.bfloat16 for out in first)
    solver.reset()
    with pytest.raises(ValueError, match="expected step index 0, got 1"):
        solver.step(v, 1, x)
    again = [solver.step(v.float(), i, x.float()) for i in range(4)]  # float32 inside: same result
    for a, b in zip(first, again):
        assert torch.equal(a, b.bfloat16())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="valid: unipc, dpm\\+\\+, euler"):
        make_solver("ddim", 10)
    with pytest.raises(ValueError, match="steps"):
        make_solver("unipc", 0)
