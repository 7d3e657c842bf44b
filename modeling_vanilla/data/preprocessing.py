"""Preprocessing (section 5.1): tokenize a parallel corpus and drop the pairs the paper's batches cannot hold.

`preprocess_translation` tokenizes with `datasets.map` (batched, `num_proc` processes, cached), drops empty, too
long and badly length-matched pairs, and counts what was dropped and why (`DropCounts`). The corpus comes from
`modeling_vanilla.data.corpus`; the batches are cut by `modeling_vanilla.data.batching`. This module imports
neither torch nor the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from datasets.fingerprint import Hasher

from .corpus import TranslationDataError, check_direction, check_translation_features

__all__ = ["DROP_REASONS", "DropCounts", "preprocess_translation"]

logger = logging.getLogger(__name__)

# Bumped when preprocessing changes, so that old cached datasets are not reused.
_PREPROCESS_VERSION = "1"
DROP_REASONS = ("empty", "too_long", "length_ratio")

# ----------------------------------------------------------------------------------------------------------------
# 3. Preprocessing
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropCounts:
    """What `preprocess_translation` kept and dropped of one split, and why."""

    total: int
    kept: int
    empty: int
    too_long: int
    length_ratio: int
    max_length: int
    max_length_ratio: float | None

    def __str__(self) -> str:
        ratio = "no limit" if self.max_length_ratio is None else f"over {self.max_length_ratio:g}"
        return (
            f"kept {self.kept} of {self.total} pairs; dropped {self.empty} with an empty side, {self.too_long} "
            f"with a side over {self.max_length} tokens, {self.length_ratio} with a length ratio {ratio}"
        )


def preprocess_translation(
    dataset: DatasetDict | IterableDatasetDict,
    tokenizer,
    source_lang: str,
    target_lang: str,
    *,
    max_length: int = 256,
    max_length_ratio: float | None = 3.0,
    num_proc: int | None = None,
    batch_size: int = 1000,
    load_from_cache_file: bool = True,
) -> tuple[DatasetDict | IterableDatasetDict, dict[str, DropCounts] | None]:
    """Tokenize a translation dataset with `datasets.map` and drop pairs unfit for training (section 5.1 data).

    Each side is stripped of surrounding whitespace and tokenized with `</s>` appended: `input_ids` from
    `source_lang`, `labels` from `target_lang` (`tokenizer(src, text_target=tgt)`). A pair is dropped, first
    matching reason counted, when
      * `empty`: either side is empty or whitespace only;
      * `too_long`: either side has more than `max_length` tokens (with `</s>`);
      * `length_ratio`: the longer side has more than `max_length_ratio` times the tokens of the shorter
        (without `</s>`); `None` keeps every ratio.

    Runs batched on `num_proc` processes and is cached by `datasets`: a second call with the same data,
    tokenizer and limits reads the cache. Streaming datasets are processed lazily, without counts.

    Returns:
        `(tokenized, counts)`: the splits with columns `input_ids` and `labels` only, and per split a
        `DropCounts` (`None` when streaming). The counts are also logged at INFO level.

    Raises:
        TranslationDataError: a language is not in the dataset, or every pair of a split was dropped.
    """
    languages = check_direction(source_lang, target_lang)
    _check_preprocess_arguments(dataset, max_length, max_length_ratio)
    fn_kwargs = {
        "tokenizer": tokenizer,
        "languages": languages,
        "max_length": max_length,
        "max_length_ratio": max_length_ratio,
    }
    if isinstance(dataset, IterableDatasetDict):
        streams = {split: _preprocess_stream(split, data, fn_kwargs, batch_size) for split, data in dataset.items()}
        return IterableDatasetDict(streams), None
    processed, counts = {}, {}
    for split, data in dataset.items():
        processed[split], counts[split] = _preprocess_split(
            split, data, fn_kwargs, batch_size, num_proc=num_proc, load_from_cache_file=load_from_cache_file
        )
    return DatasetDict(processed), counts


def _check_preprocess_arguments(dataset, max_length: int, max_length_ratio: float | None) -> None:
    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be at least 2 (one token and </s>).")
    if max_length_ratio is not None and max_length_ratio < 1:
        raise ValueError(f"max_length_ratio={max_length_ratio} must be at least 1, or None for no limit.")
    if not isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        raise TypeError(f"dataset must be a DatasetDict or IterableDatasetDict, got {type(dataset).__name__}.")


def _preprocess_stream(split: str, data: IterableDataset, fn_kwargs: dict, batch_size: int) -> IterableDataset:
    """A streaming split, tokenized and filtered lazily while it is read (nothing is counted)."""
    check_translation_features(data, fn_kwargs["languages"], f"split {split!r}")
    marked = data.map(
        _tokenize_and_mark,
        batched=True,
        batch_size=batch_size,
        fn_kwargs=fn_kwargs,
        remove_columns=list(data.column_names or ["translation"]),
    )
    return marked.filter(_is_kept, input_columns="drop_reason", batched=True).remove_columns("drop_reason")


def _preprocess_split(
    split: str, data: Dataset, fn_kwargs: dict, batch_size: int, **cache
) -> tuple[Dataset, DropCounts]:
    """One split tokenized and marked, its drops counted, then filtered; both steps cached under `fn_kwargs`.

    `cache` holds `num_proc` and `load_from_cache_file`, passed to both `datasets` steps.
    """
    check_translation_features(data, fn_kwargs["languages"], f"split {split!r}")
    fingerprint = _preprocess_fingerprint(data._fingerprint, **fn_kwargs)
    marked = data.map(
        _tokenize_and_mark,
        batched=True,
        batch_size=batch_size,
        fn_kwargs=fn_kwargs,
        remove_columns=data.column_names,
        new_fingerprint=fingerprint + "-tokenized",
        desc=f"Tokenizing {split}",
        **cache,
    )
    counts = _count_drops(marked, fn_kwargs["max_length"], fn_kwargs["max_length_ratio"])
    logger.info("%s: %s", split, counts)
    if counts.kept == 0:
        raise TranslationDataError(
            f"every pair of split {split!r} was dropped ({counts}): check the languages and the limits "
            "max_length / max_length_ratio."
        )
    kept = marked.filter(
        _is_kept,
        input_columns="drop_reason",
        batched=True,
        batch_size=batch_size,
        new_fingerprint=fingerprint + "-filtered",
        desc=f"Dropping pairs of {split}",
        **cache,
    )
    return kept.remove_columns("drop_reason"), counts


def _count_drops(marked: Dataset, max_length: int, max_length_ratio: float | None) -> DropCounts:
    """Count the rows of a marked split by drop reason ("" = kept)."""
    reasons = pc.value_counts(marked.with_format("arrow")["drop_reason"]).to_pylist()
    found = {item["values"]: item["counts"] for item in reasons}
    return DropCounts(
        total=len(marked),
        kept=found.get("", 0),
        empty=found.get("empty", 0),
        too_long=found.get("too_long", 0),
        length_ratio=found.get("length_ratio", 0),
        max_length=max_length,
        max_length_ratio=max_length_ratio,
    )


def _tokenize_and_mark(batch, tokenizer, languages, max_length, max_length_ratio) -> dict[str, list]:
    """Tokenize a batch of pairs and give each a drop reason ("" = kept); runs inside `datasets.map`."""
    sources = [row[languages[0]].strip() for row in batch["translation"]]
    targets = [row[languages[1]].strip() for row in batch["translation"]]
    encoded = tokenizer(sources, text_target=targets, add_special_tokens=True, return_attention_mask=False)
    reasons = []
    for source, target, source_ids, target_ids in zip(sources, targets, encoded["input_ids"], encoded["labels"]):
        if not source or not target:
            reasons.append("empty")
        elif len(source_ids) > max_length or len(target_ids) > max_length:
            reasons.append("too_long")
        elif max_length_ratio is not None and (
            max(len(source_ids), len(target_ids)) - 1 > max_length_ratio * (min(len(source_ids), len(target_ids)) - 1)
        ):
            reasons.append("length_ratio")
        else:
            reasons.append("")
    return {"input_ids": encoded["input_ids"], "labels": encoded["labels"], "drop_reason": reasons}


def _is_kept(reasons: list[str]) -> list[bool]:
    return [reason == "" for reason in reasons]


def _preprocess_fingerprint(data_fingerprint, tokenizer, languages, max_length, max_length_ratio) -> str:
    """Cache key from the input's fingerprint, the tokenizer's full definition and the limits.

    The backend's padding and truncation settings are left out: transformers resets them on every call, and a
    call with `padding=True` before preprocessing must not invalidate the cache.
    """
    if hasattr(tokenizer, "backend_tokenizer"):
        definition = json.loads(tokenizer.backend_tokenizer.to_str())
        definition.pop("padding", None)
        definition.pop("truncation", None)
    else:  # a tokenizer without a `tokenizers` backend: let datasets hash the whole object
        definition = Hasher.hash(tokenizer)
    key = json.dumps([_PREPROCESS_VERSION, data_fingerprint, definition, languages, max_length, max_length_ratio])
    return hashlib.sha256(key.encode()).hexdigest()[:32]
