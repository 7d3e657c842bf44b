"""`vanilla-finetune`: fine-tune a trained model with transformers' `Seq2SeqTrainer`, scored with sacreBLEU.

The same command runs on a CPU, one GPU, or several processes through `accelerate launch`. Data comes from any
source the data layer reads (local text files, JSON lines, a Hub dataset), with the same options as vanilla-train.

Examples:

    # Continue a Multi30k EN->DE model, validation BLEU every 500 steps, test BLEU at the end
    vanilla-finetune runs/multi30k --source-lang en --target-lang de \\
        --train-files ../shared/data/multi30k/train --valid-files ../shared/data/multi30k/val \\
        --test-files ../shared/data/multi30k/test_2016_flickr --output-dir runs/multi30k-ft \\
        --max-steps 2000 --learning-rate 1e-4 --label-smoothing 0.1 --eval-steps 500

    # Two processes on a CPU (gloo); `accelerate launch --cpu --num_processes 2` would silently run one
    accelerate launch --multi_gpu --num_processes 2 -m modeling_vanilla.cli.finetune runs/multi30k ...

    # A Hub dataset (needs the network or the datasets cache)
    vanilla-finetune runs/wmt14-base --source-lang en --target-lang de \\
        --dataset wmt/wmt14 --dataset-config de-en --output-dir runs/wmt14-ft --max-steps 10000

The loss Trainer logs is the mean over every label token of an update, whatever --gradient-accumulation-steps and
the number of processes: the model takes Trainer's `num_items_in_batch` (see its `accepts_loss_kwargs`). Label
smoothing (`--label-smoothing`) is the model's own (section 5.4, its `forward(label_smoothing=...)`), the same
definition vanilla-train uses, not Trainer's LabelSmoother. The output folder holds the
fine-tuned model (safetensors, code, tokenizer, generation config), all_results.json and trainer_state.json.

The output folder: never the model folder (nor inside it, nor around it). A folder that is not empty is refused
unless --resume (continue the run in it from its last checkpoint-N folder, written every --save-steps updates) or
--overwrite (replace it, only when it holds an earlier fine-tuning run: trainer_state.json, all_results.json or a
checkpoint-N folder; never the current folder or one holding the data) is given. Only the newest
--save-total-limit checkpoints are kept (default 2), since each holds the optimizer state too.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from ..data.corpus import load_corpus
from ..data.preprocessing import preprocess_translation
from ..inference.model_folder import check_model_folder
from ..inference.translation import score
from ..training.options import (
    add_allocator_argument,
    add_data_arguments,
    check_allocator,
    check_data_arguments,
    data_source_options,
    resolve_compile,
)
from ..utils.arguments import non_negative_float, non_negative_int, positive_float, positive_int, probability
from ..utils.hardware import FreePages, gpu_available, preload_allocator

# What Trainer writes into its output folder: a folder holding one of these holds an earlier fine-tuning run.
RUN_FILES = ("trainer_state.json", "all_results.json")
DATA_OPTIONS = ("train_files", "valid_files", "test_files", "train_jsonl", "valid_jsonl", "test_jsonl")


def updates_or_minus_one(text: str) -> int:
    """--max-steps: a positive number of updates, or -1 (then --num-train-epochs decides)."""
    if text.strip() == "-1":
        return -1
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, or -1 for --num-train-epochs to decide, got {text}"
        ) from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vanilla-finetune", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="trained model folder (save_pretrained, with its tokenizer) or Hub repo id")
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", required=True, type=Path, help="a new or empty folder, not the model's")
    out.add_argument("--overwrite", action="store_true",
                     help="replace the earlier fine-tuning run in --output-dir (and nothing else)")
    out.add_argument("--resume", action="store_true",
                     help="continue the run in --output-dir from its last checkpoint-N folder")
    out.add_argument("--save-total-limit", type=positive_int, default=2,
                     help="checkpoints kept, the newest (each holds the optimizer state)")

    data = add_data_arguments(parser)  # the same data options as vanilla-train
    data.add_argument("--max-train-samples", type=positive_int, help="use only the first N training pairs")
    data.add_argument("--max-eval-samples", type=positive_int, help="score only the first N validation and test pairs")
    data.add_argument("--num-proc", type=positive_int, help="processes for tokenization")

    train = parser.add_argument_group("training")
    train.add_argument("--max-steps", type=updates_or_minus_one, default=-1,
                       help="updates; -1: --num-train-epochs decides")
    train.add_argument("--num-train-epochs", type=positive_float, default=1.0)
    train.add_argument("--per-device-train-batch-size", type=positive_int, default=32,
                       help="sentence pairs per process")
    train.add_argument("--per-device-eval-batch-size", type=positive_int, default=32)
    train.add_argument("--gradient-accumulation-steps", type=positive_int, default=1)
    train.add_argument("--learning-rate", type=positive_float, default=1e-4)
    train.add_argument("--warmup-steps", type=non_negative_int, default=0)
    train.add_argument("--weight-decay", type=non_negative_float, default=0.0)
    train.add_argument("--label-smoothing", type=probability, default=0.1, help="section 5.4: 0.1")
    train.add_argument("--group-by-length", action="store_true", help="batch pairs of similar length (less padding)")
    train.add_argument("--seed", type=non_negative_int, default=1, help="0 to 2**32 - 1")
    train.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    train.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")
    add_allocator_argument(train)
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="Trainer's torch_compile (default: on a CUDA GPU, off on the CPU: docs/benchmarks.md)")
    train.add_argument("--pad-to-multiple-of", type=positive_int, default=None,
                       help="pad batch lengths to a multiple of N, fewer shapes to compile (default: 8 with --compile, "
                            "else none)")

    ev = parser.add_argument_group("evaluation and logging")
    ev.add_argument(
        "--eval-steps", type=non_negative_int, default=0,
        help="validation loss and BLEU every N updates (0: at the end)",
    )
    ev.add_argument("--num-beams", type=positive_int, help="beam size for BLEU (default: the model's, 4 as in "
                    "section 6.1); the saved model keeps its own")
    ev.add_argument("--logging-steps", type=positive_int, default=10)
    ev.add_argument("--save-steps", type=non_negative_int, default=500,
                    help="a checkpoint every N updates, for --resume after a crash (0: none)")
    args = parser.parse_args(argv)
    if args.seed >= 2**32:
        parser.error(f"argument --seed: must be in [0, 2**32 - 1], got {args.seed}")
    check_data_arguments(parser, args)
    check_output_dir(parser, args)
    check_allocator(parser, args)
    resolve_compile(args, cuda=torch.cuda.is_available() and not args.cpu)
    return args


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds an earlier fine-tuning run: Trainer's trainer_state.json or all_results.json, at the
    top or in a checkpoint-N folder (a run stopped before its end)."""
    return any((folder / name).is_file() for name in RUN_FILES) or get_last_checkpoint(folder) is not None


def check_output_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Not the model folder; new or empty, or with --resume a run to continue, or with --overwrite a run to replace."""
    out, model = args.output_dir.resolve(), Path(args.model)
    if model.exists():
        source = model.resolve()
        relation = ("is" if out == source else "is inside" if source in out.parents
                    else "contains" if out in source.parents else None)
        if relation:
            parser.error(f"--output-dir {args.output_dir} {relation} the model folder {args.model}: fine-tuning would "
                         "write over the model it starts from. Choose another --output-dir.")
    if args.overwrite and args.resume:
        parser.error("--overwrite and --resume contradict each other")
    if out.exists() and not out.is_dir():
        parser.error(f"--output-dir {args.output_dir} is a file: give a folder.")
    if not out.exists() or not any(out.iterdir()):
        if args.resume:
            parser.error(f"--resume: {args.output_dir} holds no run to continue")
        return
    if args.resume:
        if get_last_checkpoint(out) is None:
            parser.error(f"--resume: {args.output_dir} holds no checkpoint-N folder to continue from (fine-tuning "
                         "writes them every --save-steps updates)")
        return
    if not args.overwrite:
        parser.error(f"--output-dir {args.output_dir} is not empty. Pass --resume to continue the fine-tuning run in "
                     "it from its last checkpoint, --overwrite to replace an earlier fine-tuning run, or choose "
                     "another --output-dir.")
    if not holds_run(out):
        parser.error(f"--overwrite: {args.output_dir} holds no earlier fine-tuning run (no {' or '.join(RUN_FILES)}, "
                     "no checkpoint-N folder), so it is not deleted: choose a new or empty --output-dir.")
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        parser.error(f"--overwrite: {args.output_dir} is the current folder or holds it: it is not deleted.")
    for name in DATA_OPTIONS:
        for path in getattr(args, name) or []:
            if out in Path(path).resolve().parents:
                parser.error(f"--overwrite: {args.output_dir} holds --{name.replace('_', '-')} {path}: it is not "
                             "deleted. Move the data or choose another --output-dir.")


def training_arguments(args: argparse.Namespace, has_validation: bool) -> Seq2SeqTrainingArguments:
    evaluate_every = has_validation and args.eval_steps > 0
    # Launched as several processes on a machine without a GPU, Trainer runs each as a separate single-process
    # training unless told to use the CPU: then it trains data-parallel over gloo.
    several_cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Seq2SeqTrainingArguments(
        output_dir=str(args.output_dir),
        max_steps=args.max_steps,
        num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        label_smoothing_factor=0.0,  # the model smooths (Seq2SeqTrainerForVanilla.compute_loss), not LabelSmoother
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        seed=args.seed,
        bf16=args.bf16,
        use_cpu=args.cpu or several_cpu_processes,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=args.eval_steps if evaluate_every else None,
        predict_with_generate=True,
        generation_num_beams=args.num_beams,
        logging_steps=args.logging_steps,
        save_strategy="steps" if args.save_steps > 0 else "no",
        save_steps=args.save_steps if args.save_steps > 0 else 500,
        save_total_limit=args.save_total_limit,
        report_to="none",
        torch_compile=args.compile,
    )


class Seq2SeqTrainerForVanilla(Seq2SeqTrainer):
    """`Seq2SeqTrainer` with the model's own label smoothing, whose evaluation leaves the generation config alone.

    Label smoothing: the model's forward takes `label_smoothing` (section 5.4) and divides the summed loss by
    Trainer's `num_items_in_batch`, so the loss is the same definition as vanilla-train's under any accumulation.

    In transformers 5.24, `Seq2SeqTrainer.prediction_step` fills every unset field of `model.generation_config` with
    GenerationConfig's global defaults after its first `generate()`, max_length=20 among them. Every later
    `generate()` (the rest of the evaluation, and the saved model in any pipeline) would then stop at 20 tokens
    instead of the paper's input length + 50 (section 6.1), which the model applies when no length is set.
    """

    def __init__(self, *args, label_smoothing: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.label_smoothing and "labels" in inputs:
            inputs = {**inputs, "label_smoothing": self.label_smoothing}
        if model.training and "labels" in inputs:  # training needs only the loss: no (B, T, V) logits are kept
            inputs = {**inputs, "output_logits": False}
        return super().compute_loss(model, inputs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        generation_config = copy.deepcopy(self.model.generation_config)
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)
        finally:
            self.model.generation_config = generation_config


def bleu_metrics(tokenizer):
    """`compute_metrics` for `predict_with_generate`: sacreBLEU BLEU and chrF on detokenized, cased text."""

    def compute_metrics(prediction) -> dict[str, float]:
        # Generated and label ids come padded with -100 between batches.
        predictions = np.where(prediction.predictions < 0, tokenizer.pad_token_id, prediction.predictions)
        labels = np.where(prediction.label_ids < 0, tokenizer.pad_token_id, prediction.label_ids)
        hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        scores = score(hypotheses, references)
        return {"bleu": scores["bleu"], "chrf": scores["chrf"]}

    return compute_metrics


class FreePagesCallback(TrainerCallback):
    """Hands jemalloc's kept pages back to the kernel once a minute (`hardware.FreePages`), as vanilla-train does."""

    def __init__(self):
        self.free_pages = FreePages()

    def on_step_end(self, args, state, control, **kwargs):
        self.free_pages()


def build_trainer(model, tokenizer, training_args, train_dataset, eval_dataset=None,
                  label_smoothing: float = 0.0, pad_to_multiple_of: int | None = None) -> Seq2SeqTrainer:
    return Seq2SeqTrainerForVanilla(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        # Pads inputs and labels (-100) and adds decoder_input_ids (the labels shifted right).
        data_collator=DataCollatorForSeq2Seq(
            tokenizer, model=model, label_pad_token_id=-100,
            pad_to_multiple_of=pad_to_multiple_of,
        ),
        processing_class=tokenizer,
        compute_metrics=bleu_metrics(tokenizer),
        label_smoothing=label_smoothing,
        callbacks=[FreePagesCallback()],
    )


def run(argv=None) -> dict:
    """Fine-tune; returns the metrics (also written to all_results.json)."""
    return fine_tune(parse_args(argv))


def fine_tune(args: argparse.Namespace) -> dict:
    """Fine-tune as the parsed options say (`parse_args`); returns the metrics."""
    set_seed(args.seed)
    check_model_folder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)

    raw = load_corpus(args.source_lang, args.target_lang, **data_source_options(args))
    has_validation = "validation" in raw
    training_args = training_arguments(args, has_validation)
    if args.overwrite:  # checked by parse_args: the folder holds an earlier fine-tuning run, and nothing it needs
        with training_args.main_process_first(desc="removing the earlier run", local=False):
            if training_args.process_index == 0 and args.output_dir.exists():
                shutil.rmtree(args.output_dir)
                print(f"removed the earlier fine-tuning run in {args.output_dir} (--overwrite)")
    with training_args.main_process_first(desc="tokenizing"):  # the main process fills the datasets cache first
        tokenized, counts = preprocess_translation(
            raw, tokenizer, args.source_lang, args.target_lang, max_length=args.max_length, num_proc=args.num_proc
        )
    if training_args.process_index == 0:
        for split, count in (counts or {}).items():
            print(f"{split}: {count}")
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_eval_samples}
    splits = {
        split: data.select(range(min(limits.get(split) or len(data), len(data)))) for split, data in tokenized.items()
    }

    trainer = build_trainer(model, tokenizer, training_args, splits["train"], splits.get("validation"),
                            label_smoothing=args.label_smoothing,
                            pad_to_multiple_of=args.pad_to_multiple_of)
    metrics = dict(trainer.train(resume_from_checkpoint=True if args.resume else None).metrics)
    if has_validation:
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    if "test" in splits:
        metrics.update(trainer.predict(splits["test"], metric_key_prefix="test").metrics)
    trainer.save_model(str(args.output_dir))  # safetensors, model and pipeline code, tokenizer, generation config
    trainer.save_metrics("all", metrics)
    trainer.save_state()  # trainer_state.json, with every logged loss
    if trainer.is_world_process_zero():
        bleu = metrics.get("test_bleu", metrics.get("eval_bleu"))
        print(f"Saved the fine-tuned model to {args.output_dir}. Publish it with:\n  vanilla-push "
              f"{args.output_dir} --repo-id you/name --language {args.source_lang} {args.target_lang} "
              f"--dataset <Hub dataset id>" + (f" --bleu {bleu}" if bleu is not None else ""))
    return metrics


def main(argv=None) -> int:
    """The console command: exit status 0 after a finished run (errors raise). A CPU run first restarts itself on
    jemalloc or tcmalloc where one is installed (`--allocator`, `hardware.preload_allocator`); called from Python
    with `argv` (a notebook, a script of yours), the process is never restarted."""
    args = parse_args(argv)
    if argv is None and (args.cpu or not gpu_available()):  # the command line is this process's own: restartable
        preload_allocator(args.allocator, "vanilla-finetune")
    fine_tune(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
