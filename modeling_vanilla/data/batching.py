"""Token batches (section 5.1): pairs "batched together by approximate sequence length", then padded.

The paper's batches hold about 25,000 source and 25,000 target tokens each. `TokenBatchSampler` cuts batches of
similar-length pairs up to `max_tokens` padded tokens on each side, reshuffled every epoch and sharded over
distributed processes (pass it as a DataLoader's `batch_sampler`); `TranslationCollator` pads a batch into
`input_ids`, `attention_mask` and `labels` (-100 on padding). The pairs come from
`modeling_vanilla.data.preprocessing`. This module imports neither torch (the collator imports it when called) nor
the model.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

from .corpus import TranslationDataError
from .tokenization import PAD_ID

__all__ = ["TokenBatchSampler", "TranslationCollator", "pair_lengths"]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Token-based batching
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
# Collation
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
