"""The training clock: the minutes of training that --max-minutes, --save-every-minutes and --lr-cooldown read.

A run's minutes count this process's time and that of the runs it resumed (`TrainState.elapsed_seconds`, saved
with each checkpoint). One process reads its own clock. Several processes read the largest of their clocks, agreed
on every AGREE_EVERY updates (the loop calls `Clock.agree`), so that all stop, save and set the rate at the same
update: clocks read apart would leave one process waiting for the others' gradients, or give the replicas
different rates.
"""

from __future__ import annotations

import time

import torch

from .checkpoints import TrainState

# With several processes, the clock (and any stop signal) is agreed on every this many updates: a collective the
# device waits for.
AGREE_EVERY = 10


class Clock:
    """The minutes of a run, over resumes, as this process reads them and as all processes agreed on them."""

    def __init__(self, state: TrainState, accelerator):
        self.state, self.accelerator = state, accelerator  # `state` is the run's own: its elapsed time, resumed
        self.started = time.time()  # when the clock of this process last started
        self.agreed_minutes = 0.0  # several processes: the minutes agreed on last (or those resumed from)
        self.last_save_minutes = 0.0  # `budget_minutes()` at the last checkpoint (for --save-every-minutes)

    def minutes(self) -> float:
        """Training minutes, this process and the runs it resumed."""
        return (self.state.elapsed_seconds + time.time() - self.started) / 60

    def budget_minutes(self) -> float:
        """The minutes the budget reads: one process reads its clock; several, the minutes they agreed on last."""
        if self.accelerator.num_processes == 1:
            return self.minutes()
        return self.agreed_minutes

    def bank(self) -> None:
        """Move this process's elapsed time into the state (saved with checkpoints)."""
        self.state.elapsed_seconds += time.time() - self.started
        self.started = time.time()

    def resumed(self) -> None:
        """After a resume: the minutes the checkpoint saved are those agreed on and those of the last save (the
        same on every process)."""
        self.last_save_minutes = self.agreed_minutes = self.state.elapsed_seconds / 60

    def saved(self) -> None:
        self.last_save_minutes = self.budget_minutes()

    def save_due(self, every_minutes: float) -> bool:
        """Whether --save-every-minutes asks for a checkpoint now (never when it is 0)."""
        return bool(every_minutes) and self.budget_minutes() - self.last_save_minutes >= every_minutes

    def agreement_due(self) -> bool:
        """Whether the processes agree now: several of them, after every AGREE_EVERY-th update."""
        return self.accelerator.num_processes > 1 and self.state.step % AGREE_EVERY == 0

    def agree(self, stop_signal: int | None) -> int | None:
        """Agree with the other processes on the largest of their clocks and, in the same collective (one wait for the
        device, not two), on a stop signal: returns the one any process got, or None. Every process calls it."""
        mine = torch.tensor([stop_signal or 0, self.minutes()], dtype=torch.float64, device=self.accelerator.device)
        agreed = self.accelerator.reduce(mine, "max").tolist()
        self.agreed_minutes = agreed[1]
        return int(agreed[0]) or None
