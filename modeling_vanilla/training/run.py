"""What every step of a training run reads and changes: `Run` (the options, Accelerate, the output folder, the model
and optimizer, the state, the clock, the logs), the `Corpus` of section 5.1, and the metrics log."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import CheckpointManager, TrainingObjects, TrainState
from .clock import Clock
from .update_stats import UpdateStats

METRICS = "metrics.jsonl"


@dataclass
class Corpus:
    """Section 5.1: the raw splits, the tokenizer, the tokenized splits and the token batches of the train split."""

    raw: Any
    tokenizer: Any
    splits: Any
    sampler: Any
    collator: Any


class MetricsLog:
    """metrics.jsonl on the main process, plus Accelerate's trackers."""

    def __init__(self, path: Path, accelerator):
        self.path, self.accelerator = path, accelerator

    def write(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        self.accelerator.log(numbers, step=record.get("step"))


@dataclass
class Throughput:
    """The target tokens trained on since the last metrics line, and when that line was written."""

    tokens: int = 0
    start: float = field(default_factory=time.time)

    def restart(self, now: float) -> None:
        self.tokens, self.start = 0, now


@dataclass
class Run:
    """A training run: what the steps of `loop` share. The options (`args`) are read, never changed: what the run
    derives lives here. `state` is what a checkpoint saves; `clock` reads it for the run's minutes."""

    args: Any  # the parsed options (options.parse_train_args)
    accelerator: Any
    out: Path
    state: TrainState = field(default_factory=TrainState)
    clock: Clock = field(init=False)  # reads `state`'s elapsed time (set in __post_init__)
    checkpoints: CheckpointManager | None = None
    metrics: MetricsLog | None = None
    stats: UpdateStats | None = None  # loss and skipped updates since the last read-back, on the device
    model: Any = None  # the model, optimizer and schedule as Accelerate prepared them: what a checkpoint holds
    optimizer: Any = None
    scheduler: Any = None
    compiled: Any = None  # torch.compile of the model, for the training forward (--compile)
    last_rate: float = 0.0  # the learning rate the last update used (Eq. 3 times any --lr-cooldown factor)
    stop_signal: int | None = None  # SIGTERM/SIGINT received: checkpoint and exit after the current update
    throughput: Throughput = field(default_factory=Throughput)  # target tokens/s since the last metrics line

    def __post_init__(self):
        self.clock = Clock(self.state, self.accelerator)

    def print(self, *message) -> None:
        self.accelerator.print(*message)

    def budget_spent(self, updates: int, epoch_batches: int) -> float:
        """The part of the budget used after `updates` updates, from 0 to 1: the largest over --max-steps,
        --max-epochs and --max-minutes, as the run stops at whichever ends first."""
        a, s = self.args, self.state
        spent = [0.0]
        if a.max_steps is not None:
            spent.append(updates / a.max_steps)
        if a.max_epochs is not None:
            spent.append((s.epoch + s.batch_in_epoch / max(epoch_batches, 1)) / a.max_epochs)
        if a.max_minutes is not None:
            spent.append(self.clock.budget_minutes() / a.max_minutes)
        return min(1.0, max(spent))

    def should_stop(self) -> bool:
        a, s = self.args, self.state
        return ((a.max_steps is not None and s.step >= a.max_steps)
                or (a.max_epochs is not None and s.epoch >= a.max_epochs)
                or (a.max_minutes is not None and self.clock.budget_minutes() >= a.max_minutes))

    def training_objects(self) -> TrainingObjects:
        """The model, optimizer, schedule and state, as `CheckpointManager.save` and `load` take them."""
        return TrainingObjects(self.model, self.optimizer, self.scheduler, self.state)

    def save_checkpoint(self, best: bool = False) -> Path:
        """A checkpoint of the run as it stands (see `checkpoints`); with `best`, also kept as checkpoints/best."""
        self.stats.read_back(self.state)  # the state saved counts every update so far
        self.clock.bank()
        folder = self.checkpoints.save(self.accelerator, self.state.step, self.training_objects(), best=best)
        self.clock.saved()
        return folder
