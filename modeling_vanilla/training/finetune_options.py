"""The options of `vanilla-finetune`: transformers' `Seq2SeqTrainingArguments` itself, so that every Trainer flag
works under Trainer's own name (--learning_rate or --learning-rate, --lr_scheduler_type, --deepspeed, --fsdp,
--report_to, --push_to_hub ...), beside the options vanilla-train shares with it (data, output folder, speed:
`options.py`) and its own (`FinetuneOptions`: the model, sample limits).

vanilla-finetune differs from Trainer in its defaults (`FINETUNE_DEFAULTS`, shown by `--help`) and in these flags:
- `--eval_steps N` evaluates (loss, BLEU, chrF) every N updates when there is validation data, without
  `--eval_strategy steps`; 0: at the end only. `--save_steps 0`: no checkpoints.
- `--label_smoothing_factor` (0.1, section 5.4) is applied by the model's own loss, the definition vanilla-train
  uses, not by Trainer's LabelSmoother.
- `--torch_compile`, unset: on for a CUDA GPU, off on the CPU (docs/benchmarks.md); when compiling, batch lengths
  are padded to a multiple of 8 (`--pad-to-multiple-of`).
The flags vanilla-finetune had before it took Trainer's names (`DEPRECATED`) work for one release, with a message.

`--help` lists vanilla-finetune's own options and imports neither torch nor transformers; `--help-all` adds every
field of Seq2SeqTrainingArguments, which imports torch (a few seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..utils.arguments import (
    int_at_least,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from .option_parser import OptionsParser, option
from .options import (
    DATA,
    OUTPUT,
    SPEED,
    DataOptions,
    RunFolderOptions,
    SpeedOptions,
    check_allocator,
    check_data_arguments,
    resolve_compile,
)
from .run_folder import FINETUNE_RUN, check_output_dir

if TYPE_CHECKING:  # imported when the parser is built: it imports torch
    from transformers import Seq2SeqTrainingArguments

PROG = "vanilla-finetune"
DESCRIPTION = "Fine-tune a trained model with transformers' Seq2SeqTrainer, scored with sacreBLEU."
TRAINER_SECTION = "Seq2SeqTrainingArguments"


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions(SpeedOptions, RunFolderOptions, DataOptions):
    """vanilla-finetune's options besides Seq2SeqTrainingArguments."""

    model: str = option("trained model folder (save_pretrained, with its tokenizer) or Hub repo id", positional=True)
    max_train_samples: int | None = option("use only the first N training pairs", default=None, check=positive_int,
                                           group=DATA)
    max_eval_samples: int | None = option("score only the first N validation and test pairs", default=None,
                                          check=positive_int, group=DATA)


def updates_or_minus_one(text: str) -> int:
    """--max_steps: a positive number of updates, or -1 (then --num_train_epochs decides)."""
    if text.strip() == "-1":
        return -1
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, or -1 for --num-train-epochs to decide, got {text}") from None


def seed(text: str) -> int:
    """A seed of numpy and torch: an integer in [0, 2**32 - 1]."""
    value = non_negative_int(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32 - 1], got {text}")
    return value


# The checking type of each numeric field of Seq2SeqTrainingArguments (HfArgumentParser gives a bare int or float).
# Trainer reads a float below 1 in *_steps (but max_steps) as a fraction of the training.
TRAINER_CHECKS = {
    "per_device_train_batch_size": positive_int, "per_device_eval_batch_size": positive_int,
    "num_train_epochs": positive_float, "max_steps": updates_or_minus_one, "learning_rate": positive_float,
    "warmup_steps": non_negative_float, "weight_decay": non_negative_float, "adam_beta1": probability,
    "adam_beta2": probability, "adam_epsilon": positive_float, "gradient_accumulation_steps": positive_int,
    "max_grad_norm": non_negative_float, "label_smoothing_factor": probability, "neftune_noise_alpha": positive_float,
    "torch_empty_cache_steps": positive_int, "logging_steps": positive_float, "eval_steps": non_negative_float,
    "eval_delay": non_negative_float, "eval_accumulation_steps": positive_int, "save_steps": non_negative_float,
    "save_total_limit": positive_int, "seed": seed, "data_seed": seed, "dataloader_num_workers": non_negative_int,
    "dataloader_prefetch_factor": positive_int, "ddp_bucket_cap_mb": positive_int, "ddp_timeout": positive_int,
    "local_rank": int_at_least(-1), "generation_max_length": positive_int, "generation_num_beams": positive_int,
}
# vanilla-finetune's defaults where they are not Trainer's; None: decided after parsing (the module docstring).
FINETUNE_DEFAULTS = {
    "per_device_train_batch_size": 32, "per_device_eval_batch_size": 32, "learning_rate": 1e-4,
    "num_train_epochs": 1.0, "logging_steps": 10, "save_total_limit": 2, "seed": 1, "eval_steps": 0,
    "label_smoothing_factor": 0.1, "predict_with_generate": True, "eval_strategy": None, "save_strategy": None,
    "torch_compile": None,
}
NOTES = {
    "eval_steps": "vanilla-finetune: evaluates every N updates when there is validation data, without "
                  "--eval_strategy steps; 0: at the end only",
    "save_steps": "vanilla-finetune: 0 = no checkpoints",
    "label_smoothing_factor": "vanilla-finetune: applied by the model's loss (section 5.4), not LabelSmoother",
    "torch_compile": "vanilla-finetune: unset = on a CUDA GPU, off on the CPU (docs/benchmarks.md)",
    "predict_with_generate": "vanilla-finetune: BLEU and chrF of generated translations",
}
# (old flag, the flag that replaces it, the field it sets, const= for a flag without a value or type= for one with)
DEPRECATED = (
    ("--cpu", "--use_cpu", "use_cpu", {"const": True}),
    ("--compile", "--torch_compile", "torch_compile", {"const": True}),
    ("--no-compile", "--torch_compile false", "torch_compile", {"const": False}),
    ("--num-beams", "--generation_num_beams", "generation_num_beams", {"type": positive_int}),
    ("--label-smoothing", "--label_smoothing_factor", "label_smoothing_factor", {"type": probability}),
    ("--group-by-length", "--train_sampling_strategy group_by_length", "train_sampling_strategy",
     {"const": "group_by_length"}),
)


def finetune_parser(trainer: bool = True) -> OptionsParser:
    """vanilla-finetune's parser; `trainer=False`: without Seq2SeqTrainingArguments, for `--help` (no torch)."""
    if not trainer:
        defaults = ", ".join(f"--{k} {v}" for k, v in FINETUNE_DEFAULTS.items() if v is not None)
        parser = OptionsParser([FinetuneOptions], prog=PROG, description=DESCRIPTION, groups=(DATA, OUTPUT, SPEED),
                               epilog=f"Every flag of transformers' Seq2SeqTrainingArguments works too (--help-all "
                                      f"lists them), with these defaults: {defaults}.")
        parser.add_argument("--help-all", action="store_true", help="list Trainer's flags too (imports torch)")
    else:
        from transformers import Seq2SeqTrainingArguments

        parser = OptionsParser([Seq2SeqTrainingArguments, FinetuneOptions], prog=PROG, description=DESCRIPTION,
                               groups=(DATA, OUTPUT, SPEED), conflict_handler="resolve")  # our --output-dir wins
        parser.add_argument("--help-all", action="help", help="show this help message and exit")
        parser.set_defaults(**FINETUNE_DEFAULTS)
        for name, check in TRAINER_CHECKS.items():
            parser.check(name, check)
        for name, note in NOTES.items():
            parser.note(name, note)
    for old, replacement, dest, kwargs in DEPRECATED:
        parser.deprecate(old, replacement, dest, **kwargs)
    return parser


def parse_finetune_args(argv=None, restart: bool = False) -> tuple[FinetuneOptions, Seq2SeqTrainingArguments]:
    """vanilla-finetune's command line (`argv`, default sys.argv) as (FinetuneOptions, Seq2SeqTrainingArguments),
    checked and resolved for this machine before any model or data is read.

    `restart`: the command line is this process's own, and a CPU run restarts on jemalloc or tcmalloc where one is
    installed (`--allocator`, `hardware.preload_allocator`). That happens before Seq2SeqTrainingArguments is made:
    making it sets up the device and the processes of a launch, which a restart would leave waiting for each other."""
    parser, namespace = finetune_namespace(argv)
    options = parser.build(namespace, FinetuneOptions)
    check_data_arguments(parser, options)
    check_apart_from_model(parser, options)
    check_output_dir(parser, options, FINETUNE_RUN)
    check_allocator(parser, options)
    from transformers import Seq2SeqTrainingArguments

    from ..utils.hardware import gpu_available, preload_allocator

    if restart and (namespace.use_cpu or not gpu_available()):
        preload_allocator(options.allocator, PROG)
    return options, parser.build(namespace, Seq2SeqTrainingArguments)


def finetune_namespace(argv=None) -> tuple[OptionsParser, argparse.Namespace]:
    """The command line read and resolved for this machine (`resolve_trainer_fields`): the step before the values
    are checked and frozen into the two dataclasses. `--help` ends here, before torch is imported."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        finetune_parser(trainer=False).parse_args(["--help"])
    parser = finetune_parser()
    namespace = parser.parse_namespace(argv)
    resolve_trainer_fields(namespace)
    return parser, namespace


def resolve_trainer_fields(namespace: argparse.Namespace) -> None:
    """Trainer's fields that vanilla-finetune decides after parsing (the module docstring), before they are frozen
    into Seq2SeqTrainingArguments."""
    import torch

    cuda = torch.cuda.is_available()
    namespace.torch_compile, namespace.pad_to_multiple_of = resolve_compile(
        namespace.torch_compile, namespace.pad_to_multiple_of, cuda=cuda and not namespace.use_cpu)
    # Launched as several processes on a machine without a GPU, Trainer runs each as a separate single-process
    # training unless told to use the CPU: then it trains data-parallel over gloo.
    namespace.use_cpu = namespace.use_cpu or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and not cuda)
    validation = bool(namespace.valid_files or namespace.valid_jsonl or namespace.dataset)
    if namespace.eval_strategy is None:
        namespace.eval_strategy = "steps" if validation and namespace.eval_steps else "no"
    namespace.eval_steps = namespace.eval_steps or None
    if namespace.save_strategy is None:
        namespace.save_strategy = "steps" if namespace.save_steps else "no"
    namespace.save_steps = namespace.save_steps or 500  # Trainer's default, unused without checkpoints


def check_apart_from_model(parser: OptionsParser, options: FinetuneOptions) -> None:
    """The output folder is not the model folder, nor inside it, nor around it: fine-tuning would write over the
    model it starts from."""
    out, model = Path(options.output_dir).resolve(), Path(options.model)
    if not model.exists():
        return
    source = model.resolve()
    relation = ("is" if out == source else "is inside" if source in out.parents
                else "contains" if out in source.parents else None)
    if relation:
        parser.error(f"--output-dir {options.output_dir} {relation} the model folder {options.model}: fine-tuning "
                     "would write over the model it starts from. Choose another --output-dir.")
