"""The training run of section 5, as an outline: `main` -> `train` -> `train_step` -> `validate_and_save` -> `finish`.

    # One process (a CPU or one GPU):
    vanilla-train --preset tiny --train-files data/train --valid-files data/valid \\
        --source-lang en --target-lang de --max-steps 200 --output-dir runs/quick
    # Several processes (DDP), here 2 on one machine:
    accelerate launch --multi_gpu --num_processes 2 -m modeling_vanilla.cli.train --preset tiny ...
    # After a crash, a preemption or Ctrl-C: the same command and --resume, from the last complete checkpoint
    vanilla-train --preset tiny ... --output-dir runs/quick --resume

The run reads as the paper: data (5.1) -> model (3) -> optimizer and schedule (5.3) -> the loop (5.2, 5.4) ->
finish (6.1). Each step here is one screen; what they call lives in modules named for it: `start` (the run folder,
the corpus, the model, a resume), `run` (what every step shares), `loader` (the batches), `update_stats` (the loss
and the NaN guard's counts, on the device), `clock` (training minutes, agreed across processes), `signals`
(SIGTERM/SIGINT: a checkpoint, then exit), `final` (averaging, scores, the model folder), `checkpoints`,
`averaging`, `evaluation`, `optimization`, `options`. The same code runs on a 2-core CPU, one GPU or many (DDP;
FSDP or DeepSpeed without checkpoints), in fp32, bf16 or fp16. docs/guides/reliability.md says what survives
a crash or a preemption.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from ..utils.hardware import FreePages
from .evaluation import batch_loss, bleu, validation_loss
from .final import finish
from .loader import TrainLoader
from .optimization import skips_on_device
from .options import checkpointing
from .run import Corpus, Run
from .signals import stop_after_signal, stop_on_signals
from .start import build_model_and_optimizer, prepare_corpus, start_run


def main(args: Any) -> dict:
    """Train as the options say (`options.parse_train_args`); returns the summary written to training_summary.json."""
    run = start_run(args)  # Accelerate, the run folder, the seed
    corpus = prepare_corpus(run)  # 5.1
    build_model_and_optimizer(run, corpus)  # 3 and 5.3, resumed from the last checkpoint with --resume
    train(run, corpus)  # 5.2 and 5.4
    return finish(run, corpus)  # 6.1: averaging, the scores, the model folder


@dataclass
class Update:
    """One update's batches (on their way to the device) and its target tokens over all processes."""

    batches: list[dict]
    tokens: int


def train(run: Run, corpus: Corpus) -> None:
    """Epochs of token batches, --update-freq batches an update, until a stopping rule holds or a stop signal
    arrives. After each update: metrics, validation and checkpoints when due; jemalloc's kept pages handed back to
    the kernel once a minute (`FreePages`); with several processes, the clock and any stop signal agreed on."""
    from tqdm.auto import tqdm

    progress = tqdm(total=run.args.max_steps, initial=run.state.step, desc="training", dynamic_ncols=True,
                    disable=not run.accelerator.is_local_main_process)
    run.throughput.restart(time.time())
    loader, free_pages = TrainLoader(corpus, run.args.num_workers, run.accelerator.device), FreePages()
    run.model.train()
    with stop_on_signals(run):
        while not run.should_stop():
            for update in epoch_updates(run, corpus, loader):
                train_step(run, update)
                progress.update(1)
                validate_and_save(run, corpus, progress)
                free_pages()
                if run.clock.agreement_due():  # several processes: on the clock and on any stop signal
                    run.stop_signal = run.clock.agree(run.stop_signal)
                if run.stop_signal is not None:
                    stop_after_signal(run)
    progress.close()
    run.clock.bank()


def epoch_updates(run: Run, corpus: Corpus, loader: TrainLoader) -> Iterator[Update]:
    """The updates left in the current epoch, from the saved position on, until a stopping rule holds. The position
    (`state.batch_in_epoch`) moves as each update is taken; at the end of the epoch, the next one begins."""
    state, sampler = run.state, corpus.sampler
    batches = loader.epoch(state.epoch, start=state.batch_in_epoch)
    while state.batch_in_epoch < len(sampler) and not run.should_stop():
        count = min(run.args.update_freq, len(sampler) - state.batch_in_epoch)
        micro = [next(batches) for _ in range(count)]
        tokens = sampler.update_tokens(state.batch_in_epoch, count)
        state.batch_in_epoch += count
        yield Update(micro, tokens)
    if state.batch_in_epoch >= len(sampler):  # the epoch is done (not merely interrupted by a limit)
        state.epoch += 1
        state.batch_in_epoch = 0


def train_step(run: Run, update: Update) -> None:
    """One update: the gradient of the mean label-smoothed loss (section 5.4) over the update's target tokens on
    every process, then clipping (--clip-norm) and Adam (`apply_update`).

    Nothing here waits for the device: the loss stays there (`run.stats`, read back every --log-every updates), and a
    non-finite loss skips the update on the device."""
    accelerator, args, world = run.accelerator, run.args, run.accelerator.num_processes
    loss_sum = torch.zeros((), device=accelerator.device)
    forward = run.model if run.compiled is None else run.compiled
    for i, batch in enumerate(update.batches):
        # Each batch's summed loss is divided by the update's target tokens over all processes, times the number of
        # processes because DDP averages their gradients: the update is the gradient of the mean loss over all of
        # its tokens, however they are split into batches and processes.
        sync = accelerator.no_sync(run.model) if i < len(update.batches) - 1 else nullcontext()
        with sync, accelerator.autocast():
            loss = batch_loss(forward, batch, args.label_smoothing, normalizer=update.tokens / world)
        accelerator.backward(loss)
        loss_sum += loss.detach().float()
    step_loss = (accelerator.reduce(loss_sum, "sum") if world > 1 else loss_sum) / world
    bad = ~torch.isfinite(step_loss)
    if args.clip_norm:
        accelerator.clip_grad_norm_(run.model.parameters(), args.clip_norm)
    run.stats.add(step_loss, bad, update.tokens, run.state.step + 1)
    apply_update(run, bad)
    run.state.step += 1
    run.throughput.tokens += update.tokens


def apply_update(run: Run, bad: torch.Tensor) -> None:
    """Adam's step and the schedule's, unless the loss was not finite (`bad`): then the update is skipped the way
    GradScaler skips one, on the device where the optimizer allows (fused Adam's `found_inf`: no parameter or moment
    changes), else after the host reads `bad`. A skipped update still counts as a step of the schedule."""
    optimizer = run.optimizer
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper holds the torch optimizer
    run.last_rate = inner.param_groups[0]["lr"]
    if skips_on_device(inner):
        inner.found_inf = bad.float()  # read by the fused kernel: 1 leaves weights, moments and Adam's step alone
        try:
            optimizer.step()
        finally:
            inner.__dict__.pop("found_inf", None)
    elif not bool(bad):  # an optimizer without found_inf: the host must look (a wait for the device)
        optimizer.step()
    run.scheduler.step()  # a skipped update still counts as a step, as with GradScaler
    optimizer.zero_grad(set_to_none=True)


def validate_and_save(run: Run, corpus: Corpus, progress) -> None:
    """After an update: training metrics every --log-every, validation every --eval-every (BLEU every
    --bleu-every), a checkpoint every --save-every updates or --save-every-minutes, and checkpoints/best when the
    validation loss is the best so far."""
    args, step = run.args, run.state.step
    if step % args.log_every == 0 or step == 1:
        log_training(run, progress)
    if args.eval_every and step % args.eval_every == 0 and "validation" in corpus.splits:
        if validate(run, corpus) and checkpointing(args):
            run.save_checkpoint(best=True)  # also kept as checkpoints/best, beside the last K
            return
    if (args.save_every and step % args.save_every == 0) or run.clock.save_due(args.save_every_minutes):
        run.save_checkpoint()


def log_training(run: Run, progress) -> None:
    """A line of metrics.jsonl: the mean loss of the updates since the last line (read back from the device), the
    rate, the target tokens and their rate, the minutes, the updates skipped."""
    numbers = run.stats.read_back(run.state) or {"skipped": 0, "loss": None}  # None: a checkpoint just read all back
    now, window = time.time(), run.throughput
    record = {"step": run.state.step, "epoch": run.state.epoch, "lr": run.last_rate,
              "target_tokens": window.tokens,  # since the last line
              "target_tokens_per_s": round(window.tokens / max(now - window.start, 1e-9), 1),
              "minutes": round(run.clock.minutes(), 2), "skipped_updates": numbers["skipped"]}
    if numbers["loss"] is not None:  # the mean over the updates since the last line
        record["loss"] = round(numbers["loss"], 4)
        progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                             tok_s=f"{record['target_tokens_per_s']:.0f}")
    run.metrics.write(record)
    window.restart(now)


def validate(run: Run, corpus: Corpus) -> bool:
    """The validation loss (and BLEU every --bleu-every), logged and kept in the run's history, with a warning if
    the run diverges; returns whether the loss is the best so far."""
    args, state = run.args, run.state
    result = {"step": state.step, **validation_loss(run.model, corpus.splits["validation"], args.max_tokens,
                                                    run.accelerator, corpus.collator)}
    if args.bleu_every and state.step % args.bleu_every == 0:
        result.update(bleu(run, corpus, "validation", args.bleu_sentences))
        result.pop("examples")
    best = min((r["valid_nll"] for r in state.history), default=math.inf)
    state.history.append(result)
    run.metrics.write(result)
    run.print(json.dumps(result))
    warn_if_diverging(run, result, best)
    return result["valid_nll"] < best


# A validation loss this far (in nats per token) above its best is a diverging run, not noise.
DIVERGENCE_MARGIN = 0.5


def warn_if_diverging(run: Run, result: dict, best: float) -> None:
    if result["valid_nll"] > best + DIVERGENCE_MARGIN:
        step = next(r["step"] for r in run.state.history if r["valid_nll"] == best)
        run.print(f"WARNING: validation loss {result['valid_nll']:.3f} at step {result['step']} is far above its best, "
                  f"{best:.3f} at step {step}: training is diverging; checkpoints/best holds step {step}. Lower "
                  "--lr-scale, raise --warmup-steps, try --override layer_norm=pre, or set --clip-norm 1.0.")
