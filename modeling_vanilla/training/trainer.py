"""Training as section 5 of the paper describes it, with Accelerate: `main(args)` is the outline.

    data (5.1) -> model (3) -> optimizer and schedule (5.3) -> the loop (5.2, 5.4) -> finish (6.1)

The loop is `train` -> `train_step` (one update: accumulation, the NaN guard, clipping, the optimizer) ->
`log_validate_and_save` (metrics, validation, checkpoints). The pieces live in modules named for them: `options`
(the command line), `data` and `tokenization` (5.1), `optimization` (5.3), `evaluation` (loss, BLEU),
`checkpoints` (atomic checkpoints, 6.1 averaging), `model_card`. The same code runs on a 2-core CPU, one GPU or
many (DDP through `accelerate launch`; FSDP or DeepSpeed without checkpoints), in fp32, bf16 or fp16.
`vanilla-train --help` lists the options; README.md has the commands for the quickstart, Multi30k and the
paper's WMT14 base model, and its "Reliability" section says what survives a crash or a preemption.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..publish.model_card import run_model_card
from ..utils.hardware import FreePages, allocator_in_use, gpu_available
from .checkpoints import CheckpointManager, TrainState, average_checkpoints, load_averaged_weights
from .evaluation import batch_loss, bleu_on_split, validation_loss
from .optimization import build_optimizer, build_scheduler, linear_cooldown, skips_on_device
from .options import RECIPES, RUN_CONFIG, checkpointing, data_fingerprint, data_source_options

METRICS = "metrics.jsonl"


@dataclass
class Run:
    """What every step of a run reads: its options, Accelerate, the output folder, the state and the logs."""

    args: argparse.Namespace
    accelerator: Any
    out: Path
    state: TrainState = field(default_factory=TrainState)
    checkpoints: CheckpointManager | None = None
    metrics: MetricsLog | None = None
    started: float = field(default_factory=time.time)  # when the clock of this process last started
    agreed_minutes: float = 0.0  # several processes: the training minutes agreed on last (or those resumed from)
    last_save_minutes: float = 0.0  # `budget_minutes()` at the last checkpoint (for --save-every-minutes)
    stats: UpdateStats | None = None  # loss and skipped updates since the last read-back, on the device
    compiled: Any = None  # torch.compile of the model, for the training forward (--compile)
    last_rate: float = 0.0  # the learning rate the last update used (Eq. 3 times any --lr-cooldown factor)
    stop_signal: int | None = None  # SIGTERM/SIGINT received: checkpoint and exit after the current update
    training_objects: dict = field(default_factory=dict)  # model, optimizer, scheduler: what a checkpoint holds

    def print(self, *message) -> None:
        self.accelerator.print(*message)

    def minutes(self) -> float:
        """Training minutes, this process and the runs it resumed."""
        return (self.state.elapsed_seconds + time.time() - self.started) / 60

    def budget_minutes(self) -> float:
        """The training minutes that --max-minutes, --save-every-minutes and --lr-cooldown read. One process reads
        its clock; several read the largest of their clocks, agreed on every SIGNAL_CHECK_EVERY updates
        (`signal_received`), so that all stop, save and set the rate at the same update: clocks read apart would
        leave one process waiting for the others' gradients, or give the replicas different rates."""
        if self.accelerator.num_processes == 1:
            return self.minutes()
        return self.agreed_minutes

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
            spent.append(self.budget_minutes() / a.max_minutes)
        return min(1.0, max(spent))

    def bank_time(self) -> None:
        """Move this process's elapsed time into the state (saved with checkpoints)."""
        self.state.elapsed_seconds += time.time() - self.started
        self.started = time.time()

    def should_stop(self) -> bool:
        a, s = self.args, self.state
        return ((a.max_steps is not None and s.step >= a.max_steps)
                or (a.max_epochs is not None and s.epoch >= a.max_epochs)
                or (a.max_minutes is not None and self.budget_minutes() >= a.max_minutes))


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


# The outline


def main(args: argparse.Namespace) -> dict:
    """Train as the options say (`options.parse_train_args`); returns the summary written to training_summary.json."""
    run = start_run(args)
    corpus = prepare_corpus(run)
    model, optimizer, scheduler = build_model_and_optimizer(run, corpus)
    train(run, corpus, model, optimizer, scheduler)
    return finish(run, corpus, model)


def start_run(args: argparse.Namespace) -> Run:
    """Accelerate, the output folder (emptied with --overwrite), the run's settings, the seed."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out = Path(args.output_dir)
    accelerator = Accelerator(
        # Without a GPU, processes started by `accelerate launch --multi_gpu` only form one (gloo) group when
        # Accelerate is told it runs on the CPU; otherwise each would silently train alone.
        cpu=args.cpu or not gpu_available(),
        mixed_precision={"fp32": "no"}.get(args.precision, args.precision),
        # Eq. (3) counts optimizer updates; by default Accelerate would step the schedule once per process.
        step_scheduler_with_optimizer=False,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(out),
    )
    check_sharding(accelerator, args)
    if args.resume:
        check_resume_processes(out, accelerator.num_processes)
    if args.overwrite and accelerator.is_main_process and out.exists():
        shutil.rmtree(out)  # options.check_safe_to_delete: an earlier run, not the current folder, no input inside
    accelerator.wait_for_everyone()
    out.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process and not args.resume:
        run_config = {**vars(args), "data_fingerprint": data_fingerprint(args),
                      "processes": accelerator.num_processes}
        (out / RUN_CONFIG).write_text(json.dumps(run_config, indent=1, default=str))
    set_seed(args.seed)
    if accelerator.device.type == "cpu":
        # Tiny gradients and Adam moments become subnormal floats as the loss falls; x86 CPUs handle those up to
        # ~100x slower. Flushing them to zero changes nothing measurable in training and keeps steps fast.
        torch.set_flush_denormal(True)
    return Run(args=args, accelerator=accelerator, out=out, metrics=MetricsLog(out / METRICS, accelerator),
               stats=UpdateStats(accelerator.device), started=time.time() - _test_clock_skew(accelerator))


def _test_clock_skew(accelerator) -> float:
    """For the clock agreement test (tests/training/test_training.py) only: VANILLA_TEST_CLOCK_SKEW="1:6" starts process 1's
    clock 6 seconds ahead of the others."""
    rank, _, seconds = os.environ.get("VANILLA_TEST_CLOCK_SKEW", "").partition(":")
    return float(seconds) if rank and int(rank) == accelerator.process_index else 0.0


def check_sharding(accelerator, args: argparse.Namespace) -> None:
    """Checkpoints hold one full optimizer state (checkpoints.py); FSDP and DeepSpeed shard it. Say so now, not at the
    first checkpoint ten minutes into the run."""
    sharded = str(accelerator.distributed_type).rsplit(".", 1)[-1] in ("FSDP", "DEEPSPEED", "MEGATRON_LM")
    if sharded and checkpointing(args):
        raise SystemExit(f"vanilla-train: error: checkpoints store one full optimizer state, which "
                         f"{accelerator.distributed_type} shards. Train with DDP (accelerate launch --multi_gpu), or "
                         "turn checkpoints off with --save-every 0 --save-every-minutes 0.")


def check_resume_processes(out: Path, processes: int) -> None:
    """The saved batch position counts batches per process: a resume must use as many processes."""
    earlier = json.loads((out / RUN_CONFIG).read_text()).get("processes")
    if earlier is not None and earlier != processes:
        raise SystemExit(f"vanilla-train: error: --resume: the run in {out} trained with {earlier} process(es), this "
                         f"launch has {processes}: its saved position in the data would point into other batches. "
                         f"Resume with {earlier} process(es).")


def prepare_corpus(run: Run) -> Corpus:
    """Section 5.1: the corpus, a joint BPE tokenizer (trained unless given), tokenized pairs, token batches."""
    from ..data.batching import TokenBatchSampler, TranslationCollator
    from ..data.corpus import load_corpus
    from ..data.preprocessing import preprocess_translation

    args, accelerator = run.args, run.accelerator
    raw = load_corpus(args.source_lang, args.target_lang, **data_source_options(args))
    tokenizer = get_tokenizer(run, raw)
    with accelerator.main_process_first():
        splits, drops = preprocess_translation(raw, tokenizer, args.source_lang, args.target_lang,
                                               max_length=args.max_length, num_proc=args.num_proc)
    for split, counts in (drops or {}).items():
        run.print(f"{split}: {counts}")
    sampler = TokenBatchSampler.from_dataset(splits["train"], args.max_tokens, seed=args.seed,
                                             num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    run.print(f"{len(splits['train'])} training pairs, {len(sampler)} batches per epoch and process, padding "
              f"efficiency {sampler.padding_efficiency():.3f}")
    if args.average_choose != "none" and "validation" not in splits:
        raise SystemExit(f"vanilla-train: error: --average-choose {args.average_choose} chooses on the validation set, "
                         "and the data has none: give --valid-files or --valid-jsonl, or --average-choose none.")
    collator = TranslationCollator(pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer),
                                   pad_to_multiple_of=args.pad_to_multiple_of)
    return Corpus(raw, tokenizer, splits, sampler, collator)


def get_tokenizer(run: Run, raw):
    """The given tokenizer, the one this run saved before (--resume), or a joint BPE trained on the training data."""
    from transformers import AutoTokenizer

    from ..configuration_vanilla import VanillaTransformerConfig
    from ..data.corpus import iter_sentences
    from ..data.tokenization import train_bpe_tokenizer

    args, accelerator = run.args, run.accelerator
    if args.resume and (run.out / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(run.out)  # the run's own (options checked that --tokenizer is the same)
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        if accelerator.is_main_process:  # in the run folder from the start, so that --resume finds it
            tokenizer.save_pretrained(run.out)
        return tokenizer
    with accelerator.main_process_first():
        if not accelerator.is_main_process:
            return AutoTokenizer.from_pretrained(run.out)
        # model_max_length is the model's position table size, so that the pipeline truncates to what the model
        # was built for.
        positions = getattr(VanillaTransformerConfig, args.preset)(**args.config_overrides).max_position_embeddings
        tokenizer = train_bpe_tokenizer(iter_sentences(raw["train"], [args.source_lang, args.target_lang]),
                                        vocab_size=args.vocab_size, kind=args.tokenizer_type,
                                        model_max_length=positions)
        tokenizer.save_pretrained(run.out)
        return tokenizer


def build_model_and_optimizer(run: Run, corpus: Corpus):
    """The model of section 3 (a Table 3 preset), Adam and the Eq. (3) schedule (5.3), prepared; resumes state."""
    from ..configuration_vanilla import VanillaTransformerConfig
    from ..modeling_vanilla import VanillaTransformerForConditionalGeneration

    args, accelerator, tokenizer = run.args, run.accelerator, corpus.tokenizer
    special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.bos_token_id}
    config = getattr(VanillaTransformerConfig, args.preset)(vocab_size=len(tokenizer), **special,
                                                            **args.config_overrides)
    model = VanillaTransformerForConditionalGeneration(config)
    set_decoding(model.generation_config, args.num_beams, args.length_penalty)
    if accelerator.is_main_process:  # the config beside the tokenizer lets vanilla-average work mid-run
        config.save_pretrained(run.out)
    optimizer = build_optimizer(model, args.weight_decay)
    cooldown = None
    if args.lr_cooldown:  # not in the paper: the rate decays to zero over the last part of the budget
        def cooldown(done: int) -> float:
            return linear_cooldown(run.budget_spent(done, len(corpus.sampler)), args.lr_cooldown)
    scheduler = build_scheduler(optimizer, config.d_model, args.warmup_steps, args.lr_scale, cooldown)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    run.checkpoints = CheckpointManager(run.out / "checkpoints", keep=args.keep_checkpoints, log=run.print)
    run.training_objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    if args.compile:
        run.compiled = torch.compile(model)  # the training forward only; evaluation and generation stay eager
    if args.resume:
        resume(run)
    if args.report_to != "none":
        accelerator.init_trackers("vanilla-transformer", config={k: str(v) for k, v in vars(args).items()})
    run.print(f"{config.model_type} {args.preset}: {accelerator.unwrap_model(model).num_parameters() / 1e6:.1f}M "
              f"parameters, {args.precision}, {accelerator.num_processes} process(es), "
              f"{args.max_tokens} x {args.update_freq} tokens per side and process per update")
    return model, optimizer, scheduler


def set_decoding(generation_config, num_beams: int, length_penalty: float) -> None:
    """Section 6.1's beam search (or greedy with --num-beams 1, where a length penalty means nothing and transformers
    refuses to save one), checked now rather than when the trained model is saved."""
    generation_config.num_beams = num_beams
    generation_config.length_penalty = length_penalty if num_beams > 1 else 1.0
    try:
        generation_config.validate(strict=True)
    except ValueError as error:
        raise SystemExit(f"vanilla-train: error: --num-beams {num_beams} --length-penalty {length_penalty}: "
                         f"{error}") from None


def resume(run: Run) -> None:
    latest = run.checkpoints.latest()
    if latest is None:
        run.print(f"No complete checkpoint in {run.checkpoints.directory}: starting from the beginning.")
    else:
        run.checkpoints.load(latest, run.accelerator, state=run.state, **run.training_objects)
        state = run.state
        run.print(f"Resumed from {latest}: step {state.step}, epoch {state.epoch}, batch {state.batch_in_epoch}.")
        run.last_save_minutes = run.agreed_minutes = state.elapsed_seconds / 60  # the same on every process
    if run.accelerator.is_main_process:
        forget_metrics_after(run.out / METRICS, run.state.step)


def forget_metrics_after(path: Path, step: int) -> None:
    """metrics.jsonl keeps what happened up to the resumed step; the updates after it are done again."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)


def save_checkpoint(run: Run, best: bool = False) -> Path:
    read_back(run)  # the state saved counts every update so far
    run.bank_time()
    folder = run.checkpoints.save(run.accelerator, run.state.step, state=run.state, best=best, **run.training_objects)
    run.last_save_minutes = run.budget_minutes()
    return folder


# The loop


def train(run: Run, corpus: Corpus, model, optimizer, scheduler) -> None:
    """Epochs of token batches, `--update-freq` batches an update, until a stopping rule holds."""
    from tqdm.auto import tqdm

    args, state = run.args, run.state
    progress = tqdm(total=args.max_steps, initial=state.step, disable=not run.accelerator.is_local_main_process,
                    desc="training", dynamic_ncols=True)
    window = {"tokens": 0, "start": time.time()}  # target tokens/s since the last log line
    model.train()
    with stop_on_signals(run):
        train_epochs(run, corpus, model, optimizer, scheduler, progress, window, FreePages())
    progress.close()
    run.bank_time()


def train_epochs(run: Run, corpus: Corpus, model, optimizer, scheduler, progress, window: dict,
                 free_pages: FreePages) -> None:
    """Epochs until a stopping rule holds or a stop signal arrives. Batches are collated ahead of the step by the
    DataLoader (`batch_loader`), and copied to the device without waiting. `free_pages` hands jemalloc's kept pages
    back to the kernel once a minute (hardware.FREE_PAGES_EVERY_S)."""
    args, state = run.args, run.state
    loader, epoch_batches = batch_loader(run, corpus)
    device = run.accelerator.device
    while not run.should_stop():
        corpus.sampler.set_epoch(state.epoch)
        epoch_batches.start = state.batch_in_epoch  # a resumed run collates nothing it skips
        batches = iter(loader)
        while state.batch_in_epoch < len(corpus.sampler) and not run.should_stop():
            count = min(args.update_freq, len(corpus.sampler) - state.batch_in_epoch)
            micro = [{k: v.to(device, non_blocking=True) for k, v in next(batches).items()} for _ in range(count)]
            tokens = corpus.sampler.update_tokens(state.batch_in_epoch, count)
            state.batch_in_epoch += count
            train_step(run, model, optimizer, scheduler, micro, tokens)
            progress.update(1)
            window["tokens"] += tokens
            log_validate_and_save(run, corpus, model, window, progress)
            free_pages()
            _test_signal_hook(state.step)
            if signal_received(run):
                stop_after_signal(run)
        if state.batch_in_epoch >= len(corpus.sampler):  # the epoch is done (not merely interrupted by a limit)
            state.epoch += 1
            state.batch_in_epoch = 0


class EpochBatches:
    """The DataLoader's batch sampler: this process's batches of the sampler's current epoch, from `start` on."""

    def __init__(self, sampler):
        self.sampler, self.start = sampler, 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.start, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.start


def batch_loader(run: Run, corpus: Corpus):
    """A DataLoader that collates the training batches in `--num-workers` processes while the step runs, into
    pinned memory on a GPU. Its workers live for the whole run; each epoch draws its batches anew."""
    from torch.utils.data import DataLoader

    args, device = run.args, run.accelerator.device
    workers = args.num_workers if args.num_workers is not None else (2 if device.type == "cuda" else 0)
    epoch_batches = EpochBatches(corpus.sampler)
    loader = DataLoader(corpus.splits["train"], batch_sampler=epoch_batches, collate_fn=corpus.collator,
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        prefetch_factor=4 if workers else None)
    return loader, epoch_batches


@contextmanager
def stop_on_signals(run: Run):
    """SIGTERM (preemption) and SIGINT (Ctrl-C) end the run after the current update, with a checkpoint; a second
    Ctrl-C stops at once."""
    def handler(signum, frame):
        if run.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        run.stop_signal = signum
        run.print(f"\nReceived {signal.Signals(signum).name}: stopping after this update, with a checkpoint.")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# With several processes, a stop signal and the clock are agreed on every this many updates (a collective the
# device waits for).
SIGNAL_CHECK_EVERY = 10


def signal_received(run: Run) -> bool:
    """Whether any process got a stop signal (all processes stop at the same update). Several processes agree on
    it every SIGNAL_CHECK_EVERY updates, and on the clock at the same time (`Run.budget_minutes`)."""
    if run.accelerator.num_processes > 1:
        if run.state.step % SIGNAL_CHECK_EVERY:
            return False
        mine = torch.tensor([run.stop_signal or 0, run.minutes()], dtype=torch.float64, device=run.accelerator.device)
        agreed = run.accelerator.reduce(mine, "max").tolist()
        run.stop_signal, run.agreed_minutes = int(agreed[0]) or None, agreed[1]
    return run.stop_signal is not None


def stop_after_signal(run: Run) -> None:
    """Checkpoint (when checkpoints are on) and exit with 128 + the signal's number, as a killed process would."""
    name = signal.Signals(run.stop_signal).name
    if checkpointing(run.args):
        folder = save_checkpoint(run)
        run.print(f"{name}: checkpoint {folder} written at step {run.state.step}. Continue with the same command "
                  "and --resume.")
    else:
        run.print(f"{name}: stopped at step {run.state.step}; checkpoints are off (--save-every-minutes 0), so "
                  "nothing was saved.")
    run.accelerator.end_training()
    raise SystemExit(128 + run.stop_signal)


def _test_signal_hook(step: int) -> None:
    """For the crash and preemption tests (tests/training/test_training.py) only: VANILLA_TEST_SIGNAL_AFTER_STEP="15:4" sends
    this process SIGTERM (15) after update 4 and its checkpoint, as a cluster would; "9:4" kills it (SIGKILL)."""
    spec = os.environ.get("VANILLA_TEST_SIGNAL_AFTER_STEP", "")
    if spec and spec.split(":")[1] == str(step):
        os.kill(os.getpid(), int(spec.split(":")[0]))


def train_step(run: Run, model, optimizer, scheduler, micro: list[dict], tokens: int) -> None:
    """One update from the batches `micro`: the gradient of the mean label-smoothed loss over the update's `tokens`
    target tokens (on every process), then clipping and Adam.

    Nothing here waits for the device: the loss stays there (`run.stats`), and a non-finite loss skips the update
    on the device, the way GradScaler does (fused Adam's `found_inf`: no parameter or moment changes). The numbers
    are read back every --log-every updates (`read_back`)."""
    accelerator, args, world = run.accelerator, run.args, run.accelerator.num_processes
    loss_sum = torch.zeros((), device=accelerator.device)
    forward = model if run.compiled is None else run.compiled
    for i, batch in enumerate(micro):
        # Each batch's summed loss is divided by the update's target tokens over all processes, times the number of
        # processes because DDP averages their gradients: the update is the gradient of the mean loss over all of
        # its tokens, however they are split into batches and processes.
        sync = accelerator.no_sync(model) if i < len(micro) - 1 else nullcontext()
        with sync, accelerator.autocast():
            loss = batch_loss(forward, batch, args.label_smoothing, normalizer=tokens / world)
        accelerator.backward(loss)
        loss_sum += loss.detach().float()
    step_loss = (accelerator.reduce(loss_sum, "sum") if world > 1 else loss_sum) / world
    bad = ~torch.isfinite(step_loss)
    if args.clip_norm:
        accelerator.clip_grad_norm_(model.parameters(), args.clip_norm)
    run.stats.add(step_loss, bad, tokens, run.state.step + 1)
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
    scheduler.step()  # a skipped update still counts as a step, as with GradScaler
    optimizer.zero_grad(set_to_none=True)
    run.state.step += 1


class UpdateStats:
    """Sums over the updates since the last read-back, kept on the device: reading a number back makes the host
    wait for the device, so it is done every --log-every updates (and before checkpoints), not every update."""

    def __init__(self, device):
        self.device = device
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


def read_back(run: Run) -> dict | None:
    """The updates since the last read-back: their mean loss and target tokens; reports skipped updates, and stops
    with advice after --max-bad-updates non-finite losses in a row."""
    if run.stats.updates == 0:
        return None
    numbers = run.stats.read()
    state, step = run.state, run.state.step
    run.state.tokens_seen += numbers["tokens"]
    if numbers["skipped"]:
        state.skipped_updates += numbers["skipped"]
        run.print(f"Steps {numbers['first_step']}-{step}: {numbers['skipped']} update(s) skipped, their loss was not "
                  f"finite ({numbers['bad_run']} in a row at step {step}).")
    if numbers["worst_run"] >= run.args.max_bad_updates:
        raise RuntimeError(
            f"The loss was not finite for {numbers['worst_run']} updates in a row (by step {step}). "
            "Lower --lr-scale, raise --warmup-steps, set --clip-norm, or train in fp32 (--precision fp32)."
        )
    return numbers


def log_validate_and_save(run: Run, corpus: Corpus, model, window: dict, progress) -> None:
    """After an update: training metrics every --log-every, validation every --eval-every (BLEU every
    --bleu-every), a checkpoint every --save-every updates or --save-every-minutes."""
    args, state = run.args, run.state
    if state.step % args.log_every == 0 or state.step == 1:
        numbers = read_back(run) or {"skipped": 0, "loss": None}  # None: a checkpoint just read everything back
        now = time.time()
        record = {"step": state.step, "epoch": state.epoch, "lr": run.last_rate,
                  "target_tokens": window["tokens"],  # since the last line
                  "target_tokens_per_s": round(window["tokens"] / max(now - window["start"], 1e-9), 1),
                  "minutes": round(run.minutes(), 2), "skipped_updates": numbers["skipped"]}
        if numbers["loss"] is not None:  # the mean over the updates since the last line
            record["loss"] = round(numbers["loss"], 4)
            progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                 tok_s=f"{record['target_tokens_per_s']:.0f}")
        run.metrics.write(record)
        window.update(tokens=0, start=now)
    if args.eval_every and state.step % args.eval_every == 0 and "validation" in corpus.splits:
        result = {"step": state.step, **validation_loss(model, corpus.splits["validation"], args.max_tokens,
                                                        run.accelerator, corpus.collator)}
        if args.bleu_every and state.step % args.bleu_every == 0:
            result.update(bleu(run, corpus, model, "validation", args.bleu_sentences))
            result.pop("examples")
        best = min((r["valid_nll"] for r in state.history), default=math.inf)
        state.history.append(result)
        run.metrics.write(result)
        run.print(json.dumps(result))
        warn_if_diverging(run, result, best)
        if result["valid_nll"] < best and checkpointing(run.args):
            save_checkpoint(run, best=True)  # also kept as checkpoints/best, beside the last K
            return
    minutes_since_save = run.budget_minutes() - run.last_save_minutes
    time_to_save = args.save_every_minutes and minutes_since_save >= args.save_every_minutes
    if (args.save_every and state.step % args.save_every == 0) or time_to_save:
        save_checkpoint(run)


# A validation loss this far (in nats per token) above its best is a diverging run, not noise.
DIVERGENCE_MARGIN = 0.5


def warn_if_diverging(run: Run, result: dict, best: float) -> None:
    if result["valid_nll"] > best + DIVERGENCE_MARGIN:
        step = next(r["step"] for r in run.state.history if r["valid_nll"] == best)
        run.print(f"WARNING: validation loss {result['valid_nll']:.3f} at step {result['step']} is far above its best, "
                  f"{best:.3f} at step {step}: training is diverging; checkpoints/best holds step {step}. Lower "
                  "--lr-scale, raise --warmup-steps, try --override layer_norm=pre, or set --clip-norm 1.0.")


def bleu(run: Run, corpus: Corpus, model, split: str, limit: int | None = None) -> dict:
    args = run.args
    return bleu_on_split(model, corpus.tokenizer, corpus.raw[split], args.source_lang, args.target_lang,
                         run.accelerator, args.num_beams, args.length_penalty, limit)


# Finish: section 6.1's averaging, the final scores, a Hub-ready folder


def finish(run: Run, corpus: Corpus, model) -> dict:
    """The trained model goes to disk before anything that can fail: the last step's weights (and a checkpoint),
    then the average of the last checkpoints (section 6.1) in their place, then the scores, the card, the summary."""
    args, accelerator, state = run.args, run.accelerator, run.state
    read_back(run)
    if checkpointing(run.args):
        complete = run.checkpoints.complete()
        if not complete or complete[-1] != run.checkpoints.path(state.step):
            save_checkpoint(run)
    unwrapped = accelerator.unwrap_model(model)
    summary = {"step": state.step, "epochs": state.epoch + state.batch_in_epoch / max(len(corpus.sampler), 1),
               "tokens_seen": state.tokens_seen, "train_minutes": round(state.elapsed_seconds / 60, 2),
               "skipped_updates": state.skipped_updates, "averaged_checkpoints": 0,
               "parameters": unwrapped.num_parameters(), "precision": args.precision,
               "processes": accelerator.num_processes, "allocator": allocator_in_use(),
               **compilation_report(run)}
    write_model_folder(run, corpus, unwrapped, summary)
    averaged, choice = average_last_checkpoints(run, corpus, model)
    if averaged:
        summary["averaged_checkpoints"] = len(averaged)
        summary.update(choice)
        write_model_folder(run, corpus, unwrapped, summary)
    summary.update(final_scores(run, corpus, model))
    run.print(json.dumps(summary, indent=1, default=str))
    write_model_folder(run, corpus, unwrapped, summary, weights=False)
    run.metrics.write({"step": state.step, **{k: v for k, v in summary.items() if isinstance(v, (int, float))}})
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def compilation_report(run: Run) -> dict:
    """With --compile: how many graphs torch.compile made (token batches come in many shapes) and the seconds it
    spent compiling them."""
    if run.compiled is None:
        return {}
    from torch._dynamo.utils import calculate_time_spent, counters

    return {"compiled_graphs": int(counters["stats"]["unique_graphs"]),
            "compile_seconds": round(calculate_time_spent().get("total_wall_time", 0.0), 1)}


def final_scores(run: Run, corpus: Corpus, model) -> dict:
    """Validation loss and BLEU, test BLEU (beam search as in section 6.1)."""
    args, scores = run.args, {}
    if "validation" in corpus.splits:
        scores.update(validation_loss(model, corpus.splits["validation"], args.max_tokens, run.accelerator,
                                      corpus.collator))
        scores["validation"] = bleu(run, corpus, model, "validation", args.bleu_sentences)
    if "test" in corpus.raw:
        scores["test"] = bleu(run, corpus, model, "test")
    return scores


def average_last_checkpoints(run: Run, corpus: Corpus, model) -> tuple[list[Path], dict]:
    """Section 6.1: with --average-last K, the final weights are the mean of the last K checkpoints. Not in the
    paper: with --average-choose, the mean of the last k for the k in 1..K with the best validation score. Returns
    the checkpoints averaged and, when chosen, the scores of every k for the summary."""
    args = run.args
    if not args.average_last:
        return [], {}
    unwrapped = run.accelerator.unwrap_model(model)
    candidates = run.checkpoints.complete()[-args.average_last :]
    choice = {}
    if args.average_choose != "none":
        scores = {}
        for count in range(1, len(candidates) + 1):
            load_averaged_weights(unwrapped, average_checkpoints(candidates[-count:]))
            scores[count] = average_score(run, corpus, model)
            run.print(f"The mean of the last {count} checkpoints: validation {args.average_choose} {scores[count]:.4g}")
        better = min if args.average_choose == "loss" else max
        best = better(scores, key=scores.get)  # on a tie, the fewest checkpoints
        candidates = candidates[-best:]
        choice = {"average_choice": {"by": f"validation {args.average_choose}", "scores": scores}}
    load_averaged_weights(unwrapped, average_checkpoints(candidates))
    run.print(f"Final weights: the average of {len(candidates)} checkpoints "
              f"({', '.join(p.name for p in candidates)}).")
    return candidates, choice


def average_score(run: Run, corpus: Corpus, model) -> float:
    """The score that --average-choose compares: validation NLL per token, or BLEU (as the final scores compute them)."""
    args = run.args
    if args.average_choose == "loss":
        return validation_loss(model, corpus.splits["validation"], args.max_tokens, run.accelerator,
                               corpus.collator)["valid_nll"]
    return bleu(run, corpus, model, "validation", args.bleu_sentences)["bleu"]


def write_model_folder(run: Run, corpus: Corpus, model, summary: dict, weights: bool = True) -> None:
    """config, safetensors, generation config, model code, tokenizer, training_summary.json and the model card,
    each written beside its final name and then renamed over it: a failure never leaves a half-written file."""
    if run.accelerator.is_main_process:
        staging = run.out / ".tmp-model"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        if weights:
            model.save_pretrained(staging, safe_serialization=True)
            corpus.tokenizer.save_pretrained(staging)
        (staging / "training_summary.json").write_text(json.dumps(summary, indent=1, default=str))
        recipe_runs = RECIPES[run.args.recipe].get("runs", []) if run.args.recipe else []  # moving to docs/ data
        card = run_model_card(run.args, model.config, summary, corpus.tokenizer, recipe_runs)
        (staging / "README.md").write_text(card)
        for path in sorted(staging.iterdir()):
            os.replace(path, run.out / path.name)
        staging.rmdir()
    run.accelerator.wait_for_everyone()
