"""Checkpoints that a crash cannot leave half-written and that hold no pickle, and the state of a run.

- `CheckpointManager`: `checkpoints/step-0000123/` folders in a format of our own, written atomically, verified by
  sha256 before use, the last K kept, and `checkpoints/best/` beside them.
- `TrainState`: where training stands (step, epoch, batch position, tokens, validation history), saved with each.
- `TrainingObjects`: what `save` writes and `load` restores (the prepared model, optimizer, schedule and the state).

Their files on disk (durable writes, hashes, the marker) are `checkpoint_files`, the random states `random_states`;
section 6.1's averaging of their weights is `averaging`.

A checkpoint folder holds exactly these files, none of them a pickle that could run code when loaded:

    model.safetensors        the unwrapped model's state dict (a tied copy is stored once)
    optimizer.pt             optimizer.state_dict(), torch.save; loaded with torch.load(weights_only=True)
    scheduler.pt             scheduler.state_dict(), the same
    scaler.pt                the fp16 GradScaler's state, the same (only with --precision fp16)
    rng_state_{rank}.json    each process's random states: Python, NumPy, torch CPU and CUDA (per device)
    train_state.json         the TrainState
    checkpoint_complete.json the marker: the step, and each file's size and sha256, written last

Durability: every file is fsynced, then the folder, which is then renamed from `.tmp-step-0000123` into place, and
the parent folder fsynced. A crash leaves either a complete checkpoint or a folder without a valid marker, which
`latest()` reports and skips; leftover `.tmp-*` folders are removed (with a message) at the next save or resume.
Verification: the sha256 of each file is checked by `complete()`, `latest()`, `best()`, `load()` and, for checkpoint
folders, `averaging.average_checkpoints` (each file hashed once per process: `checkpoint_files.sha256`). A folder
holding a `.pkl` file or a file its marker does not list is never loaded.

Supported: one process or data parallel (DDP) processes on a shared filesystem. FSDP and DeepSpeed shard the
optimizer state across processes, which this format does not store: `save` and `load` refuse them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .averaging import load_model_weights
from .checkpoint_files import (
    COMPLETE_MARKER,
    file_problem,
    fsync,
    link_or_copy,
    marker_files,
    replace_folder,
    sha256,
    write_text,
)
from .random_states import rng_state, set_rng_state

FORMAT_VERSION = 1
WEIGHTS_FILE, OPTIMIZER_FILE, SCHEDULER_FILE = "model.safetensors", "optimizer.pt", "scheduler.pt"
SCALER_FILE, TRAIN_STATE_FILE = "scaler.pt", "train_state.json"
REQUIRED_FILES = (WEIGHTS_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, TRAIN_STATE_FILE)
CHECKPOINT_FILE = re.compile(r"(model\.safetensors|optimizer\.pt|scheduler\.pt|scaler\.pt|train_state\.json"
                             r"|rng_state_\d+\.json)")
STEP_FOLDER = re.compile(r"step-(\d+)")
BEST = "best"
UNSUPPORTED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")  # accelerate's DistributedType values with sharded states


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or must not be loaded (incomplete, corrupted, or holding a pickle)."""


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint as `train_state.json`."""

    step: int = 0  # optimizer updates done
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed, per process
    tokens_seen: int = 0  # target tokens, all processes
    skipped_updates: int = 0  # updates skipped because the loss was not finite
    elapsed_seconds: float = 0.0  # training time before this process started (for --max-minutes)
    history: list = field(default_factory=list)  # validation results: dicts of numbers and strings

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Set every field from `state`; a field it lacks (saved by an earlier version) takes its default."""
        if not isinstance(state, dict):
            raise CheckpointError(f"The saved run state is a {type(state).__name__}, not a JSON object.")
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(state) - set(known))
        if unknown:
            raise CheckpointError(f"The saved run state has fields this version does not know: {unknown}.")
        for name, f in known.items():
            default = f.default if f.default_factory is MISSING else f.default_factory()
            setattr(self, name, state.get(name, default))


@dataclass
class TrainingObjects:
    """What a checkpoint saves and restores: the model, optimizer and schedule as Accelerate prepared them, and the
    run's TrainState."""

    model: Any
    optimizer: Any
    scheduler: Any
    state: TrainState


class CheckpointManager:
    """`checkpoints/step-0000123/` folders (see the module docstring), the last `keep` kept, and `best/`.

    Every process calls `save` and `load`. In `save` the main process writes the shared files and each process its
    random states into `.tmp-step-0000123/`; when all have written, the main process hashes the files into the
    marker, fsyncs, and renames the folder into place. Processes agree after each phase, so an error in one (a
    full disk) raises `CheckpointError` in all, and the temporary folder is removed.
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 5, log=print):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"--keep-checkpoints must be an integer >= 1 (or None to keep all), got {keep!r}.")
        self.directory = Path(directory)
        self.keep = keep
        self.log = log

    def path(self, step: int) -> Path:
        if step < 0:
            raise ValueError(f"A checkpoint step is >= 0, got {step}.")
        return self.directory / f"step-{step:07d}"

    # Writing

    def save(self, accelerator, step: int, objects: TrainingObjects, best: bool = False) -> Path:
        """Write checkpoint `step` of `objects` (with `best`, `best/` holds it too); returns its folder. Call on every
        process."""
        _check_supported(accelerator)
        final, temporary = self.path(step), self.directory / f".tmp-step-{step:07d}"
        # What every process contributes, computed first: an unserializable state fails here, on all processes.
        serialized = {"train_state": json.dumps(objects.state.state_dict(), indent=1),
                      "rng_state": json.dumps(rng_state(accelerator)),
                      "weights": accelerator.get_state_dict(objects.model)}  # a collective under some setups

        self._phase(accelerator, temporary, "prepare", accelerator.is_main_process, lambda: self._prepare(temporary))
        self._phase(accelerator, temporary, "write", True,
                    lambda: self._write_parts(accelerator, temporary, objects, serialized))
        self._phase(accelerator, temporary, "complete", accelerator.is_main_process,
                    lambda: self._complete(temporary, final, step, accelerator.num_processes, best))
        return final

    def _phase(self, accelerator, temporary: Path, what: str, runs_here: bool, work) -> None:
        """Run `work` where `runs_here`, then wait for every process; if any failed, all raise."""
        error = None
        if runs_here:
            try:
                work()
            except Exception as caught:  # reported to every process below, then raised here
                error = caught
        if _all_succeeded(accelerator, error is None):
            return
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        if error is not None:
            raise CheckpointError(f"Writing checkpoint {temporary.name} failed ({what}): {error}") from error
        raise CheckpointError(f"Writing checkpoint {temporary.name} failed ({what}) in another process.")

    def _prepare(self, temporary: Path) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            fsync(self.directory.parent)
        self._remove_leftovers()
        temporary.mkdir()

    def _write_parts(self, accelerator, temporary: Path, objects: TrainingObjects, serialized: dict) -> None:
        """Each process its random states; the main process the model, optimizer, scheduler and run state."""
        write_text(temporary / rng_file(accelerator.process_index), serialized["rng_state"])
        if not accelerator.is_main_process:
            return
        from safetensors.torch import save_file

        tied = set(getattr(accelerator.unwrap_model(objects.model), "all_tied_weights_keys", {}) or {})
        save_file(_storable(serialized["weights"], tied), str(temporary / WEIGHTS_FILE), metadata={"format": "pt"})
        torch.save(objects.optimizer.state_dict(), temporary / OPTIMIZER_FILE)
        torch.save(objects.scheduler.state_dict(), temporary / SCHEDULER_FILE)
        for name in (WEIGHTS_FILE, OPTIMIZER_FILE, SCHEDULER_FILE):
            fsync(temporary / name)
        if getattr(accelerator, "scaler", None) is not None:
            torch.save(accelerator.scaler.state_dict(), temporary / SCALER_FILE)
            fsync(temporary / SCALER_FILE)
        write_text(temporary / TRAIN_STATE_FILE, serialized["train_state"])

    def _complete(self, temporary: Path, final: Path, step: int, processes: int, best: bool) -> None:
        """The marker, then the rename into place; `best/`; pruning. Main process only."""
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256(p)} for p in sorted(temporary.iterdir())}
        marker = {"format": FORMAT_VERSION, "step": step, "processes": processes, "time": time.time(), "files": files}
        write_text(temporary / COMPLETE_MARKER, json.dumps(marker, indent=1))
        fsync(temporary)
        replace_folder(temporary, final)
        if best:
            self._keep_as_best(final, marker)
        self._prune(keep_also=final)

    def _keep_as_best(self, folder: Path, marker: dict) -> None:
        """`best/` holds the files of `folder` (hard links where the filesystem allows), written atomically too."""
        temporary = self.directory / ".tmp-best"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        for name in marker["files"]:
            link_or_copy(folder / name, temporary / name)
        best_marker = {**marker, "source": folder.name, "time": time.time()}
        write_text(temporary / COMPLETE_MARKER, json.dumps(best_marker, indent=1))
        fsync(temporary)
        replace_folder(temporary, self.directory / BEST)
        self.log(f"Kept {folder.name} as the best checkpoint in {self.directory / BEST}.")

    def _prune(self, keep_also: Path) -> None:
        if self.keep is None:
            return
        for old in self.complete()[: -self.keep]:
            if old != keep_also:
                shutil.rmtree(old)
        fsync(self.directory)

    def _remove_leftovers(self) -> None:
        """Remove `.tmp-*` folders: checkpoints being written when a run stopped. Main process only."""
        for leftover in sorted(self.directory.glob(".tmp-*")):
            self.log(f"Removing {leftover}: a checkpoint that was being written when the run stopped.")
            shutil.rmtree(leftover, ignore_errors=True)

    # Reading

    def problem(self, folder: str | os.PathLike, rank: int | None = None) -> str | None:
        """Why `folder` is not a usable checkpoint (for process `rank`, if given), or None if it is complete."""
        folder = Path(folder)
        if not folder.is_dir():
            return "it is not a folder"
        files = marker_files(folder)
        if isinstance(files, str):
            return files
        for entry in sorted(folder.iterdir()):
            if entry.suffix == ".pkl":
                return (f"it contains {entry.name}, a pickle, which could run code when loaded "
                        "(this version writes and loads none)")
            if entry.name != COMPLETE_MARKER and entry.name not in files:
                return f"{entry.name} is not listed in its marker"
        needed = REQUIRED_FILES + (() if rank is None else (rng_file(rank),))
        for name in needed:
            if name not in files:
                return f"its marker lists no {name}"
        for name, entry in files.items():
            if not CHECKPOINT_FILE.fullmatch(name):
                return f"its marker lists {name}, which is not a checkpoint file"
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or "size" not in entry:
                return f"its marker has no sha256 for {name} (a checkpoint of an earlier version, with pickles)"
            problem = file_problem(folder / name, entry)
            if problem:
                return problem
        return None

    def _step_folders(self) -> list[tuple[int, Path]]:
        """`step-N` folders in numeric order of N (step-10000000 after step-9999999)."""
        if not self.directory.is_dir():
            return []
        found = ((STEP_FOLDER.fullmatch(p.name), p) for p in self.directory.iterdir() if p.is_dir())
        return sorted((int(match.group(1)), p) for match, p in found if match)

    def complete(self) -> list[Path]:
        """Complete, verified checkpoints, oldest first (`best/` is not among them)."""
        return [p for _, p in self._step_folders() if self.problem(p) is None]

    def latest(self) -> Path | None:
        """The newest complete checkpoint; broken ones are reported and skipped, leftover `.tmp-*` folders removed."""
        if not self.directory.is_dir():
            return None
        if _is_main_process():
            self._remove_leftovers()
        for _, folder in reversed(self._step_folders()):
            problem = self.problem(folder)
            if problem is None:
                return folder
            self.log(f"Skipping checkpoint {folder}: {problem}.")
        return None

    def best(self) -> Path | None:
        """The checkpoint kept as best (`save(..., best=True)`), if there is one and it is complete."""
        folder = self.directory / BEST
        if not folder.is_dir():
            return None
        problem = self.problem(folder)
        if problem is not None:
            self.log(f"Skipping the best checkpoint {folder}: {problem}.")
            return None
        return folder

    def load(self, folder: str | os.PathLike, accelerator, objects: TrainingObjects) -> None:
        """Restore `objects` from `folder` after verifying it: weights, optimizer, schedule, random states and the
        TrainState."""
        from safetensors.torch import load_file

        _check_supported(accelerator)
        folder = Path(folder)
        problem = self.problem(folder, rank=accelerator.process_index)
        if problem is not None:
            raise CheckpointError(f"Cannot load checkpoint {folder}: {problem}.")
        saved_state = json.loads((folder / TRAIN_STATE_FILE).read_text())
        type(objects.state)().load_state_dict(saved_state)  # unknown fields raise before anything is loaded
        saved_random = json.loads((folder / rng_file(accelerator.process_index)).read_text())
        saved_optimizer = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        _check_weight_decay(saved_optimizer, objects.optimizer, folder)
        weights = load_file(str(folder / WEIGHTS_FILE))
        load_model_weights(accelerator.unwrap_model(objects.model), weights, folder / WEIGHTS_FILE)
        objects.optimizer.load_state_dict(saved_optimizer)
        objects.scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, map_location="cpu", weights_only=True))
        if getattr(accelerator, "scaler", None) is not None and (folder / SCALER_FILE).is_file():
            accelerator.scaler.load_state_dict(torch.load(folder / SCALER_FILE, map_location="cpu", weights_only=True))
        objects.state.load_state_dict(saved_state)
        set_rng_state(accelerator, saved_random)


# Processes, stored weights


def _check_weight_decay(saved: dict, optimizer, folder: Path) -> None:
    """A resumed run keeps its --weight-decay: torch would fail deep inside on Adam against AdamW's two groups, or
    quietly keep the saved decay over the one asked for."""
    saved_decay = max((group.get("weight_decay", 0.0) for group in saved.get("param_groups", [])), default=0.0)
    asked = max((group.get("weight_decay", 0.0) for group in optimizer.param_groups), default=0.0)
    if saved_decay != asked:
        raise CheckpointError(f"Cannot resume from {folder}: it was trained with --weight-decay {saved_decay:g}, this "
                              f"run asks for {asked:g}. Resume with --weight-decay {saved_decay:g}, or start a new "
                              "--output-dir.")


def _check_supported(accelerator) -> None:
    kind = getattr(accelerator.distributed_type, "value", str(accelerator.distributed_type))
    if kind in UNSUPPORTED:
        raise CheckpointError(f"Checkpoints of {kind} runs are not supported: their optimizer state is sharded "
                              "across processes, and this format stores one optimizer state.")


def _all_succeeded(accelerator, succeeded: bool) -> bool:
    """A barrier that also tells every process whether all succeeded."""
    if accelerator.num_processes == 1:
        return succeeded
    flags = accelerator.gather(torch.tensor([0 if succeeded else 1], device=accelerator.device))
    return int(flags.sum()) == 0


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _storable(weights: dict[str, torch.Tensor], tied: set[str]) -> dict[str, torch.Tensor]:
    """The state dict as safetensors accepts it: a tied copy (one of `tied`, the same tensor as another) is left
    out, as `save_pretrained` does; other tensors that share memory are stored as copies."""
    kept: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}  # storage address -> the first tensor stored from it
    for name in sorted(weights, key=lambda n: n in tied):  # sources before tied copies
        tensor = weights[name].detach()
        address = tensor.untyped_storage().data_ptr()
        first = seen.get(address)
        if first is None:
            seen[address] = tensor
            kept[name] = tensor.contiguous()
        elif name in tied and _same_view(tensor, first):
            continue
        else:
            kept[name] = tensor.clone().contiguous()
    return {name: kept[name] for name in weights if name in kept}


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.data_ptr(), a.shape, a.stride(), a.dtype) == (b.data_ptr(), b.shape, b.stride(), b.dtype)
