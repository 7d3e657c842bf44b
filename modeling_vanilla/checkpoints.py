"""Checkpoints that a crash cannot leave half-written, the state of a run, and section 6.1's averaging.

- `CheckpointManager`: `checkpoints/step-0000123/` folders written atomically through Accelerate, the last K kept.
- `TrainState`: where training stands (step, epoch, batch position, tokens, validation history), saved with each.
- Section 6.1: "averaging the last 5 checkpoints, which were written at 10-minute intervals" (base), 20 (big):
  `average_checkpoints` and `load_averaged_weights`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

COMPLETE_MARKER = "checkpoint_complete.json"


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint (Accelerate's `register_for_checkpointing`)."""

    step: int = 0  # optimizer updates done
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed, per process
    tokens_seen: int = 0  # target tokens, all processes
    skipped_updates: int = 0  # updates skipped because the loss was not finite
    elapsed_seconds: float = 0.0  # training time before this process started (for --max-minutes)
    history: list = field(default_factory=list)  # validation results

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class CheckpointManager:
    """`checkpoints/step-000123/` folders written atomically, keeping the last `keep`.

    A checkpoint is written into a hidden temporary folder; when every process has written its part, the main
    process records each file's size in `checkpoint_complete.json` and renames the folder into place. A crash
    at any moment leaves either a complete checkpoint or a folder that `latest()` recognizes as incomplete
    (no marker, or files whose sizes differ from the marker) and skips with a message.
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 5, log=print):
        self.directory = Path(directory)
        self.keep = keep
        self.log = log

    def path(self, step: int) -> Path:
        return self.directory / f"step-{step:07d}"

    def save(self, accelerator, step: int) -> Path:
        final = self.path(step)
        temporary = self.directory / f".tmp-step-{step:07d}"
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            files = {str(p.relative_to(temporary)): p.stat().st_size for p in sorted(temporary.rglob("*")) if p.is_file()}
            marker = {"step": step, "files": files, "time": time.time()}
            with open(temporary / COMPLETE_MARKER, "w") as f:
                json.dump(marker, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
            self._prune()
        accelerator.wait_for_everyone()
        _crash_test_hook(step)
        return final

    def _prune(self) -> None:
        if self.keep is None:
            return
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(old)

    def problem(self, folder: Path) -> str | None:
        """Why `folder` is not a usable checkpoint, or None if it is complete."""
        marker = folder / COMPLETE_MARKER
        if not marker.is_file():
            return "it has no completion marker (writing was interrupted)"
        try:
            files = json.loads(marker.read_text())["files"]
        except (ValueError, KeyError) as error:
            return f"its completion marker is unreadable ({error})"
        for name, size in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, the marker says {size}"
        return None

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        folders = sorted(p for p in self.directory.glob("step-*") if p.is_dir())
        return [p for p in folders if self.problem(p) is None]

    def latest(self) -> Path | None:
        """The newest complete checkpoint; incomplete ones are reported and skipped."""
        if not self.directory.is_dir():
            return None
        for leftover in sorted(self.directory.glob(".tmp-step-*")):
            self.log(f"Ignoring {leftover}: a checkpoint that was being written when the run stopped.")
        for folder in sorted((p for p in self.directory.glob("step-*") if p.is_dir()), reverse=True):
            problem = self.problem(folder)
            if problem is None:
                return folder
            self.log(f"Skipping checkpoint {folder}: {problem}.")
        return None


def _crash_test_hook(step: int) -> None:
    """For the resume test (tests/test_training.py) only: die by SIGKILL right after checkpoint `step` is written,
    as a preempted job would, when VANILLA_TEST_SIGKILL_AFTER_STEP names that step."""
    if os.environ.get("VANILLA_TEST_SIGKILL_AFTER_STEP") == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


# Section 6.1: checkpoint averaging


def find_weights(folder: str | os.PathLike) -> Path:
    """The model weights inside a training checkpoint or a saved model folder."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"No model.safetensors or pytorch_model.bin in {folder}: not a checkpoint or model folder.")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def average_checkpoints(folders: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Section 6.1: the element-wise mean of the parameters of several checkpoints of one run (in fp32)."""
    if not folders:
        raise ValueError("No checkpoints to average.")
    total: dict[str, torch.Tensor] = {}
    for folder in folders:
        weights = load_weights(find_weights(folder))
        if total and weights.keys() != total.keys():
            raise ValueError(f"{folder} holds different parameters than {folders[0]}: checkpoints of different models?")
        for name, tensor in weights.items():
            if name in total:
                if tensor.shape != total[name].shape:
                    raise ValueError(f"{name} has shape {tuple(tensor.shape)} in {folder}, {tuple(total[name].shape)} before.")
                total[name] += tensor.float()
            else:
                total[name] = tensor.float().clone()
    return {name: tensor / len(folders) for name, tensor in total.items()}


def load_averaged_weights(model: nn.Module, averaged: dict[str, torch.Tensor]) -> None:
    """Load averaged weights into `model` (keys as saved by Accelerate or save_pretrained; tied copies may be absent)."""
    missing, unexpected = model.load_state_dict(averaged, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"Averaged weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
