"""Training as section 5 of the paper describes it, with Accelerate: `main(args)` is the outline.

    data (5.1) -> model (3) -> optimizer and schedule (5.3) -> the loop (5.2, 5.4) -> finish (6.1)

The loop is `train` -> `train_step` (one update: accumulation, the NaN guard, clipping, the optimizer) ->
`log_validate_and_save` (metrics, validation, checkpoints). The pieces live in modules named for them: `options`
(the command line), `data` and `tokenization` (5.1), `optimization` (5.3), `evaluation` (loss, BLEU),
`checkpoints` (atomic checkpoints, 6.1 averaging), `model_card`. The same code runs on a 2-core CPU, one GPU or
many (DDP, FSDP or DeepSpeed through `accelerate launch`), in fp32, bf16 or fp16; `vanilla-train --help` lists
the options, and README.md the commands for the quickstart, Multi30k and the paper's WMT14 base model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoints import CheckpointManager, TrainState, average_checkpoints, load_averaged_weights
from .evaluation import batch_loss, bleu_on_split, load_batch, validation_loss
from .hardware import default_precision, gpu_available
from .optimization import build_optimizer, build_scheduler
from .options import RUN_CONFIG, data_source_options

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
    last_save: float = field(default_factory=time.time)
    consecutive_bad: int = 0  # updates skipped in a row by the NaN guard

    def print(self, *message) -> None:
        self.accelerator.print(*message)

    def minutes(self) -> float:
        """Training minutes, this process and the runs it resumed."""
        return (self.state.elapsed_seconds + time.time() - self.started) / 60

    def bank_time(self) -> None:
        """Move this process's elapsed time into the state (saved with checkpoints)."""
        self.state.elapsed_seconds += time.time() - self.started
        self.started = time.time()

    def should_stop(self) -> bool:
        a, s = self.args, self.state
        return ((a.max_steps is not None and s.step >= a.max_steps)
                or (a.max_epochs is not None and s.epoch >= a.max_epochs)
                or (a.max_minutes is not None and self.minutes() >= a.max_minutes))


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
    args.precision = args.precision or default_precision(args.cpu)
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
    if args.overwrite and accelerator.is_main_process and out.exists():
        shutil.rmtree(out)
    accelerator.wait_for_everyone()
    out.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process and not args.resume:
        (out / RUN_CONFIG).write_text(json.dumps(vars(args), indent=1, default=str))
    set_seed(args.seed)
    if accelerator.device.type == "cpu":
        # Tiny gradients and Adam moments become subnormal floats as the loss falls; x86 CPUs handle those up to
        # ~100x slower. Flushing them to zero changes nothing measurable in training and keeps steps fast.
        torch.set_flush_denormal(True)
    return Run(args=args, accelerator=accelerator, out=out, metrics=MetricsLog(out / METRICS, accelerator))


def prepare_corpus(run: Run) -> Corpus:
    """Section 5.1: the corpus, a joint BPE tokenizer (trained unless given), tokenized pairs, token batches."""
    from .data import TokenBatchSampler, TranslationCollator, load_corpus, preprocess_translation

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
    return Corpus(raw, tokenizer, splits, sampler, TranslationCollator(pad_token_id=tokenizer.pad_token_id))


def get_tokenizer(run: Run, raw):
    """The given tokenizer, the one this run saved before (--resume), or a joint BPE trained on the training data."""
    from transformers import AutoTokenizer

    from .configuration_vanilla import VanillaTransformerConfig
    from .data import iter_sentences
    from .tokenization import train_bpe_tokenizer

    args, accelerator = run.args, run.accelerator
    if args.tokenizer:
        return AutoTokenizer.from_pretrained(args.tokenizer)
    if (run.out / "tokenizer.json").is_file() and args.resume:
        return AutoTokenizer.from_pretrained(run.out)
    with accelerator.main_process_first():
        if not accelerator.is_main_process:
            return AutoTokenizer.from_pretrained(run.out)
        # model_max_length is the model's position table size, so that the pipeline truncates to what the model
        # was built for.
        positions = getattr(VanillaTransformerConfig, args.preset)(**args.config_overrides).max_position_embeddings
        tokenizer = train_bpe_tokenizer(iter_sentences(raw["train"], [args.source_lang, args.target_lang]),
                                        vocab_size=args.vocab_size, model_max_length=positions)
        tokenizer.save_pretrained(run.out)
        return tokenizer


def build_model_and_optimizer(run: Run, corpus: Corpus):
    """The model of section 3 (a Table 3 preset), Adam and the Eq. (3) schedule (5.3), prepared; resumes state."""
    from .configuration_vanilla import VanillaTransformerConfig
    from .modeling_vanilla import VanillaTransformerForConditionalGeneration

    args, accelerator, tokenizer = run.args, run.accelerator, corpus.tokenizer
    special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.bos_token_id}
    config = getattr(VanillaTransformerConfig, args.preset)(vocab_size=len(tokenizer), **special,
                                                            **args.config_overrides)
    model = VanillaTransformerForConditionalGeneration(config)
    model.generation_config.num_beams, model.generation_config.length_penalty = args.num_beams, args.length_penalty
    if accelerator.is_main_process:  # the config beside the tokenizer lets vanilla-average work mid-run
        config.save_pretrained(run.out)
    optimizer = build_optimizer(model)
    scheduler = build_scheduler(optimizer, config.d_model, args.warmup_steps, args.lr_scale)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    accelerator.register_for_checkpointing(run.state)
    run.checkpoints = CheckpointManager(run.out / "checkpoints", keep=args.keep_checkpoints, log=run.print)
    if args.resume:
        resume(run)
    if args.report_to != "none":
        accelerator.init_trackers("vanilla-transformer", config={k: str(v) for k, v in vars(args).items()})
    run.print(f"{config.model_type} {args.preset}: {accelerator.unwrap_model(model).num_parameters() / 1e6:.1f}M "
              f"parameters, {args.precision}, {accelerator.num_processes} process(es), "
              f"{args.max_tokens} x {args.update_freq} tokens per side and process per update")
    return model, optimizer, scheduler


def resume(run: Run) -> None:
    latest = run.checkpoints.latest()
    if latest is None:
        run.print(f"No complete checkpoint in {run.checkpoints.directory}: starting from the beginning.")
        return
    run.accelerator.load_state(str(latest))
    state = run.state
    run.print(f"Resumed from {latest}: step {state.step}, epoch {state.epoch}, batch {state.batch_in_epoch}.")


# The loop


def train(run: Run, corpus: Corpus, model, optimizer, scheduler) -> None:
    """Epochs of token batches, `--update-freq` batches an update, until a stopping rule holds."""
    from tqdm.auto import tqdm

    args, state = run.args, run.state
    progress = tqdm(total=args.max_steps, initial=state.step, disable=not run.accelerator.is_local_main_process,
                    desc="training", dynamic_ncols=True)
    window = {"tokens": 0, "start": time.time()}  # target tokens/s since the last log line
    model.train()
    while not run.should_stop():
        corpus.sampler.set_epoch(state.epoch)
        batches = list(corpus.sampler)
        while state.batch_in_epoch < len(batches) and not run.should_stop():
            group = batches[state.batch_in_epoch : state.batch_in_epoch + args.update_freq]
            micro = [load_batch(corpus.splits["train"], ix, corpus.collator, run.accelerator.device) for ix in group]
            state.batch_in_epoch += len(group)
            update = train_step(run, model, optimizer, scheduler, micro)
            if update is None:
                continue
            progress.update(1)
            window["tokens"] += update["tokens"]
            log_validate_and_save(run, corpus, model, update, window, progress)
        if state.batch_in_epoch >= len(batches):  # the epoch is done (not merely interrupted by a limit)
            state.epoch += 1
            state.batch_in_epoch = 0
    progress.close()
    run.bank_time()


def train_step(run: Run, model, optimizer, scheduler, micro: list[dict]) -> dict | None:
    """One update from the batches `micro`: the gradient of the mean label-smoothed loss over all of their target
    tokens (on every process), then clipping and Adam. Returns {"loss", "lr", "tokens"}, or None when the NaN guard
    skipped the update."""
    accelerator, args, world = run.accelerator, run.args, run.accelerator.num_processes
    local_tokens = sum(int((b["labels"] != -100).sum()) for b in micro)
    tokens = int(accelerator.reduce(torch.tensor(local_tokens, device=accelerator.device), "sum"))
    loss_sum = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(micro):
        # Each batch's summed loss is divided by the update's target tokens over all processes, times the number of
        # processes because DDP averages their gradients: the update is the gradient of the mean loss over all of
        # its tokens, however they are split into batches and processes.
        sync = accelerator.no_sync(model) if i < len(micro) - 1 else nullcontext()
        with sync, accelerator.autocast():
            loss = batch_loss(model, batch, args.label_smoothing, normalizer=tokens / world)
        accelerator.backward(loss)
        loss_sum += loss.detach().float()
    step_loss = accelerator.reduce(loss_sum, "sum").item() / world
    if not math.isfinite(step_loss):
        skip_update(run, optimizer, step_loss)
        return None
    run.consecutive_bad = 0
    if args.clip_norm:
        accelerator.clip_grad_norm_(model.parameters(), args.clip_norm)
    lr = scheduler.get_last_lr()[0]  # the rate of this update
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    run.state.step += 1
    run.state.tokens_seen += tokens
    return {"loss": step_loss, "lr": lr, "tokens": tokens}


def skip_update(run: Run, optimizer, loss: float) -> None:
    """The NaN/inf guard: drop this update's gradients; stop with advice after --max-bad-updates in a row."""
    optimizer.zero_grad(set_to_none=True)
    run.state.skipped_updates += 1
    run.consecutive_bad += 1
    step = run.state.step + 1
    run.print(f"Step {step}: loss is {loss}; update skipped ({run.consecutive_bad} in a row).")
    if run.consecutive_bad >= run.args.max_bad_updates:
        raise RuntimeError(
            f"The loss was not finite for {run.consecutive_bad} updates in a row (step {step}). "
            "Lower --lr-scale, raise --warmup-steps, set --clip-norm, or train in fp32 (--precision fp32)."
        )


def log_validate_and_save(run: Run, corpus: Corpus, model, update: dict, window: dict, progress) -> None:
    """After an update: training metrics every --log-every, validation every --eval-every (BLEU every
    --bleu-every), a checkpoint every --save-every updates or --save-every-minutes."""
    args, state = run.args, run.state
    if state.step % args.log_every == 0 or state.step == 1:
        now = time.time()
        record = {"step": state.step, "epoch": state.epoch, "loss": round(update["loss"], 4), "lr": update["lr"],
                  "target_tokens_per_s": round(window["tokens"] / max(now - window["start"], 1e-9), 1),
                  "minutes": round(run.minutes(), 2)}
        progress.set_postfix(loss=f"{update['loss']:.3f}", lr=f"{update['lr']:.2e}",
                             tok_s=f"{record['target_tokens_per_s']:.0f}")
        run.metrics.write(record)
        window.update(tokens=0, start=now)
    if args.eval_every and state.step % args.eval_every == 0 and "validation" in corpus.splits:
        result = {"step": state.step, **validation_loss(model, corpus.splits["validation"], args.max_tokens,
                                                        run.accelerator, corpus.collator)}
        if args.bleu_every and state.step % args.bleu_every == 0:
            result.update(bleu(run, corpus, model, "validation", args.bleu_sentences))
            result.pop("examples")
        state.history.append(result)
        run.metrics.write(result)
        run.print(json.dumps(result))
    time_to_save = args.save_every_minutes and time.time() - run.last_save >= 60 * args.save_every_minutes
    if (args.save_every and state.step % args.save_every == 0) or time_to_save:
        run.bank_time()
        run.checkpoints.save(run.accelerator, state.step)
        run.last_save = time.time()


def bleu(run: Run, corpus: Corpus, model, split: str, limit: int | None = None) -> dict:
    args = run.args
    return bleu_on_split(model, corpus.tokenizer, corpus.raw[split], args.source_lang, args.target_lang,
                         run.accelerator, args.num_beams, args.length_penalty, limit)


# Finish: section 6.1's averaging, the final scores, a Hub-ready folder


def finish(run: Run, corpus: Corpus, model) -> dict:
    args, accelerator, state = run.args, run.accelerator, run.state
    if args.save_every or args.save_every_minutes:
        complete = run.checkpoints.complete()
        if not complete or complete[-1] != run.checkpoints.path(state.step):
            run.checkpoints.save(accelerator, state.step)
    unwrapped = accelerator.unwrap_model(model)
    averaged = average_last_checkpoints(run, unwrapped)
    summary = {"step": state.step, "epochs": state.epoch + state.batch_in_epoch / max(len(corpus.sampler), 1),
               "tokens_seen": state.tokens_seen, "train_minutes": round(state.elapsed_seconds / 60, 2),
               "skipped_updates": state.skipped_updates, "averaged_checkpoints": len(averaged),
               "parameters": unwrapped.num_parameters(), "precision": args.precision,
               "processes": accelerator.num_processes}
    if "validation" in corpus.splits:
        summary.update(validation_loss(model, corpus.splits["validation"], args.max_tokens, accelerator,
                                       corpus.collator))
        summary["validation"] = bleu(run, corpus, model, "validation", args.bleu_sentences)
    if "test" in corpus.raw:
        summary["test"] = bleu(run, corpus, model, "test")
    run.print(json.dumps(summary, indent=1, default=str))
    if accelerator.is_main_process:
        write_model_folder(run, corpus, unwrapped, summary)
    run.metrics.write({"step": state.step, **{k: v for k, v in summary.items() if isinstance(v, (int, float))}})
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def average_last_checkpoints(run: Run, model) -> list[Path]:
    """Section 6.1: with --average-last K, the final weights are the mean of the last K checkpoints."""
    if not run.args.average_last:
        return []
    averaged = run.checkpoints.complete()[-run.args.average_last :]
    load_averaged_weights(model, average_checkpoints(averaged))
    run.print(f"Final weights: the average of {len(averaged)} checkpoints ({', '.join(p.name for p in averaged)}).")
    return averaged


def write_model_folder(run: Run, corpus: Corpus, model, summary: dict) -> None:
    """config, safetensors, generation config, model code, tokenizer, training_summary.json and the model card."""
    model.save_pretrained(run.out, safe_serialization=True)
    corpus.tokenizer.save_pretrained(run.out)
    (run.out / "training_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (run.out / "README.md").write_text(run_model_card(run.args, model.config, summary, corpus.tokenizer))


def run_model_card(args: argparse.Namespace, config, summary: dict, tokenizer) -> str:
    """The model card of a training run: model_card.md filled with this run's facts."""
    from .model_card import describe_architecture, write_model_card

    hub_dataset = args.dataset or args.card_dataset
    train_files = args.train_files or args.train_jsonl or []
    local_name = Path(train_files[0]).parent.name if train_files else ""
    departures = ", ".join(f"{k}={v}" for k, v in args.config_overrides.items()) or "none"
    averaged = summary["averaged_checkpoints"]
    device = "GPU" if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"

    def result(split):
        r = summary.get(split)
        return "not evaluated" if not r else (f"BLEU {r['bleu']}, chrF {r['chrf']} on {r['sentences']} sentences "
                                             f"(`{r['bleu_signature']}`, `{r['chrf_signature']}`)")

    return write_model_card(
        name=args.model_name or Path(args.output_dir).resolve().name,
        languages=[args.source_lang, args.target_lang],
        datasets=[hub_dataset] if hub_dataset else [],
        dataset_name=(f"{hub_dataset} {args.dataset_config or ''}".strip() if hub_dataset
                      else local_name or "local files"),
        bleu=(summary.get("test") or summary.get("validation") or {}).get("bleu"),
        summary=f"{args.source_lang} -> {args.target_lang}, preset `{args.preset}`, trained for "
                f"{summary['train_minutes']} minutes.",
        architecture=f"preset `{args.preset}`: {describe_architecture(config)}; {summary['parameters'] / 1e6:.1f}M "
                     f"parameters. Overrides of the preset: {departures}.",
        data=f"{args.dataset or ' + '.join(train_files)}; {args.source_lang} -> {args.target_lang}; joint BPE "
             f"vocabulary of {len(tokenizer)} tokens; pairs longer than {args.max_length} tokens dropped.",
        training=f"{summary['step']} updates ({summary['epochs']:.2f} epochs, {summary['tokens_seen']} target tokens) "
                 f"of up to {args.max_tokens} x {args.update_freq} tokens per side and process, "
                 f"{summary['processes']} process(es); Adam (0.9, 0.98, 1e-9), Eq. (3) learning rate with "
                 f"{args.warmup_steps} warmup steps x {args.lr_scale}; label smoothing {args.label_smoothing}; "
                 f"{args.precision}; {summary['train_minutes']} minutes on {device}; final weights "
                 + (f"averaged over the last {averaged} checkpoints." if averaged else "of the last step."),
        evaluation=f"Validation: {result('validation')}. Test: {result('test')}. Beam {args.num_beams}, "
                   f"length penalty {args.length_penalty}.",
    )
