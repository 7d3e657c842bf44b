"""The options of the training command (`vanilla-train`), checked before anything slow, and the data options it
shares with `vanilla-finetune`.

`parse_train_args` returns an `argparse.Namespace` with two additions: `config_overrides` (the parsed
`--override FIELD=VALUE` items) and, once the run starts, the resolved `precision`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PRESETS = ("tiny", "small", "base", "big")
RUN_CONFIG = "run_config.json"
# Arguments that must match for --resume to continue a run (the rest, such as limits, may change).
RESUME_MUST_MATCH = ("preset", "override", "source_lang", "target_lang", "max_tokens", "update_freq", "seed",
                     "label_smoothing", "warmup_steps", "lr_scale", "precision", "max_length")
TRAINING_SOURCES = ("dataset", "train_files", "train_jsonl")


def parse_train_args(argv=None) -> argparse.Namespace:
    parser = train_parser()
    args = parser.parse_args(argv)
    check_train_args(parser, args)
    return args


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vanilla-train",
        description="Train the Transformer of 'Attention Is All You Need' with Accelerate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--preset", choices=PRESETS, default="base", help="Table 3 base/big, or small/tiny for CPUs")
    model.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE",
                       help="config fields over the preset, e.g. dropout=0.3 num_encoder_layers=3")
    data = add_data_arguments(parser)
    data.add_argument("--num-proc", type=int, default=None, help="processes for tokenization")
    tok = parser.add_argument_group("tokenizer")
    tok.add_argument("--tokenizer", help="a saved tokenizer folder; by default one is trained on the training data")
    tok.add_argument("--vocab-size", type=int, default=37000, help="joint BPE vocabulary (section 5.1: 37000)")
    _add_training_arguments(parser)
    _add_evaluation_arguments(parser)
    _add_output_arguments(parser)
    return parser


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    train = parser.add_argument_group("training (section 5)")
    train.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batch and side, per process")
    train.add_argument("--update-freq", type=int, default=1, help="batches accumulated per update")
    train.add_argument("--warmup-steps", type=int, default=4000, help="Eq. (3)")
    train.add_argument("--lr-scale", type=float, default=1.0, help="multiplies Eq. (3) (1 in the paper)")
    train.add_argument("--label-smoothing", type=float, default=0.1, help="section 5.4")
    train.add_argument("--clip-norm", type=float, default=0.0, help="gradient clipping, 0 = off (not in the paper)")
    train.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                       help="default: bf16 where supported (CPU with AMX/AVX512-BF16, recent GPUs), else fp32")
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")
    train.add_argument("--max-bad-updates", type=int, default=5, help="stop after this many non-finite losses in a row")
    stop = parser.add_argument_group("stopping")
    stop.add_argument("--max-steps", type=int, default=None)
    stop.add_argument("--max-epochs", type=int, default=None)
    stop.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget for training")


def _add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval-every", type=int, default=1000, help="validation loss every N updates (0 = only at end)")
    ev.add_argument("--bleu-every", type=int, default=0, help="validation BLEU every N updates (0 = only at end)")
    ev.add_argument("--bleu-sentences", type=int, default=None, help="score only the first N validation pairs")
    ev.add_argument("--num-beams", type=int, default=4, help="section 6.1: 4")
    ev.add_argument("--length-penalty", type=float, default=0.6, help="section 6.1: 0.6")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output and checkpoints")
    out.add_argument("--output-dir", required=True)
    out.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
    out.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    out.add_argument("--save-every", type=int, default=0, help="checkpoint every N updates (0 = off)")
    out.add_argument("--save-every-minutes", type=float, default=0.0, help="checkpoint every N minutes (0 = off)")
    out.add_argument("--keep-checkpoints", type=int, default=5)
    out.add_argument("--average-last", type=int, default=0,
                     help="the final model averages the last N checkpoints (section 6.1: 5 for base, 20 for big)")
    out.add_argument("--log-every", type=int, default=10, help="training metrics every N updates")
    out.add_argument("--report-to", choices=("none", "tensorboard"), default="none")
    out.add_argument("--model-name", default=None, help="name in the model card (default: the output folder's)")
    out.add_argument("--card-dataset", default=None,
                     help="Hub dataset id that the local training files come from, for the model card's metadata "
                          "(e.g. bentrevett/multi30k); --dataset is used when given")


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The data options shared by vanilla-train and vanilla-finetune (read by `data.load_corpus`)."""
    data = parser.add_argument_group("data")
    data.add_argument("--source-lang", required=True)
    data.add_argument("--target-lang", required=True)
    data.add_argument("--dataset", help="Hub dataset id, e.g. wmt/wmt14 (the real download path)")
    data.add_argument("--dataset-config", help="Hub dataset config, e.g. de-en")
    data.add_argument("--train-files", nargs="+", help="path prefixes of aligned text files: PREFIX.{src,tgt}")
    data.add_argument("--valid-files", nargs="+", help="path prefixes for validation")
    data.add_argument("--test-files", nargs="+", help="path prefixes for the test set (scored at the end)")
    data.add_argument("--train-jsonl", nargs="+", help="JSON lines files in the Hub schema")
    data.add_argument("--valid-jsonl", nargs="+")
    data.add_argument("--test-jsonl", nargs="+")
    data.add_argument("--max-length", type=int, default=256, help="drop pairs with a side longer than this")
    return data


def check_data_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exactly one training source: the one check, for every command that takes the data options."""
    sources = ["--" + name.replace("_", "-") for name in TRAINING_SOURCES if getattr(args, name)]
    if len(sources) != 1:
        parser.error(f"give exactly one training source: --dataset, --train-files or --train-jsonl (got {sources or 'none'})")
    if args.max_length < 1:
        parser.error("--max-length must be at least 1")


def data_source_options(args: argparse.Namespace) -> dict:
    """The data options as keyword arguments of `data.load_corpus`."""
    names = ("dataset", "dataset_config", "train_files", "valid_files", "test_files", "train_jsonl", "valid_jsonl",
             "test_jsonl")
    return {name: getattr(args, name) for name in names}


def check_train_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad combinations now, before any data is read or model built."""
    check_data_arguments(parser, args)
    if args.max_tokens < args.max_length:
        parser.error(f"--max-tokens {args.max_tokens} is smaller than the longest allowed sentence (--max-length "
                     f"{args.max_length} tokens): such a pair could not fit in any batch. Raise --max-tokens or "
                     "lower --max-length.")
    for name in ("max_tokens", "update_freq", "warmup_steps", "max_length", "vocab_size", "num_beams"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label-smoothing must be in [0, 1)")
    if args.max_steps is None and args.max_epochs is None and args.max_minutes is None:
        parser.error("give a stopping rule: --max-steps, --max-epochs or --max-minutes")
    if args.overwrite and args.resume:
        parser.error("--overwrite and --resume contradict each other")
    if args.average_last and args.average_last > args.keep_checkpoints:
        parser.error(f"--average-last {args.average_last} needs --keep-checkpoints >= {args.average_last}")
    if args.average_last and not (args.save_every or args.save_every_minutes):
        parser.error("--average-last needs checkpoints: set --save-every or --save-every-minutes")
    try:
        args.config_overrides = parse_overrides(args.override)
    except ValueError as error:
        parser.error(str(error))
    check_output_dir(parser, args)


def parse_overrides(items: list[str]) -> dict:
    """`--override FIELD=VALUE` items as config fields, each value JSON (or a bare string), validated by the config."""
    from .configuration_vanilla import VanillaTransformerConfig

    fields = VanillaTransformerConfig.__dataclass_fields__
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--override {item!r}: expected FIELD=VALUE")
        if key not in fields:
            raise ValueError(f"--override {key}: not a config field (e.g. d_model, num_heads, dropout, layer_norm)")
        try:
            overrides[key] = json.loads(raw)
        except ValueError:
            overrides[key] = raw  # a bare string such as layer_norm=pre
    VanillaTransformerConfig.tiny(**overrides)  # let the config validate the values now
    return overrides


def check_output_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An empty or new folder; with --resume, a run of this command with the same settings; else --overwrite."""
    out = Path(args.output_dir)
    if not out.exists() or not any(out.iterdir()):
        if args.resume:
            parser.error(f"--resume: {out} holds no run to continue")
        return
    previous = out / RUN_CONFIG
    if args.resume:
        if not previous.is_file():
            parser.error(f"--resume: {out} holds no {RUN_CONFIG}, so no run of this script to continue")
        earlier = json.loads(previous.read_text())
        differences = [f"--{k.replace('_', '-')} was {earlier.get(k)!r}, now {getattr(args, k)!r}"
                       for k in RESUME_MUST_MATCH if earlier.get(k) != getattr(args, k)]
        if differences:
            parser.error(f"--resume: the run in {out} used other settings: {'; '.join(differences)}")
        return
    if not args.overwrite:
        what = "a different run" if previous.is_file() else "other files"
        parser.error(f"{out} already holds {what}. Pass --resume to continue it, --overwrite to replace it, "
                     "or choose another --output-dir")
