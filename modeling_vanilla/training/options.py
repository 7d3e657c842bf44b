"""The options of `vanilla-train` as a typed, frozen dataclass, and the groups of options that `vanilla-finetune`
shares with it (data, output folder, speed).

Every field is a flag: `max_tokens` is `--max-tokens` (or `--max_tokens`), parsed by transformers' HfArgumentParser
(`option_parser.OptionsParser`), with `--config FILE.yaml` (or .json) and `--recipe NAME` (`training/recipes/`) for
defaults that flags given on the command line override. `parse_train_args` refuses a bad combination before anything
slow (`check_train_args`) and returns a frozen `TrainOptions` in which everything derived is resolved:
`config_overrides` (the parsed `--override` items), and, from the machine, `precision`, `compile` and
`pad_to_multiple_of`. Nothing changes it afterwards (`dataclasses.replace` derives another); its attributes are the
names the loop reads, and `vars(options)` is what the run saves as run_config.json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

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
from .option_parser import OptionsParser, option
from .recipes import recipe_files
from .run_folder import TRAIN_RUN, check_output_dir

MIN_VOCAB_SIZE = 260  # the 256 bytes of byte-level BPE and the 4 special tokens
MODEL, DATA, TOKENIZER, TRAINING = "model", "data", "tokenizer", "training (section 5)"
SPEED, STOPPING, EVALUATION, OUTPUT = ("speed (none of these changes what is computed)", "stopping", "evaluation",
                                       "output and checkpoints")


# The options both training commands take


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """The data options of vanilla-train and vanilla-finetune (read by `data.load_corpus`)."""

    source_lang: str = option(group=DATA)
    target_lang: str = option(group=DATA)
    dataset: str | None = option("Hub dataset id, e.g. wmt/wmt14 (the real download path)", default=None, group=DATA)
    dataset_config: str | None = option("Hub dataset config, e.g. de-en", default=None, group=DATA)
    train_files: list[str] | None = option("path prefixes of aligned text files: PREFIX.{src,tgt}", default=None,
                                           group=DATA)
    valid_files: list[str] | None = option("path prefixes for validation", default=None, group=DATA)
    test_files: list[str] | None = option("path prefixes for the test set (scored at the end)", default=None,
                                          group=DATA)
    train_jsonl: list[str] | None = option("JSON lines files in the Hub schema", default=None, group=DATA)
    valid_jsonl: list[str] | None = option(default=None, group=DATA)
    test_jsonl: list[str] | None = option(default=None, group=DATA)
    max_length: int = option("drop pairs with a side longer than this", default=256, check=positive_int, group=DATA)
    num_proc: int | None = option("processes for tokenization", default=None, check=positive_int, group=DATA)


@dataclass(frozen=True, kw_only=True)
class RunFolderOptions:
    """The output folder and what may happen to an earlier run in it (`run_folder.check_output_dir`)."""

    output_dir: str = option("a new or empty folder, or one holding a run of this command (--resume, --overwrite)",
                             group=OUTPUT)
    overwrite: bool = option("replace the earlier run of this command in --output-dir (and nothing else)",
                             default=False, group=OUTPUT)
    resume: bool = option("continue the run in --output-dir from its last checkpoint", default=False, group=OUTPUT)


@dataclass(frozen=True, kw_only=True)
class SpeedOptions:
    """How fast, never what: the memory allocator and the padding of batch lengths."""

    pad_to_multiple_of: int | None = option(
        "pad batch lengths up to a multiple of N, so that compiled token batches come in fewer shapes (default: 8 "
        "when compiling, else none)", default=None, check=positive_int, group=SPEED)
    allocator: Literal["auto", "jemalloc", "tcmalloc", "system"] = option(
        "the memory allocator of a CPU run: the C library's malloc fragments and slows a long run down, so the command "
        "restarts itself on jemalloc or tcmalloc (auto: whichever is installed, jemalloc first); GPU runs keep the "
        "system's", default="auto", group=SPEED)


# vanilla-train


@dataclass(frozen=True, kw_only=True)
class TrainOptions(SpeedOptions, RunFolderOptions, DataOptions):
    """The options of vanilla-train; `config_overrides` is derived from `override`."""

    recipe: str | None = option("a named recipe (training/recipes/NAME.yaml, docs/results.md): its settings become the "
                                "defaults; flags given here win", default=None, choices=sorted(recipe_files()))
    preset: Literal["tiny", "small", "base", "big"] = option("Table 3 base/big, or small/tiny for CPUs", default="base",
                                                             group=MODEL)
    override: list[str] = option("config fields over the preset, e.g. dropout=0.3 num_encoder_layers=3",
                                 default_factory=list, group=MODEL, metavar="FIELD=VALUE", nargs="*", merge=True)
    tokenizer: str | None = option("a saved tokenizer folder; by default one is trained on the training data",
                                   default=None, group=TOKENIZER)
    vocab_size: int = option("joint BPE vocabulary (section 5.1: 37000)", default=37000, group=TOKENIZER,
                             check=int_at_least(MIN_VOCAB_SIZE, "256 bytes + 4 special tokens"))
    tokenizer_type: Literal["byte-level", "metaspace"] = option(
        "byte-level BPE (exact round trip) or metaspace BPE (SentencePiece-style, NFKC)", default="byte-level",
        group=TOKENIZER)
    max_tokens: int = option("padded tokens per batch and side, per process", default=4096, check=positive_int,
                             group=TRAINING)
    update_freq: int = option("batches accumulated per update", default=1, check=positive_int, group=TRAINING)
    warmup_steps: int = option("Eq. (3)", default=4000, check=positive_int, group=TRAINING)
    lr_scale: float = option("multiplies Eq. (3) (1 in the paper)", default=1.0, check=positive_float, group=TRAINING)
    label_smoothing: float = option("section 5.4", default=0.1, check=probability, group=TRAINING)
    # Not in the paper: Eq. (3) decays with the inverse square root of the step to the end.
    lr_cooldown: float = option(
        "decay the rate linearly to zero over this last part of the budget (--max-steps, --max-epochs or "
        "--max-minutes, whichever ends first); 0 = off, as in the paper", default=0.0, metavar="FRACTION",
        check=number_in_range(0, 1, "a fraction of the training budget"), group=TRAINING)
    # Not in the paper: decoupled weight decay (AdamW) of the weight matrices and embeddings.
    weight_decay: float = option(
        "AdamW's decoupled weight decay of the matrices and embeddings (biases and LayerNorm are not decayed); 0 = "
        "off: Adam, as in the paper", default=0.0, check=non_negative_float, group=TRAINING)
    clip_norm: float = option("gradient clipping, 0 = off (not in the paper)", default=0.0, check=non_negative_float,
                              group=TRAINING)
    precision: Literal["fp32", "bf16", "fp16"] | None = option(
        "default: bf16 where supported (CPU with AMX/AVX512-BF16, recent GPUs), else fp32", default=None,
        group=TRAINING)
    seed: int = option("seeds data order, initialization and dropout", default=1, check=non_negative_int,
                       group=TRAINING)
    cpu: bool = option("train on the CPU even where a GPU is available", default=False, group=TRAINING)
    max_bad_updates: int = option(
        "stop after this many non-finite losses in a row (seen when metrics are read back, every --log-every "
        "updates)", default=5, check=positive_int, group=TRAINING)
    compile: bool | None = option(
        "torch.compile the training forward and loss (default: on a CUDA GPU, off on the CPU, where it measured no "
        "faster: docs/benchmarks.md)", default=None, group=SPEED)
    num_workers: int | None = option(
        "DataLoader processes that collate batches ahead of the step (default: 2 on a GPU, 0 on the CPU, whose cores "
        "are all busy with the step)", default=None, check=non_negative_int, group=SPEED)
    max_steps: int | None = option("updates", default=None, check=positive_int, group=STOPPING)
    max_epochs: int | None = option("passes over the training data", default=None, check=positive_int,
                                    group=STOPPING)
    max_minutes: float | None = option("wall-clock budget for training", default=None, check=positive_float,
                                       group=STOPPING)
    eval_every: int = option("validation loss every N updates (0 = only at end)", default=1000, check=non_negative_int,
                             group=EVALUATION)
    bleu_every: int = option("validation BLEU every N updates (0 = only at end)", default=0, check=non_negative_int,
                             group=EVALUATION)
    bleu_sentences: int | None = option("score only the first N validation pairs", default=None, check=positive_int,
                                        group=EVALUATION)
    num_beams: int = option("section 6.1: 4", default=4, check=positive_int, group=EVALUATION)
    length_penalty: float = option("section 6.1: 0.6", default=0.6, check=finite_float, group=EVALUATION)
    save_every: int = option("checkpoint every N updates (0 = off)", default=0, check=non_negative_int, group=OUTPUT)
    save_every_minutes: float = option(
        "checkpoint every N minutes (0 = off; section 6.1 wrote one every 10 minutes); a checkpoint is also written at "
        "the end and on SIGTERM/SIGINT whenever checkpoints are on", default=10.0, check=non_negative_float,
        group=OUTPUT)
    keep_checkpoints: int = option("checkpoints kept, the newest", default=5, check=positive_int, group=OUTPUT)
    average_last: int = option("the final model averages the last N checkpoints (section 6.1: 5 for base, 20 for big)",
                               default=0, check=non_negative_int, group=OUTPUT)
    # Not in the paper: section 6.1 fixes the number of checkpoints averaged.
    average_choose: Literal["none", "loss", "bleu"] = option(
        "with --average-last N: try the mean of the last 1, 2, ..., N checkpoints and keep the one with the best "
        "validation loss or BLEU (none: always the last N)", default="none", group=OUTPUT)
    log_every: int = option("training metrics every N updates", default=10, check=positive_int, group=OUTPUT)
    report_to: Literal["none", "tensorboard"] = option("where the training metrics go besides metrics.jsonl",
                                                       default="none", group=OUTPUT)
    model_name: str | None = option("name in the model card (default: the output folder's)", default=None,
                                    group=OUTPUT)
    card_dataset: str | None = option(
        "Hub dataset id that the local training files come from, for the model card's metadata (e.g. "
        "bentrevett/multi30k); --dataset is used when given", default=None, group=OUTPUT)
    config_overrides: dict = dataclasses.field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "config_overrides", parse_overrides(self.override))


def train_parser() -> OptionsParser:
    return OptionsParser([TrainOptions], prog="vanilla-train", recipes=recipe_files(),
                         description="Train the Transformer of 'Attention Is All You Need' with Accelerate.",
                         groups=(MODEL, DATA, TOKENIZER, TRAINING, SPEED, STOPPING, EVALUATION, OUTPUT))


def parse_train_args(argv=None) -> TrainOptions:
    """vanilla-train's command line (`argv`, default sys.argv) as checked, resolved, frozen options."""
    parser = train_parser()
    return check_train_args(parser, parser.build(parser.parse_namespace(argv), TrainOptions))


def check_train_args(parser: OptionsParser, options: TrainOptions) -> TrainOptions:
    """Refuse bad combinations now, before any data is read or model built; the options with precision, compile
    and pad_to_multiple_of resolved for this machine."""
    from ..utils.hardware import default_precision, gpu_available

    check_data_arguments(parser, options)
    if options.max_tokens < options.max_length:
        parser.error(f"--max-tokens {options.max_tokens} is smaller than the longest allowed sentence (--max-length "
                     f"{options.max_length} tokens): such a pair could not fit in any batch. Raise --max-tokens or "
                     "lower --max-length.")
    if options.max_steps is None and options.max_epochs is None and options.max_minutes is None:
        parser.error("give a stopping rule: --max-steps, --max-epochs or --max-minutes")
    check_averaging(parser, options)
    check_allocator(parser, options)
    # --precision's default, from the machine: a run stores the resolved one, so that a resume compares like with like.
    compile, pad_to_multiple_of = resolve_compile(options.compile, options.pad_to_multiple_of,
                                                  cuda=not options.cpu and gpu_available())
    options = dataclasses.replace(options, precision=options.precision or default_precision(options.cpu),
                                  compile=compile, pad_to_multiple_of=pad_to_multiple_of)
    check_output_dir(parser, options, TRAIN_RUN, inputs=[options.tokenizer] if options.tokenizer else [])
    return options


def check_averaging(parser: OptionsParser, options: TrainOptions) -> None:
    """--average-last needs that many checkpoints kept; --average-choose needs --average-last and a validation set."""
    if options.average_last and options.average_last > options.keep_checkpoints:
        parser.error(f"--average-last {options.average_last} needs --keep-checkpoints >= {options.average_last}")
    if options.average_last and not checkpointing(options):
        parser.error("--average-last needs checkpoints: set --save-every or --save-every-minutes")
    if options.average_choose != "none" and not options.average_last:
        parser.error(f"--average-choose {options.average_choose} needs --average-last N, the most checkpoints to try")
    if options.average_choose != "none" and not (options.valid_files or options.valid_jsonl or options.dataset):
        parser.error(f"--average-choose {options.average_choose} chooses on the validation set: give --valid-files, "
                     "--valid-jsonl or a --dataset with a validation split, or --average-choose none")


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


def checkpointing(options) -> bool:
    """Whether the run writes checkpoints (--save-every or --save-every-minutes; on by default)."""
    return bool(options.save_every or options.save_every_minutes)


# Checks and defaults both training commands share


def check_data_arguments(parser: OptionsParser, options: DataOptions) -> None:
    """Exactly one training source: the one check, for every command that takes the data options."""
    from ..data.corpus import TranslationDataError, check_training_source

    try:
        check_training_source(options.dataset, options.train_files, options.train_jsonl)
    except TranslationDataError as error:
        parser.error(str(error))


def data_source_options(options: DataOptions) -> dict:
    """The data options as keyword arguments of `data.load_corpus`."""
    names = ("dataset", "dataset_config", "train_files", "valid_files", "test_files", "train_jsonl", "valid_jsonl",
             "test_jsonl")
    return {name: getattr(options, name) for name in names}


def resolve_compile(compile: bool | None, pad_to_multiple_of: int | None, cuda: bool) -> tuple[bool, int | None]:
    """--compile's default, from measurement: on for a CUDA GPU, off on the CPU, where it measured no faster
    (docs/benchmarks.md). With it, batch lengths are padded to a multiple of 8 unless --pad-to-multiple-of says
    otherwise: fewer batch shapes, fewer compiled graphs. Shared by vanilla-train and vanilla-finetune."""
    compile = cuda if compile is None else compile
    return compile, 8 if compile and pad_to_multiple_of is None else pad_to_multiple_of


def check_allocator(parser: OptionsParser, options: SpeedOptions) -> None:
    """A named allocator must be installed (or already preloaded): refused now, with how to install it."""
    from ..utils.hardware import allocator_in_use, find_allocator, install_hint

    if options.allocator in ("jemalloc", "tcmalloc") and allocator_in_use() != options.allocator \
            and find_allocator(options.allocator) is None:
        parser.error(f"--allocator {options.allocator}: lib{options.allocator} is not installed "
                     f"({install_hint(options.allocator)}); --allocator auto uses whichever is installed")
