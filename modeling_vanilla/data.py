"""WMT-style parallel data for the Transformer of "Attention Is All You Need": loading, preprocessing, batching.

Section 5.1 of the paper trains on WMT 2014 (4.5M EN-DE pairs, 36M EN-FR pairs) and batches "sentence pairs
together by approximate sequence length", each batch holding about 25,000 source and 25,000 target tokens.
This module covers that path from files to batches, top to bottom:

1. `load_translation_dataset`: a `datasets.DatasetDict` in the Hub's WMT schema,
   `{"translation": {"de": "...", "en": "..."}}`, from the Hub (`wmt/wmt14`, `de-en`), from aligned plain
   text files, or from JSON lines files; `streaming=True` gives an `IterableDatasetDict` instead.
2. `iter_sentences`: the sentences of both languages, to train the joint BPE tokenizer
   (`modeling_vanilla.tokenization.train_bpe_tokenizer`).
3. `preprocess_translation`: tokenize with `datasets.map` (batched, `num_proc` processes, cached), drop empty,
   too long and badly length-matched pairs, and count what was dropped and why (`DropCounts`).
4. `TokenBatchSampler`: batches of similar-length pairs up to `max_tokens` padded tokens on each side,
   reshuffled every epoch, sharded over distributed processes; pass it as a DataLoader's `batch_sampler`.
5. `TranslationCollator`: pads a batch into `input_ids`, `attention_mask` and `labels` (-100 on padding).

Bad input fails early with a `TranslationDataError` (a `ValueError`) naming the file and line, or the field,
and the fix; a failed load leaves nothing in the `datasets` cache (the builder writes into a temporary folder
that is removed on error). This module imports neither torch (the collator imports it when called) nor the model.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any, Union

import numpy as np
import pyarrow.compute as pc
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    Translation,
    load_dataset,
)
from datasets import config as datasets_config
from datasets.exceptions import DatasetGenerationError
from datasets.fingerprint import Hasher

from .tokenization import PAD_ID

__all__ = [
    "DropCounts",
    "TokenBatchSampler",
    "TranslationCollator",
    "TranslationDataError",
    "iter_sentences",
    "load_translation_dataset",
    "pair_lengths",
    "preprocess_translation",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
# Bumped when the files -> dataset conversion changes, so that old cached datasets are not reused.
_LOADER_VERSION = "1"
_PREPROCESS_VERSION = "1"
DROP_REASONS = ("empty", "too_long", "length_ratio")


class TranslationDataError(ValueError):
    """Bad parallel data: the message names the file and line (`path`, `line`) or the field, and the fix."""

    def __init__(self, message: str, path: PathLike | None = None, line: int | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


# ----------------------------------------------------------------------------------------------------------------
# 1. Loading
# ----------------------------------------------------------------------------------------------------------------


def load_translation_dataset(
    source_lang: str,
    target_lang: str,
    *,
    hub_id: str | None = None,
    hub_config: str | None = None,
    text_files: Mapping[str, Any] | None = None,
    jsonl_files: Mapping[str, PathLike | Sequence[PathLike]] | None = None,
    streaming: bool = False,
    cache_dir: PathLike | None = None,
) -> DatasetDict | IterableDatasetDict:
    """Load a parallel corpus in the Hub's WMT schema, `{"translation": {source_lang: ..., target_lang: ...}}`.

    Give exactly one source:

    * `hub_id` (and `hub_config`): a Hub dataset such as `hub_id="wmt/wmt14", hub_config="de-en"` (splits
      train / validation = newstest2013 / test = newstest2014), `"wmt/wmt16"`, ... or a local folder that
      `datasets.load_dataset` reads. This is the real download path; it needs the network or the local cache.
    * `text_files`: per split, aligned plain text files, one sentence per line (UTF-8; "\\n" or "\\r\\n" line
      ends; ".gz" files are decompressed). A split is given as
      - a path prefix: `{"train": "multi30k/train"}` reads `multi30k/train.en` and `multi30k/train.de`;
      - a list of prefixes, concatenated in order: `{"train": ["newstest2008", "newstest2009"]}`;
      - explicit files per language: `{"train": {"en": "a.txt", "de": "b.txt"}}` (a list of files per language
        is concatenated in order).
    * `jsonl_files`: per split, one JSON lines file or a list of them, one `{"translation": {...}}` object per
      line (blank lines skipped); languages other than the two requested are left out.

    Args:
        source_lang, target_lang: language codes of the direction, e.g. "en" and "de". Both must be in the data.
        streaming: read lazily as an `IterableDatasetDict` (for corpora that do not fit on disk or in memory,
            e.g. WMT14 EN-FR): nothing is converted or cached; file errors surface while iterating, at the line.
        cache_dir: `datasets` cache folder (default: `HF_DATASETS_CACHE`). Local files are converted once and
            reused until a file's size or modification time changes.

    Returns:
        `DatasetDict` (or `IterableDatasetDict` when streaming) with the given splits; local files give the
        one column `translation` with exactly the two languages, line N of each file in row N.

    Raises:
        ValueError: not exactly one source, or source_lang == target_lang.
        FileNotFoundError: a file is missing (named, with the languages found beside it).
        TranslationDataError: files with different line counts, invalid UTF-8 or JSON, a language not in the
            data, an empty split; the message names file and line or field.
        ConnectionError: the Hub cannot be reached (or HF_HUB_OFFLINE=1) and the dataset is not cached; the
            message says how to use local files instead.
    """
    languages = _check_direction(source_lang, target_lang)
    given = [
        name
        for name, value in (("hub_id", hub_id), ("text_files", text_files), ("jsonl_files", jsonl_files))
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError(
            "load_translation_dataset needs exactly one of hub_id=, text_files= or jsonl_files=, got "
            f"{', '.join(given) or 'none'}. Example: text_files={{'train': 'data/train'}} reads data/train."
            f"{source_lang} and data/train.{target_lang}."
        )
    if hub_id is not None:
        return _load_from_hub(hub_id, hub_config, languages, streaming, cache_dir)
    if hub_config is not None:
        raise ValueError("hub_config= is only used with hub_id=; local files have no config.")

    if text_files is not None:
        kind, generator = "text", _generate_text_pairs
        sources = {
            split: _text_file_groups(split, spec, languages) for split, spec in _splits(text_files, "text_files")
        }
    else:
        kind, generator = "jsonl", _generate_jsonl_pairs
        sources = {
            split: _jsonl_file_list(split, spec, languages) for split, spec in _splits(jsonl_files, "jsonl_files")
        }

    features = Features({"translation": Translation(languages=sorted(languages))})
    result = {}
    for split, files in sources.items():
        # Tuples, not lists: `datasets` would treat a list in gen_kwargs as shards and call the generator per shard.
        gen_kwargs = {"files": files, "languages": languages, "split": split}
        paths = [path for group in files for path in group] if kind == "text" else list(files)
        if streaming:
            result[split] = IterableDataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs)
            continue
        try:
            result[split] = Dataset.from_generator(
                generator,
                features=features,
                gen_kwargs=gen_kwargs,
                cache_dir=None if cache_dir is None else str(cache_dir),
                fingerprint=_files_fingerprint(kind, split, languages, paths),
            )
        except DatasetGenerationError as error:
            # The builder wraps our error in two layers of its own; show the one that names file and line.
            cause = _find_cause(error, TranslationDataError)
            if cause is None:
                raise
            raise cause.with_traceback(None) from None
    return IterableDatasetDict(result) if streaming else DatasetDict(result)


def _check_direction(source_lang: str, target_lang: str) -> tuple[str, str]:
    for name, value in (("source_lang", source_lang), ("target_lang", target_lang)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a language code such as 'en' or 'de', got {value!r}.")
    if source_lang == target_lang:
        raise ValueError(f"source_lang and target_lang are both {source_lang!r}: give two different languages.")
    return source_lang, target_lang


def _splits(spec: Mapping[str, Any], argument: str) -> list[tuple[str, Any]]:
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(
            f"{argument} must be a non-empty dict from split name to files, e.g. "
            f"{{'train': ..., 'validation': ..., 'test': ...}}; got {spec!r}."
        )
    return list(spec.items())


def _text_file_groups(split: str, spec: Any, languages: tuple[str, str]) -> tuple[tuple[str, ...], ...]:
    """Resolve one split of `text_files` to aligned groups `((path in languages[0], path in languages[1]), ...)`."""
    if isinstance(spec, Mapping):
        per_language = []
        for language in languages:
            if language not in spec:
                raise TranslationDataError(
                    f"text_files[{split!r}] has no file for language {language!r} (it has "
                    f"{', '.join(map(str, spec)) or 'none'}): add it or change source_lang/target_lang."
                )
            value = spec[language]
            per_language.append([value] if isinstance(value, (str, os.PathLike)) else list(value))
        if len(per_language[0]) != len(per_language[1]):
            raise TranslationDataError(
                f"text_files[{split!r}] lists {len(per_language[0])} files for {languages[0]!r} and "
                f"{len(per_language[1])} for {languages[1]!r}: give one file per language for each part."
            )
        groups = [tuple(_existing(path) for path in group) for group in zip(*per_language)]
    else:
        prefixes = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
        groups = [tuple(_file_for_prefix(prefix, language) for language in languages) for prefix in prefixes]
    if not groups:
        raise TranslationDataError(f"text_files[{split!r}] lists no files.")
    return tuple(groups)


def _file_for_prefix(prefix: PathLike, language: str) -> str:
    """`prefix.language`, or `prefix.language.gz`; a clear error listing the languages present if neither exists."""
    for candidate in (f"{os.fspath(prefix)}.{language}", f"{os.fspath(prefix)}.{language}.gz"):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    base = Path(os.fspath(prefix))
    found = sorted(
        path.name[len(base.name) + 1 :].removesuffix(".gz")
        for path in (base.parent.glob(f"{base.name}.*") if base.parent.is_dir() else [])
    )
    if found:
        detail = f"languages found for this prefix: {', '.join(found)}"
    elif base.is_file():
        detail = f"{base} is itself a file: give the prefix without the language ending, e.g. {base.with_suffix('')}"
    else:
        detail = "no file starts with this prefix"
    raise FileNotFoundError(
        f"missing file {base}.{language} for language {language!r} ({detail}). Check the path prefix and "
        f"source_lang/target_lang."
    )


def _existing(path: PathLike) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing file {os.fspath(path)}: check the path (relative to {os.getcwd()}).")
    return os.path.abspath(path)


def _jsonl_file_list(split: str, spec: Any, languages: tuple[str, str]) -> tuple[str, ...]:
    files = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not files:
        raise TranslationDataError(f"jsonl_files[{split!r}] lists no files.")
    files = tuple(_existing(path) for path in files)
    for path in files:  # Fail before converting anything if the first record lacks a language.
        for number, record in _read_jsonl(path):
            _record_translation(record, languages, path, number)
            break
    return files


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _read_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yield `(line number from 1, text)` of a UTF-8 file, without the line end; stop at invalid UTF-8."""
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # drop a byte-order mark on line 1
            except UnicodeDecodeError as error:
                raise TranslationDataError(
                    f"{path}:{number}: byte 0x{raw[error.start]:02x} at byte offset {error.start} of the line is not "
                    "valid UTF-8. Convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or fix that line.",
                    path=path,
                    line=number,
                ) from None
            yield number, text


def _generate_text_pairs(files, languages, split) -> Iterator[dict]:
    """Rows of aligned text files: line N of the first language's file with line N of the second's."""
    count = 0
    end = object()
    for first_path, second_path in files:
        first, second = _read_lines(first_path), _read_lines(second_path)
        for left, right in zip_longest(first, second, fillvalue=end):
            if left is end or right is end:
                shorter, longer, rest = (
                    (first_path, second_path, second) if left is end else (second_path, first_path, first)
                )
                number = (right if left is end else left)[0]
                total = number + sum(1 for _ in rest)
                raise TranslationDataError(
                    f"{longer}:{number}: line {number} has no partner in {shorter}, which has {number - 1} lines while "
                    f"{longer} has {total}. The files of a split must be aligned line by line: remove the extra "
                    "lines or fix the misalignment.",
                    path=longer,
                    line=number,
                )
            count += 1
            yield {"translation": {languages[0]: left[1], languages[1]: right[1]}}
    if count == 0:
        names = ", ".join(path for group in files for path in group)
        raise TranslationDataError(f"split {split!r} is empty: {names} hold no lines. Give files with data.")


def _read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    for number, text in _read_lines(path):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as error:
            raise TranslationDataError(
                f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno}). Each line must be one "
                'object such as {"translation": {"de": "...", "en": "..."}}.',
                path=path,
                line=number,
            ) from None


def _record_translation(record: Any, languages: tuple[str, str], path: str, number: int) -> dict[str, str]:
    translation = record.get("translation") if isinstance(record, dict) else None
    if not isinstance(translation, dict):
        raise TranslationDataError(
            f"{path}:{number}: field 'translation' is missing or not an object. Expected the Hub schema "
            '{"translation": {"de": "...", "en": "..."}}.',
            path=path,
            line=number,
        )
    for language in languages:
        if language not in translation:
            raise TranslationDataError(
                f"{path}:{number}: field 'translation.{language}' is missing: language {language!r} is not in this "
                f"record (it has {', '.join(map(str, translation)) or 'none'}). Check source_lang/target_lang.",
                path=path,
                line=number,
            )
        if not isinstance(translation[language], str):
            raise TranslationDataError(
                f"{path}:{number}: field 'translation.{language}' is a {type(translation[language]).__name__}, "
                "not a string.",
                path=path,
                line=number,
            )
    return {language: translation[language] for language in languages}


def _generate_jsonl_pairs(files, languages, split) -> Iterator[dict]:
    """Rows of JSON lines files in the Hub schema, keeping only the two requested languages."""
    count = 0
    for path in files:
        for number, record in _read_jsonl(path):
            count += 1
            yield {"translation": _record_translation(record, languages, path, number)}
    if count == 0:
        raise TranslationDataError(
            f"split {split!r} is empty: {', '.join(files)} hold no records. Give files with data."
        )


def _files_fingerprint(kind: str, split: str, languages: tuple[str, str], paths: Sequence[str]) -> str:
    """Cache key of a local split: the files' paths, sizes and modification times, so edits are picked up."""
    stats = [(path, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in paths]
    key = json.dumps([_LOADER_VERSION, kind, split, languages, stats])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _find_cause(error: BaseException, kind: type) -> BaseException | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _load_from_hub(hub_id, hub_config, languages, streaming, cache_dir) -> DatasetDict | IterableDatasetDict:
    """`datasets.load_dataset(hub_id, hub_config)`, with the failure to reach the Hub turned into advice."""
    a, b = languages
    try:
        loaded = load_dataset(
            hub_id, hub_config, streaming=streaming, cache_dir=None if cache_dir is None else str(cache_dir)
        )
    except ConnectionError as error:
        reason = (
            "offline mode is on (HF_HUB_OFFLINE=1) and the dataset is not in the local cache"
            if datasets_config.HF_HUB_OFFLINE
            else "the Hugging Face Hub cannot be reached and the dataset is not in the local cache"
        )
        raise ConnectionError(
            f"cannot load {hub_id!r} (config {hub_config!r}): {reason} ({error}). To use local files instead, "
            f"pass text_files={{'train': 'path/train', 'validation': 'path/valid', 'test': 'path/test'}} (reads "
            f"path/train.{a} and path/train.{b}, one sentence per line) or jsonl_files={{'train': 'train.jsonl', "
            f'...}} with lines like {{"translation": {{"{a}": "...", "{b}": "..."}}}}. Or download the '
            "dataset once where the Hub is reachable, then set HF_HUB_OFFLINE=1 to use the cache."
        ) from None
    if not isinstance(loaded, (DatasetDict, IterableDatasetDict)):
        loaded = (IterableDatasetDict if streaming else DatasetDict)({"train": loaded})
    where = f"{hub_id!r} (config {hub_config!r})"
    for split, dataset in loaded.items():
        _check_translation_features(dataset, languages, f"{where}, split {split!r}")
        if not streaming and len(dataset) == 0:
            raise TranslationDataError(f"split {split!r} of {where} is empty: choose another dataset or config.")
    return loaded


def _check_translation_features(dataset, languages: Sequence[str], where: str) -> None:
    """The dataset has a `translation` column holding both languages (skipped if a stream's features are unknown)."""
    features = dataset.features
    if features is None:
        return
    if "translation" not in features:
        raise TranslationDataError(
            f"{where} has no field 'translation' (fields: {', '.join(features)}): expected the WMT schema "
            '{"translation": {"de": ..., "en": ...}}.'
        )
    column = features["translation"]
    available = list(column.languages) if isinstance(column, Translation) else list(column)
    for language in languages:
        if language not in available:
            raise TranslationDataError(
                f"{where}: language {language!r} is not in field 'translation' (it has {', '.join(available)}). "
                "Check source_lang/target_lang or pick the config with that language pair."
            )


# ----------------------------------------------------------------------------------------------------------------
# 2. Sentences for the tokenizer
# ----------------------------------------------------------------------------------------------------------------


def iter_sentences(
    dataset: Dataset | IterableDataset, languages: Sequence[str], batch_size: int = 1000
) -> Iterator[str]:
    """Yield the sentences of `languages` of every row (row by row), e.g. to train the joint BPE vocabulary."""
    _check_translation_features(dataset, languages, "the dataset")
    for batch in dataset.select_columns(["translation"]).iter(batch_size=batch_size):
        for translation in batch["translation"]:
            for language in languages:
                yield translation[language]


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
    languages = _check_direction(source_lang, target_lang)
    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be at least 2 (one token and </s>).")
    if max_length_ratio is not None and max_length_ratio < 1:
        raise ValueError(f"max_length_ratio={max_length_ratio} must be at least 1, or None for no limit.")
    if not isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        raise TypeError(f"dataset must be a DatasetDict or IterableDatasetDict, got {type(dataset).__name__}.")
    fn_kwargs = {
        "tokenizer": tokenizer,
        "languages": languages,
        "max_length": max_length,
        "max_length_ratio": max_length_ratio,
    }
    streaming = isinstance(dataset, IterableDatasetDict)
    processed, counts = {}, {}
    for split, data in dataset.items():
        _check_translation_features(data, languages, f"split {split!r}")
        if streaming:
            marked = data.map(
                _tokenize_and_mark,
                batched=True,
                batch_size=batch_size,
                fn_kwargs=fn_kwargs,
                remove_columns=list(data.column_names or ["translation"]),
            )
            processed[split] = marked.filter(_is_kept, input_columns="drop_reason", batched=True).remove_columns(
                "drop_reason"
            )
            continue
        fingerprint = _preprocess_fingerprint(data._fingerprint, tokenizer, languages, max_length, max_length_ratio)
        marked = data.map(
            _tokenize_and_mark,
            batched=True,
            batch_size=batch_size,
            fn_kwargs=fn_kwargs,
            remove_columns=data.column_names,
            num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
            new_fingerprint=fingerprint + "-tokenized",
            desc=f"Tokenizing {split}",
        )
        reasons = pc.value_counts(marked.with_format("arrow")["drop_reason"]).to_pylist()
        found = {item["values"]: item["counts"] for item in reasons}
        counts[split] = DropCounts(
            total=len(marked),
            kept=found.get("", 0),
            empty=found.get("empty", 0),
            too_long=found.get("too_long", 0),
            length_ratio=found.get("length_ratio", 0),
            max_length=max_length,
            max_length_ratio=max_length_ratio,
        )
        logger.info("%s: %s", split, counts[split])
        if counts[split].kept == 0:
            raise TranslationDataError(
                f"every pair of split {split!r} was dropped ({counts[split]}): check the languages and the limits "
                "max_length / max_length_ratio."
            )
        kept = marked.filter(
            _is_kept,
            input_columns="drop_reason",
            batched=True,
            batch_size=batch_size,
            num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
            new_fingerprint=fingerprint + "-filtered",
            desc=f"Dropping pairs of {split}",
        )
        processed[split] = kept.remove_columns("drop_reason")
    if streaming:
        return IterableDatasetDict(processed), None
    return DatasetDict(processed), counts


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
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            ties = rng.permutation(len(self.source_lengths))
            order = np.lexsort((ties, self.target_lengths, self.source_lengths))
            batches = np.split(order, self._cuts)
            return [batches[i].tolist() for i in rng.permutation(len(batches))]
        return [batch.tolist() for batch in np.split(self._sorted, self._cuts)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()[self.rank :: self.num_replicas]

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
        self, pad_token_id: int = PAD_ID, label_pad_token_id: int = -100, pad_to_multiple_of: int | None = None
    ):
        self.pad_token_id = pad_token_id
        self.label_pad_token_id = label_pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

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
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
