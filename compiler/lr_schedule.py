"""The learning-rate schedule of a training run: the rate of each tinyc_train_step call.

A run is T steps known in advance (`tinyc emulate --train-data`: epochs x samples; the demo
firmware's loop; `tinyc device train`; one fleet round's local steps; one `--lr auto` trial).
`--lr` is the peak, the rate of the first step; step k (0 .. T-1) trains at

    linear    lr * (1 - k / T)     from lr down to lr / T at the last step (never 0: the
                                   last step still learns, and a rate of 0 would be a no-op)
    constant  lr

Linear decay is the default: in bench/results/train_decay.md it lifted every accuracy of one
epoch by 2-4 points over a constant rate (the last steps' noise costs the final weights), and
the body's trained weights pay off only with it.

The devices compute the same rates in C: tinyc_lr_schedule() in the generated model.h
(templates/model.h.j2), float32 in the same order as `rate` here, so the host and the device
train at bit-identical rates (tests/test_train_c.py compares them bit for bit). A step index at
or past T gets the last step's rate.
"""
from __future__ import annotations

import numpy as np

from .errors import TinycError

LR_SCHEDULES = ("linear", "constant")
DEFAULT_LR_SCHEDULE = "linear"
# the schedule's code in C (TINYC_LR_CONSTANT, TINYC_LR_LINEAR in model.h; the training data
# file's header): 0 is constant, what a file written before schedules existed means
LR_SCHEDULE_CODES = {"constant": 0, "linear": 1}

F32 = np.float32


def check_schedule(name: str, what: str = "--lr-schedule") -> str:
    if name not in LR_SCHEDULES:
        raise TinycError(f"{what} {str(name)[:40]!r}: unknown learning-rate schedule; choose "
                         f"{' or '.join(LR_SCHEDULES)}")
    return name


def rates(lr: float, schedule: str, steps: int, first: int = 0, count: int | None = None
          ) -> np.ndarray:
    """float32 rates of steps first .. first + count - 1 (default: all `steps`) of a run of
    `steps` steps at peak `lr`. Bit-identical to the C's tinyc_lr_schedule()."""
    check_schedule(schedule)
    steps = int(steps)
    count = steps - first if count is None else int(count)
    peak = F32(lr)
    if schedule == "constant" or steps <= 0:
        return np.full(count, peak, F32)
    # float32 throughout, in the C's order: peak * (1 - (float)k / (float)T)
    k = np.minimum(np.arange(first, first + count, dtype=np.int64), steps - 1).astype(F32)
    return (peak * (F32(1) - k / F32(steps))).astype(F32)


def rate(lr: float, schedule: str, step: int, steps: int) -> float:
    """The rate of one step (a Python float holding the float32 value)."""
    return float(rates(lr, schedule, steps, first=step, count=1)[0])


def describe(lr: float, schedule: str, steps: int | None = None) -> str:
    """One line for a summary: what the rate does over a run (of `steps` steps when known)."""
    if schedule == "constant":
        return f"lr {lr:g} at every step (--lr-schedule constant)"
    if steps:
        return (f"lr {lr:g} at the first step, decaying linearly to {rate(lr, schedule, steps - 1, steps):.3g} "
                f"at the last of {steps:,} (--lr-schedule linear)")
    return (f"lr {lr:g} at a run's first step, decaying linearly to lr/T at its last of T steps "
            "(--lr-schedule linear)")


def of_report(rep: dict) -> str:
    """The schedule of a build from its report.json (a report written before schedules
    existed: constant, how those builds trained)."""
    name = rep.get("training", {}).get("lr_schedule", "constant")
    if name not in LR_SCHEDULES:
        raise TinycError(f"report.json: training.lr_schedule {str(name)[:40]!r} is not one of "
                         f"{', '.join(LR_SCHEDULES)}; rebuild with tinyc build")
    return name
