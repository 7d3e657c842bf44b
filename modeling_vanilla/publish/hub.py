"""Publishing a trained model folder to the Hugging Face Hub (`vanilla-push`): the folder that is uploaded (weights as
safetensors, tokenizer, config with `auto_map` and `custom_pipelines`, generation config, the model and pipeline code,
a checked model card with local paths cut), and the repository it goes to (a new one, or an existing one only when
asked to, never a public one when a private one was asked for)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from ..inference.model_folder import check_model_folder
from .model_card import check_model_card, redact_local_paths

CODE_FILES = ("configuration_vanilla.py", "modeling_vanilla.py", "pipeline_translation.py")


def write_upload_folder(model_dir: Path, folder: Path, fallback_card: Callable[[object], str]) -> Path:
    """Write into `folder` exactly what is uploaded; the model card is checked before anything is written, and
    uploaded with its local file paths cut to their last part. The card is the folder's README.md, or else
    `fallback_card(config)`."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import modeling_vanilla  # noqa: F401  registers the model with the Auto classes

    model_dir = check_model_folder(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    card_path = model_dir / "README.md"
    if card_path.is_file():
        card = card_path.read_text(encoding="utf-8")
        check_model_card(card, str(card_path))
    else:
        card = fallback_card(model.config)
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


def check_destination(repo_id: str, existing, update: bool, private: bool) -> None:
    """Refuse, with a FileExistsError saying what to do, to push into an existing repository without `update`
    (--update), or into a public one when `private` (--private) was asked for."""
    if existing is None:
        return
    visibility = {True: "private", False: "public"}.get(getattr(existing, "private", None), "of unknown visibility")
    if not update:
        raise FileExistsError(
            f"the Hub repository {repo_id} already exists ({visibility}): not pushing over it. Pass --update to "
            "add a new commit to it (files of the same name are replaced), or choose another --repo-id."
        )
    if private and getattr(existing, "private", None) is not True:
        raise FileExistsError(
            f"--private: the Hub repository {repo_id} already exists and is {visibility}; --private does not "
            f"change an existing repository. Make it private first (https://huggingface.co/{repo_id}/settings), "
            "then run this again, or drop --private to push into it as it is."
        )


def upload(api, folder: Path, repo_id: str, existing, private: bool, commit_message: str) -> tuple[object, str]:
    """Create the repository if `existing` is None (private if asked), upload `folder` as one commit; returns the
    commit and where it went, in words."""
    if existing is None:
        # exist_ok=False: a repository created meanwhile (or one this token cannot see) is an error, not a target.
        repo = api.create_repo(repo_id, private=private, exist_ok=False, repo_type="model")
    else:
        repo = f"https://huggingface.co/{repo_id}"
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=commit_message)
    if existing is None:
        return commit, f"the new {'private' if private else 'public'} repository {repo}"
    kept = {True: "private", False: "public"}.get(getattr(existing, "private", None), "visibility unchanged")
    return commit, f"the existing repository {repo} ({kept})"


def describe_files(folder: Path) -> str:
    return ", ".join(f"{path.name} ({path.stat().st_size:,} bytes)" for path in sorted(folder.iterdir()))
