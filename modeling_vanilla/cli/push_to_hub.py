"""`vanilla-push`: publish a trained model folder to the Hugging Face Hub, ready for `pipeline("translation")`.

Uploaded: the weights as safetensors, the tokenizer, config.json (with `auto_map` and `custom_pipelines`), the
generation config, the model code and the translation pipeline (so that Hub users need no package, only
`trust_remote_code=True`), and the model card README.md. Nothing else from the folder (checkpoints, metrics, logs).

Examples:

    # Write exactly what would be uploaded into upload/, touching no network
    vanilla-push runs/multi30k --repo-id you/transformer-multi30k-en-de --dry-run upload

    # Upload into a new repository (log in first: `hf auth login`, or set HF_TOKEN)
    vanilla-push runs/multi30k --repo-id you/transformer-multi30k-en-de --private \\
        --commit-message "Multi30k EN-DE, 10 minutes on a CPU"

    # A new commit in that repository, after more training
    vanilla-push runs/multi30k --repo-id you/transformer-multi30k-en-de --private --update

The repository: a new one is created (private with --private). One that already exists is refused unless --update
is given, and then receives a new commit (files of the same name are replaced, others stay); with --private it must
already be private: a public repository is refused rather than silently kept public (make it private on the Hub
first, in its settings). The command prints what it pushed, file by file, and where.

The model card: the folder's README.md when it has one (vanilla-train writes it), kept as it is; otherwise
the package's model_card.md template, filled in from --language, --dataset, --bleu and the model's config. Either
way its metadata is checked first (language, license, tags, datasets, metrics with BLEU, a model-index the Hub
accepts, `pipeline_tag: translation`, `library_name: transformers`), and the upload is refused, naming every
missing field, when it is incomplete. Local file paths in the card's text (absolute, ~/..., ./..., ../..., or of
three or more parts, such as the --train-files vanilla-train wrote into it) are uploaded as their last part only:
/home/alice/clientX/train becomes train; the command lists each replacement. Hub ids (owner/name) and web addresses
are kept.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

from ..publish.model_card import (
    ModelCardError,
    card_metadata,
    describe_architecture,
    metadata_problems,
    write_model_card,
)
from ..utils.arguments import number_in_range

__all__ = ["ModelCardError", "card_metadata", "metadata_problems", "main", "run"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-push", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="folder written by save_pretrained (model and tokenizer)")
    parser.add_argument("--repo-id", required=True, help="Hub repository, user/name or organization/name")
    parser.add_argument(
        "--private", action="store_true",
        help="create the repository as private; an existing repository must already be private",
    )
    parser.add_argument(
        "--update", action="store_true",
        help="push a new commit into an existing repository (without it, an existing repository is refused)",
    )
    parser.add_argument("--commit-message", default=None, help="default: 'Upload <name> (vanilla-transformer)'")
    parser.add_argument("--token", default=None, help="Hub token (default: the one from `hf auth login` or HF_TOKEN)")
    parser.add_argument(
        "--dry-run", type=Path, metavar="DIR", help="write the folder that would be uploaded into DIR, upload nothing"
    )
    card = parser.add_argument_group("model card, used only when the folder has no README.md")
    card.add_argument("--language", nargs="+", default=[], help="source and target language codes, e.g. en de")
    card.add_argument("--dataset", nargs="+", default=[], help="Hub dataset ids of the training data")
    card.add_argument("--bleu", type=number_in_range(0, 100, "a BLEU score"), help="test BLEU (sacreBLEU), 0 to 100")
    card.add_argument("--summary", default="", help="one or two sentences about the model")
    args = parser.parse_args(argv)
    if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
        parser.error(f"--repo-id must be 'user/name' or 'organization/name', got {args.repo_id!r}.")
    return args


def command_line_card(args: argparse.Namespace, config) -> str:
    """The model card from the command line's --language, --dataset, --bleu and --summary, and the model's config."""
    direction = " -> ".join(args.language) or "unknown languages"
    return write_model_card(
        name=args.repo_id.split("/")[1], languages=args.language, datasets=args.dataset,
        dataset_name=args.dataset[0] if args.dataset else "local files", bleu=args.bleu, summary=args.summary,
        architecture=describe_architecture(config) + ".",
        data=f"{', '.join(args.dataset) or 'not documented'}; {direction}.",
        training="Not documented in this card.",
        evaluation="not evaluated" if args.bleu is None else f"Test BLEU {args.bleu} (sacreBLEU).",
    )


def run(argv=None):
    """The command, raising its errors (`ModelCardError`, `FileNotFoundError`, `FileExistsError`)."""
    args = parse_args(argv)
    from ..publish import hub  # after parsing: --help needs neither torch nor transformers

    card = partial(command_line_card, args)
    if args.dry_run is not None:
        if args.dry_run.exists() and any(args.dry_run.iterdir()):
            raise FileExistsError(f"--dry-run folder {args.dry_run} is not empty: give a new or empty folder.")
        hub.write_upload_folder(args.model_dir, args.dry_run, card)
        files = sorted(path.name for path in args.dry_run.iterdir())
        print(f"Dry run: {args.dry_run} holds what would be uploaded to {args.repo_id}: {', '.join(files)}")
        return args.dry_run
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    existing = hub.existing_repository(api, args.repo_id)
    hub.check_destination(args.repo_id, existing, args.update, args.private)  # before the model is loaded
    with tempfile.TemporaryDirectory(prefix="push_to_hub-") as staging:
        folder = hub.write_upload_folder(args.model_dir, Path(staging), card)
        files = hub.describe_files(folder)
        message = args.commit_message or f"Upload {args.repo_id.split('/')[1]} (vanilla-transformer)"
        commit, where = hub.upload(api, folder, args.repo_id, existing, args.private, message)
    print(f"Pushed to {where}: {files}\nCommit: {getattr(commit, 'commit_url', commit)}")
    return commit


def main(argv=None) -> int:
    """The console command: errors end it with one line naming the problem, not a traceback."""
    try:
        run(argv)
    except (ModelCardError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"vanilla-push: error: {error}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
