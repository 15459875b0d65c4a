"""Flow-matching samplers used by Ovi: UniPC (its default), DPM-Solver++ and Euler.

Convention of Wan/Ovi: x(sigma) = (1 - sigma) * x0 + sigma * noise and the model predicts the velocity
v = noise - x0, so its data prediction is x0 = x - sigma * v. Sigma 1 is pure noise, 0 is data; the model
is fed t = 1000 * sigma.

The schedules reproduce upstream's bit for bit, quirks included, so a run here feeds the model the same
t values as upstream does:
- unipc:  sigmas linspace(0.999, 0) (0.999 as stored in float32), shifted; t truncated to integers.
- dpm++:  sigmas linspace(1, 0), shifted; t truncated to integers.
- euler:  diffusers' FlowMatchEulerDiscreteScheduler(shift): linspace(1000, 1000 * sigma_min) where
          sigma_min is the already shifted 0.001, then shifted again; t stays fractional.
All end with a final sigma of 0. Grids are computed in float64 the way numpy does, then stored in float32.

UniPC is order 2 with the bh2 corrector, DPM-Solver++ is order-2 "midpoint"; both take a first-order
step first and last. Their order-2 predictors are the same formula.
"""

import math

import torch
from torch import Tensor

SOLVERS: tuple[str, ...] = ("unipc", "dpm++", "euler")
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """Ovi's timestep shift: spends more of the steps at high noise when shift > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _linspace64(start: float, stop: float, num: int) -> Tensor:
    # numpy's rounding (start + k * step, last point exactly stop), which torch.linspace does not share;
    # the integer timesteps are truncated from these values, so one ulp can change a t.
    grid = torch.arange(num, dtype=torch.float64) * ((stop - start) / max(num - 1, 1)) + start
    if num > 1:
        grid[-1] = stop
    return grid


def _with_final_zero(sigmas64: Tensor) -> Tensor:
    return torch.cat([sigmas64.float(), torch.zeros(1)])


def unipc_schedule(steps: int, shift: float) -> tuple[Tensor, Tensor]:
    # Upstream's top sigma is 1 - 1/1000 read back from a float32 training grid.
    sigma_max = float(torch.tensor(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS, dtype=torch.float32))
    sigmas = shift_sigmas(_linspace64(sigma_max, 0.0, steps + 1)[:-1], shift)
    timesteps = (sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64).float()
    return timesteps, _with_final_zero(sigmas)


def dpmpp_schedule(steps: int, shift: float) -> tuple[Tensor, Tensor]:
    sigmas = shift_sigmas(_linspace64(1.0, 0.0, steps + 1)[:-1], shift)
    timesteps = (sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64).float()
    return timesteps, _with_final_zero(sigmas)


def euler_schedule(steps: int, shift: float) -> tuple[Tensor, Tensor]:
    # The endpoints come from a float32 training grid 1..1000 that is already shifted.
    lowest = shift_sigmas(torch.tensor([1.0], dtype=torch.float32) / NUM_TRAIN_TIMESTEPS, shift)
    highest = shift_sigmas(torch.tensor([1.0], dtype=torch.float32), shift)
    t64 = _linspace64(float(highest) * NUM_TRAIN_TIMESTEPS, float(lowest) * NUM_TRAIN_TIMESTEPS, steps)
    sigmas = shift_sigmas(t64 / NUM_TRAIN_TIMESTEPS, shift).float()
    return sigmas * NUM_TRAIN_TIMESTEPS, torch.cat([sigmas, torch.zeros(1)])


class Solver:
    """One sampling run: call step(v, i, x) for i = 0 .. steps - 1 in order; reset() to start again.

    timesteps: (steps,) float32, the t fed to the model, descending on the 0..1000 scale.
    sigmas:    (steps + 1,) float32, noise level before each step, ending at 0.
    """

    def __init__(self, timesteps: Tensor, sigmas: Tensor, device: torch.device | str = "cpu"):
        self.timesteps = timesteps.to(device)
        self.sigmas = sigmas.to(device)
        # Coefficients are host floats in float64; +-inf where sigma is 0 or 1 works out in every formula.
        sig64 = sigmas.double()
        self._sigma: list[float] = sig64.tolist()
        self._alpha: list[float] = (1 - sig64).tolist()
        # lambda = log(alpha / sigma), the log signal-to-noise ratio the multistep solvers step in.
        self._lambda: list[float] = (torch.log1p(-sig64) - torch.log(sig64)).tolist()
        self.reset()

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def reset(self) -> None:
        self._next_index = 0

    def step(self, model_output: Tensor, index: int, sample: Tensor) -> Tensor:
        """Advances `sample` from sigmas[index] to sigmas[index + 1] given the model's velocity there."""
        if index != self._next_index:
            raise ValueError(f"{type(self).__name__}: expected step index {self._next_index}, got {index}")
        out = self._update(model_output.float(), index, sample.float())
        self._next_index += 1
        return out.to(sample.dtype)

    def _update(self, v: Tensor, i: int, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _exponential_step(self, x: Tensor, i: int, x0: Tensor, x0_before: Tensor | None) -> Tensor:
        """Data-prediction exponential integrator from sigma[i] to sigma[i+1] (first order = DDIM).

        With the previous data prediction it adds the order-2 term: the slope of x0 in lambda, taken
        from the last two predictions, integrated over the step (DPM-Solver++(2M) == UniP-2 with bh2).
        """
        s, a, lam = self._sigma, self._alpha, self._lambda
        h = lam[i + 1] - lam[i]
        phi = math.expm1(-h)
        out = (s[i + 1] / s[i]) * x - (a[i + 1] * phi) * x0
        if x0_before is not None:
            r = (lam[i] - lam[i - 1]) / h
            out = out - (0.5 * a[i + 1] * phi / r) * (x0 - x0_before)
        return out


class EulerSolver(Solver):
    def _update(self, v: Tensor, i: int, x: Tensor) -> Tensor:
        return x + (self._sigma[i + 1] - self._sigma[i]) * v


class DPMSolverPP(Solver):
    """Multistep DPM-Solver++ order 2, first-order first and last steps."""

    def reset(self) -> None:
        super().reset()
        self._x0_before: Tensor | None = None

    def _update(self, v: Tensor, i: int, x: Tensor) -> Tensor:
        x0 = x - self._sigma[i] * v
        second_order = self._x0_before is not None and i < self.steps - 1
        out = self._exponential_step(x, i, x0, self._x0_before if second_order else None)
        self._x0_before = x0
        return out


class UniPCSolver(Solver):
    """UniPC (bh2): order-2 predictor; before each step after the first, the corrector UniC re-does the
    previous step with the data prediction just computed at its end (no extra model call).

    As upstream, the data prediction of step i is taken from the uncorrected sample, and the
    corrector's order is the order the previous predictor used.
    """

    def reset(self) -> None:
        super().reset()
        self._x0s: list[Tensor] = []  # data predictions of the last two steps, oldest first
        self._last_sample: Tensor | None = None
        self._last_order = 0

    def _update(self, v: Tensor, i: int, x: Tensor) -> Tensor:
        x0 = x - self._sigma[i] * v
        if self._last_sample is not None:
            x = self._correct(x0, i)
        order = 1 if i == 0 or i == self.steps - 1 else 2
        out = self._exponential_step(x, i, x0, self._x0s[-1] if order == 2 else None)
        self._x0s = (self._x0s + [x0])[-2:]
        self._last_sample = x
        self._last_order = order
        return out

    def _correct(self, x0_now: Tensor, i: int) -> Tensor:
        """UniC: the step sigma[i-1] -> sigma[i] again, now also using x0 at its end point."""
        assert self._last_sample is not None
        s, a, lam = self._sigma, self._alpha, self._lambda
        x0_prev = self._x0s[-1]
        h = lam[i] - lam[i - 1]
        phi = math.expm1(-h)  # B(h) of the bh2 variant equals phi here
        out = (s[i] / s[i - 1]) * self._last_sample - (a[i] * phi) * x0_prev
        if self._last_order == 1:
            correction = 0.5 * (x0_now - x0_prev)  # upstream's fixed weight for order 1
        else:
            # Weights from the order conditions of UniC-2: [[1, 1], [r, 1]] @ (rho_older, rho_now) = (g1, g2).
            r = (lam[i - 2] - lam[i - 1]) / h
            g1 = (phi / -h - 1) / phi
            g2 = 2 * ((phi / -h - 1) / -h - 0.5) / phi
            rho_older = (g1 - g2) / (1 - r)
            rho_now = g1 - rho_older
            correction = rho_now * (x0_now - x0_prev) + (rho_older / r) * (self._x0s[-2] - x0_prev)
        return out - (a[i] * phi) * correction


_SCHEDULES = {
    "unipc": (unipc_schedule, UniPCSolver),
    "dpm++": (dpmpp_schedule, DPMSolverPP),
    "euler": (euler_schedule, EulerSolver),
}


def make_solver(name: str, steps: int, shift: float = 5.0, *, device: torch.device | str = "cpu") -> Solver:
    """Builds a fresh solver (one per modality per generation) as Ovi configures it."""
    if name not in _SCHEDULES:
        raise ValueError(f"unknown solver {name!r}; valid: {', '.join(SOLVERS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    schedule, solver_class = _SCHEDULES[name]
    timesteps, sigmas = schedule(steps, shift)
    return solver_class(timesteps, sigmas, device)
