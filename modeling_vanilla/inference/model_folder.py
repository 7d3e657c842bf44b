"""One check for a model folder (or Hub repo id) before anything slow, and one way to load model and tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

import torch

MODEL_TYPE = "vanilla_transformer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def check_model_folder(model_name_or_path: str | Path, need_tokenizer: bool = True) -> str | Path:
    """Refuse, with a FileNotFoundError naming the problem and the fix, a path that is not a model folder.

    A folder must hold config.json (and, with `need_tokenizer`, the tokenizer saved next to the model). A string
    that is no existing path is accepted when it has the shape of a Hub repo id (name or owner/name); loading it is
    the Hub's business. Returns the argument, as a Path for a folder.
    """
    path = Path(model_name_or_path)
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is a file, not a model folder written by save_pretrained.")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a model folder written by save_pretrained.")
        if need_tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise FileNotFoundError(
                f"{path} has no tokenizer: save it there with tokenizer.save_pretrained({str(path)!r})."
            )
        return path
    if not _HUB_ID.fullmatch(str(model_name_or_path)):
        raise FileNotFoundError(
            f"model folder {str(model_name_or_path)!r} does not exist. Pass a folder written by save_pretrained "
            "that holds the model and its tokenizer, or a Hub repo id (owner/name)."
        )
    return str(model_name_or_path)


def check_vanilla(model) -> None:
    """Raise a ValueError for a model that is not this package's (code that reads its layers needs it)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type != MODEL_TYPE:
        raise ValueError(f"expected a {MODEL_TYPE} model (modeling_vanilla), got model_type={model_type!r}.")


def load_model_and_tokenizer(model_name_or_path: str | Path, dtype: torch.dtype | None = None,
                             vanilla_only: bool = False):
    """Check the folder, then load (model in eval mode, tokenizer). `dtype` casts the weights (default: as saved).

    Raises FileNotFoundError for a missing folder, a folder without a model or a tokenizer, or a Hub id that cannot
    be loaded; ValueError for a tokenizer whose size is not this package's model's `config.vocab_size`, and, with
    `vanilla_only`, for a model that is not this package's.
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import modeling_vanilla  # noqa: F401  registers the model with the Auto classes

    from ..pipeline_translation import check_vocabulary_size

    source = check_model_folder(model_name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSeq2SeqLM.from_pretrained(source, **({"dtype": dtype} if dtype is not None else {}))
    except OSError as error:  # what transformers raises for a repo id it cannot find or download
        raise FileNotFoundError(
            f"no model folder {str(model_name_or_path)!r}, and no Hub repo of that name could be loaded: {error}"
        ) from error
    if vanilla_only:
        check_vanilla(model)
    check_vocabulary_size(model, tokenizer, f"the tokenizer of {model_name_or_path}",
                          "Load the model with the tokenizer saved with it: the one vanilla-train or "
                          "vanilla-train-tokenizer wrote for this model, saved into its folder with "
                          "tokenizer.save_pretrained(folder).")
    return model.eval(), tokenizer
