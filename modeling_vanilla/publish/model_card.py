"""The model card (README.md of a model folder or Hub repo): one writer and one metadata check.

`write_model_card` fills the repository's model_card.md template; `vanilla-train` gives it a run's facts and
`vanilla-push` the facts given on its command line. `check_model_card` refuses a card whose YAML metadata lacks
what the Hub and `pipeline("translation")` users need, naming every missing field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

TEMPLATE = Path(__file__).with_name("model_card.md")  # a link to model_card.md at the repository root
# The "How to use" example translates one of these, by source language (English for any other).
EXAMPLE_SENTENCES = {
    "en": "A man is riding a bicycle.", "de": "Ein Mann fährt Fahrrad.", "fr": "Un homme fait du vélo.",
}


# A word of a card (a run of characters without spaces, quotes or brackets) that is a local file path: absolute
# (/home/alice/data/train, C:\data\train, \\server\share), from a home or the current folder (~/data, ./train,
# ../data/train), a file:// URL, or relative with two or more separators (data/multi30k/train). A word with one
# separator reads like a Hub id (bentrevett/multi30k) and is kept, as are web addresses.
_WORD = re.compile(r"[^\s`'\"()\[\]{},;|]+")
_ANCHORED_PATH = re.compile(r"(?:[A-Za-z]:[\\/]|\\\\|~[\w.-]*[\\/]|\.\.?[\\/]|file://)")


class ModelCardError(ValueError):
    """The model card's metadata is incomplete: the message names each missing field and how to fill it."""


def write_model_card(*, name: str, languages: Sequence[str], datasets: Sequence[str], dataset_name: str, bleu,
                     summary: str, architecture: str, data: str, training: str, evaluation: str) -> str:
    """model_card.md with every {{field}} filled; the metadata header is re-written by YAML (quoting and all)."""
    import yaml

    if not TEMPLATE.is_file():
        raise FileNotFoundError(f"The model card template {TEMPLATE} is missing: reinstall the package.")
    values = {
        "model_name": name,
        "language": yaml.safe_dump(list(languages), default_flow_style=True).strip(),
        "datasets": yaml.safe_dump(list(datasets), default_flow_style=True).strip(),
        "dataset_type": datasets[0] if datasets else "local",
        "dataset_name": dataset_name,
        "bleu": "null" if bleu is None else str(bleu),
        "summary": summary, "architecture": architecture, "data": data, "training": training,
        "evaluation": evaluation,
        "source_example": EXAMPLE_SENTENCES.get(languages[0] if languages else "", EXAMPLE_SENTENCES["en"]),
    }
    template = TEMPLATE.read_text(encoding="utf-8")
    end_of_header = template.index("\n---", 3)
    header, body = template[:end_of_header], template[end_of_header:]
    for key, value in values.items():
        # In the YAML header a name is a quoted scalar (JSON's quoting is YAML's), so "my: model" stays a string.
        quoted = value if key in ("language", "datasets", "bleu") else json.dumps(value, ensure_ascii=False)
        header = header.replace("{{" + key + "}}", quoted)
        body = body.replace("{{" + key + "}}", value)
    text = header + body
    if "{{" in text:
        start = text.index("{{")
        field = text[start : text.index("}}", start) + 2]
        raise ModelCardError(f"{TEMPLATE} has a field the writer does not fill: {field}")
    metadata = card_metadata(text)
    body = text[text.index("\n---", 3) + len("\n---") :]
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---" + body


def describe_architecture(config) -> str:
    """One line of the config's section-3 hyperparameters, for the card."""
    return (f"N={config.num_encoder_layers}+{config.num_decoder_layers}, d_model={config.d_model}, d_ff={config.d_ff}, "
            f"h={config.num_heads}, P_drop={config.dropout}, {config.positional_encoding} positions, "
            f"{config.layer_norm}-norm, vocabulary {config.vocab_size}")


# Where the project's docs table a recipe's measured runs: docs/results/runs.yaml generates the table, whose anchor
# is `insight.results.recipe_anchor` (tests/insight/test_results.py checks that the two agree).
RESULTS_PAGE = "docs/results.md"


def recipe_results_link(name: str) -> str:
    """The place of a recipe's results table in the project's docs: `docs/results.md#recipe-NAME`."""
    return f"{RESULTS_PAGE}#recipe-{name}"


def recipe_paragraph(name: str) -> str:
    """What a card says of the recipe its run used: its name and where its measured runs are, not their numbers."""
    return (f"This model was trained with the recipe `{name}` of the vanilla-transformer project (`vanilla-train "
            f"--recipe {name}`); the scores above are this run's own. Every measured run of the recipe (each seed, "
            f"its machine and command, and a peer model trained for the same minutes on the same machine) is in the "
            f"results table of the project's documentation: file `{recipe_results_link(name)}`.")


def card_metadata(text: str) -> dict:
    """The YAML header of a model card (between the leading `---` lines), as a dict."""
    import yaml

    if not text.startswith("---\n") or "\n---" not in text[3:]:
        raise ModelCardError("the model card has no YAML metadata header (a block between two '---' lines at the top).")
    header = text[4 : text.index("\n---", 3)]
    try:
        metadata = yaml.safe_load(header) or {}
    except yaml.YAMLError as error:
        raise ModelCardError(f"the model card's YAML metadata header does not parse: {error}") from None
    if not isinstance(metadata, dict):
        raise ModelCardError("the model card's YAML metadata header is not a mapping of fields.")
    return metadata


def check_model_card(text: str, source: str) -> None:
    """Raise `ModelCardError` naming every missing metadata field of the card read from `source`."""
    problems = metadata_problems(card_metadata(text))
    if problems:
        raise ModelCardError(
            f"not uploading: the model card {source} is incomplete:\n- " + "\n- ".join(problems) + "\nFix the card's "
            "YAML header (or, for a folder without README.md, pass --language / --dataset / --bleu)."
        )


def metadata_problems(metadata: dict) -> list[str]:
    """Every field the Hub and `pipeline("translation")` users need that is missing or wrong; [] when complete."""
    problems = []
    for field, example in (
        ("language", "[en, de]"),
        ("license", "apache-2.0"),
        ("tags", "[translation, transformer]"),
        ("datasets", "[bentrevett/multi30k] (Hub dataset ids of the training data)"),
    ):
        if not metadata.get(field):
            problems.append(f"field '{field}' is missing or empty (e.g. {field}: {example})")
    for field, required in (("pipeline_tag", "translation"), ("library_name", "transformers")):
        if metadata.get(field) != required:
            problems.append(f"field '{field}' must be '{required}', got {metadata.get(field)!r}")
    if "bleu" not in [str(metric).lower() for metric in metadata.get("metrics") or []]:
        problems.append("field 'metrics' must list bleu (e.g. metrics: [bleu, chrf])")
    return problems + _model_index_problems(metadata.get("model-index"))


def _model_index_problems(model_index) -> list[str]:
    """The Hub rejects a result without task type, dataset type and name, or metric type and value."""
    if not isinstance(model_index, list) or not model_index:
        return ["field 'model-index' is missing: it holds the BLEU score (see model_card.md)"]
    problems, bleu_found = [], False
    for i, entry in enumerate(model_index):
        for j, result in enumerate((entry or {}).get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            if not (result.get("task") or {}).get("type"):
                problems.append(f"field '{where}.task.type' is missing (translation)")
            dataset = result.get("dataset") or {}
            for key in ("type", "name"):
                if not dataset.get(key):
                    problems.append(
                        f"field '{where}.dataset.{key}' is missing: the Hub rejects a result without the dataset it "
                        "was measured on (type: the Hub dataset id, name: a readable name)"
                    )
            for k, metric in enumerate(result.get("metrics") or []):
                if str(metric.get("type", "")).lower() != "bleu":
                    continue
                bleu_found = True
                value = metric.get("value")
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    problems.append(
                        f"field '{where}.metrics[{k}].value' (BLEU) is {value!r}: evaluate the model and fill in its "
                        "test BLEU"
                    )
    if not bleu_found:
        problems.append("field 'model-index' has no BLEU result (a metric of type bleu with its value)")
    return problems


def redact_local_paths(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The card with every local file path replaced by its last part (`/home/alice/clientX/train` -> `train`), and
    the (path, replacement) pairs, in order of appearance.

    A training run's card names its `--train-files` as they were typed, home folders and client names included;
    `vanilla-push` uploads the card through this. Web addresses and words with a single "/" (Hub ids such as
    `bentrevett/multi30k`) are kept.
    """
    replaced = []

    def replace(match: re.Match) -> str:
        word = match.group(0)
        is_url = "://" in word and not word.startswith("file://")
        separators = len(re.findall(r"[\\/]", word))
        if is_url or not (_ANCHORED_PATH.match(word) or separators >= 2):
            return word
        last = re.split(r"[\\/]+", word.removeprefix("file://").rstrip("/\\"))[-1]
        if not last or last in (".", "..", "~"):
            return word
        replaced.append((word, last))
        return last

    return _WORD.sub(replace, text), replaced


def run_model_card(args, config, summary: dict, tokenizer) -> str:
    """The model card of a training run: model_card.md filled with this run's facts (`args`: vanilla-train's options).
    A recipe's card names the recipe and links to its measured runs in the docs instead of copying them."""
    hub_dataset = args.dataset or args.card_dataset
    train_files = args.train_files or args.train_jsonl or []
    departures = ", ".join(f"{k}={v}" for k, v in args.config_overrides.items()) or "none"

    def result(split):
        r = summary.get(split)
        return "not evaluated" if not r else (f"BLEU {r['bleu']}, chrF {r['chrf']} on {r['sentences']} sentences "
                                             f"(`{r['bleu_signature']}`, `{r['chrf_signature']}`)")

    return write_model_card(
        name=args.model_name or Path(args.output_dir).resolve().name,
        languages=[args.source_lang, args.target_lang],
        datasets=[hub_dataset] if hub_dataset else [],
        dataset_name=(f"{hub_dataset} {args.dataset_config or ''}".strip() if hub_dataset
                      else "local files"),  # not a folder name: those can name people and clients
        bleu=(summary.get("test") or summary.get("validation") or {}).get("bleu"),
        summary=f"{args.source_lang} -> {args.target_lang}, preset `{args.preset}`"
                + (f", recipe `{args.recipe}`" if args.recipe else "")
                + f", trained for {summary['train_minutes']} minutes.",
        architecture=f"preset `{args.preset}`: {describe_architecture(config)}; {summary['parameters'] / 1e6:.1f}M "
                     f"parameters. Overrides of the preset: {departures}.",
        data=f"{args.dataset or ' + '.join(Path(f).name for f in train_files)}; {args.source_lang} -> "
             f"{args.target_lang}; joint BPE vocabulary of {len(tokenizer)} tokens; pairs longer than "
             f"{args.max_length} tokens dropped.",
        training=training_procedure(args, summary),
        evaluation=f"Validation: {result('validation')}. Test: {result('test')}. Beam {args.num_beams}, "
                   f"length penalty {args.length_penalty}"
                   + (f", decoded under {args.precision} autocast (the saved weights are fp32: `vanilla-evaluate` "
                      "decodes them in fp32, which moved Multi30k BLEU by 0.03-0.20)"
                      if args.precision in ("bf16", "fp16") else "")
                   + "." + (f"\n\n{recipe_paragraph(args.recipe)}" if args.recipe else ""),
    )


def training_procedure(args, summary: dict) -> str:
    """The card's "Training procedure": updates, batches, optimizer and schedule, precision, device, final weights."""
    import torch

    averaged = summary["averaged_checkpoints"]
    device = "GPU" if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return (f"{summary['step']} updates ({summary['epochs']:.2f} epochs, {summary['tokens_seen']} target tokens) "
            f"of up to {args.max_tokens} x {args.update_freq} tokens per side and process, "
            f"{summary['processes']} process(es); Adam (0.9, 0.98, 1e-9)"
            + (f" with decoupled weight decay {args.weight_decay:g} of the matrices and embeddings (AdamW, "
               "not in the paper)" if args.weight_decay else "")
            + f", Eq. (3) learning rate with "
            f"{args.warmup_steps} warmup steps x {args.lr_scale}"
            + (f", decayed linearly to zero over the last {args.lr_cooldown:g} of the budget (not in the paper)"
               if args.lr_cooldown else "")
            + f"; label smoothing {args.label_smoothing}; "
            f"{args.precision}; {summary['train_minutes']} minutes on {device}; final weights "
            + (f"averaged over the last {averaged} checkpoints" if averaged else "of the last step")
            + (f" (the count of 1..{len(summary['average_choice']['scores'])} with the best "
               f"{summary['average_choice']['by']})."
               if "average_choice" in summary else "."))
