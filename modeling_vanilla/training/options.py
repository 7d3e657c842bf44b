"""The options of the training command (`vanilla-train`), checked before anything slow, and the data options it
shares with `vanilla-finetune`.

`parse_train_args` returns an `argparse.Namespace` with two additions: `config_overrides` (the parsed
`--override FIELD=VALUE` items) and, once the run starts, the resolved `precision`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from ..data.tokenization import KINDS
from ..utils.arguments import (
    finite_float,
    int_at_least,
    non_negative_float,
    non_negative_int,
    number_in_range,
    positive_float,
    positive_int,
    probability,
)

PRESETS = ("tiny", "small", "base", "big")
RUN_CONFIG = "run_config.json"
MIN_VOCAB_SIZE = 260  # the 256 bytes of byte-level BPE and the 4 special tokens
# Arguments that must match for --resume to continue a run (the rest, such as limits, may change).
RESUME_MUST_MATCH = ("preset", "override", "source_lang", "target_lang", "max_tokens", "update_freq", "seed",
                     "label_smoothing", "warmup_steps", "lr_scale", "weight_decay", "precision", "max_length")
NEWER_SETTINGS = {"weight_decay": 0.0}  # what a run saved before the setting existed trained with


# Named recipes (`--recipe NAME`): vanilla-train's settings for one corpus and budget, chosen by the runs in
# docs/results.md. A flag given on the command line wins over the recipe's; `--override` adds to its config fields.
RECIPES = {
    "multi30k": {
        # 15-minute proxies of issue 16 (docs/results.md): Eq. 3 x 1 beat x 2 by 8.7 val BLEU and x 0.5 by 0.6.
        # 60-minute runs: dropout 0.2 (val ppl 5.48 vs 6.11 with 0.1, which overfits after 15 epochs) and the mean of
        # the last checkpoints, how many chosen on val BLEU (the best count was 7 in a run of 4594 updates, 3-4 in one
        # of 2779). Validation loss every 500 updates and a checkpoint every 5 minutes, all kept, for the learning
        # curve (vanilla-evaluate --checkpoints).
        # More regularization against the overfitting after ~33 epochs (ablations at equal updates on a GPU, one seed
        # each, val BLEU at ~4500 updates: each of the four +0.4 to +0.8 over 39.9-40.1; all four at ~5800: 41.45 and
        # 41.19 EN->DE, 44.20 DE->EN): a 10000-token vocabulary, label smoothing 0.2 (0.1 in the paper), and
        # attention and activation dropout 0.1 (not in the paper).
        # Weight decay 0.1 (AdamW, not in the paper), 60-minute runs: val BLEU +0.80 and +1.19 EN->DE (seeds 1, 2),
        # -0.06 DE->EN (seed 1) with a lower validation perplexity in both directions.
        "flags": {"preset": "small", "vocab_size": 10000, "max_tokens": 4096, "warmup_steps": 800, "lr_scale": 1.0,
                  "label_smoothing": 0.2, "weight_decay": 0.1, "max_minutes": 60.0, "eval_every": 500,
                  "save_every_minutes": 5.0, "keep_checkpoints": 25, "average_last": 10, "average_choose": "bleu"},
        "override": ["dropout=0.2", "attention_dropout=0.1", "activation_dropout=0.1"],
        # The final runs of the recipe as it stands (docs/results.md), test2016 scored once each: EN->DE seeds 1-2 and
        # DE->EN seed 1 were trained with val only and scored by `vanilla-evaluate` (fp32) after val chose the recipe;
        # EN->DE seeds 3-5 and DE->EN seeds 2-3 are README's commands (scored by the run, bf16) in slower hours of the
        # same machine (~4200 updates); seeds 3-5's peer ran in such an hour, DE->EN's peer in a faster one. The runs
        # without weight decay (four EN->DE seeds, test 39.72-40.66; three DE->EN, 42.42-43.16) and those of earlier
        # settings are in docs/results.md.
        "runs": [
            {"direction": "en-de", "seed": 1, "minutes": 60.0, "updates": 7364, "epochs": 58.0, "val_bleu": 42.06,
             "test_bleu": 40.07, "test_chrf": 64.27, "peer_test_bleu": 38.47},
            {"direction": "en-de", "seed": 2, "minutes": 60.0, "updates": 7257, "epochs": 57.1, "val_bleu": 42.17,
             "test_bleu": 41.0, "test_chrf": 64.6, "peer_test_bleu": 38.47},
            {"direction": "en-de", "seed": 3, "minutes": 60.0, "updates": 4200, "epochs": 33.1, "val_bleu": 42.01,
             "test_bleu": 39.87, "test_chrf": 63.84, "peer_test_bleu": 37.63},
            {"direction": "en-de", "seed": 4, "minutes": 60.0, "updates": 4199, "epochs": 33.1, "val_bleu": 41.43,
             "test_bleu": 39.81, "test_chrf": 63.63, "peer_test_bleu": 37.63},
            {"direction": "en-de", "seed": 5, "minutes": 60.0, "updates": 4211, "epochs": 33.2, "val_bleu": 41.42,
             "test_bleu": 40.83, "test_chrf": 64.21, "peer_test_bleu": 37.63},
            {"direction": "de-en", "seed": 1, "minutes": 60.0, "updates": 7324, "epochs": 58.6, "val_bleu": 44.15,
             "test_bleu": 42.97, "test_chrf": 62.18, "peer_test_bleu": 41.40},
            {"direction": "de-en", "seed": 2, "minutes": 60.0, "updates": 4195, "epochs": 33.6, "val_bleu": 43.55,
             "test_bleu": 42.53, "test_chrf": 61.54, "peer_test_bleu": 41.40},
            {"direction": "de-en", "seed": 3, "minutes": 60.0, "updates": 4134, "epochs": 33.1, "val_bleu": 43.89,
             "test_bleu": 42.31, "test_chrf": 61.72, "peer_test_bleu": 41.40},
        ],
    },
}


def parse_train_args(argv=None) -> argparse.Namespace:
    parser = train_parser()
    recipe = recipe_named(argv)
    if recipe is not None:
        parser.set_defaults(**RECIPES[recipe]["flags"])
    args = parser.parse_args(argv)
    if recipe is not None:
        args.override = RECIPES[recipe]["override"] + args.override
    check_train_args(parser, args)
    return args


def recipe_named(argv=None) -> str | None:
    """The `--recipe` of a command line, read before the rest so that its settings become the defaults."""
    pre = argparse.ArgumentParser(prog="vanilla-train", add_help=False, allow_abbrev=False)
    pre.add_argument("--recipe", choices=sorted(RECIPES))
    return pre.parse_known_args(argv)[0].recipe


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vanilla-train",
        description="Train the Transformer of 'Attention Is All You Need' with Accelerate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help="a named recipe: its settings become the defaults (RECIPES in modeling_vanilla/training/options.py, "
                             "docs/results.md); flags given here win")
    model = parser.add_argument_group("model")
    model.add_argument("--preset", choices=PRESETS, default="base", help="Table 3 base/big, or small/tiny for CPUs")
    model.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE",
                       help="config fields over the preset, e.g. dropout=0.3 num_encoder_layers=3")
    data = add_data_arguments(parser)
    data.add_argument("--num-proc", type=positive_int, default=None, help="processes for tokenization")
    tok = parser.add_argument_group("tokenizer")
    tok.add_argument("--tokenizer", help="a saved tokenizer folder; by default one is trained on the training data")
    tok.add_argument("--vocab-size", type=int_at_least(MIN_VOCAB_SIZE, "256 bytes + 4 special tokens"), default=37000, help="joint BPE vocabulary (section 5.1: 37000)")
    tok.add_argument("--tokenizer-type", choices=KINDS, default="byte-level",
                     help="byte-level BPE (exact round trip) or metaspace BPE (SentencePiece-style, NFKC)")
    _add_training_arguments(parser)
    _add_evaluation_arguments(parser)
    _add_output_arguments(parser)
    return parser


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    train = parser.add_argument_group("training (section 5)")
    train.add_argument("--max-tokens", type=positive_int, default=4096, help="padded tokens per batch and side, per process")
    train.add_argument("--update-freq", type=positive_int, default=1, help="batches accumulated per update")
    train.add_argument("--warmup-steps", type=positive_int, default=4000, help="Eq. (3)")
    train.add_argument("--lr-scale", type=positive_float, default=1.0, help="multiplies Eq. (3) (1 in the paper)")
    train.add_argument("--label-smoothing", type=probability, default=0.1, help="section 5.4")
    # Not in the paper: Eq. (3) decays with the inverse square root of the step to the end.
    train.add_argument("--lr-cooldown", type=number_in_range(0, 1, "a fraction of the training budget"), default=0.0,
                       metavar="FRACTION",
                       help="decay the rate linearly to zero over this last part of the budget (--max-steps, "
                            "--max-epochs or --max-minutes, whichever ends first); 0 = off, as in the paper")
    # Not in the paper: decoupled weight decay (AdamW) of the weight matrices and embeddings.
    train.add_argument("--weight-decay", type=non_negative_float, default=0.0,
                       help="AdamW's decoupled weight decay of the matrices and embeddings (biases and LayerNorm "
                            "are not decayed); 0 = off: Adam, as in the paper")
    train.add_argument("--clip-norm", type=non_negative_float, default=0.0, help="gradient clipping, 0 = off (not in the paper)")
    train.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                       help="default: bf16 where supported (CPU with AMX/AVX512-BF16, recent GPUs), else fp32")
    train.add_argument("--seed", type=non_negative_int, default=1)
    train.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")
    train.add_argument("--max-bad-updates", type=positive_int, default=5,
                       help="stop after this many non-finite losses in a row (seen when metrics are read back, every "
                            "--log-every updates)")
    speed = parser.add_argument_group("speed (none of these changes what is computed)")
    speed.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the training forward and loss (default: on a CUDA GPU, off on the CPU, "
                            "where it measured no faster: docs/benchmarks.md)")
    speed.add_argument("--pad-to-multiple-of", type=positive_int, default=None,
                       help="pad batch lengths up to a multiple of N, so that compiled token batches come in fewer "
                            "shapes (default: 8 with --compile, else none)")
    add_allocator_argument(speed)
    speed.add_argument("--num-workers", type=non_negative_int, default=None,
                       help="DataLoader processes that collate batches ahead of the step (default: 2 on a GPU, 0 on "
                            "the CPU, whose cores are all busy with the step)")
    stop = parser.add_argument_group("stopping")
    stop.add_argument("--max-steps", type=positive_int, default=None)
    stop.add_argument("--max-epochs", type=positive_int, default=None)
    stop.add_argument("--max-minutes", type=positive_float, default=None, help="wall-clock budget for training")


def _add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval-every", type=non_negative_int, default=1000, help="validation loss every N updates (0 = only at end)")
    ev.add_argument("--bleu-every", type=non_negative_int, default=0, help="validation BLEU every N updates (0 = only at end)")
    ev.add_argument("--bleu-sentences", type=positive_int, default=None, help="score only the first N validation pairs")
    ev.add_argument("--num-beams", type=positive_int, default=4, help="section 6.1: 4")
    ev.add_argument("--length-penalty", type=finite_float, default=0.6, help="section 6.1: 0.6")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output and checkpoints")
    out.add_argument("--output-dir", required=True)
    out.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
    out.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    out.add_argument("--save-every", type=non_negative_int, default=0, help="checkpoint every N updates (0 = off)")
    out.add_argument("--save-every-minutes", type=non_negative_float, default=10.0,
                     help="checkpoint every N minutes (0 = off; section 6.1 wrote one every 10 minutes); a checkpoint "
                          "is also written at the end and on SIGTERM/SIGINT whenever checkpoints are on")
    out.add_argument("--keep-checkpoints", type=positive_int, default=5)
    out.add_argument("--average-last", type=non_negative_int, default=0,
                     help="the final model averages the last N checkpoints (section 6.1: 5 for base, 20 for big)")
    # Not in the paper: section 6.1 fixes the number of checkpoints averaged.
    out.add_argument("--average-choose", choices=("none", "loss", "bleu"), default="none",
                     help="with --average-last N: try the mean of the last 1, 2, ..., N checkpoints and keep the one "
                          "with the best validation loss or BLEU (none: always the last N)")
    out.add_argument("--log-every", type=positive_int, default=10, help="training metrics every N updates")
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
    data.add_argument("--max-length", type=positive_int, default=256, help="drop pairs with a side longer than this")
    return data


def check_data_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exactly one training source: the one check, for every command that takes the data options."""
    from ..data.corpus import TranslationDataError, check_training_source

    try:
        check_training_source(args.dataset, args.train_files, args.train_jsonl)
    except TranslationDataError as error:
        parser.error(str(error))


def data_source_options(args: argparse.Namespace) -> dict:
    """The data options as keyword arguments of `data.load_corpus`."""
    names = ("dataset", "dataset_config", "train_files", "valid_files", "test_files", "train_jsonl", "valid_jsonl",
             "test_jsonl")
    return {name: getattr(args, name) for name in names}


def resolve_compile(args: argparse.Namespace, cuda: bool) -> None:
    """--compile's default, from measurement: on for a CUDA GPU, off on the CPU, where it measured no faster
    (docs/benchmarks.md). With it, batch lengths are padded to a multiple of 8 unless --pad-to-multiple-of says
    otherwise: fewer batch shapes, fewer compiled graphs. Shared by vanilla-train and vanilla-finetune."""
    if args.compile is None:
        args.compile = cuda
    if args.compile and args.pad_to_multiple_of is None:
        args.pad_to_multiple_of = 8


def checkpointing(args: argparse.Namespace) -> bool:
    """Whether the run writes checkpoints (--save-every or --save-every-minutes; on by default)."""
    return bool(args.save_every or args.save_every_minutes)


def add_allocator_argument(group) -> None:
    """`--allocator`, for the commands that train (`hardware.preload_allocator`)."""
    group.add_argument("--allocator", choices=("auto", "jemalloc", "tcmalloc", "system"), default="auto",
                       help="the memory allocator of a CPU run: the C library's malloc fragments and slows a long run "
                            "down, so the command restarts itself on jemalloc or tcmalloc (auto: whichever is "
                            "installed, jemalloc first); GPU runs keep the system's")


def check_allocator(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A named allocator must be installed (or already preloaded): refused now, with how to install it."""
    from ..utils.hardware import allocator_in_use, find_allocator, install_hint

    if args.allocator in ("jemalloc", "tcmalloc") and allocator_in_use() != args.allocator \
            and find_allocator(args.allocator) is None:
        parser.error(f"--allocator {args.allocator}: lib{args.allocator} is not installed ({install_hint(args.allocator)}"
                     "); --allocator auto uses whichever is installed")


def check_train_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad combinations now, before any data is read or model built."""
    check_data_arguments(parser, args)
    if args.max_tokens < args.max_length:
        parser.error(f"--max-tokens {args.max_tokens} is smaller than the longest allowed sentence (--max-length "
                     f"{args.max_length} tokens): such a pair could not fit in any batch. Raise --max-tokens or "
                     "lower --max-length.")
    if args.max_steps is None and args.max_epochs is None and args.max_minutes is None:
        parser.error("give a stopping rule: --max-steps, --max-epochs or --max-minutes")
    if args.overwrite and args.resume:
        parser.error("--overwrite and --resume contradict each other")
    if args.average_last and args.average_last > args.keep_checkpoints:
        parser.error(f"--average-last {args.average_last} needs --keep-checkpoints >= {args.average_last}")
    if args.average_last and not checkpointing(args):
        parser.error("--average-last needs checkpoints: set --save-every or --save-every-minutes")
    if args.average_choose != "none" and not args.average_last:
        parser.error(f"--average-choose {args.average_choose} needs --average-last N, the most checkpoints to try")
    if args.average_choose != "none" and not (args.valid_files or args.valid_jsonl or args.dataset):
        parser.error(f"--average-choose {args.average_choose} chooses on the validation set: give --valid-files, "
                     "--valid-jsonl or a --dataset with a validation split, or --average-choose none")
    from ..utils.hardware import gpu_available

    check_allocator(parser, args)
    try:
        args.config_overrides = parse_overrides(args.override)
    except ValueError as error:
        parser.error(str(error))
    resolve_precision(args)
    resolve_compile(args, cuda=not args.cpu and gpu_available())
    check_output_dir(parser, args)


def resolve_precision(args: argparse.Namespace) -> None:
    """--precision's default, from the machine: bf16 on a GPU or a CPU with fast bf16, else fp32. A run stores the
    resolved precision, so that a resume on the same machine compares like with like."""
    from ..utils.hardware import default_precision

    if args.precision is None:
        args.precision = default_precision(args.cpu)


def parse_overrides(items: list[str]) -> dict:
    """`--override FIELD=VALUE` items as config fields, each value JSON (or a bare string), validated by the config."""
    from ..configuration_vanilla import VanillaTransformerConfig

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
    """A new or empty folder; with --resume, a run of this command with the same settings and data; with
    --overwrite, only a folder that holds an earlier run (it has run_config.json) and holds none of the inputs."""
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        parser.error(f"--output-dir {out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        if args.resume:
            parser.error(f"--resume: {out} holds no run to continue")
        return
    previous = out / RUN_CONFIG
    if args.resume:
        if not previous.is_file():
            parser.error(f"--resume: {out} holds no {RUN_CONFIG}, so no run of this command to continue")
        differences = resume_differences(json.loads(previous.read_text()), args)
        if differences:
            parser.error(f"--resume: the run in {out} used other settings: {'; '.join(differences)}. Continue it with "
                         "the same settings, or start a new run in another --output-dir")
        return
    if not previous.is_file():
        parser.error(f"{out} already holds other files and no run of this command ({RUN_CONFIG}): choose another "
                     "--output-dir (--overwrite only replaces an earlier run)")
    if not args.overwrite:
        parser.error(f"{out} already holds a different run. Pass --resume to continue it, --overwrite to replace it, "
                     "or choose another --output-dir")
    check_safe_to_delete(parser, out, args)


def check_safe_to_delete(parser: argparse.ArgumentParser, out: Path, args: argparse.Namespace) -> None:
    """--overwrite deletes `out`: never the current folder or one above it, and never one holding an input."""
    folder = out.resolve()
    if folder == Path.home().resolve() or Path.cwd().resolve().is_relative_to(folder):
        parser.error(f"--overwrite would delete {out}, which is the current folder, one above it or your home "
                     "folder: choose another --output-dir")
    inputs = [args.tokenizer] if args.tokenizer else []
    for name in ("train_files", "valid_files", "test_files", "train_jsonl", "valid_jsonl", "test_jsonl"):
        inputs += getattr(args, name) or []
    for item in inputs:
        if Path(item).resolve().is_relative_to(folder):
            parser.error(f"--overwrite would delete {out}, which holds the input {item}: choose another --output-dir")


def resume_differences(earlier: dict, args: argparse.Namespace) -> list[str]:
    """What a resume changes that the saved run depends on: settings, the precision it resolved, the data."""
    now = {k: getattr(args, k) for k in RESUME_MUST_MATCH}  # precision resolved, as the run stored it
    then = {k: earlier.get(k, NEWER_SETTINGS.get(k)) for k in RESUME_MUST_MATCH}
    differences = [f"--{k.replace('_', '-')} was {then[k]!r}, now {now[k]!r}" for k in RESUME_MUST_MATCH
                   if then[k] != now[k]]
    fingerprint = data_fingerprint(args)
    if earlier.get("data_fingerprint") not in (None, fingerprint):
        differences.append("the training data changed (other files, other contents, or another --dataset)")
    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    saved = Path(args.output_dir) / "tokenizer.json"
    if tokenizer is not None and saved.is_file() and file_digest(tokenizer / "tokenizer.json") != file_digest(saved):
        differences.append(f"--tokenizer {tokenizer} is not the tokenizer the run saved ({saved})")
    return differences


def data_fingerprint(args: argparse.Namespace) -> str:
    """Names the training data: the Hub id and config, or each training file's name, size and contents."""
    if args.dataset:
        return f"hub:{args.dataset}:{args.dataset_config}"
    digests = []
    for prefix in args.train_files or []:
        for language in (args.source_lang, args.target_lang):
            candidates = [Path(f"{prefix}.{language}"), Path(f"{prefix}.{language}.gz")]
            path = next((c for c in candidates if c.is_file()), None)
            digests.append(f"{Path(prefix).name}.{language}:{file_digest(path) if path else 'missing'}")
    for path in args.train_jsonl or []:
        digests.append(f"{Path(path).name}:{file_digest(Path(path)) if Path(path).is_file() else 'missing'}")
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """Size and sha256 of the first and last MiB: cheap for multi-GB corpora, and changes with any edit of size."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            digest.update(f.read(chunk))
    return f"{size}:{digest.hexdigest()[:16]}"
