"""WMT-style parallel data for the Transformer of "Attention Is All You Need": from files to padded batches.

Section 5.1 of the paper trains on WMT 2014 (4.5M EN-DE pairs, 36M EN-FR pairs) and batches "sentence pairs
together by approximate sequence length", each batch holding about 25,000 source and 25,000 target tokens.
The path from files to batches, top to bottom:

1. `load_translation_dataset` / `load_corpus` (in `modeling_vanilla.corpus`, re-exported here): a
   `datasets.DatasetDict` in the Hub's WMT schema, `{"translation": {"de": "...", "en": "..."}}`, from the Hub
   (`wmt/wmt14`, `de-en`), from aligned plain text files, or from JSON lines files.
2. `iter_sentences` (also in `corpus`): the sentences of both languages, to train the joint BPE tokenizer
   (`modeling_vanilla.tokenization.train_bpe_tokenizer`).
3. `preprocess_translation`: tokenize with `datasets.map` (batched, `num_proc` processes, cached), drop empty,
   too long and badly length-matched pairs, and count what was dropped and why (`DropCounts`).
4. `TokenBatchSampler`: batches of similar-length pairs up to `max_tokens` padded tokens on each side,
   reshuffled every epoch, sharded over distributed processes; pass it as a DataLoader's `batch_sampler`.
5. `TranslationCollator`: pads a batch into `input_ids`, `attention_mask` and `labels` (-100 on padding).

Bad input fails early with a `TranslationDataError` (a `ValueError`) naming the file and line, or the field,
and the fix. This module imports neither torch (the collator imports it when called) nor the model.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from datasets.fingerprint import Hasher

from .corpus import (
    TranslationDataError,
    check_direction,
    check_translation_features,
    iter_sentences,
    load_corpus,
    load_translation_dataset,
)
from .tokenization import PAD_ID

__all__ = [
    "DropCounts",
    "TokenBatchSampler",
    "TranslationCollator",
    "TranslationDataError",
    "iter_sentences",
    "load_corpus",
    "load_translation_dataset",
    "pair_lengths",
    "preprocess_translation",
]

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


# ----------------------------------------------------------------------------------------------------------------
# 4. Token-based batching
# ----------------------------------------------------------------------------------------------------------------


def pair_lengths(dataset: Dataset, batch_size: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Token counts `(len(input_ids), len(labels))` of every row of a preprocessed dataset, as int64 arrays."""
    for column in ("input_ids", "labels"):
        if column not in dataset.column_names:
            raise TranslationDataError(
                f"the dataset has no column {column!r} (columns: {', '.join(dataset.column_names)}): pass the output "
                "of preprocess_translation."
            )
    sources, targets = [], []
    for table in dataset.select_columns(["input_ids", "labels"]).with_format("arrow").iter(batch_size=batch_size):
        sources.append(pc.list_value_length(table["input_ids"]).to_numpy(zero_copy_only=False))
        targets.append(pc.list_value_length(table["labels"]).to_numpy(zero_copy_only=False))
    if not sources:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(sources).astype(np.int64), np.concatenate(targets).astype(np.int64)


class TokenBatchSampler:
    """Batches of similar-length sentence pairs holding at most `max_tokens` tokens per side (section 5.1).

    A batch's cost counts padding: `len(batch) * longest source <= max_tokens` and the same for the targets
    (`max_tokens=25000` is the paper's setting; its "25000 source and 25000 target tokens"). Use it as
    `torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=TranslationCollator())` and call
    `sampler.set_epoch(epoch)` before each epoch.

    How batches are made, each epoch:
      1. Pairs are sorted by source length, then target length; with `shuffle`, pairs of equal lengths are put in
         a random order drawn from `(seed, epoch)`.
      2. The sorted pairs are cut greedily into batches as large as the token limit allows. Sorting fixes the
         sequence of lengths, so the cuts, and the number of batches, are the same every epoch.
      3. Distributed training (`num_replicas` > 1): while the number of batches is not a multiple of
         `num_replicas`, the batch with the most pairs is split in two halves. Every replica then gets the same
         number of batches and, together, the replicas cover every pair exactly once: nothing is dropped or
         repeated. (A `ValueError` is raised if there are too few pairs to split, e.g. fewer than replicas.)
      4. With `shuffle`, the batch order is shuffled from `(seed, epoch)`; replica `rank` takes batches
         `rank, rank + num_replicas, ...`. Every process computes the same list, so no communication is needed.

    Args:
        source_lengths, target_lengths: token counts per pair (`pair_lengths(dataset)`; see `from_dataset`).
        max_tokens: padded tokens per batch and side. A pair longer than this raises a `ValueError`.
        shuffle: randomize ties and batch order per epoch; `False` gives a fixed order (evaluation).
        seed: base of the per-epoch random streams; the same on all replicas.
        num_replicas, rank: number of distributed processes and this one's index (e.g.
            `accelerator.num_processes`, `accelerator.process_index`). With Accelerate, do not pass the
            DataLoader through `accelerator.prepare`: it would shard the batches a second time; move each batch
            to `accelerator.device` instead.
    """

    def __init__(
        self,
        source_lengths: Sequence[int],
        target_lengths: Sequence[int],
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.source_lengths = np.asarray(source_lengths, dtype=np.int64)
        self.target_lengths = np.asarray(target_lengths, dtype=np.int64)
        if self.source_lengths.ndim != 1 or self.source_lengths.shape != self.target_lengths.shape:
            raise ValueError(
                f"source_lengths and target_lengths must be two lists of the same length, got shapes "
                f"{self.source_lengths.shape} and {self.target_lengths.shape}."
            )
        if len(self.source_lengths) == 0:
            raise ValueError("no pairs to batch: the lengths are empty.")
        if int(max_tokens) != max_tokens or max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens} must be a positive integer (the paper uses 25000).")
        if int(num_replicas) != num_replicas or num_replicas < 1:
            raise ValueError(f"num_replicas={num_replicas} must be a positive integer.")
        if int(rank) != rank or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas}).")
        smallest = int(min(self.source_lengths.min(), self.target_lengths.min()))
        if smallest < 1:
            index = int(np.flatnonzero(np.minimum(self.source_lengths, self.target_lengths) < 1)[0])
            raise ValueError(f"pair {index} has a side of {smallest} tokens: every side needs at least 1 (its </s>).")
        too_long = np.flatnonzero(np.maximum(self.source_lengths, self.target_lengths) > max_tokens)
        if len(too_long):
            index = int(too_long[0])
            raise ValueError(
                f"pair {index} has {self.source_lengths[index]} source and {self.target_lengths[index]} target tokens, "
                f"more than max_tokens={max_tokens} ({len(too_long)} pairs are): raise max_tokens, or drop long "
                "pairs with preprocess_translation(max_length=...)."
            )
        self.max_tokens = int(max_tokens)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._sorted = np.lexsort((self.target_lengths, self.source_lengths))  # stable: ties in index order
        self._cuts = self._make_cuts()

    @classmethod
    def from_dataset(cls, dataset: Dataset, max_tokens: int, **kwargs) -> TokenBatchSampler:
        """Sampler over a preprocessed dataset (columns `input_ids` and `labels`); kwargs as for the constructor."""
        return cls(*pair_lengths(dataset), max_tokens, **kwargs)

    def _make_cuts(self) -> np.ndarray:
        """Batch boundaries in the sorted order: greedy fill, then splits until `num_replicas` divides the count."""
        sources, targets = self.source_lengths[self._sorted], self.target_lengths[self._sorted]
        starts, size, longest_source, longest_target = [0], 0, 0, 0
        for position, (source, target) in enumerate(zip(sources.tolist(), targets.tolist())):
            longest_source, longest_target = max(longest_source, source), max(longest_target, target)
            size += 1
            if size * longest_source > self.max_tokens or size * longest_target > self.max_tokens:
                starts.append(position)
                size, longest_source, longest_target = 1, source, target
        bounds = starts + [len(sources)]
        segments = list(zip(bounds[:-1], bounds[1:]))

        missing = -len(segments) % self.num_replicas
        if missing and len(segments) + missing > len(sources):
            raise ValueError(
                f"cannot give each of the {self.num_replicas} replicas the same number of batches: {len(sources)} "
                f"pairs make {len(segments)} batches of at most {self.max_tokens} tokens, and splitting them needs "
                f"{len(segments) + missing} pairs. Use fewer replicas or more data."
            )
        # Split the largest batch (ties: the earliest) until the count is a multiple of num_replicas.
        heap = [(-(end - start), start, end) for start, end in segments]
        heapq.heapify(heap)
        for _ in range(missing):
            _, start, end = heapq.heappop(heap)
            middle = start + (end - start + 1) // 2
            heapq.heappush(heap, (-(middle - start), start, middle))
            heapq.heappush(heap, (-(end - middle), middle, end))
        return np.array(sorted(start for _, start, _ in heap)[1:], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches `__iter__` gives (same seed and epoch give the same batches)."""
        self.epoch = int(epoch)

    def epoch_batches(self) -> list[list[int]]:
        """All batches of the current epoch, for all replicas, in the order they are dealt out."""
        return [batch.tolist() for batch in self._dealt()[0]]

    def _dealt(self) -> tuple[list[np.ndarray], np.ndarray]:
        """The current epoch's batches (all replicas, dealing order) and each one's target tokens; vectorized, and
        computed once per epoch."""
        if getattr(self, "_dealt_epoch", None) == self.epoch:
            return self._dealt_cache
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            ties = rng.permutation(len(self.source_lengths))
            order = np.lexsort((ties, self.target_lengths, self.source_lengths))
        else:
            order = self._sorted
        batches = np.split(order, self._cuts)
        tokens = np.add.reduceat(self.target_lengths[order], np.concatenate(([0], self._cuts)))
        if self.shuffle:
            deal = rng.permutation(len(batches))
            batches, tokens = [batches[i] for i in deal], tokens[deal]
        self._dealt_epoch, self._dealt_cache = self.epoch, (batches, tokens)
        return batches, tokens

    def __iter__(self) -> Iterator[list[int]]:
        # Only this replica's batches become Python lists, one at a time as they are drawn.
        for batch in self._dealt()[0][self.rank :: self.num_replicas]:
            yield batch.tolist()

    def update_tokens(self, first: int, count: int) -> int:
        """Target tokens of an update made of this replica's batches first .. first + count - 1 and the other
        replicas' batches of the same positions: every replica computes it alone, with no communication."""
        tokens = self._dealt()[1]
        return int(tokens[first * self.num_replicas : (first + count) * self.num_replicas].sum())

    def __len__(self) -> int:
        """Batches per epoch for this replica; the same on every replica and in every epoch."""
        return (len(self._cuts) + 1) // self.num_replicas

    @property
    def num_batches(self) -> int:
        """Batches per epoch over all replicas."""
        return len(self._cuts) + 1

    def padding_efficiency(self) -> float:
        """Real tokens / padded tokens (both sides) over one epoch's batches; 1.0 means no padding."""
        real = int(self.source_lengths.sum() + self.target_lengths.sum())
        padded = 0
        for batch in np.split(self._sorted, self._cuts):  # the same lengths in every epoch
            padded += len(batch) * int(self.source_lengths[batch].max() + self.target_lengths[batch].max())
        return real / padded


# ----------------------------------------------------------------------------------------------------------------
# 5. Collation
# ----------------------------------------------------------------------------------------------------------------


class TranslationCollator:
    """Pad a list of preprocessed pairs into a batch of tensors for `VanillaTransformerForConditionalGeneration`.

    Returns `input_ids` (padded with `pad_token_id`), `attention_mask` (1 on real tokens) and `labels` (padded
    with `label_pad_token_id`, -100, which the loss ignores); right padding. The model builds the decoder
    inputs by shifting the labels right behind `<s>`. Same result as transformers' `DataCollatorForSeq2Seq`
    without a model, and needs no tokenizer.
    """

    def __init__(
        self,
        pad_token_id: int = PAD_ID,
        label_pad_token_id: int = -100,
        pad_to_multiple_of: int | None = None,
        vocab_size: int | None = None,
    ):
        self.pad_token_id = pad_token_id
        self.label_pad_token_id = label_pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.vocab_size = vocab_size  # when given, every batch's ids are checked here, where it costs nothing

    def _padded_length(self, rows: list[list[int]]) -> int:
        length = max(len(row) for row in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return length

    def __call__(self, features: list[Mapping[str, Sequence[int]]]) -> dict[str, Any]:
        import torch

        if not features:
            raise ValueError("cannot collate an empty batch.")
        for field in ("input_ids", "labels"):
            if field not in features[0]:
                raise KeyError(
                    f"feature field {field!r} is missing (fields: {', '.join(features[0])}): pass rows of "
                    "preprocess_translation's output."
                )
        sources = [list(feature["input_ids"]) for feature in features]
        targets = [list(feature["labels"]) for feature in features]
        source_length, target_length = self._padded_length(sources), self._padded_length(targets)
        input_ids = torch.full((len(features), source_length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), source_length), dtype=torch.long)
        labels = torch.full((len(features), target_length), self.label_pad_token_id, dtype=torch.long)
        for row, (source, target) in enumerate(zip(sources, targets)):
            input_ids[row, : len(source)] = torch.tensor(source, dtype=torch.long)
            attention_mask[row, : len(source)] = 1
            labels[row, : len(target)] = torch.tensor(target, dtype=torch.long)
        if self.vocab_size is not None:
            self._check_ids(input_ids, "input_ids")
            self._check_ids(labels.masked_fill(labels == self.label_pad_token_id, 0), "labels")
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _check_ids(self, ids, field: str) -> None:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.vocab_size:
            raise TranslationDataError(
                f"field {field!r} holds token id {low if low < 0 else high}, outside the model's vocabulary "
                f"0..{self.vocab_size - 1}: the data was tokenized with another tokenizer than the model's."
            )
