"""Learning-rate schedules as pure functions of the iteration.

Being stateless, a schedule needs nothing saved for an exact resume: the learning
rate of iteration ``i`` is recomputed from ``i``. Iterations count from 1; iteration
``i`` trains with ``lr_at(base_lr, i - 1)``, so the first one uses the base rate.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from torch.optim import Optimizer


@dataclass(frozen=True)
class LRSchedule:
    """Cosine annealing with restarts (as EDVR's recipe) after an optional linear warm-up.

    Period ``k`` (``periods[k]`` iterations) decays from ``restart_weights[k] * base_lr``
    to ``eta_min`` along a half cosine; ``type="constant"`` keeps ``base_lr``. During the
    first ``warmup_iter`` iterations the rate is scaled linearly (iteration i: i / warmup).
    """

    type: str = "CosineAnnealingRestartLR"
    periods: tuple[int, ...] = ()
    restart_weights: tuple[float, ...] = ()
    eta_min: float = 0.0
    warmup_iter: int = 0
    _ends: tuple[int, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        if self.type not in ("CosineAnnealingRestartLR", "constant"):
            raise ValueError(f"scheduler.type: expected CosineAnnealingRestartLR or constant, got {self.type!r}")
        if self.type == "CosineAnnealingRestartLR":
            if not self.periods or min(self.periods) < 1:
                raise ValueError(f"scheduler.periods: expected positive iteration counts, got {list(self.periods)}")
            if len(self.restart_weights) != len(self.periods):
                raise ValueError(
                    f"scheduler.restart_weights: expected one weight per period ({len(self.periods)}), "
                    f"got {list(self.restart_weights)}"
                )
        ends, total = [], 0
        for period in self.periods:
            total += period
            ends.append(total)
        object.__setattr__(self, "_ends", tuple(ends))

    @property
    def total_period(self) -> int:
        return self._ends[-1] if self._ends else 0

    def lr_at(self, base_lr: float, step: int) -> float:
        """Learning rate after ``step`` completed iterations (0-based)."""
        if self.type == "constant":
            lr = base_lr
        else:
            if step >= self.total_period:
                raise ValueError(
                    f"scheduler: iteration {step + 1} is past the last period (periods sum to "
                    f"{self.total_period}); make scheduler.periods cover train.total_iter"
                )
            k = bisect.bisect_right(self._ends, step)
            start = self._ends[k - 1] if k else 0
            progress = (step - start) / self.periods[k]
            lr = self.eta_min + self.restart_weights[k] * 0.5 * (base_lr - self.eta_min) * (
                1 + math.cos(math.pi * progress))
        if step < self.warmup_iter:
            lr *= (step + 1) / self.warmup_iter
        return lr

    def apply(self, optimizer: Optimizer, iteration: int) -> None:
        """Set every parameter group's lr for (1-based) ``iteration`` from its ``base_lr``."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(group["base_lr"], iteration - 1)
