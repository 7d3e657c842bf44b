"""The start of a training run, before the loop: Accelerate and the run folder, the corpus and tokenizer (section
5.1), the model (section 3) with Adam and the Eq. (3) schedule (section 5.3), and a resume from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..utils.hardware import gpu_available
from .checkpoints import CheckpointManager
from .optimization import build_optimizer, build_scheduler, linear_cooldown
from .options import checkpointing, data_source_options
from .run import METRICS, Corpus, MetricsLog, Run
from .run_folder import RUN_CONFIG, data_fingerprint
from .update_stats import UpdateStats


def start_run(args: Any) -> Run:
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
               stats=UpdateStats(accelerator.device, args.max_bad_updates, accelerator.print))


def check_sharding(accelerator, args: Any) -> None:
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


def build_model_and_optimizer(run: Run, corpus: Corpus) -> None:
    """The model of section 3 (a Table 3 preset), Adam and the Eq. (3) schedule (5.3), prepared by Accelerate into
    `run.model`, `run.optimizer` and `run.scheduler`; resumes their state with --resume."""
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
    run.model, run.optimizer, run.scheduler = accelerator.prepare(model, optimizer, scheduler)
    run.checkpoints = CheckpointManager(run.out / "checkpoints", keep=args.keep_checkpoints, log=run.print)
    if args.compile:
        run.compiled = torch.compile(run.model)  # the training forward only; evaluation and generation stay eager
    if args.resume:
        resume(run)
    if args.report_to != "none":
        accelerator.init_trackers("vanilla-transformer", config={k: str(v) for k, v in vars(args).items()})
    run.print(f"{config.model_type} {args.preset}: {accelerator.unwrap_model(run.model).num_parameters() / 1e6:.1f}M "
              f"parameters, {args.precision}, {accelerator.num_processes} process(es), "
              f"{args.max_tokens} x {args.update_freq} tokens per side and process per update")


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
    """The last complete checkpoint into the run (weights, optimizer, schedule, random states, state), or a message
    that there is none; metrics.jsonl forgets the updates after it."""
    latest = run.checkpoints.latest()
    if latest is None:
        run.print(f"No complete checkpoint in {run.checkpoints.directory}: starting from the beginning.")
    else:
        run.checkpoints.load(latest, run.accelerator, run.training_objects())
        state = run.state
        run.print(f"Resumed from {latest}: step {state.step}, epoch {state.epoch}, batch {state.batch_in_epoch}.")
        run.clock.resumed()  # the same on every process
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
