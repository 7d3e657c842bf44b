"""Section 5's recipe and the training script: schedule, label smoothing, checkpoints, resume, processes."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_vanilla.data.toy_corpus import write_toy_corpus
from modeling_vanilla.training.averaging import average_checkpoints
from modeling_vanilla.training.checkpoints import COMPLETE_MARKER, CheckpointManager, TrainingObjects, TrainState
from modeling_vanilla.training.optimization import (
    build_optimizer,
    build_scheduler,
    inverse_sqrt_learning_rate,
    linear_cooldown,
)
from tests.helpers import REPO_ROOT

# Section 5.3: Eq. (3)


@pytest.mark.parametrize("step", [1, 4000, 40000])
def test_lr_schedule_matches_eq_3(step):
    d_model, warmup = 512, 4000
    expected = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
    assert inverse_sqrt_learning_rate(step, d_model, warmup) == pytest.approx(expected, rel=1e-12)
    # The scheduler hands the optimizer that rate for update number `step`.
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model)
    scheduler = build_scheduler(optimizer, d_model, warmup)
    for _ in range(step - 1):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)


def test_lr_peaks_at_warmup_and_scale_multiplies():
    rates = [inverse_sqrt_learning_rate(s, 512, 4000) for s in (3999, 4000, 4001)]
    assert rates[1] > rates[0] and rates[1] > rates[2]
    assert rates[1] == pytest.approx(512**-0.5 * 4000**-0.5)
    assert inverse_sqrt_learning_rate(10, 512, 4000, scale=2.0) == pytest.approx(2 * inverse_sqrt_learning_rate(10, 512, 4000))


def test_adam_hyperparameters_section_5_3():
    group = build_optimizer(torch.nn.Linear(2, 2)).param_groups[0]
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-9


def test_weight_decay_shrinks_matrices_and_embeddings_but_not_biases_or_layer_norm():
    """--weight-decay (not in the paper): AdamW's decoupled decay, w <- w * (1 - rate * decay), on >= 2-D tensors."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer(model, weight_decay=0.1)
    assert isinstance(optimizer, torch.optim.AdamW) and not isinstance(build_optimizer(model), torch.optim.AdamW)
    for group in optimizer.param_groups:
        group["lr"] = 0.5
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: the update is the decay alone
    optimizer.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.5 * 0.1 if p.dim() >= 2 else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)
    assert sum(p.dim() >= 2 for p in model.parameters()) == 2 and sum(p.dim() < 2 for p in model.parameters()) == 3


# Section 5.4: label smoothing


def test_label_smoothing_matches_the_smoothed_target_distribution():
    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(vocab_size=7, dropout=0.0)).eval()
    input_ids = torch.tensor([[4, 5, 6, 2], [5, 4, 2, 0]])
    labels = torch.tensor([[4, 5, 2], [6, 2, -100]])
    out = model(input_ids=input_ids, attention_mask=(input_ids != 0).long(), labels=labels, label_smoothing=0.1)
    expected = []
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]:
        log_p = torch.log_softmax(out.logits[b, t], -1)
        target = torch.full((7,), 0.1 / 7)  # epsilon spread uniformly over the vocabulary ...
        target[labels[b, t]] += 0.9  # ... and 1 - epsilon on the reference token
        expected.append(-(target * log_p).sum())
    torch.testing.assert_close(out.loss, torch.stack(expected).mean())
    # Projecting only the target positions gives the same loss, without the (B, T, V) logits.
    lean = model(input_ids=input_ids, attention_mask=(input_ids != 0).long(), labels=labels, label_smoothing=0.1,
                 output_logits=False)
    assert lean.logits is None
    torch.testing.assert_close(lean.loss, out.loss)
    plain = model(input_ids=input_ids, attention_mask=(input_ids != 0).long(), labels=labels)
    keep = labels != -100
    torch.testing.assert_close(plain.loss, torch.nn.functional.cross_entropy(out.logits[keep], labels[keep]))


# Checkpoints


def tiny_checkpoint_run():
    """A real Accelerator(cpu=True) and the smallest prepared model, optimizer and schedule, for CheckpointManager."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return accelerator, TrainingObjects(model, optimizer, scheduler, TrainState())


def test_checkpoints_keep_the_last_k_and_skip_incomplete_ones(tmp_path):
    accelerator, objects = tiny_checkpoint_run()
    messages = []
    manager = CheckpointManager(tmp_path, keep=2, log=messages.append)
    for step in (1, 2, 3):
        objects.state.step = step
        manager.save(accelerator, step, objects)
    assert [p.name for p in manager.complete()] == ["step-0000002", "step-0000003"]
    assert manager.latest().name == "step-0000003"

    # A crash mid-write: the temporary folder never got its marker, is never picked, and is removed at resume.
    (tmp_path / ".tmp-step-0000004").mkdir()
    # Corrupt the newest: a file shorter than the marker says.
    weights = tmp_path / "step-0000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:10])
    assert manager.latest().name == "step-0000002"
    assert any("step-0000003" in m and "bytes" in m for m in messages)
    assert any(".tmp-step-0000004" in m for m in messages)
    assert not (tmp_path / ".tmp-step-0000004").exists()

    (tmp_path / "step-0000002" / COMPLETE_MARKER).unlink()
    assert manager.latest() is None
    assert any("no completion marker" in m for m in messages)


def test_average_checkpoints_is_the_elementwise_mean(tmp_path):
    accelerator, objects = tiny_checkpoint_run()
    manager = CheckpointManager(tmp_path, keep=None)
    for step, value in ((1, 1.0), (2, 2.0), (3, 6.0)):
        with torch.no_grad():
            for parameter in objects.model.parameters():
                parameter.fill_(value)
        manager.save(accelerator, step, objects)
    averaged = average_checkpoints(manager.complete())
    torch.testing.assert_close(averaged["weight"], torch.full((2, 2), 3.0))
    torch.testing.assert_close(averaged["bias"], torch.full((2,), 3.0))
    (tmp_path / "odd").mkdir()
    save_file({"other": torch.zeros(1)}, str(tmp_path / "odd" / "model.safetensors"))
    with pytest.raises(ValueError, match="different parameters"):
        average_checkpoints([manager.complete()[0], tmp_path / "odd"])
    with pytest.raises(FileNotFoundError, match="not a checkpoint or model folder"):
        average_checkpoints([tmp_path / "missing"])


# The training script, end to end on generated data


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("toy"), train=400, valid=40, test=40, seed=1)


def train_args(toy_data, output_dir, *extra):
    return ["--preset", "tiny", "--source-lang", "en", "--target-lang", "de",
            "--train-files", str(toy_data / "train"), "--valid-files", str(toy_data / "valid"),
            "--vocab-size", "300", "--max-tokens", "512", "--max-length", "64", "--warmup-steps", "20",
            "--output-dir", str(output_dir), "--bleu-sentences", "8", "--num-beams", "2", "--log-every", "1",
            "--override", "dropout=0.0", *extra]


def run_train(args, env=None, launcher=None, script=None):
    """vanilla-train in a fresh process (`scripts/train.py`, or `script`: one that installs a test's hook first)."""
    command = (launcher or [sys.executable]) + [str(script or REPO_ROOT / "scripts" / "train.py"), *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


# The command with a hook installed in its process, as the tests below need it in a fresh process (or in each of
# several under `accelerate launch`), where monkeypatch cannot reach: the hook wraps a function of the package, then
# the script runs the command as scripts/train.py does (a CPU run that restarts itself on jemalloc runs it again).
HOOKED_TRAIN = """
from modeling_vanilla.cli.train import main

{hook}
raise SystemExit(main())
"""

# A cluster's signal (or SIGKILL) after update STEP and any checkpoint it writes.
SIGNAL_AFTER_STEP = """
import os
from modeling_vanilla.training import loop

def validate_and_save_then_signal(run, corpus, progress, real=loop.validate_and_save):
    real(run, corpus, progress)
    if run.state.step == {step}:
        os.kill(os.getpid(), {signum})

loop.validate_and_save = validate_and_save_then_signal
"""

# Process 1's clock reads 6 seconds (0.1 minutes) more than the others' (RANK is set by `accelerate launch`).
CLOCK_AHEAD = """
import os
from modeling_vanilla.training.clock import Clock

if os.environ.get("RANK") == "1":
    own_minutes = Clock.minutes
    Clock.minutes = lambda self: own_minutes(self) + 0.1
"""


def hooked_train_script(folder, hook: str):
    """A training script in `folder` that installs `hook` (Python code) before it runs vanilla-train."""
    script = folder / "train_with_hook.py"
    script.write_text(HOOKED_TRAIN.format(hook=hook))
    return script


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_script_writes_a_hub_ready_folder(toy_data, tmp_path, precision):
    from modeling_vanilla.cli.train import run as main

    out = tmp_path / "run"
    summary = main(train_args(toy_data, out, "--max-steps", "6", "--precision", precision, "--eval-every", "3",
                              "--save-every", "3", "--average-last", "2", "--test-files", str(toy_data / "test"),
                              "--card-dataset", "bentrevett/multi30k"))
    assert summary["step"] == 6 and summary["averaged_checkpoints"] == 2 and summary["precision"] == precision
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "modeling_vanilla.py", "configuration_vanilla.py", "README.md", "metrics.jsonl"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "{{" not in card and "pipeline_tag: translation" in card and "BLEU" in card
    # The card's metadata is what the Hub (and vanilla-push) accepts.
    from modeling_vanilla.publish.model_card import card_metadata, metadata_problems

    metadata = card_metadata(card)
    assert metadata_problems(metadata) == []
    assert metadata["datasets"] == ["bentrevett/multi30k"] and metadata["language"] == ["en", "de"]
    assert summary["test"]["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert sum("valid_ppl" in r for r in records) >= 2
    # The folder loads like any Hub model.
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    output = model.generate(**tokenizer(["A man is riding a bicycle."], return_tensors="pt"), max_new_tokens=5)
    assert output.shape[0] == 1


@pytest.mark.slow
def test_resume_after_sigkill_matches_the_straight_run(toy_data, tmp_path):
    straight = run_train(train_args(toy_data, tmp_path / "straight", "--max-steps", "8", "--precision", "fp32",
                                    "--eval-every", "0", "--save-every", "4"))
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = run_train(train_args(toy_data, tmp_path / "resumed", "--max-steps", "8", "--precision", "fp32",
                                  "--eval-every", "0", "--save-every", "4"),
                       script=hooked_train_script(tmp_path, SIGNAL_AFTER_STEP.format(signum=9, step=4)))
    assert killed.returncode == -9, killed.stderr[-3000:]  # died by SIGKILL, after writing checkpoint 4
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    resumed = run_train(train_args(toy_data, tmp_path / "resumed", "--max-steps", "8", "--precision", "fp32",
                                   "--eval-every", "0", "--save-every", "4", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout + resumed.stderr and "step 4" in resumed.stdout + resumed.stderr

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6

    # An interrupted (incomplete) newest checkpoint is detected and skipped on resume, with a message.
    (tmp_path / "resumed" / "checkpoints" / "step-0000008" / COMPLETE_MARKER).unlink()
    again = run_train(train_args(toy_data, tmp_path / "resumed", "--max-steps", "8", "--precision", "fp32",
                                 "--eval-every", "0", "--save-every", "4", "--resume"))
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert "Skipping checkpoint" in log and "step-0000008" in log and "Resumed from" in log and "step 4" in log


def test_linear_cooldown_is_one_before_the_last_fraction_then_falls_to_zero():
    assert [linear_cooldown(spent, 0.2) for spent in (0.0, 0.5, 0.8, 0.9, 0.95, 1.0)] == pytest.approx(
        [1.0, 1.0, 1.0, 0.5, 0.25, 0.0])
    assert linear_cooldown(0.99, 0.0) == 1.0  # off: Eq. (3) alone, as in the paper
    assert linear_cooldown(0.25, 1.0) == pytest.approx(0.75)  # the whole run


def test_the_budget_spent_is_the_largest_part_over_steps_epochs_and_minutes():
    import argparse
    import time
    from types import SimpleNamespace

    from modeling_vanilla.training.run import Run

    def run(processes=1, **limits):
        args = argparse.Namespace(**{"max_steps": None, "max_epochs": None, "max_minutes": None, **limits})
        return Run(args=args, accelerator=SimpleNamespace(num_processes=processes), out=None)

    steps = run(max_steps=200)
    assert steps.budget_spent(50, epoch_batches=10) == pytest.approx(0.25)
    epochs = run(max_epochs=4, max_steps=1000)
    epochs.state.epoch, epochs.state.batch_in_epoch = 1, 5
    assert epochs.budget_spent(10, epoch_batches=10) == pytest.approx(1.5 / 4)  # epochs end first
    minutes = run(max_minutes=60.0, max_steps=10**6)
    minutes.state.elapsed_seconds, minutes.clock.started = 45 * 60, time.time()  # resumed after 45 minutes
    assert minutes.budget_spent(1, epoch_batches=10) == pytest.approx(0.75, abs=1e-3)
    assert run(max_steps=10).budget_spent(12, epoch_batches=10) == 1.0  # never more than the whole budget
    # Several processes read the clock they last agreed on (every AGREE_EVERY updates), not their own.
    shared = run(processes=2, max_minutes=60.0)
    shared.clock.started = time.time() - 20 * 60
    assert shared.budget_spent(1, epoch_batches=10) == 0.0  # nothing agreed yet
    shared.clock.agreed_minutes = 30.0
    assert shared.budget_spent(1, epoch_batches=10) == pytest.approx(0.5)


def test_lr_cooldown_changes_nothing_before_the_last_part_then_decays_to_zero(toy_data, tmp_path):
    from modeling_vanilla.cli.train import run as train

    common = ("--max-steps", "20", "--precision", "fp32", "--eval-every", "0", "--save-every-minutes", "0")
    train(train_args(toy_data, tmp_path / "plain", *common))
    train(train_args(toy_data, tmp_path / "cooled", *common, "--lr-cooldown", "0.5"))

    def logged(out):
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                if "loss" in json.loads(line)]

    plain, cooled = logged(tmp_path / "plain"), logged(tmp_path / "cooled")
    assert [r["step"] for r in cooled] == list(range(1, 21))
    d_model = json.loads((tmp_path / "cooled" / "config.json").read_text())["d_model"]
    for row in cooled:  # update n takes Eq. (3) at n times the factor after n - 1 of the 20 updates
        factor = min(1.0, (1 - (row["step"] - 1) / 20) / 0.5)
        assert row["lr"] == pytest.approx(inverse_sqrt_learning_rate(row["step"], d_model, 20) * factor, rel=1e-9)
    assert [r["lr"] for r in plain] == pytest.approx([inverse_sqrt_learning_rate(n, d_model, 20) for n in
                                                      range(1, 21)], rel=1e-9)
    # Updates 1 to 11 take the same rates, so the losses up to update 12 (measured before it) are the same.
    assert [r["loss"] for r in cooled[:12]] == [r["loss"] for r in plain[:12]]
    assert cooled[-1]["loss"] != plain[-1]["loss"]


@pytest.mark.slow
def test_two_processes_agree_on_the_clock_when_theirs_differ(toy_data, tmp_path):
    """--max-minutes, --save-every-minutes and --lr-cooldown read a clock both processes agree on. Here process 1's
    clock runs 6 seconds ahead: reading their own clocks, it would stop 6 seconds before process 0 and leave process
    0 waiting for its gradients (a hang), and the two would set different rates during the cooldown."""
    pytest.importorskip("accelerate")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    out = tmp_path / "two"
    args = train_args(toy_data, out, "--max-minutes", "0.25", "--precision", "fp32", "--eval-every", "0",
                      "--save-every-minutes", "0.05", "--keep-checkpoints", "20", "--lr-cooldown", "0.5",
                      "--log-every", "10")
    command = launcher + [str(hooked_train_script(tmp_path, CLOCK_AHEAD)), *args]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["processes"] == 2 and summary["step"] % 10 == 0  # both stopped at an update they agreed on
    # Process 0 (whose time the summary gives) stopped at the agreed 15 seconds, ~9 of its own: the larger clock wins.
    assert summary["train_minutes"] < 0.25 - 0.05, summary
    rates = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    assert rates[-1] < 0.2 * max(rates)  # the cooldown reached its end with the agreed budget
    saved = sorted((out / "checkpoints").glob("step-*"))
    assert len(saved) >= 2 and saved[-1].name == f"step-{summary['step']:07d}"


@pytest.mark.slow
def test_two_processes_match_one_process_with_update_freq_2(toy_data, tmp_path):
    pytest.importorskip("accelerate")
    common = ["--max-steps", "4", "--precision", "fp32", "--eval-every", "0", "--max-tokens", "256"]
    single = run_train(train_args(toy_data, tmp_path / "one", *common, "--update-freq", "2"))
    assert single.returncode == 0, single.stderr[-3000:]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    double = run_train(train_args(toy_data, tmp_path / "two", *common, "--update-freq", "1"), launcher=launcher)
    assert double.returncode == 0, double.stderr[-3000:]
    assert "2 process(es)" in double.stdout + double.stderr

    def losses(out, key="loss"):
        return [json.loads(line)[key] for line in (out / "metrics.jsonl").read_text().splitlines()
                if "loss" in json.loads(line)]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert losses(tmp_path / "one", "lr") == losses(tmp_path / "two", "lr")  # Eq. (3) counts updates, not processes
    assert len(one) == len(two) == 4
    for x, y in zip(one, two):
        assert abs(x - y) <= 1e-4 * abs(x), (one, two)


def test_nan_guard_skips_updates_then_stops_with_a_clear_message(toy_data, tmp_path, monkeypatch, capsys):
    import modeling_vanilla.training.loop as loop
    from modeling_vanilla.cli.train import run as main

    real = loop.batch_loss
    weights_seen = []  # the model's parameters at each forward (one batch per update here)

    def poisoned(model, batch, label_smoothing, normalizer):
        weights_seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        loss = real(model, batch, label_smoothing, normalizer)
        return loss * float("nan") if len(weights_seen) > 2 else loss  # two good updates, then only NaN

    monkeypatch.setattr(loop, "batch_loss", poisoned)
    out = tmp_path / "nan"
    # The loss is read back every --log-every updates (here every update): the run stops at the read-back that sees
    # the third non-finite loss in a row.
    with pytest.raises(RuntimeError, match="not finite for 3 updates in a row \\(by step 5\\).*--lr-scale"):
        main(train_args(toy_data, out, "--max-steps", "8", "--precision", "fp32", "--eval-every", "0",
                        "--max-bad-updates", "3", "--log-every", "1"))
    printed = capsys.readouterr().out
    assert "Steps 3-3: 1 update(s) skipped, their loss was not finite (1 in a row at step 3)" in printed
    assert "Steps 4-4: 1 update(s) skipped, their loss was not finite (2 in a row at step 4)" in printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["skipped_updates"] for r in records] == [0, 0, 1, 1]
    assert ["loss" in r for r in records] == [True, True, False, False]  # a skipped update has no loss to log
    assert len(weights_seen) == 5  # 2 good updates, then 3 skipped ones
    # A good update changes the weights (so the comparison below can fail) ...
    assert any(not torch.equal(weights_seen[0][n], weights_seen[1][n]) for n in weights_seen[0])
    # ... and the skipped updates left every weight exactly as the last good update did.
    for later in weights_seen[3:]:
        for name, tensor in weights_seen[2].items():
            assert torch.equal(later[name], tensor), name


# Bad input: clear errors before training starts


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--bogus-option", "1"], "unrecognized arguments: --bogus-option"),
        (["--max-tokens", "32"], "--max-tokens 32 is smaller than the longest allowed sentence"),
        (["--override", "d_model=30"], "d_model=30 is not divisible by num_heads"),
        (["--override", "colour=blue"], "--override colour: not a config field"),
        (["--resume"], "holds no run to continue"),
        (["--average-choose", "bleu"], "--average-choose bleu needs --average-last N, the most checkpoints to try"),
        (["--average-choose", "best"], "argument --average-choose: invalid choice: 'best'"),
    ],
)
def test_bad_arguments_fail_before_training(toy_data, tmp_path, capsys, extra, message):
    from modeling_vanilla.training.options import parse_train_args as parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(train_args(toy_data, tmp_path / "out", "--max-steps", "1", *extra))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_recipe_sets_defaults_that_flags_given_win_over(toy_data, tmp_path, capsys):
    from modeling_vanilla.training.options import parse_train_args as parse_args
    from modeling_vanilla.training.recipes import load_recipe

    recipe = load_recipe("multi30k")  # training/recipes/multi30k.yaml: flags, and the override list
    recipe = {"flags": {k: v for k, v in recipe.items() if k != "override"}, "override": recipe["override"]}
    data = ["--source-lang", "en", "--target-lang", "de", "--train-files", str(toy_data / "train"),
            "--valid-files", str(toy_data / "valid")]
    args = parse_args(["--recipe", "multi30k", *data, "--output-dir", str(tmp_path / "a")])
    for flag, value in recipe["flags"].items():
        assert getattr(args, flag) == value, flag
    assert args.override == recipe["override"] and args.recipe == "multi30k"
    plain = parse_args([*data, "--output-dir", str(tmp_path / "a"), "--max-steps", "1"])
    assert [flag for flag in recipe["flags"] if getattr(plain, flag) == recipe["flags"][flag]] != list(recipe["flags"])
    # train_args gives --preset tiny, --override dropout=0.0 and others: given flags win over the recipe's
    args = parse_args(train_args(toy_data, tmp_path / "b", "--recipe", "multi30k", "--lr-scale", "0.5",
                                 "--override", "dropout=0.25"))
    assert args.preset == "tiny" and args.lr_scale == 0.5 and args.vocab_size == 300
    assert args.override == recipe["override"] + ["dropout=0.25"]  # the last --override list, as without a recipe
    assert args.config_overrides["dropout"] == 0.25
    with pytest.raises(SystemExit) as exit_info:
        parse_args(train_args(toy_data, tmp_path / "c", "--recipe", "wmt99"))
    assert exit_info.value.code == 2 and "--recipe: invalid choice: 'wmt99'" in capsys.readouterr().err


def test_output_folder_with_a_different_run_is_refused(toy_data, tmp_path, capsys):
    from modeling_vanilla.training.options import parse_train_args as parse_args
    from modeling_vanilla.training.run_folder import RUN_CONFIG

    out = tmp_path / "out"
    out.mkdir()
    (out / RUN_CONFIG).write_text(json.dumps({"preset": "big"}))
    with pytest.raises(SystemExit):
        parse_args(train_args(toy_data, out, "--max-steps", "1"))
    assert "already holds a different run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(train_args(toy_data, out, "--max-steps", "1", "--resume"))
    assert "--preset was 'big', now 'tiny'" in capsys.readouterr().err
    assert parse_args(train_args(toy_data, out, "--max-steps", "1", "--overwrite")).overwrite
    shutil.rmtree(out)


def test_average_checkpoints_script_writes_a_loadable_model(toy_data, tmp_path):
    from modeling_vanilla.cli import average_checkpoints as script
    from modeling_vanilla.cli.train import run as main

    out = tmp_path / "run"
    main(train_args(toy_data, out, "--max-steps", "4", "--precision", "fp32", "--eval-every", "0", "--save-every", "2"))
    averaged_dir = script.run([str(out), "--last", "2", "--output", str(tmp_path / "avg")])
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(averaged_dir)
    # The expected values come from the two checkpoint files themselves, not from the function under test.
    first = load_file(out / "checkpoints" / "step-0000002" / "model.safetensors")
    second = load_file(out / "checkpoints" / "step-0000004" / "model.safetensors")
    weights = dict(model.named_parameters())
    compared = 0
    for name in first:
        if name in weights:
            torch.testing.assert_close(weights[name].detach(), (first[name].float() + second[name].float()) / 2)
            compared += 1
    assert compared == len(weights)  # every parameter of the model was checked
    assert any(not torch.equal(first[n], second[n]) for n in first)  # the two checkpoints differ
    assert model.lm_head.weight is model.get_input_embeddings().weight
    with pytest.raises(SystemExit):
        script.run([str(out), "--last", "9", "--output", str(tmp_path / "avg9")])


# Never lose a run (issue 13): overwrite, the final model first, signals, strict resume, numbers, divergence


def test_overwrite_replaces_only_a_folder_that_holds_an_earlier_run(toy_data, tmp_path, capsys, monkeypatch):
    from modeling_vanilla.training.options import parse_train_args as parse_args
    from modeling_vanilla.training.run_folder import RUN_CONFIG

    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"not a run")
    with pytest.raises(SystemExit):
        parse_args(train_args(toy_data, unrelated, "--max-steps", "1", "--overwrite"))
    error = capsys.readouterr().err
    assert "holds other files and no run of this command" in error and "Pass --resume" not in error
    assert (unrelated / "holiday.jpg").is_file()

    # A folder that holds an earlier run, but also the training data (or is the current folder): never deleted.
    run = tmp_path / "run"
    shutil.copytree(toy_data, run / "data")
    (run / RUN_CONFIG).write_text("{}")
    args = train_args(toy_data, run, "--max-steps", "1", "--overwrite")
    args[args.index("--train-files") + 1] = str(run / "data" / "train")
    with pytest.raises(SystemExit):
        parse_args(args)
    assert "which holds the input" in capsys.readouterr().err
    monkeypatch.chdir(run)
    with pytest.raises(SystemExit):
        parse_args(train_args(toy_data, ".", "--max-steps", "1", "--overwrite"))
    assert "is the current folder" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert parse_args(train_args(toy_data, tmp_path / "run", "--max-steps", "1", "--overwrite")).overwrite


def test_the_trained_model_is_on_disk_before_the_final_evaluation(toy_data, tmp_path, monkeypatch):
    import modeling_vanilla.training.final as final
    from modeling_vanilla.cli.train import run as train

    def failing_scores(*args, **kwargs):
        raise RuntimeError("out of memory while scoring")

    monkeypatch.setattr(final, "final_scores", failing_scores)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="out of memory while scoring"):
        train(train_args(toy_data, out, "--max-steps", "4", "--precision", "fp32", "--eval-every", "0",
                         "--save-every", "2", "--average-last", "2"))
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(out)  # the averaged model, saved before the scoring failed
    first = load_file(out / "checkpoints" / "step-0000002" / "model.safetensors")
    second = load_file(out / "checkpoints" / "step-0000004" / "model.safetensors")
    name = "model.encoder.layers.0.self_attn.q_proj.weight"
    assert name in first, sorted(first)[:5]
    torch.testing.assert_close(dict(model.named_parameters())[name].detach(), (first[name] + second[name]) / 2)
    assert (out / "tokenizer.json").is_file() and (out / "README.md").is_file()
    assert not (out / ".tmp-model").exists()


def test_each_update_may_hand_jemalloc_pages_back(toy_data, tmp_path, monkeypatch):
    # vanilla-train runs on jemalloc, which keeps freed pages (hardware.JEMALLOC_CONF) until FreePages hands them back.
    from modeling_vanilla.cli.train import run as train
    from modeling_vanilla.utils import hardware

    calls = []
    monkeypatch.setattr(hardware.FreePages, "__call__", lambda self: calls.append(self.every_s) or False)
    train(train_args(toy_data, tmp_path / "run", "--max-steps", "5", "--precision", "fp32", "--eval-every", "0",
                     "--save-every-minutes", "0", "--average-last", "0"))
    assert calls == [hardware.FREE_PAGES_EVERY_S] * 5


def test_average_choose_keeps_the_mean_with_the_best_validation_loss(toy_data, tmp_path):
    """--average-choose loss scores the mean of the last 1..N checkpoints on validation: the final weights are the
    mean with the lowest loss, whose loss is the final validation loss, and the summary keeps every count's score."""
    from modeling_vanilla.cli.train import run as train

    out = tmp_path / "run"
    summary = train(train_args(toy_data, out, "--max-steps", "8", "--precision", "fp32", "--eval-every", "0",
                               "--save-every", "2", "--keep-checkpoints", "4", "--average-last", "3",
                               "--average-choose", "loss", "--warmup-steps", "4"))
    scores = summary["average_choice"]["scores"]
    assert summary["average_choice"]["by"] == "validation loss" and sorted(scores) == [1, 2, 3]
    assert len(set(scores.values())) == 3  # the three means are different models
    best = min(scores, key=scores.get)
    assert summary["averaged_checkpoints"] == best
    assert summary["valid_nll"] == pytest.approx(scores[best], rel=1e-6)
    checkpoints = CheckpointManager(out / "checkpoints", keep=4).complete()
    assert [path.name for path in checkpoints[-3:]] == ["step-0000004", "step-0000006", "step-0000008"]
    expected = average_checkpoints(checkpoints[-best:])
    saved = load_file(out / "model.safetensors")
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, expected[name], msg=name)
    assert f"averaged over the last {best} checkpoints (the count of 1..3 with the best validation loss)" in (
        out / "README.md").read_text()


def test_average_choose_bleu_keeps_the_best_count_and_the_fewest_on_a_tie(toy_data, tmp_path, monkeypatch):
    import modeling_vanilla.training.final as final
    from modeling_vanilla.cli.train import run as train

    scored = []  # the validation BLEU of the means of the last 1, 2, 3 and 4 checkpoints, in the order tried

    def fake_bleu(run, corpus, split, limit=None):
        scored.append(split)
        return {"bleu": [10.0, 30.0, 20.0, 30.0][len(scored) - 1] if len(scored) <= 4 else 5.0}

    monkeypatch.setattr(final, "bleu", fake_bleu)
    monkeypatch.setattr(final, "final_scores", lambda run, corpus: {})
    out = tmp_path / "run"
    summary = train(train_args(toy_data, out, "--max-steps", "8", "--precision", "fp32", "--eval-every", "0",
                               "--save-every", "2", "--keep-checkpoints", "4", "--average-last", "4",
                               "--average-choose", "bleu"))
    assert scored == ["validation"] * 4
    assert summary["average_choice"]["scores"] == {1: 10.0, 2: 30.0, 3: 20.0, 4: 30.0}
    assert summary["averaged_checkpoints"] == 2  # 2 and 4 tie at 30: the fewest checkpoints
    checkpoints = CheckpointManager(out / "checkpoints", keep=4).complete()
    expected = average_checkpoints(checkpoints[-2:])
    saved = load_file(out / "model.safetensors")
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, expected[name], msg=name)


def test_average_choose_needs_a_validation_set(toy_data, tmp_path, capsys):
    from modeling_vanilla.training.options import parse_train_args as parse_args

    no_validation = ["--source-lang", "en", "--target-lang", "de", "--train-files", str(toy_data / "train"),
                     "--max-steps", "1", "--average-last", "2", "--average-choose", "loss",
                     "--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(no_validation)
    assert exit_info.value.code == 2
    assert "--average-choose loss chooses on the validation set: give --valid-files" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert parse_args([*no_validation, "--average-choose", "none"]).average_choose == "none"


def test_averaging_that_fails_leaves_the_last_steps_model(toy_data, tmp_path, monkeypatch):
    import modeling_vanilla.training.final as final
    from modeling_vanilla.cli.train import run as train

    def failing_average(folders):
        raise FileNotFoundError("no model.safetensors in a sharded checkpoint")

    monkeypatch.setattr(final, "average_checkpoints", failing_average)
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="sharded checkpoint"):
        train(train_args(toy_data, out, "--max-steps", "4", "--precision", "fp32", "--eval-every", "0",
                         "--save-every", "2", "--average-last", "2"))
    saved = load_file(out / "model.safetensors")
    last = load_file(out / "checkpoints" / "step-0000004" / "model.safetensors")
    for name in saved:
        if name in last:
            assert torch.equal(saved[name], last[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("signum", [15, 2])
def test_a_stop_signal_saves_a_checkpoint_and_resume_matches_the_straight_run(toy_data, tmp_path, signum):
    common = ["--max-steps", "8", "--precision", "fp32", "--eval-every", "0"]
    straight = run_train(train_args(toy_data, tmp_path / "straight", *common))
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = run_train(train_args(toy_data, tmp_path / "stopped", *common),
                        script=hooked_train_script(tmp_path, SIGNAL_AFTER_STEP.format(signum=signum, step=3)))
    log = stopped.stdout + stopped.stderr
    assert stopped.returncode == 128 + signum, log[-3000:]
    assert "checkpoint" in log and "written at step 3" in log and "Traceback" not in log
    assert (tmp_path / "stopped" / "checkpoints" / "step-0000003").is_dir()
    resumed = run_train(train_args(toy_data, tmp_path / "stopped", *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "stopped" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    steps = [json.loads(line)["step"] for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 9))  # no step logged twice


def test_resume_without_precision_uses_the_runs_resolved_precision(toy_data, tmp_path):
    from modeling_vanilla.cli.train import run as train
    from modeling_vanilla.training.options import parse_train_args as parse_args

    out = tmp_path / "run"
    train(train_args(toy_data, out, "--max-steps", "2", "--eval-every", "0"))  # precision resolved by the machine
    assert parse_args(train_args(toy_data, out, "--max-steps", "4", "--resume")).resume


def test_resume_refuses_other_data_another_tokenizer_or_process_count(toy_data, tmp_path, capsys):
    from modeling_vanilla.cli.train import run as train
    from modeling_vanilla.training.options import parse_train_args as parse_args
    from modeling_vanilla.training.start import check_resume_processes

    out = tmp_path / "run"
    train(train_args(toy_data, out, "--max-steps", "2", "--precision", "fp32", "--eval-every", "0"))
    other = tmp_path / "other"
    shutil.copytree(toy_data, other)
    (other / "train.en").write_text((other / "train.en").read_text().replace("a", "e"))
    args = train_args(toy_data, out, "--max-steps", "4", "--precision", "fp32", "--resume")
    args[args.index("--train-files") + 1] = str(other / "train")
    with pytest.raises(SystemExit):
        parse_args(args)
    assert "the training data changed" in capsys.readouterr().err

    with pytest.raises(SystemExit):  # AdamW on a run trained with Adam
        parse_args(train_args(toy_data, out, "--max-steps", "4", "--precision", "fp32", "--resume",
                              "--weight-decay", "0.1"))
    assert "--weight-decay was 0.0, now 0.1" in capsys.readouterr().err
    saved = json.loads((out / "run_config.json").read_text())
    del saved["weight_decay"]  # a run saved before --weight-decay existed trained without it
    (out / "run_config.json").write_text(json.dumps(saved))
    assert parse_args(train_args(toy_data, out, "--max-steps", "4", "--precision", "fp32", "--resume")).resume
    with pytest.raises(SystemExit):  # --recipe multi30k decays since 2026-12-01: its older runs are told which flag
        parse_args(train_args(toy_data, out, "--max-steps", "4", "--precision", "fp32", "--resume",
                              "--recipe", "multi30k"))
    assert "--weight-decay was 0.0, now 0.1" in capsys.readouterr().err

    tokenizer_dir = tmp_path / "tok"
    from transformers import AutoTokenizer

    from modeling_vanilla.data.tokenization import train_bpe_tokenizer

    train_bpe_tokenizer(["something else entirely"] * 20, vocab_size=280).save_pretrained(tokenizer_dir)
    with pytest.raises(SystemExit):
        parse_args(train_args(toy_data, out, "--max-steps", "4", "--precision", "fp32", "--resume",
                              "--tokenizer", str(tokenizer_dir)))
    assert "is not the tokenizer the run saved" in capsys.readouterr().err
    assert AutoTokenizer.from_pretrained(out).vocab_size != 0
    with pytest.raises(SystemExit, match="trained with 1 process\\(es\\), this launch has 2"):
        check_resume_processes(out, 2)


def test_a_run_started_with_a_tokenizer_keeps_it_in_its_folder_from_the_start(toy_data, tmp_path, monkeypatch):
    import modeling_vanilla.training.loop as loop
    from modeling_vanilla.cli.train import run as train
    from modeling_vanilla.data.tokenization import train_bpe_tokenizer

    lines = (toy_data / "train.en").read_text().splitlines() + (toy_data / "train.de").read_text().splitlines()
    train_bpe_tokenizer(lines, vocab_size=300, model_max_length=64).save_pretrained(tmp_path / "tok")

    def crash(*args, **kwargs):
        raise RuntimeError("crash during training")

    monkeypatch.setattr(loop, "epoch_updates", crash)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash during training"):
        train(train_args(toy_data, out, "--max-steps", "2", "--tokenizer", str(tmp_path / "tok")))
    assert (out / "tokenizer.json").read_bytes() == (tmp_path / "tok" / "tokenizer.json").read_bytes()


@pytest.mark.parametrize(
    "flag,value,words",
    [
        ("--keep-checkpoints", "-1", "a positive integer"),
        ("--keep-checkpoints", "0", "a positive integer"),
        ("--clip-norm", "-1", "a non-negative number"),
        ("--log-every", "0", "a positive integer"),
        ("--eval-every", "-5", "a non-negative integer"),
        ("--save-every-minutes", "-1", "a non-negative number"),
        ("--lr-scale", "0", "a positive number"),
        ("--label-smoothing", "1.5", "a probability in [0, 1)"),
        ("--max-minutes", "0", "a positive number"),
        ("--vocab-size", "100", "an integer >= 260 (256 bytes + 4 special tokens)"),
        ("--bleu-sentences", "0", "a positive integer"),
        ("--average-last", "-2", "a non-negative integer"),
        ("--num-proc", "0", "a positive integer"),
        ("--max-bad-updates", "0", "a positive integer"),
        ("--pad-to-multiple-of", "0", "a positive integer"),
        ("--num-workers", "-1", "a non-negative integer"),
        ("--lr-cooldown", "1.5", "a fraction of the training budget in [0, 1]"),
    ],
)
def test_every_numeric_option_is_checked_before_any_work(toy_data, tmp_path, capsys, flag, value, words):
    from modeling_vanilla.training.options import parse_train_args as parse_args

    args = train_args(toy_data, tmp_path / "out", "--max-steps", "1", flag, value)
    args[args.index("--train-files") + 1] = str(tmp_path / "no-such-data")  # the number is refused first
    with pytest.raises(SystemExit) as exit_info:
        parse_args(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {flag}: must be {words}" in error  # the checkers every command uses (arguments.py)
    assert float(error.rsplit("got ", 1)[1]) == float(value)
    assert not (tmp_path / "out").exists()


def test_a_rising_validation_loss_warns_and_the_best_checkpoint_is_kept(toy_data, tmp_path, monkeypatch, capsys):
    import modeling_vanilla.training.final as final
    import modeling_vanilla.training.loop as loop
    from modeling_vanilla.cli.train import run as train

    losses = iter([3.0, 2.0, 2.2, 3.1, 3.2, 3.3])  # best at the 2nd validation (step 4), then diverging

    def scripted_validation_loss(*args, **kwargs):
        nll = next(losses)
        return {"valid_nll": nll, "valid_ppl": math.exp(nll)}

    for module in (loop, final):  # validation during training, then the final scores
        monkeypatch.setattr(module, "validation_loss", scripted_validation_loss)
    out = tmp_path / "run"
    train(train_args(toy_data, out, "--max-steps", "10", "--precision", "fp32", "--eval-every", "2",
                     "--save-every", "2", "--keep-checkpoints", "2"))
    printed = capsys.readouterr().out
    assert "validation loss 3.100 at step 8 is far above its best, 2.000 at step 4: training is diverging" in printed
    assert "--lr-scale" in printed and "layer_norm=pre" in printed and "--clip-norm" in printed
    assert "validation loss 2.200" not in printed  # within the margin: no warning
    best = json.loads((out / "checkpoints" / "best" / "train_state.json").read_text())
    assert best["step"] == 4
    assert [p.name for p in sorted((out / "checkpoints").glob("step-*"))] == ["step-0000008", "step-0000010"]


def test_greedy_final_evaluation_trains_and_saves(toy_data, tmp_path):
    from modeling_vanilla.cli.train import run as train

    out = tmp_path / "run"
    summary = train(train_args(toy_data, out, "--max-steps", "2", "--eval-every", "0", "--num-beams", "1"))
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["num_beams"] == 1 and generation.get("length_penalty", 1.0) == 1.0
    assert "test" not in summary or summary["test"]["sentences"] > 0
    assert (out / "model.safetensors").is_file()


