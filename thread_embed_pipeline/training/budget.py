"""The time budget and the ranks' clocks: :class:`StepBudget` sizes the number of optimizer steps from the
step time measured in the first steps, so a slower CPU trains fewer pairs instead of missing the main job's
time target; under DDP every decision uses the slowest rank's clock (:func:`distributed_rank`).
"""

from __future__ import annotations


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless ``torch.distributed`` is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1

def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()

def _slowest(seconds: float) -> float:
    """The largest of every rank's ``seconds`` (itself when not distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())

class StepBudget:
    """How many optimizer steps fit into ``time_budget_s``, decided from the measured step time.

    The learning-rate schedule is linear warm-up over ``warmup_steps``, then linear decay to 0 at
    ``total_steps``. ``total_steps`` starts at ``planned_steps`` and is fixed once, after
    ``calibration_steps`` steps past the first (which carries one-off start-up costs): the mean step
    time so far predicts how many more steps fit into the budget, and the total is rounded down to a
    multiple of ``step_quantum`` (so run-to-run noise in the timing rarely moves it). The decay then
    ends exactly at the new total, so a shortened run is a complete schedule, not a truncated one.
    Later, if the running mean step time projects an overrun of more than 5%, the total is cut again
    (never raised), and the decay ends at the new total.
    """

    def __init__(self, planned_steps: int, warmup_steps: int, time_budget_s: float | None, *, calibration_steps: int = 3, step_quantum: int = 2):
        if planned_steps < 1:
            raise ValueError(f"planned_steps must be >= 1, got {planned_steps}")
        if time_budget_s is not None and time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive or None, got {time_budget_s}")
        self.planned_steps = planned_steps
        self.warmup_steps = max(0, min(warmup_steps, planned_steps))
        self.time_budget_s = time_budget_s
        self.calibration_steps = calibration_steps
        self.step_quantum = max(1, step_quantum)
        self.total_steps = planned_steps
        self.overrun_tolerance = 0.05  # re-plan only when the projection overruns the budget by more than this
        self.decided = time_budget_s is None
        self.reason = "no time budget: one pass over every pair" if time_budget_s is None else ""
        self._first_step_end: float | None = None

    def replan(self, planned_steps: int, warmup_steps: int) -> None:
        """The Trainer's own step count (known once it has built its data loader), before any step ran."""
        self.planned_steps = self.total_steps = max(1, planned_steps)
        self.warmup_steps = max(0, min(warmup_steps, self.planned_steps))

    @property
    def min_steps(self) -> int:
        return min(self.planned_steps, max(self.calibration_steps + 1, self.warmup_steps + 1))

    def lr_factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        decay = max(1, self.total_steps - self.warmup_steps)
        return max(0.0, (self.total_steps - step) / decay)

    def observe(self, step: int, elapsed_s: float) -> None:
        """Called after optimizer step ``step`` (1-based) with the seconds since training started."""
        if self.time_budget_s is None:
            return
        if step == 1:
            self._first_step_end = elapsed_s
            return
        if self._first_step_end is None or step < 1 + self.calibration_steps:
            return
        step_s = (elapsed_s - self._first_step_end) / (step - 1)
        if not self.decided:
            fit = step + int((self.time_budget_s - elapsed_s) // step_s) if step_s > 0 else self.planned_steps
            total = min(self.planned_steps, max(self.min_steps, fit - fit % self.step_quantum))
            self.total_steps = max(total, step)
            self.decided = True
            span = f"{step_s:.2f} s/step measured over steps 2-{step}"
            if self.total_steps < self.planned_steps:
                self.reason = f"time budget {self.time_budget_s:g} s: {span} -> {self.total_steps} of {self.planned_steps} steps fit"
            else:
                self.reason = f"time budget {self.time_budget_s:g} s: {span}; all {self.planned_steps} steps fit"
            return
        # batches differ in length (length-grouped batches most of all), so the first steps' time can
        # mislead: if the mean so far says the rest no longer fits, end earlier (never later)
        if step < self.total_steps and elapsed_s + step_s * (self.total_steps - step) > self.time_budget_s * (1 + self.overrun_tolerance):
            fit = max(step + 1, step + int(max(self.time_budget_s - elapsed_s, 0.0) // step_s))
            if fit < self.total_steps:
                self.total_steps = fit
                self.reason += f"; cut to {fit} steps at step {step} ({step_s:.2f} s/step so far)"
