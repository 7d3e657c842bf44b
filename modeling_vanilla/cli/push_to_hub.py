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
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

from ..inference.model_folder import check_model_folder
from ..publish.model_card import (
    ModelCardError,
    card_metadata,
    check_model_card,
    describe_architecture,
    metadata_problems,
    redact_local_paths,
    write_model_card,
)
from ..utils.arguments import number_in_range

CODE_FILES = ("configuration_vanilla.py", "modeling_vanilla.py", "pipeline_translation.py")
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
    """Write into `folder` exactly what is uploaded; the model card is checked before anything is written, and
    uploaded with its local file paths cut to their last part."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import modeling_vanilla  # noqa: F401  registers the model with the Auto classes

    model_dir = check_model_folder(args.model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    card_path = model_dir / "README.md"
    if card_path.is_file():
        card = card_path.read_text(encoding="utf-8")
        check_model_card(card, str(card_path))
    else:
        card = command_line_card(args, model.config)
        check_model_card(card, "filled in from the model_card.md template")

    card, replaced = redact_local_paths(card)
    for path, last in replaced:
        print(f"model card: local path {path!r} uploaded as {last!r}")
    check_model_card(card, "with its local paths cut to their last part")

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # safetensors weights, config.json, generation_config.json, model and pipeline code
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(card, encoding="utf-8")
    check_upload_folder(folder)
    return folder


def existing_repository(api, repo_id: str):
    """The Hub's information on the model repository `repo_id` (its `private` field among it), or None if there is
    none (or none this token can see)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        return api.repo_info(repo_id, repo_type="model")
    except GatedRepoError:  # it exists; this token may not read it
        return SimpleNamespace(private=None)
    except RepositoryNotFoundError:
        return None


def check_destination(args: argparse.Namespace, existing) -> None:
    """Refuse, with a FileExistsError saying what to do, to push into an existing repository without --update, or
    into a public one when --private was asked for."""
    if existing is None:
        return
    visibility = {True: "private", False: "public"}.get(getattr(existing, "private", None), "of unknown visibility")
    if not args.update:
        raise FileExistsError(
            f"the Hub repository {args.repo_id} already exists ({visibility}): not pushing over it. Pass --update to "
            "add a new commit to it (files of the same name are replaced), or choose another --repo-id."
        )
    if args.private and getattr(existing, "private", None) is not True:
        raise FileExistsError(
            f"--private: the Hub repository {args.repo_id} already exists and is {visibility}; --private does not "
            f"change an existing repository. Make it private first (https://huggingface.co/{args.repo_id}/settings), "
            "then run this again, or drop --private to push into it as it is."
        )


def describe_files(folder: Path) -> str:
    return ", ".join(f"{path.name} ({path.stat().st_size:,} bytes)" for path in sorted(folder.iterdir()))


def run(argv=None):
    """The command, raising its errors (`ModelCardError`, `FileNotFoundError`, `FileExistsError`)."""
    args = parse_args(argv)
    if args.dry_run is not None:
        if args.dry_run.exists() and any(args.dry_run.iterdir()):
            raise FileExistsError(f"--dry-run folder {args.dry_run} is not empty: give a new or empty folder.")
        write_upload_folder(args, args.dry_run)
        files = sorted(path.name for path in args.dry_run.iterdir())
        print(f"Dry run: {args.dry_run} holds what would be uploaded to {args.repo_id}: {', '.join(files)}")
        return args.dry_run
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    existing = existing_repository(api, args.repo_id)
    check_destination(args, existing)  # before the model is loaded
    with tempfile.TemporaryDirectory(prefix="push_to_hub-") as staging:
        folder = write_upload_folder(args, Path(staging))
        files = describe_files(folder)
        if existing is None:
            # exist_ok=False: a repository created meanwhile (or one this token cannot see) is an error, not a target.
            repo = api.create_repo(args.repo_id, private=args.private, exist_ok=False, repo_type="model")
        else:
            repo = f"https://huggingface.co/{args.repo_id}"
        commit = api.upload_folder(
            repo_id=args.repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=args.commit_message or f"Upload {args.repo_id.split('/')[1]} (vanilla-transformer)",
        )
    if existing is None:
        where = f"the new {'private' if args.private else 'public'} repository {repo}"
    else:
        kept = {True: "private", False: "public"}.get(getattr(existing, "private", None), "visibility unchanged")
        where = f"the existing repository {repo} ({kept})"
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
