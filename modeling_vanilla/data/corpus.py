"""Parallel corpora in the Hub's WMT schema, `{"translation": {"de": "...", "en": "..."}}`: loading and reading.

Section 5.1 of the paper trains on WMT 2014 (4.5M EN-DE pairs, 36M EN-FR pairs). This module turns such a corpus,
wherever it lives, into a `datasets.DatasetDict`; `modeling_vanilla.data.preprocessing` tokenizes it and
`modeling_vanilla.data.batching` cuts it into token batches.

1. `load_translation_dataset`: from the Hub (`wmt/wmt14`, `de-en`), from aligned plain text files, or from JSON
   lines files; `streaming=True` gives an `IterableDatasetDict` instead.
2. `load_corpus`: the same, from the training commands' data options (`--dataset`, `--train-files`,
   `--train-jsonl`, ...), which `vanilla-train` and `vanilla-finetune` share.
3. `iter_sentences`: the sentences of both languages, to train the joint BPE tokenizer
   (`modeling_vanilla.data.tokenization.train_bpe_tokenizer`).

Bad input fails early with a `TranslationDataError` (a `ValueError`) naming the file and line, or the field,
and the fix; a failed load leaves nothing in the `datasets` cache (the builder writes into a temporary folder
that is removed on error). This module imports neither torch nor the model.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any, Union

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

__all__ = ["TranslationDataError", "iter_sentences", "load_corpus", "load_translation_dataset"]

PathLike = Union[str, os.PathLike]
# Bumped when the files -> dataset conversion changes, so that old cached datasets are not reused.
_LOADER_VERSION = "1"


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
    languages = check_direction(source_lang, target_lang)
    _check_one_source(source_lang, target_lang, hub_id=hub_id, text_files=text_files, jsonl_files=jsonl_files)
    if hub_id is not None:
        return _load_from_hub(hub_id, hub_config, languages, streaming, cache_dir)
    if hub_config is not None:
        raise ValueError("hub_config= is only used with hub_id=; local files have no config.")

    kind, generator, sources = _local_sources(text_files, jsonl_files, languages)
    features = Features({"translation": Translation(languages=sorted(languages))})
    result = {}
    for split, files in sources.items():
        # Tuples, not lists: `datasets` would treat a list in gen_kwargs as shards and call the generator per shard.
        gen_kwargs = {"files": files, "languages": languages, "split": split}
        if streaming:
            result[split] = IterableDataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs)
        else:
            paths = [path for group in files for path in group] if kind == "text" else list(files)
            fingerprint = _files_fingerprint(kind, split, languages, paths)
            result[split] = _convert_split(generator, features, gen_kwargs, cache_dir, fingerprint)
    return IterableDatasetDict(result) if streaming else DatasetDict(result)


def check_training_source(dataset, train_files, train_jsonl) -> None:
    """Exactly one training source among the data options, or a `TranslationDataError` naming them; the one check
    that `load_corpus` and the commands' argument parsing (`options.check_data_arguments`) share."""
    given = [
        name
        for name, value in (("--dataset", dataset), ("--train-files", train_files), ("--train-jsonl", train_jsonl))
        if value
    ]
    if len(given) != 1:
        raise TranslationDataError(
            f"give exactly one training source: --dataset, --train-files or --train-jsonl (got {given or 'none'})"
        )


def load_corpus(
    source_lang: str,
    target_lang: str,
    *,
    dataset: str | None = None,
    dataset_config: str | None = None,
    train_files: Sequence[PathLike] | None = None,
    valid_files: Sequence[PathLike] | None = None,
    test_files: Sequence[PathLike] | None = None,
    train_jsonl: Sequence[PathLike] | None = None,
    valid_jsonl: Sequence[PathLike] | None = None,
    test_jsonl: Sequence[PathLike] | None = None,
    cache_dir: PathLike | None = None,
) -> DatasetDict:
    """The corpus that the training commands' data options name (`vanilla-train`, `vanilla-finetune`).

    The keywords are the options: `dataset` / `dataset_config` (`--dataset wmt/wmt14 --dataset-config de-en`),
    `train_files` / `valid_files` / `test_files` (path prefixes of aligned text files, `--train-files data/train`
    reads data/train.<source_lang> and data/train.<target_lang>), `train_jsonl` / `valid_jsonl` / `test_jsonl`
    (JSON lines files). Give exactly one training source; validation and test files are read with the training
    source of their kind (text files with `train_files`, JSON lines with `train_jsonl`).

    Returns:
        A `DatasetDict` with a train split and, when given, validation and test splits.

    Raises:
        TranslationDataError: not exactly one training source (the message names the options), or bad data.
        Otherwise as `load_translation_dataset`.
    """
    check_training_source(dataset, train_files, train_jsonl)
    direction = {"source_lang": source_lang, "target_lang": target_lang, "cache_dir": cache_dir}
    if dataset:
        return load_translation_dataset(**direction, hub_id=dataset, hub_config=dataset_config)
    if train_files:
        files = {"train": train_files, "validation": valid_files, "test": test_files}
        return load_translation_dataset(**direction, text_files={k: v for k, v in files.items() if v})
    files = {"train": train_jsonl, "validation": valid_jsonl, "test": test_jsonl}
    return load_translation_dataset(**direction, jsonl_files={k: v for k, v in files.items() if v})


def _check_one_source(source_lang: str, target_lang: str, **sources: Any) -> None:
    given = [name for name, value in sources.items() if value is not None]
    if len(given) != 1:
        raise ValueError(
            "load_translation_dataset needs exactly one of hub_id=, text_files= or jsonl_files=, got "
            f"{', '.join(given) or 'none'}. Example: text_files={{'train': 'data/train'}} reads data/train."
            f"{source_lang} and data/train.{target_lang}."
        )


def _local_sources(text_files, jsonl_files, languages: tuple[str, str]) -> tuple[str, Any, dict[str, tuple]]:
    """`(kind, row generator, files per split)`; every split's files are resolved before any is converted."""
    if text_files is not None:
        groups = {split: _text_file_groups(split, spec, languages) for split, spec in _splits(text_files, "text_files")}
        return "text", _generate_text_pairs, groups
    files = {split: _jsonl_file_list(split, spec, languages) for split, spec in _splits(jsonl_files, "jsonl_files")}
    return "jsonl", _generate_jsonl_pairs, files


def _convert_split(generator, features, gen_kwargs, cache_dir, fingerprint) -> Dataset:
    """One split converted into the Arrow cache; a `TranslationDataError` raised while reading comes out as is."""
    try:
        return Dataset.from_generator(
            generator,
            features=features,
            gen_kwargs=gen_kwargs,
            cache_dir=None if cache_dir is None else str(cache_dir),
            fingerprint=fingerprint,
        )
    except DatasetGenerationError as error:
        # The builder wraps our error in two layers of its own; show the one that names file and line.
        cause = _find_cause(error, TranslationDataError)
        if cause is None:
            raise
        raise cause.with_traceback(None) from None


def check_direction(source_lang: str, target_lang: str) -> tuple[str, str]:
    """`(source_lang, target_lang)` once both are language codes and differ (also used by `data`)."""
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
        check_translation_features(dataset, languages, f"{where}, split {split!r}")
        if not streaming and len(dataset) == 0:
            raise TranslationDataError(f"split {split!r} of {where} is empty: choose another dataset or config.")
    return loaded


def check_translation_features(dataset, languages: Sequence[str], where: str) -> None:
    """The dataset has a `translation` column holding both languages (skipped if a stream's features are unknown).

    Also used by `data.preprocess_translation`, on the splits it is given.
    """
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
    check_translation_features(dataset, languages, "the dataset")
    for batch in dataset.select_columns(["translation"]).iter(batch_size=batch_size):
        for translation in batch["translation"]:
            for language in languages:
                yield translation[language]
