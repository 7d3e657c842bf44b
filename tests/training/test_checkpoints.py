"""Checkpoints (issue 13, items 7 and 9): a format without pickles, verified by sha256, written durably and atomically,
ordered by step number, the last K kept beside `best/`, and still averaged as in section 6.1.

Every test writes real checkpoints of the tiny model through a real `Accelerator(cpu=True)`, with Adam and the
Eq. (3) LambdaLR after a few real updates.
"""

import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_vanilla.training.averaging import average_checkpoints, load_averaged_weights
from modeling_vanilla.training.checkpoints import (
    COMPLETE_MARKER,
    CheckpointError,
    CheckpointManager,
    TrainingObjects,
    TrainState,
)
from tests.helpers import REPO_ROOT, random_batch

pytestmark = pytest.mark.usefixtures("one_thread")

FILES = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_0.json", "train_state.json", COMPLETE_MARKER}


@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)


@dataclass
class Training:
    """The prepared objects of a run, as the trainer holds them."""

    model: torch.nn.Module
    optimizer: object
    scheduler: object
    state: TrainState

    def objects(self) -> TrainingObjects:
        return TrainingObjects(self.model, self.optimizer, self.scheduler, self.state)

    def update(self, seed: int) -> float:
        """One optimizer update on a random batch (drawn from its own generator, not the global streams)."""
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        input_ids, attention_mask, labels = random_batch(99)
        torch.set_rng_state(generator_state)
        loss = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.state.step += 1
        return loss.item()


def new_training(accelerator, seed: int = 0, updates: int = 0, weight_decay: float = 0.0) -> Training:
    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
    from modeling_vanilla.training.optimization import build_optimizer, build_scheduler

    torch.manual_seed(seed)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(dropout=0.0))
    optimizer = build_optimizer(model, weight_decay)  # Adam, section 5.3 (AdamW with a weight decay)
    scheduler = build_scheduler(optimizer, model.config.d_model, warmup_steps=4)  # LambdaLR, Eq. (3)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    training = Training(model, optimizer, scheduler, TrainState())
    for update in range(updates):
        training.update(seed=100 + update)
    return training


def weights(training: Training) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in training.model.state_dict().items()}


def assert_same_tensors(a, b):
    """Nested state dicts (tensors, numbers, lists, dicts) are equal, tensors exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tensors(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tensors(x, y)
    else:
        assert a == b


def random_draws() -> tuple:
    return torch.rand(4), random.random(), float(np.random.rand())


def corrupt_keeping_size(path: Path) -> None:
    """Flip bytes near the end of the file (tensor data, not the header): the size stays, the content changes."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 16, len(data) - 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# Save and load


def test_save_then_load_restores_weights_optimizer_schedule_random_streams_and_train_state(tmp_path, accelerator):
    training = new_training(accelerator, seed=0, updates=3)
    training.state.epoch, training.state.batch_in_epoch, training.state.tokens_seen = 1, 7, 1234
    training.state.elapsed_seconds = 12.5
    training.state.history = [{"step": 2, "valid_loss": 4.25, "bleu": 1.5, "split": "valid"}]
    manager = CheckpointManager(tmp_path, keep=None)
    folder = manager.save(accelerator, 3, training.objects())
    expected = random_draws()  # the random streams right after the save

    fresh = new_training(accelerator, seed=1)
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # streams elsewhere before the load
    manager.load(folder, accelerator, fresh.objects())

    assert_same_tensors(weights(training), weights(fresh))
    assert_same_tensors(training.optimizer.state_dict(), fresh.optimizer.state_dict())
    assert_same_tensors(training.scheduler.state_dict(), fresh.scheduler.state_dict())
    assert fresh.state == training.state
    drawn = random_draws()
    assert torch.equal(drawn[0], expected[0]) and drawn[1:] == expected[1:]
    # The next update is the same from the saved run and from the loaded one.
    assert fresh.update(seed=7) == training.update(seed=7)
    assert_same_tensors(weights(training), weights(fresh))


def test_a_run_resumes_with_its_own_weight_decay_or_not_at_all(tmp_path, accelerator):
    """A checkpoint of AdamW resumes AdamW exactly; Adam <-> AdamW, or another decay, is refused before any loading."""
    training = new_training(accelerator, updates=2, weight_decay=0.1)
    manager = CheckpointManager(tmp_path, keep=None)
    folder = manager.save(accelerator, 2, training.objects())
    same = new_training(accelerator, seed=1, weight_decay=0.1)
    manager.load(folder, accelerator, same.objects())
    assert same.update(seed=7) == training.update(seed=7)
    assert_same_tensors(weights(training), weights(same))

    for asked in (0.0, 0.01):
        other = new_training(accelerator, seed=1, weight_decay=asked)
        untouched = weights(other)
        with pytest.raises(CheckpointError, match=f"trained with --weight-decay 0.1, this run asks for {asked:g}. "
                                                  "Resume with --weight-decay 0.1"):
            manager.load(folder, accelerator, other.objects())
        assert_same_tensors(weights(other), untouched)
    adam_folder = manager.save(accelerator, 3, new_training(accelerator, updates=1).objects())
    with pytest.raises(CheckpointError, match="trained with --weight-decay 0, this run asks for 0.1"):
        manager.load(adam_folder, accelerator, new_training(accelerator, weight_decay=0.1).objects())


def test_tied_weights_are_stored_once_and_tied_again_after_load(tmp_path, accelerator):
    from safetensors import safe_open

    training = new_training(accelerator, updates=1)
    folder = CheckpointManager(tmp_path).save(accelerator, 1, training.objects())
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert "model.shared.weight" in stored
    assert not {"lm_head.weight", "model.decoder.embed_tokens.weight", "model.encoder.embed_tokens.weight"} & stored
    fresh = new_training(accelerator, seed=1)
    CheckpointManager(tmp_path).load(folder, accelerator, fresh.objects())
    model = accelerator.unwrap_model(fresh.model)
    assert model.lm_head.weight is model.model.encoder.embed_tokens.weight is model.model.shared.weight
    assert torch.equal(model.lm_head.weight, accelerator.unwrap_model(training.model).lm_head.weight)


def test_train_state_fields_missing_from_the_json_take_defaults_and_unknown_ones_are_refused():
    state = TrainState(step=5, history=[{"step": 5}])
    state.load_state_dict({"step": 9, "epoch": 2})
    assert state == TrainState(step=9, epoch=2)
    with pytest.raises(CheckpointError, match="does not know: \\['bogus'\\]"):
        state.load_state_dict({"step": 1, "bogus": 3})


# No pickles


class _WritesAFile:
    """A pickle that creates a folder when unpickled: what a run folder from elsewhere could hold."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_no_pickle_is_written_and_a_planted_pickle_is_refused_without_running(tmp_path, accelerator):
    training = new_training(accelerator, updates=1)
    messages = []
    manager = CheckpointManager(tmp_path / "checkpoints", log=messages.append)
    folder = manager.save(accelerator, 1, training.objects())
    assert {p.name for p in folder.rglob("*")} == FILES
    assert not list(tmp_path.rglob("*.pkl"))

    ran = tmp_path / "the-pickle-ran"
    (folder / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_WritesAFile(ran)))
    with pytest.raises(CheckpointError, match="custom_checkpoint_0.pkl, a pickle"):
        manager.load(folder, accelerator, new_training(accelerator, seed=1).objects())
    assert manager.latest() is None
    assert any("step-0000001" in m and "custom_checkpoint_0.pkl" in m for m in messages)
    assert not ran.exists()
    # Listing the pickle in the marker, with its hash, does not make it loadable.
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    data = (folder / "custom_checkpoint_0.pkl").read_bytes()
    marker["files"]["custom_checkpoint_0.pkl"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / COMPLETE_MARKER).write_text(json.dumps(marker))
    with pytest.raises(CheckpointError, match="a pickle"):
        manager.load(folder, accelerator, new_training(accelerator, seed=1).objects())
    assert not ran.exists()
    pickle.loads(data)  # the planted file was a real threat
    assert ran.exists()


def test_a_file_not_listed_in_the_marker_is_refused(tmp_path, accelerator):
    training = new_training(accelerator)
    manager = CheckpointManager(tmp_path)
    folder = manager.save(accelerator, 1, training.objects())
    (folder / "random_states_0.bin").write_bytes(b"not ours")
    with pytest.raises(CheckpointError, match="random_states_0.bin is not listed in its marker"):
        manager.load(folder, accelerator, training.objects())


# Integrity


def test_the_marker_records_the_size_and_sha256_of_every_file(tmp_path, accelerator):
    folder = CheckpointManager(tmp_path).save(accelerator, 2, new_training(accelerator, updates=2).objects())
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["step"] == 2 and marker["processes"] == 1
    assert set(marker["files"]) == FILES - {COMPLETE_MARKER}
    for name, entry in marker["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_same_size_corruption_is_skipped_by_latest_naming_the_file_and_refused_by_load(tmp_path, accelerator):
    from safetensors.torch import load_file

    training = new_training(accelerator, updates=1)
    messages = []
    manager = CheckpointManager(tmp_path, keep=None, log=messages.append)
    manager.save(accelerator, 4, training.objects())
    training.update(seed=5)
    broken = manager.save(accelerator, 8, training.objects())
    assert manager.latest() == broken  # hashed once here; the cache must see the change below

    corrupt_keeping_size(broken / "model.safetensors")
    load_file(str(broken / "model.safetensors"))  # still a valid file: only the hash tells
    assert manager.latest() == manager.path(4)
    assert f"Skipping checkpoint {broken}: model.safetensors does not match its sha256 in the marker." in messages
    assert manager.complete() == [manager.path(4)]
    with pytest.raises(CheckpointError, match="step-0000008: model.safetensors does not match its sha256"):
        manager.load(broken, accelerator, new_training(accelerator, seed=1).objects())
    with pytest.raises(ValueError, match="model.safetensors does not match its sha256"):
        average_checkpoints([manager.path(4), broken])


def test_a_checkpoint_of_the_earlier_format_is_skipped_as_such(tmp_path, accelerator):
    messages = []
    manager = CheckpointManager(tmp_path, log=messages.append)
    folder = manager.save(accelerator, 1, new_training(accelerator).objects())
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    marker["files"] = {name: entry["size"] for name, entry in marker["files"].items()}  # sizes only, as before
    (folder / COMPLETE_MARKER).write_text(json.dumps(marker))
    assert manager.latest() is None
    assert any("no sha256" in m and "earlier version" in m for m in messages)


def test_stale_temporary_folders_are_removed_at_save_and_at_resume(tmp_path, accelerator):
    training = new_training(accelerator)
    messages = []
    manager = CheckpointManager(tmp_path, log=messages.append)
    (tmp_path / ".tmp-step-0000004").mkdir()
    (tmp_path / ".tmp-step-0000004" / "model.safetensors").write_bytes(b"half")
    manager.save(accelerator, 5, training.objects())
    assert not (tmp_path / ".tmp-step-0000004").exists()
    assert any(".tmp-step-0000004" in m and "Removing" in m for m in messages)

    (tmp_path / ".tmp-step-0000009").mkdir()
    assert manager.latest() == manager.path(5)
    assert not (tmp_path / ".tmp-step-0000009").exists()
    assert any(".tmp-step-0000009" in m and "Removing" in m for m in messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000005"]


def test_a_failed_write_raises_removes_its_temporary_folder_and_keeps_earlier_checkpoints(tmp_path, accelerator,
                                                                                            monkeypatch):
    training = new_training(accelerator)
    manager = CheckpointManager(tmp_path, keep=1)
    manager.save(accelerator, 1, training.objects())

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="step-0000002 failed.*No space left on device"):
        manager.save(accelerator, 2, training.objects())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000001"]
    assert manager.latest() == manager.path(1)


def test_checkpoints_are_ordered_by_step_number_past_9999999(tmp_path, accelerator):
    training = new_training(accelerator)
    manager = CheckpointManager(tmp_path, keep=None)
    assert manager.path(5).name == "step-0000005"
    for step in (10_000_000, 9_999_999, 2):
        manager.save(accelerator, step, training.objects())
    assert [p.name for p in manager.complete()] == ["step-0000002", "step-9999999", "step-10000000"]
    assert manager.latest().name == "step-10000000"
    CheckpointManager(tmp_path, keep=1).save(accelerator, 10_000_001, training.objects())  # prunes the older ones
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-10000001"]


# Keeping the last K and the best


def test_keep_2_prunes_older_checkpoints_and_best_survives_pruning(tmp_path, accelerator):
    training = new_training(accelerator)
    manager = CheckpointManager(tmp_path, keep=2)
    best_weights = None
    for step in (1, 2, 3, 4):
        training.update(seed=step)
        manager.save(accelerator, step, training.objects(), best=step == 2)
        if step == 2:
            best_weights = weights(training)
    assert [p.name for p in manager.complete()] == ["step-0000003", "step-0000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step-0000003", "step-0000004"]
    assert manager.best() == tmp_path / "best"
    assert json.loads((tmp_path / "best" / COMPLETE_MARKER).read_text())["step"] == 2
    assert manager.latest().name == "step-0000004"

    fresh = new_training(accelerator, seed=1)
    manager.load(manager.best(), accelerator, fresh.objects())
    assert fresh.state.step == 2
    assert_same_tensors(weights(fresh), best_weights)

    manager.save(accelerator, 5, training.objects(), best=True)  # a new best replaces the old one
    assert json.loads((tmp_path / "best" / COMPLETE_MARKER).read_text())["step"] == 5
    assert [p.name for p in manager.complete()] == ["step-0000004", "step-0000005"]


def test_no_best_until_one_is_saved_and_a_broken_best_is_reported(tmp_path, accelerator):
    messages = []
    manager = CheckpointManager(tmp_path, log=messages.append)
    training = new_training(accelerator)
    manager.save(accelerator, 1, training.objects())
    assert manager.best() is None
    manager.save(accelerator, 2, training.objects(), best=True)
    corrupt_keeping_size(tmp_path / "best" / "optimizer.pt")
    assert manager.best() is None
    assert any("best" in m and "optimizer.pt does not match its sha256" in m for m in messages)


@pytest.mark.parametrize("keep", [0, -1])
def test_keep_checkpoints_below_1_is_refused_naming_the_flag(tmp_path, keep):
    with pytest.raises(ValueError, match="--keep-checkpoints must be an integer >= 1"):
        CheckpointManager(tmp_path, keep=keep)


# Section 6.1: averaging


def test_averaging_takes_the_mean_of_new_checkpoints_and_of_saved_model_folders(tmp_path, accelerator):
    training = new_training(accelerator)
    manager = CheckpointManager(tmp_path / "checkpoints", keep=None)
    saved = []
    for step in (1, 2, 3):
        training.update(seed=step)
        manager.save(accelerator, step, training.objects())
        saved.append(weights(training))
    averaged = average_checkpoints(manager.complete())
    for name, tensor in averaged.items():
        torch.testing.assert_close(tensor, sum(w[name] for w in saved) / 3)

    model = accelerator.unwrap_model(new_training(accelerator, seed=1).model)
    load_averaged_weights(model, averaged)
    assert model.lm_head.weight is model.model.encoder.embed_tokens.weight
    torch.testing.assert_close(model.lm_head.weight, averaged["model.shared.weight"])

    # A model folder written by save_pretrained averages with a checkpoint: the same keys.
    accelerator.unwrap_model(training.model).save_pretrained(tmp_path / "model")
    mixed = average_checkpoints([manager.path(3), tmp_path / "model"])
    for name, tensor in mixed.items():
        torch.testing.assert_close(tensor, saved[2][name])


# Several processes


TWO_PROCESSES = """
import json, random, sys
from pathlib import Path
import numpy as np, torch
from accelerate import Accelerator
import modeling_vanilla.training.checkpoints as checkpoints
from tests.training.test_checkpoints import new_training, random_draws, weights

accelerator = Accelerator(cpu=True)
rank, directory = accelerator.process_index, Path(sys.argv[1])
training = new_training(accelerator, updates=2)
torch.manual_seed(10 + rank), random.seed(10 + rank), np.random.seed(10 + rank)  # each process its own streams
manager = checkpoints.CheckpointManager(directory)
folder = manager.save(accelerator, 2, training.objects())
expected = random_draws()
fresh = new_training(accelerator, seed=1)
manager.load(folder, accelerator, fresh.objects())
drawn = random_draws()
result = {"same_draws": bool(torch.equal(drawn[0], expected[0])) and drawn[1:] == expected[1:],
          "draw": drawn[1], "same_weights": all(torch.equal(a, b) for a, b in
                                                zip(weights(training).values(), weights(fresh).values()))}
if rank == 1:  # a full disk in the second process only
    def disk_full(path, text):
        raise OSError(28, "No space left on device")
    checkpoints.write_text = disk_full
try:
    manager.save(accelerator, 3, training.objects())
except checkpoints.CheckpointError as error:
    result["error"] = str(error)
(directory.parent / f"result_{rank}.json").write_text(json.dumps(result))  # not stdout: two processes interleave
"""


@pytest.mark.slow
def test_two_processes_restore_their_own_random_states_and_a_failure_in_one_raises_in_both(tmp_path):
    script = tmp_path / "two_processes.py"
    script.write_text(TWO_PROCESSES)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, str(script), str(tmp_path / "checkpoints")], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {int(path.stem.split("_")[1]): json.loads(path.read_text()) for path in tmp_path.glob("result_*.json")}
    assert set(results) == {0, 1}
    assert all(r["same_draws"] and r["same_weights"] for r in results.values())
    assert results[0]["draw"] != results[1]["draw"]  # two streams, each restored from its own file
    assert "failed (write) in another process" in results[0]["error"]
    assert "No space left on device" in results[1]["error"]
    folder = tmp_path / "checkpoints" / "step-0000002"
    assert {p.name for p in folder.iterdir()} == FILES | {"rng_state_1.json"}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000002"]
