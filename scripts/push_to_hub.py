"""Publish a trained model folder to the Hugging Face Hub, ready for `pipeline("translation")`.

Uploaded: the weights as safetensors, the tokenizer, config.json (with `auto_map` and `custom_pipelines`), the
generation config, the model code and the translation pipeline (so that Hub users need no package, only
`trust_remote_code=True`), and the model card README.md. Nothing else from the folder (checkpoints, metrics, logs).

Examples, from the repository root:

    # Write exactly what would be uploaded into upload/, touching no network
    python scripts/push_to_hub.py runs/multi30k --repo-id you/transformer-multi30k-en-de --dry-run upload

    # Upload (log in first: `hf auth login`, or set HF_TOKEN)
    python scripts/push_to_hub.py runs/multi30k --repo-id you/transformer-multi30k-en-de --private \\
        --commit-message "Multi30k EN-DE, 10 minutes on a CPU"

The model card: the folder's README.md when it has one (scripts/train.py writes it), kept as it is; otherwise
model_card.md at the repository root, filled in from --language, --dataset, --bleu and the model's config. Either
way its metadata is checked first (language, license, tags, datasets, metrics with BLEU, a model-index the Hub
accepts, `pipeline_tag: translation`, `library_name: transformers`), and the upload is refused, naming every
missing field, when it is incomplete.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling_vanilla  # noqa: E402, F401  (registers the model with the Auto classes)
from huggingface_hub import HfApi  # noqa: E402
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1] / "model_card.md"
CODE_FILES = ("configuration_vanilla.py", "modeling_vanilla.py", "pipeline_translation.py")
EXAMPLE_SENTENCES = {
    "en": "A man is riding a bicycle.", "de": "Ein Mann fährt Fahrrad.", "fr": "Un homme fait du vélo."
}


class ModelCardError(ValueError):
    """The model card's metadata is incomplete: the message names each missing field and how to fill it."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="folder written by save_pretrained (model and tokenizer)")
    parser.add_argument("--repo-id", required=True, help="Hub repository, user/name or organization/name")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--commit-message", default=None, help="default: 'Upload <name> (vanilla-transformer)'")
    parser.add_argument("--token", default=None, help="Hub token (default: the one from `hf auth login` or HF_TOKEN)")
    parser.add_argument(
        "--dry-run", type=Path, metavar="DIR", help="write the folder that would be uploaded into DIR, upload nothing"
    )
    card = parser.add_argument_group("model card, used only when the folder has no README.md")
    card.add_argument("--language", nargs="+", default=[], help="source and target language codes, e.g. en de")
    card.add_argument("--dataset", nargs="+", default=[], help="Hub dataset ids of the training data")
    card.add_argument("--bleu", type=float, help="test BLEU (sacreBLEU) of the model")
    card.add_argument("--summary", default="", help="one or two sentences about the model")
    args = parser.parse_args(argv)
    if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
        parser.error(f"--repo-id must be 'user/name' or 'organization/name', got {args.repo_id!r}.")
    return args


# The model card


def card_metadata(text: str) -> dict:
    """The YAML header of a model card (between the leading `---` lines), as a dict."""
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

    # model-index: the Hub rejects a result without task type, dataset type and name, or metric type and value.
    bleu_found = False
    model_index = metadata.get("model-index")
    if not isinstance(model_index, list) or not model_index:
        problems.append("field 'model-index' is missing: it holds the BLEU score (see model_card.md)")
        model_index = []
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
                if not isinstance(metric.get("value"), (int, float)) or isinstance(metric.get("value"), bool):
                    problems.append(
                        f"field '{where}.metrics[{k}].value' (BLEU) is {metric.get('value')!r}: evaluate the model "
                        "and fill in its test BLEU"
                    )
    if model_index and not bleu_found:
        problems.append("field 'model-index' has no BLEU result (a metric of type bleu with its value)")
    return problems


def check_model_card(text: str, source: str) -> None:
    """Raise `ModelCardError` naming every missing metadata field of the card read from `source`."""
    problems = metadata_problems(card_metadata(text))
    if problems:
        raise ModelCardError(
            f"not uploading: the model card {source} is incomplete:\n- " + "\n- ".join(problems) + "\nFix the card's "
            "YAML header (or, for a folder without README.md, pass --language / --dataset / --bleu)."
        )


def fill_model_card(args: argparse.Namespace, config) -> str:
    """model_card.md with its {{fields}} filled from the command line and the model's config."""
    name = args.repo_id.split("/")[1]
    direction = " -> ".join(args.language) or "unknown languages"
    values = {
        "model_name": name,
        "language": yaml.safe_dump(args.language, default_flow_style=True).strip(),
        "datasets": yaml.safe_dump(args.dataset, default_flow_style=True).strip(),
        "bleu": "null" if args.bleu is None else str(args.bleu),
        "dataset_type": args.dataset[0] if args.dataset else "local",
        "dataset_name": args.dataset[0] if args.dataset else "local files",
        "summary": args.summary,
        "architecture": f"N={config.num_encoder_layers}+{config.num_decoder_layers}, d_model={config.d_model}, "
        f"d_ff={config.d_ff}, h={config.num_heads}, P_drop={config.dropout}, {config.positional_encoding} "
        f"positions, {config.layer_norm}-norm, vocabulary {config.vocab_size}.",
        "data": f"{', '.join(args.dataset) or 'not documented'}; {direction}.",
        "training": "Not documented in this card.",
        "evaluation": "not evaluated" if args.bleu is None else f"Test BLEU {args.bleu} (sacreBLEU).",
        "source_example": EXAMPLE_SENTENCES.get(args.language[0] if args.language else "", "Hello."),
    }
    text = TEMPLATE.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        start = text.index("{{")
        field = text[start : text.index("}}", start) + 2]
        raise ModelCardError(f"{TEMPLATE} has a field this script does not fill: {field}")
    metadata = card_metadata(text)
    body = text[text.index("\n---", 3) + len("\n---") :]
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---" + body


# The folder


def check_upload_folder(folder: Path) -> None:
    """The files the Hub repository needs are all there (weights as safetensors, code, tokenizer, card)."""
    missing = [name for name in ("config.json", "generation_config.json", "README.md", *CODE_FILES)
               if not (folder / name).is_file()]
    if not any(folder.glob("*.safetensors")):
        missing.append("model.safetensors")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        missing.append("tokenizer.json")
    if missing:
        raise FileNotFoundError(f"the folder to upload, {folder}, lacks {', '.join(missing)}.")
    config = json.loads((folder / "config.json").read_text())
    for key in ("auto_map", "custom_pipelines"):
        if not config.get(key):
            raise ValueError(
                f"{folder / 'config.json'} has no {key!r}: save the model with this package's save_pretrained."
            )


def write_upload_folder(args: argparse.Namespace, folder: Path) -> Path:
    """Write into `folder` exactly what is uploaded; the model card is checked before anything is written."""
    model_dir = args.model_dir
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: pass a folder written by save_pretrained.")
    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer_config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer: save it there with tokenizer.save_pretrained({str(model_dir)!r})."
        )
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    card_path = model_dir / "README.md"
    if card_path.is_file():
        card = card_path.read_text(encoding="utf-8")
        check_model_card(card, str(card_path))
    else:
        card = fill_model_card(args, model.config)
        check_model_card(card, f"filled in from {TEMPLATE.name}")

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # safetensors weights, config.json, generation_config.json, model and pipeline code
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(card, encoding="utf-8")
    check_upload_folder(folder)
    return folder


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run is not None:
        if args.dry_run.exists() and any(args.dry_run.iterdir()):
            raise FileExistsError(f"--dry-run folder {args.dry_run} is not empty: give a new or empty folder.")
        write_upload_folder(args, args.dry_run)
        files = sorted(path.name for path in args.dry_run.iterdir())
        print(f"Dry run: {args.dry_run} holds what would be uploaded to {args.repo_id}: {', '.join(files)}")
        return args.dry_run

    with tempfile.TemporaryDirectory(prefix="push_to_hub-") as staging:
        folder = write_upload_folder(args, Path(staging))
        api = HfApi(token=args.token)
        repo = api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=args.repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=args.commit_message or f"Upload {args.repo_id.split('/')[1]} (vanilla-transformer)",
        )
    print(f"Uploaded to {repo}: {getattr(commit, 'commit_url', commit)}")
    return commit


if __name__ == "__main__":
    try:
        main()
    except (ModelCardError, FileNotFoundError, FileExistsError) as error:
        sys.exit(f"push_to_hub.py: error: {error}")
