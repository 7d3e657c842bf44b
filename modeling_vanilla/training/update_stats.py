"""Device statistics of the updates: the loss and the NaN guard's skipped updates, kept on the device.

Reading a number back makes the host wait for the device, so the loop reads these every --log-every updates (and
before checkpoints), not every update. A non-finite loss skips its update on the device (`loop.train_step`); here it
is counted, reported, and after --max-bad-updates in a row the run stops with advice.
"""

from __future__ import annotations

import torch

from .checkpoints import TrainState


class UpdateStats:
    """Sums over the updates since the last read-back, kept on the device."""

    def __init__(self, device, max_bad_updates: int, log=print):
        self.device, self.max_bad_updates, self.log = device, max_bad_updates, log
        self.bad_run = torch.zeros((), device=device)  # non-finite updates in a row, now (carried across windows)
        self.reset()

    def reset(self) -> None:
        zero = torch.zeros((), device=self.device)
        self.loss, self.finite, self.skipped, self.worst_run = zero.clone(), zero.clone(), zero.clone(), zero.clone()
        self.tokens, self.first_step, self.updates = 0, None, 0

    def add(self, loss: torch.Tensor, bad: torch.Tensor, tokens: int, step: int) -> None:
        self.loss += torch.where(bad, 0.0, loss)
        self.finite += (~bad).float()
        self.skipped += bad.float()
        self.bad_run = torch.where(bad, self.bad_run + 1, 0.0)
        self.worst_run = torch.maximum(self.worst_run, self.bad_run)
        self.tokens += tokens
        self.first_step = step if self.first_step is None else self.first_step
        self.updates += 1

    def read(self) -> dict:
        loss, finite, skipped, worst_run, bad_run = torch.stack(
            [self.loss, self.finite, self.skipped, self.worst_run, self.bad_run]).tolist()  # the one wait
        result = {"loss": loss / finite if finite else None, "skipped": int(skipped), "worst_run": int(worst_run),
                  "bad_run": int(bad_run), "tokens": self.tokens, "first_step": self.first_step}
        self.reset()
        return result

    def read_back(self, state: TrainState) -> dict | None:
        """The updates since the last read-back, counted into `state`: their mean loss and target tokens; reports
        skipped updates, and stops with advice after --max-bad-updates non-finite losses in a row."""
        if self.updates == 0:
            return None
        numbers = self.read()
        step = state.step
        state.tokens_seen += numbers["tokens"]
        if numbers["skipped"]:
            state.skipped_updates += numbers["skipped"]
            self.log(f"Steps {numbers['first_step']}-{step}: {numbers['skipped']} update(s) skipped, their loss was "
                     f"not finite ({numbers['bad_run']} in a row at step {step}).")
        if numbers["worst_run"] >= self.max_bad_updates:
            raise RuntimeError(
                f"The loss was not finite for {numbers['worst_run']} updates in a row (by step {step}). "
                "Lower --lr-scale, raise --warmup-steps, set --clip-norm, or train in fp32 (--precision fp32)."
            )
        return numbers
