"""Tests of modeling_vanilla.data.batching: loading, preprocessing, token batching (section 5.1) and collation.

Unit tests write their own small corpora into tmp_path and keep the `datasets` cache there. Tests named
`test_real_*` use ../shared/data (or $VANILLA_SHARED_DATA) and skip when it is absent.
"""

import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import DatasetDict, IterableDatasetDict
from torch.utils.data import DataLoader

from benchmarks import checkpointing, speed
from modeling_vanilla.cli import benchmark, data_report, make_toy_data
from modeling_vanilla.data.batching import TokenBatchSampler, TranslationCollator, pair_lengths
from modeling_vanilla.data.corpus import TranslationDataError, iter_sentences, load_corpus, load_translation_dataset
from modeling_vanilla.data.preprocessing import DropCounts, preprocess_translation
from modeling_vanilla.data.tokenization import train_bpe_tokenizer
from modeling_vanilla.data.toy_corpus import write_toy_corpus
from tests.helpers import MULTI30K, SHARED_DATA, needs_multi30k

REPO_ROOT = Path(__file__).resolve().parents[2]
WMT_DE_EN = SHARED_DATA / "wmt-newstest" / "de-en"
needs_wmt = pytest.mark.skipif(
    not (WMT_DE_EN / "newstest2014.de").is_file(),
    reason=f"real data not found at {WMT_DE_EN} (set VANILLA_SHARED_DATA)",
)

ENGLISH = [
    "A man rides a bike.",
    "Two dogs play in the snow.",
    "A girl in a red dress is dancing on the street.",
    "The old woman reads.",
    "Children watch a football match near the river.",
    "A cat sleeps.",
]
GERMAN = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee.",
    "Ein Mädchen in einem roten Kleid tanzt auf der Straße.",
    "Die alte Frau liest.",
    "Kinder schauen ein Fußballspiel in der Nähe des Flusses.",
    "Eine Katze schläft.",
]


def write_lines(path: Path, lines, newline="\n") -> Path:
    path.write_text("".join(line + newline for line in lines), encoding="utf-8")
    return path


def write_jsonl(path: Path, english, german) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for en, de in zip(english, german):
            handle.write(json.dumps({"translation": {"de": de, "en": en}}, ensure_ascii=False) + "\n")
    return path


def as_pairs(dataset, languages=("en", "de")):
    return [(row["translation"][languages[0]], row["translation"][languages[1]]) for row in dataset]


def cached_data_files(cache: Path) -> list[str]:
    """What would be a (half-)written dataset in a datasets cache folder: files other than locks, *.incomplete."""
    if not cache.exists():
        return []
    return sorted(
        str(path.relative_to(cache))
        for path in cache.rglob("*")
        if (path.is_file() and not path.name.endswith(".lock")) or path.name.endswith(".incomplete")
    )


@pytest.fixture
def corpus(tmp_path):
    """Small aligned EN-DE corpus: train (6 pairs), validation (2), test (2) as plain text files."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_lines(folder / "train.en", ENGLISH)
    write_lines(folder / "train.de", GERMAN)
    write_lines(folder / "valid.en", ENGLISH[:2])
    write_lines(folder / "valid.de", GERMAN[:2])
    write_lines(folder / "test.en", ENGLISH[2:4])
    write_lines(folder / "test.de", GERMAN[2:4])
    return folder


@pytest.fixture
def splits(corpus):
    return {"train": corpus / "train", "validation": corpus / "valid", "test": corpus / "test"}


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer((ENGLISH + GERMAN) * 5, vocab_size=400)


# ------------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------------


def test_text_files_load_in_the_hub_schema(splits, tmp_path):
    data = load_translation_dataset("en", "de", text_files=splits, cache_dir=tmp_path / "cache")
    assert isinstance(data, DatasetDict)
    assert list(data) == ["train", "validation", "test"]
    assert data["train"].column_names == ["translation"]
    assert sorted(data["train"].features["translation"].languages) == ["de", "en"]
    assert data["train"][2] == {"translation": {"de": GERMAN[2], "en": ENGLISH[2]}}
    assert as_pairs(data["train"]) == list(zip(ENGLISH, GERMAN))
    assert as_pairs(data["test"]) == list(zip(ENGLISH[2:4], GERMAN[2:4]))


def test_plain_text_json_lines_and_streaming_give_the_same_pairs_in_order(corpus, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ENGLISH, GERMAN)
    cache = tmp_path / "cache"
    loads = {
        "text": load_translation_dataset("de", "en", text_files={"train": corpus / "train"}, cache_dir=cache),
        "jsonl": load_translation_dataset("de", "en", jsonl_files={"train": tmp_path / "train.jsonl"}, cache_dir=cache),
        "stream text": load_translation_dataset("de", "en", text_files={"train": corpus / "train"}, streaming=True),
        "stream jsonl": load_translation_dataset(
            "de", "en", jsonl_files={"train": tmp_path / "train.jsonl"}, streaming=True
        ),
    }
    assert isinstance(loads["stream text"], IterableDatasetDict)
    expected = list(zip(GERMAN, ENGLISH))
    for name, data in loads.items():
        assert as_pairs(data["train"], ("de", "en")) == expected, name


def test_text_file_forms_prefix_list_explicit_gzip_crlf_and_bom(tmp_path):
    write_lines(tmp_path / "a.en", ENGLISH[:2])
    write_lines(tmp_path / "a.de", GERMAN[:2])
    with gzip.open(tmp_path / "b.en.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(ENGLISH[2:4]) + "\n")
    with gzip.open(tmp_path / "b.de.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(GERMAN[2:4]) + "\n")
    (tmp_path / "c.en").write_bytes(
        ("\ufeff" + "\r\n".join(ENGLISH[4:])).encode("utf-8")
    )  # BOM, CRLF, no final newline
    write_lines(tmp_path / "c.de", GERMAN[4:], newline="\r\n")
    cache = tmp_path / "cache"
    by_prefixes = load_translation_dataset(
        "en", "de", text_files={"train": [tmp_path / "a", tmp_path / "b", tmp_path / "c"]}, cache_dir=cache
    )
    explicit = load_translation_dataset(
        "en",
        "de",
        text_files={
            "train": {
                "en": [tmp_path / "a.en", tmp_path / "b.en.gz", tmp_path / "c.en"],
                "de": [tmp_path / "a.de", tmp_path / "b.de.gz", tmp_path / "c.de"],
            }
        },
        cache_dir=cache,
    )
    assert as_pairs(by_prefixes["train"]) == list(zip(ENGLISH, GERMAN))
    assert as_pairs(explicit["train"]) == list(zip(ENGLISH, GERMAN))


def test_sentences_are_kept_as_written_and_empty_lines_keep_alignment(tmp_path):
    english = ["  leading and trailing  ", "", "tab\there"]
    german = ["  vorne und hinten  ", "leer auf Englisch", "Tab\thier"]
    write_lines(tmp_path / "x.en", english)
    write_lines(tmp_path / "x.de", german)
    data = load_translation_dataset("en", "de", text_files={"train": tmp_path / "x"}, cache_dir=tmp_path / "cache")
    assert as_pairs(data["train"]) == list(zip(english, german))


def test_cache_is_reused_and_refreshed_when_a_file_changes(corpus, tmp_path):
    cache = tmp_path / "cache"
    first = load_translation_dataset("en", "de", text_files={"train": corpus / "train"}, cache_dir=cache)
    again = load_translation_dataset("en", "de", text_files={"train": corpus / "train"}, cache_dir=cache)
    assert again["train"].cache_files == first["train"].cache_files
    write_lines(corpus / "train.en", ["Changed."] + ENGLISH[1:])
    write_lines(corpus / "train.de", ["Geändert."] + GERMAN[1:])
    os.utime(corpus / "train.en", ns=(time.time_ns(), time.time_ns() + 10**9))  # a later mtime even on coarse clocks
    changed = load_translation_dataset("en", "de", text_files={"train": corpus / "train"}, cache_dir=cache)
    assert changed["train"][0]["translation"] == {"de": "Geändert.", "en": "Changed."}


def test_json_lines_keep_only_the_two_languages_and_skip_blank_lines(tmp_path):
    path = tmp_path / "three.jsonl"
    path.write_text(
        json.dumps({"translation": {"en": "A cat.", "de": "Eine Katze.", "fr": "Un chat."}})
        + "\n\n"
        + json.dumps({"translation": {"en": "A dog.", "de": "Ein Hund.", "fr": "Un chien."}})
        + "\n",
        encoding="utf-8",
    )
    data = load_translation_dataset("fr", "en", jsonl_files={"train": path}, cache_dir=tmp_path / "cache")
    assert data["train"].to_list() == [
        {"translation": {"en": "A cat.", "fr": "Un chat."}},
        {"translation": {"en": "A dog.", "fr": "Un chien."}},
    ]


def test_exactly_one_source_is_required(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"needs exactly one of hub_id=, text_files= or jsonl_files=, got none"):
        load_translation_dataset("en", "de")
    with pytest.raises(ValueError, match=r"got hub_id, text_files"):
        load_translation_dataset("en", "de", hub_id="wmt/wmt14", text_files={"train": corpus / "train"})
    with pytest.raises(ValueError, match=r"source_lang and target_lang are both 'en'"):
        load_translation_dataset("en", "en", text_files={"train": corpus / "train"})


def test_load_corpus_needs_exactly_one_training_source_named_by_its_option(corpus, tmp_path):
    """The training commands' check: the error names the command-line options, not the keywords."""
    with pytest.raises(
        TranslationDataError,
        match=r"^give exactly one training source: --dataset, --train-files or --train-jsonl \(got none\)$",
    ):
        load_corpus("en", "de")
    with pytest.raises(TranslationDataError, match=r"\(got \['--train-files', '--train-jsonl'\]\)$"):
        load_corpus("en", "de", train_files=[corpus / "train"], train_jsonl=[tmp_path / "train.jsonl"])
    with pytest.raises(ValueError, match=r"\(got \['--dataset', '--train-files'\]\)$"):
        load_corpus("en", "de", dataset="wmt/wmt14", train_files=[corpus / "train"])
    # Validation or test files alone are no training source.
    with pytest.raises(TranslationDataError, match=r"\(got none\)$"):
        load_corpus("en", "de", valid_files=[corpus / "valid"], test_jsonl=[tmp_path / "test.jsonl"])


def test_load_corpus_reads_text_files_and_json_lines_in_both_directions(tmp_path):
    toy = write_toy_corpus(tmp_path / "toy", train=12, valid=3, test=2, seed=3)
    english = (toy / "train.en").read_text(encoding="utf-8").splitlines()
    german = (toy / "train.de").read_text(encoding="utf-8").splitlines()
    cache = tmp_path / "cache"
    en_de = load_corpus(
        "en", "de", train_files=[toy / "train"], valid_files=[toy / "valid"], test_files=[toy / "test"], cache_dir=cache
    )
    assert isinstance(en_de, DatasetDict)
    assert {split: len(data) for split, data in en_de.items()} == {"train": 12, "validation": 3, "test": 2}
    assert as_pairs(en_de["train"]) == list(zip(english, german))

    write_jsonl(tmp_path / "train.jsonl", english, german)
    write_jsonl(tmp_path / "valid.jsonl", english[:2], german[:2])
    de_en = load_corpus(
        "de", "en", train_jsonl=[tmp_path / "train.jsonl"], valid_jsonl=[tmp_path / "valid.jsonl"], cache_dir=cache
    )
    assert list(de_en) == ["train", "validation"]  # no test split given, none made
    assert as_pairs(de_en["train"], ("de", "en")) == list(zip(german, english))
    assert as_pairs(de_en["validation"], ("de", "en")) == list(zip(german[:2], english[:2]))

    # --dataset goes through datasets.load_dataset; a local folder exercises it without the network.
    (tmp_path / "hub_like").mkdir()
    write_jsonl(tmp_path / "hub_like" / "train.jsonl", english, german)
    from_hub = load_corpus("de", "en", dataset=str(tmp_path / "hub_like"), cache_dir=cache)
    assert as_pairs(from_hub["train"], ("de", "en")) == list(zip(german, english))


# Bad input: each error names file and line (or field) and leaves no dataset files in the cache.


@pytest.mark.parametrize("streaming", [False, True])
def test_different_line_counts_name_file_line_and_counts(corpus, tmp_path, streaming):
    write_lines(corpus / "train.de", GERMAN[:4])
    cache = tmp_path / "cache"
    with pytest.raises(TranslationDataError) as caught:
        data = load_translation_dataset(
            "en", "de", text_files={"train": corpus / "train"}, cache_dir=cache, streaming=streaming
        )
        list(data["train"])
    message = str(caught.value)
    assert f"{corpus / 'train.en'}:5: line 5 has no partner in {corpus / 'train.de'}" in message
    assert "which has 4 lines while" in message and "has 6" in message
    assert caught.value.path == str(corpus / "train.en") and caught.value.line == 5
    assert cached_data_files(cache) == []


@pytest.mark.parametrize("streaming", [False, True])
def test_invalid_utf8_names_file_line_and_byte(corpus, tmp_path, streaming):
    (corpus / "train.de").write_bytes(
        "\n".join(GERMAN[:3]).encode() + b"\nStra\xdfe in Latin-1\n" + "\n".join(GERMAN[4:]).encode() + b"\n"
    )
    cache = tmp_path / "cache"
    with pytest.raises(
        TranslationDataError, match=r"train\.de:4: byte 0xdf at byte offset 4 of the line is not valid UTF-8"
    ):
        data = load_translation_dataset(
            "en", "de", text_files={"train": corpus / "train"}, cache_dir=cache, streaming=streaming
        )
        list(data["train"])
    assert cached_data_files(cache) == []


def test_a_bad_validation_split_leaves_no_partial_split_in_the_cache(splits, tmp_path):
    (splits["validation"].parent / "valid.de").write_bytes(b"ok\n\xff\n")
    cache = tmp_path / "cache"
    with pytest.raises(TranslationDataError, match=r"valid\.de:2: byte 0xff"):
        load_translation_dataset("en", "de", text_files=splits, cache_dir=cache)
    leftovers = cached_data_files(cache)
    assert not any(".incomplete" in name for name in leftovers)
    assert len([name for name in leftovers if name.endswith("dataset_info.json")]) == 1  # the good train split only


def test_missing_file_is_named_with_the_languages_found(corpus, tmp_path):
    (corpus / "train.de").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"missing file .*train\.de for language 'de' \(languages found for this prefix: en\)"
    ):
        load_translation_dataset("en", "de", text_files={"train": corpus / "train"}, cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"missing file .*nowhere\.en"):
        load_translation_dataset(
            "en", "de", text_files={"train": {"en": corpus / "nowhere.en", "de": corpus / "train.en"}}
        )
    with pytest.raises(FileNotFoundError, match=r"missing file .*absent\.jsonl"):
        load_translation_dataset("en", "de", jsonl_files={"train": corpus / "absent.jsonl"})
    assert cached_data_files(tmp_path / "cache") == []


def test_language_not_in_the_dataset_is_named(corpus, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(
        FileNotFoundError, match=r"train\.fr for language 'fr' \(languages found for this prefix: de, en\)"
    ):
        load_translation_dataset("en", "fr", text_files={"train": corpus / "train"}, cache_dir=cache)
    with pytest.raises(
        TranslationDataError, match=r"text_files\['train'\] has no file for language 'fr' \(it has en, de\)"
    ):
        load_translation_dataset(
            "fr", "de", text_files={"train": {"en": corpus / "train.en", "de": corpus / "train.de"}}
        )
    write_jsonl(tmp_path / "t.jsonl", ENGLISH, GERMAN)
    with pytest.raises(
        TranslationDataError,
        match=r"t\.jsonl:1: field 'translation\.fr' is missing: language 'fr' is not in this record \(it has de, en\)",
    ):
        load_translation_dataset("en", "fr", jsonl_files={"train": tmp_path / "t.jsonl"}, cache_dir=cache)
    assert cached_data_files(cache) == []


def test_json_lines_errors_name_file_line_and_field(tmp_path):
    cache = tmp_path / "cache"
    good = json.dumps({"translation": {"de": "Hallo", "en": "Hello"}})
    cases = {
        "broken": (good + "\n{not json\n", r"broken\.jsonl:2: not valid JSON \(.* at column 2\)"),
        "schema": (
            good + "\n" + json.dumps({"de": "Hallo", "en": "Hello"}) + "\n",
            r"schema\.jsonl:2: field 'translation' is missing or not an object",
        ),
        "partial": (
            good + "\n" + json.dumps({"translation": {"en": "Hello"}}) + "\n",
            r"partial\.jsonl:2: field 'translation\.de' is missing",
        ),
        "number": (
            good + "\n" + json.dumps({"translation": {"de": 3, "en": "Hello"}}) + "\n",
            r"number\.jsonl:2: field 'translation\.de' is a int, not a string",
        ),
    }
    for name, (content, pattern) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(TranslationDataError, match=pattern):
            load_translation_dataset("en", "de", jsonl_files={"train": path}, cache_dir=cache)
    assert cached_data_files(cache) == []


@pytest.mark.parametrize("kind", ["text", "jsonl"])
def test_empty_training_split_is_rejected(tmp_path, kind):
    cache = tmp_path / "cache"
    if kind == "text":
        (tmp_path / "e.en").write_text("")
        (tmp_path / "e.de").write_text("")
        source = {"text_files": {"train": tmp_path / "e"}}
    else:
        (tmp_path / "e.jsonl").write_text("\n\n")
        source = {"jsonl_files": {"train": tmp_path / "e.jsonl"}}
    with pytest.raises(TranslationDataError, match=r"split 'train' is empty: .*e\.(en|jsonl).* hold no"):
        load_translation_dataset("en", "de", cache_dir=cache, **source)
    assert cached_data_files(cache) == []


def test_hub_path_loads_and_checks_a_local_dataset_folder(tmp_path):
    """hub_id goes through datasets.load_dataset; a local folder exercises that path without the network."""
    folder = tmp_path / "hub_like"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ENGLISH, GERMAN)
    write_jsonl(folder / "validation.jsonl", ENGLISH[:2], GERMAN[:2])
    data = load_translation_dataset("en", "de", hub_id=str(folder), cache_dir=tmp_path / "cache")
    assert sorted(data) == ["train", "validation"]
    assert as_pairs(data["train"]) == list(zip(ENGLISH, GERMAN))
    with pytest.raises(
        TranslationDataError, match=r"split 'train': language 'fr' is not in field 'translation' \(it has de, en\)"
    ):
        load_translation_dataset("en", "fr", hub_id=str(folder), cache_dir=tmp_path / "cache")


def test_offline_hub_access_fails_fast_with_local_file_advice(tmp_path, monkeypatch):
    """In a fresh process: huggingface_hub and datasets read HF_HUB_OFFLINE once, when they are imported."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # an empty cache: nothing to fall back on
    code = (
        "from modeling_vanilla.data.corpus import load_translation_dataset\n"
        "load_translation_dataset('en', 'de', hub_id='wmt/wmt14', hub_config='de-en')\n"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        "ConnectionError: cannot load 'wmt/wmt14' (config 'de-en'): offline mode is on (HF_HUB_OFFLINE=1)"
    )
    assert "text_files={'train': 'path/train'" in last_line and "jsonl_files=" in last_line
    assert elapsed < 60  # no network retries (those take tens of seconds)


# ------------------------------------------------------------------------------------------------------------
# Sentences and preprocessing
# ------------------------------------------------------------------------------------------------------------


def test_iter_sentences_yields_both_languages_row_by_row(splits, tmp_path):
    data = load_translation_dataset("en", "de", text_files=splits, cache_dir=tmp_path / "cache")
    sentences = list(iter_sentences(data["train"], ["en", "de"]))
    assert sentences[:4] == [ENGLISH[0], GERMAN[0], ENGLISH[1], GERMAN[1]]
    assert len(sentences) == 12
    with pytest.raises(TranslationDataError, match=r"language 'fr' is not in field 'translation'"):
        list(iter_sentences(data["train"], ["fr"]))


def messy_corpus(tmp_path) -> DatasetDict:
    english = [
        "A dog runs.",
        "",
        "A cat.",
        " ".join(["word"] * 40),
        "Yes.",
        "  Two men talk.  ",
        "A man rides a bike. Two dogs play.",
    ]
    german = ["Ein Hund rennt.", "Leer.", "   ", "Wort.", "Ja.", " Zwei Männer reden. ", "Ja."]
    write_lines(tmp_path / "m.en", english)
    write_lines(tmp_path / "m.de", german)
    return load_translation_dataset("en", "de", text_files={"train": tmp_path / "m"}, cache_dir=tmp_path / "cache")


def test_preprocess_tokenizes_drops_and_counts_reasons(tokenizer, tmp_path):
    data = messy_corpus(tmp_path)
    processed, counts = preprocess_translation(data, tokenizer, "en", "de", max_length=30, max_length_ratio=3.0)
    # empty: rows 1, 2; too long: row 3 (121 tokens > 30); ratio: row 6 (13 English tokens, 3 German: 4.3 > 3).
    assert counts == {
        "train": DropCounts(total=7, kept=3, empty=2, too_long=1, length_ratio=1, max_length=30, max_length_ratio=3.0)
    }
    assert str(counts["train"]) == (
        "kept 3 of 7 pairs; dropped 2 with an empty side, 1 with a side over 30 tokens, 1 with a length ratio over 3"
    )
    assert processed["train"].column_names == ["input_ids", "labels"]
    rows = processed["train"].to_list()
    assert [tokenizer.decode(row["input_ids"], skip_special_tokens=True) for row in rows] == [
        "A dog runs.",
        "Yes.",
        "Two men talk.",
    ]
    assert [tokenizer.decode(row["labels"], skip_special_tokens=True) for row in rows] == [
        "Ein Hund rennt.",
        "Ja.",
        "Zwei Männer reden.",
    ]
    assert all(row["input_ids"][-1] == 2 and row["labels"][-1] == 2 for row in rows)


def test_preprocess_direction_swaps_source_and_target(tokenizer, splits, tmp_path):
    data = load_translation_dataset("en", "de", text_files=splits, cache_dir=tmp_path / "cache")
    forward, _ = preprocess_translation(data, tokenizer, "en", "de")
    backward, _ = preprocess_translation(data, tokenizer, "de", "en")
    assert forward["train"]["input_ids"][:] == backward["train"]["labels"][:]
    assert tokenizer.decode(backward["train"][0]["input_ids"], skip_special_tokens=True) == GERMAN[0]


def test_preprocess_is_cached_and_two_processes_match_one(tokenizer, tmp_path):
    data = messy_corpus(tmp_path)
    first, _ = preprocess_translation(data, tokenizer, "en", "de", max_length=30)
    tokenizer(["a", "longer one"], padding=True)  # leaves padding set on the backend: must not change the key
    again, counts = preprocess_translation(data, tokenizer, "en", "de", max_length=30)
    assert again["train"].cache_files == first["train"].cache_files
    assert counts["train"].kept == 3
    parallel, parallel_counts = preprocess_translation(
        data, tokenizer, "en", "de", max_length=30, num_proc=2, load_from_cache_file=False
    )
    assert parallel["train"].to_list() == first["train"].to_list()
    assert parallel_counts == counts
    other_limit, _ = preprocess_translation(data, tokenizer, "en", "de", max_length=30, max_length_ratio=None)
    assert len(other_limit["train"]) == 4  # another limit is not served from the first call's cache


def test_preprocess_rejects_a_split_with_nothing_left(tokenizer, tmp_path):
    write_lines(tmp_path / "z.en", ["", "  "])
    write_lines(tmp_path / "z.de", ["a", "b"])
    data = load_translation_dataset("en", "de", text_files={"train": tmp_path / "z"}, cache_dir=tmp_path / "cache")
    with pytest.raises(
        TranslationDataError,
        match=r"every pair of split 'train' was dropped \(kept 0 of 2 pairs; dropped 2 with an empty side",
    ):
        preprocess_translation(data, tokenizer, "en", "de")


def test_preprocess_streaming_gives_the_same_rows(tokenizer, tmp_path):
    data = messy_corpus(tmp_path)
    stream = load_translation_dataset("en", "de", text_files={"train": tmp_path / "m"}, streaming=True)
    processed, counts = preprocess_translation(data, tokenizer, "en", "de", max_length=30)
    streamed, no_counts = preprocess_translation(stream, tokenizer, "en", "de", max_length=30)
    assert no_counts is None
    assert list(streamed["train"]) == processed["train"].to_list()


def test_pair_lengths_follow_the_rows_after_select(tokenizer, splits, tmp_path):
    data = load_translation_dataset("en", "de", text_files=splits, cache_dir=tmp_path / "cache")
    processed, _ = preprocess_translation(data, tokenizer, "en", "de")
    subset = processed["train"].select([4, 0, 2])
    sources, targets = pair_lengths(subset)
    assert sources.tolist() == [len(row["input_ids"]) for row in subset]
    assert targets.tolist() == [len(row["labels"]) for row in subset]
    with pytest.raises(TranslationDataError, match=r"the dataset has no column 'input_ids' \(columns: translation\)"):
        pair_lengths(data["train"])


# ------------------------------------------------------------------------------------------------------------
# Token batching
# ------------------------------------------------------------------------------------------------------------


def random_lengths(count=2000, seed=1):
    rng = np.random.default_rng(seed)
    sources = rng.integers(3, 60, size=count)
    targets = np.clip(sources + rng.integers(-8, 9, size=count), 2, 70)
    return sources, targets


def padded_cost(batch, sources, targets):
    return max(len(batch) * int(sources[batch].max()), len(batch) * int(targets[batch].max()))


def test_batches_respect_the_token_limit_and_cover_each_pair_once():
    sources, targets = random_lengths()
    sampler = TokenBatchSampler(sources, targets, max_tokens=512, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert max(padded_cost(batch, sources, targets) for batch in batches) <= 512
        assert sorted(i for batch in batches for i in batch) == list(range(len(sources)))


def test_batches_group_similar_lengths():
    sources, targets = random_lengths()
    sampler = TokenBatchSampler(sources, targets, max_tokens=1024)
    # Batches are runs of the length-sorted pairs: their source length ranges do not interleave.
    ranges = sorted((int(sources[batch].min()), int(sources[batch].max())) for batch in sampler)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))
    assert sampler.padding_efficiency() > 0.85
    rng = np.random.default_rng(0)  # the same batch sizes filled at random pad far more
    shuffled, sizes = rng.permutation(len(sources)), [len(batch) for batch in sampler]
    random_batches = np.split(shuffled, np.cumsum(sizes)[:-1])
    real = sources.sum() + targets.sum()
    padded = sum(len(b) * (sources[b].max() + targets[b].max()) for b in random_batches)
    assert real / padded < 0.7


def test_shuffle_is_deterministic_per_seed_and_epoch_and_changes_between_epochs():
    sources, targets = random_lengths()
    first = TokenBatchSampler(sources, targets, 512, seed=7)
    second = TokenBatchSampler(sources, targets, 512, seed=7)
    other_seed = TokenBatchSampler(sources, targets, 512, seed=8)
    first.set_epoch(1)
    second.set_epoch(1)
    other_seed.set_epoch(1)
    assert list(first) == list(second)
    assert list(first) != list(other_seed)
    epoch_one = list(first)
    first.set_epoch(2)
    epoch_two = list(first)
    assert epoch_one != epoch_two
    assert len(epoch_one) == len(epoch_two)  # the same number of steps every epoch
    # Equal-length pairs are re-mixed too, not only the batch order.
    assert {tuple(sorted(b)) for b in epoch_one} != {tuple(sorted(b)) for b in epoch_two}


def test_no_shuffle_gives_length_sorted_batches_in_every_epoch():
    sources, targets = random_lengths()
    sampler = TokenBatchSampler(sources, targets, 512, shuffle=False)
    batches = list(sampler)
    sampler.set_epoch(5)
    assert list(sampler) == batches
    order = [i for batch in batches for i in batch]
    assert order == np.lexsort((targets, sources)).tolist()


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_replicas_get_equal_steps_and_together_cover_every_pair_exactly_once(replicas):
    sources, targets = random_lengths(count=1999)
    for epoch in (0, 1):
        shards = []
        for rank in range(replicas):
            sampler = TokenBatchSampler(sources, targets, 700, seed=5, num_replicas=replicas, rank=rank)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler)
        assert len({len(shard) for shard in shards}) == 1
        covered = [i for shard in shards for batch in shard for i in batch]
        assert sorted(covered) == list(range(len(sources)))  # no overlap, nothing dropped or repeated
        assert max(padded_cost(b, sources, targets) for shard in shards for b in shard) <= 700
        assert set(map(tuple, shards[0])).isdisjoint(map(tuple, shards[1]))


def test_uneven_batch_count_is_evened_by_splitting_the_largest_batch():
    # Lengths 10: 10 pairs fit in a batch of 100 tokens; 25 pairs -> 3 batches (10, 10, 5) for one process.
    sources = targets = np.full(25, 10)
    single = TokenBatchSampler(sources, targets, 100, shuffle=False)
    assert [len(b) for b in single] == [10, 10, 5]
    shards = [list(TokenBatchSampler(sources, targets, 100, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(len(b) for shard in shards for b in shard) == [5, 5, 5, 10]
    assert [len(shard) for shard in shards] == [2, 2]
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(25))


def test_too_few_pairs_for_the_replicas_is_a_clear_error():
    with pytest.raises(ValueError, match=r"cannot give each of the 4 replicas the same number of batches: 3 pairs"):
        TokenBatchSampler([5, 5, 5], [5, 5, 5], 100, num_replicas=4, rank=0)


def test_a_pair_longer_than_the_limit_names_the_pair_and_the_limit():
    sources, targets = [5, 7, 300, 9], [6, 8, 20, 400]
    with pytest.raises(
        ValueError, match=r"pair 2 has 300 source and 20 target tokens, more than max_tokens=256 \(2 pairs are\)"
    ):
        TokenBatchSampler(sources, targets, max_tokens=256)


def test_invalid_sampler_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"rank=2 must be in \[0, num_replicas=2\)"):
        TokenBatchSampler([3], [3], 10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=r"max_tokens=0 must be a positive integer"):
        TokenBatchSampler([3], [3], 0)
    with pytest.raises(ValueError, match=r"must be two lists of the same length"):
        TokenBatchSampler([3, 4], [3], 10)
    with pytest.raises(ValueError, match=r"pair 1 has a side of 0 tokens"):
        TokenBatchSampler([3, 0], [3, 3], 10)


def test_padding_efficiency_counts_real_over_padded_tokens_of_both_sides():
    sampler = TokenBatchSampler([2, 4, 10], [3, 3, 10], max_tokens=10, shuffle=False)
    assert list(sampler) == [[0, 1], [2]]
    # real = (2 + 4 + 10) + (3 + 3 + 10) = 32; padded = 2 * 4 + 2 * 3 + 10 + 10 = 34
    assert sampler.padding_efficiency() == pytest.approx(32 / 34)


def test_sampler_and_collator_drive_a_dataloader(tokenizer, splits, tmp_path):
    data = load_translation_dataset("en", "de", text_files=splits, cache_dir=tmp_path / "cache")
    processed, _ = preprocess_translation(data, tokenizer, "en", "de")
    sampler = TokenBatchSampler.from_dataset(processed["train"], max_tokens=64, seed=0)
    loader = DataLoader(processed["train"], batch_sampler=sampler, collate_fn=TranslationCollator())
    sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == len(loader) == len(sampler)
    assert sum(batch["input_ids"].shape[0] for batch in batches) == 6
    for batch in batches:
        assert batch["input_ids"].numel() <= 64 and batch["labels"].numel() <= 64


# ------------------------------------------------------------------------------------------------------------
# Collation
# ------------------------------------------------------------------------------------------------------------


def test_collator_pads_inputs_with_pad_and_labels_with_minus_100():
    features = [{"input_ids": [5, 6, 2], "labels": [7, 2]}, {"input_ids": [8, 2], "labels": [9, 10, 11, 2]}]
    batch = TranslationCollator()(features)
    assert batch["input_ids"].tolist() == [[5, 6, 2], [8, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 2, -100, -100], [9, 10, 11, 2]]
    assert all(tensor.dtype == torch.long for tensor in batch.values())
    assert TranslationCollator(pad_to_multiple_of=8)(features)["labels"].shape == (2, 8)
    with pytest.raises(KeyError, match=r"feature field 'labels' is missing \(fields: input_ids\)"):
        TranslationCollator()([{"input_ids": [1]}])


def test_collator_matches_transformers_data_collator_for_seq2seq(tokenizer):
    from transformers import DataCollatorForSeq2Seq

    encoded = tokenizer(ENGLISH[:4], text_target=GERMAN[:4])
    features = [{"input_ids": s, "labels": t} for s, t in zip(encoded["input_ids"], encoded["labels"])]
    ours = TranslationCollator()(features)
    theirs = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")(features)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(ours[key], theirs[key]), key


def test_data_and_tokenization_modules_do_not_import_torch(tmp_path):
    """The modules themselves stay light (the package __init__ is bypassed here: it loads the model)."""
    code = (
        "import sys, types\n"
        "package = types.ModuleType('modeling_vanilla')\n"
        f"package.__path__ = [{str(REPO_ROOT / 'modeling_vanilla')!r}]\n"
        "sys.modules['modeling_vanilla'] = package\n"
        "import modeling_vanilla.data.batching, modeling_vanilla.data.preprocessing\n"
        "import modeling_vanilla.data.corpus, modeling_vanilla.data.tokenization\n"
        "print(sorted(name for name in ('torch', 'modeling_vanilla.modeling_vanilla') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------------------
# Commands: vanilla-toy-data, vanilla-data-report, vanilla-benchmark (modeling_vanilla.cli; scripts/ call them)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [make_toy_data, data_report, benchmark], ids=lambda module: module.__name__)
def test_command_help_exits_0_under_the_installed_name(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--help"])
    assert exit_info.value.code == 0
    name = {make_toy_data: "vanilla-toy-data", data_report: "vanilla-data-report", benchmark: "vanilla-benchmark"}
    assert capsys.readouterr().out.startswith(f"usage: {name[command]} ")


def test_toy_data_command_writes_aligned_files_reproducibly(tmp_path, capsys):
    argv = ["--train", "30", "--valid", "4", "--test", "5", "--seed", "7"]
    assert make_toy_data.main([str(tmp_path / "a"), *argv]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'a'}/{{train,valid,test}}.{{en,de}}\n"
    assert make_toy_data.main([str(tmp_path / "b"), *argv]) == 0
    for split, count in (("train", 30), ("valid", 4), ("test", 5)):
        for language in ("en", "de"):
            text = (tmp_path / "a" / f"{split}.{language}").read_text(encoding="utf-8")
            assert len(text.splitlines()) == count and all(text.splitlines())
            assert text == (tmp_path / "b" / f"{split}.{language}").read_text(encoding="utf-8")  # same seed
    data = load_translation_dataset("en", "de", text_files={"train": tmp_path / "a/train"}, cache_dir=tmp_path / "c")
    assert len(data["train"]) == 30


def fake_shared_data(folder: Path) -> Path:
    """A ../shared/data look-alike made of toy corpora: multi30k/ (EN, DE only) and wmt-newstest/de-en/."""
    write_toy_corpus(folder / "toy", train=300, valid=20, test=20, seed=0)
    (folder / "multi30k").mkdir(parents=True)
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for language in ("en", "de"):
            text = (folder / "toy" / f"{split}.{language}").read_bytes()
            (folder / "multi30k" / f"{name}.{language}").write_bytes(text)
    news = folder / "wmt-newstest" / "de-en"
    news.mkdir(parents=True)
    for year in range(2008, 2017):
        write_toy_corpus(folder / f"toy{year}", train=10 + year - 2008, valid=0, test=0, seed=year)
        for language in ("en", "de"):
            text = (folder / f"toy{year}" / f"train.{language}").read_bytes()
            (news / f"newstest{year}.{language}").write_bytes(text)
    return folder


def test_data_report_command_runs_the_pipeline_on_a_data_folder(tmp_path, capsys):
    data_dir = fake_shared_data(tmp_path / "shared")
    argv = ["--data-dir", str(data_dir), "--vocab-size", "300", "--repeats", "1", "--max-tokens", "256"]
    assert data_report.main(argv) == 0
    output = capsys.readouterr().out
    assert "test2016.en: round trip exact on 20/20 lines" in output and "test2016.fr" not in output
    for loader in ("JSON lines", "streaming text", "streaming JSON lines"):
        assert f"loading: {loader} gives the same 300 pairs in the same order as plain text: True" in output
    assert "preprocess Multi30k train, 2 process(es)" in output and "kept 300 of 300 pairs" in output
    assert "Multi30k train: 300 pairs -> " in output
    # newstest2008-2012 + 2015-2016 train (10+11+12+13+14 + 17+18 lines), 2013 validation, 2014 test
    assert "WMT news: train 95 pairs, validation 15 pairs, test 16 pairs" in output
    assert output.count("every pair exactly once: True") == 2

    assert data_report.main(["--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "error: no Multi30k data at" in capsys.readouterr().err


def test_benchmark_header_names_the_machine_and_checkpointing_table_has_ratios_to_plain(tmp_path, monkeypatch, capsys):
    from modeling_vanilla.utils.hardware import describe_machine

    measured = {False: {"activation_mib": 100.0, "peak_mib": 900.0, "seconds": 2.0},
                True: {"activation_mib": 40.0, "peak_mib": 850.0, "seconds": 3.0}}
    monkeypatch.setattr(checkpointing, "run_isolated", lambda target, *args: measured[args[-1]])
    assert benchmark.main(["checkpointing", "--preset", "tiny", "--json", str(tmp_path / "b.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"vanilla-benchmark checkpointing on {describe_machine()}")
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]] for line in lines
            if line.startswith("| ") and "setting" not in line}
    assert rows == {
        "plain": ["100", "1.00", "900", "2.00", "1.00"],
        "checkpointing": ["40", "0.40", "850", "3.00", "1.50"],
    }
    assert lines[-1] == "checkpointing / plain: activation memory x0.40, step time x1.50"
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["machine"] == lines[0].removeprefix("vanilla-benchmark checkpointing on ")
    assert saved["results"]["checkpointing"] == measured[True]


def test_benchmark_speed_table_gives_every_row_its_ratio_to_marian_from_the_same_run(capsys):
    rows = {"bf16_generation_token_agreement": 0.945}
    for ours, marian, precision in ((300.0, 400.0, "fp32"), (600.0, 750.0, "bf16")):
        for name, value in (("ours", ours), ("marian", marian)):
            rows[f"train {name} {precision}"] = {
                "target_tokens_per_s": value, "peak_mib": value * 2, "mfu_bf16": value / 1000
            }
            for kind in ("generate beam4", "generate beam1"):
                rows[f"{kind} {name} {precision}"] = {"tokens_per_s": value / 2}
    speed.print_speed_table("base", rows)
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line.startswith("| ") and "measurement" not in line and "---" not in line]
    assert len(table) == 10  # 3 kinds x 2 precisions, peak memory and MFU x 2 precisions
    for line in table:
        label, ours, marian, ratio = (cell.strip() for cell in line.split("|")[1:-1])
        expected = float(ours.rstrip("%")) / float(marian.rstrip("%"))
        assert ratio == f"{expected:.2f}x", line
    assert lines[-1] == ("ours best / MarianMT best: 0.80x; ours best / MarianMT best eager: 0.80x; ours bf16 / "
                         "MarianMT fp32: 1.50x; bf16 beam-4 tokens equal to fp32: 94.5%")
    # With compiled steps: their row, and "best" takes them into account (MarianMT's eager best stays apart).
    rows["train ours bf16 compiled"] = {"target_tokens_per_s": 900.0}
    rows["train marian bf16 compiled"] = {"target_tokens_per_s": 1000.0}
    speed.print_speed_table("base", rows)
    lines = capsys.readouterr().out.splitlines()
    assert "| train bf16 compiled tokens/s | 900 | 1000 | 0.90x |" in lines
    assert lines[-1].startswith("ours best / MarianMT best: 0.90x; ours best / MarianMT best eager: 1.20x;")


@pytest.mark.slow
def test_benchmark_smallest_settings_run_for_real(tmp_path, capsys):
    """Fresh processes, MarianMT and generate() for real, on the tiny shape (about a minute; `pytest -m slow`)."""
    assert benchmark.main(["checkpointing", "--preset", "tiny", "--batch-size", "2", "--length", "4"]) == 0
    speed = ["speed", "--shapes", "tiny", "--warmup", "0", "--repeats", "1", "--json", str(tmp_path / "s.json")]
    assert benchmark.main(speed) == 0
    output = capsys.readouterr().out
    assert "| checkpointing  |" in output and "| train bf16 tokens/s |" in output
    rows = json.loads((tmp_path / "s.json").read_text())["results"]["shapes"]["tiny"]["rows"]
    assert rows["train ours fp32"]["peak_mib"] >= 0 and 0 <= rows["bf16_generation_token_agreement"] <= 1
    assert benchmark.main(["loss", "--vocab", "50", "--d-model", "8", "--tokens", "16", "--repeats", "1"]) == 0
    assert "projected / plain: time x" in capsys.readouterr().out
    make_toy_data.main([str(tmp_path / "toy"), "--train", "300", "--valid", "10", "--test", "10"])
    loop = ["loop", "--data", str(tmp_path / "toy"), "--preset", "tiny", "--vocab-size", "300", "--max-tokens", "512",
            "--steps", "6", "--log-every", "1", "--repeats", "1", "--json", str(tmp_path / "loop.json")]
    assert benchmark.main(loop) == 0
    assert "loop / isolated step: " in capsys.readouterr().out
    result = json.loads((tmp_path / "loop.json").read_text())["results"]
    assert result["updates_timed"] == 4 and result["loop_target_tokens_per_s"] > 0  # updates 3-6, after warmup


# ------------------------------------------------------------------------------------------------------------
# Real data (../shared/data)
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi30k(tmp_path_factory):
    cache = tmp_path_factory.mktemp("multi30k-cache")
    splits = {"train": MULTI30K / "train", "validation": MULTI30K / "val", "test": MULTI30K / "test_2016_flickr"}
    return load_translation_dataset("en", "de", text_files=splits, cache_dir=cache)


@needs_multi30k
def test_real_multi30k_loads_the_same_from_text_json_lines_and_streaming(multi30k, tmp_path):
    english = (MULTI30K / "train.en").read_text(encoding="utf-8").split("\n")[:-1]
    german = (MULTI30K / "train.de").read_text(encoding="utf-8").split("\n")[:-1]
    assert {split: len(data) for split, data in multi30k.items()} == {"train": 29000, "validation": 1014, "test": 1000}
    reference = as_pairs(multi30k["train"])
    assert reference == list(zip(english, german))
    write_jsonl(tmp_path / "train.jsonl", english, german)
    from_jsonl = load_translation_dataset(
        "en", "de", jsonl_files={"train": tmp_path / "train.jsonl"}, cache_dir=tmp_path / "c"
    )
    streamed = load_translation_dataset("en", "de", text_files={"train": MULTI30K / "train"}, streaming=True)
    assert as_pairs(from_jsonl["train"]) == reference
    assert as_pairs(streamed["train"]) == reference


@needs_multi30k
def test_real_multi30k_token_batches_4096(multi30k):
    tokenizer = train_bpe_tokenizer(iter_sentences(multi30k["train"], ["en", "de"]), vocab_size=8000)
    processed, counts = preprocess_translation(multi30k, tokenizer, "en", "de")
    assert counts["train"].total == 29000 and counts["train"].kept >= 28900
    sources, targets = pair_lengths(processed["train"])
    sampler = TokenBatchSampler(sources, targets, max_tokens=4096, seed=0)
    assert sampler.padding_efficiency() >= 0.9
    # docs/guides/data.md states the padding efficiency of these batches; the test holds it to its rounding.
    guide = " ".join((REPO_ROOT / "docs" / "guides" / "data.md").read_text().split())
    stated = re.search(r"4096-token batches have a padding efficiency of (0\.\d+)", guide)
    assert stated, "docs/guides/data.md no longer states the padding efficiency: update this test"
    assert round(sampler.padding_efficiency(), 3) == float(stated.group(1)), sampler.padding_efficiency()
    batches = list(sampler)
    assert max(padded_cost(b, sources, targets) for b in batches) <= 4096
    assert sorted(i for b in batches for i in b) == list(range(len(sources)))
    shards = [list(TokenBatchSampler(sources, targets, 4096, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(len(sources)))


@needs_wmt
def test_real_wmt_newstest_splits_follow_the_readme(tmp_path):
    years = (2008, 2009, 2010, 2011, 2012, 2015, 2016)
    data = load_translation_dataset(
        "en",
        "de",
        text_files={
            "train": [WMT_DE_EN / f"newstest{y}" for y in years],
            "validation": WMT_DE_EN / "newstest2013",
            "test": WMT_DE_EN / "newstest2014",
        },
        cache_dir=tmp_path / "cache",
    )
    assert {split: len(d) for split, d in data.items()} == {"train": 18239, "validation": 3000, "test": 3003}
    first_test_line = (WMT_DE_EN / "newstest2014.de").read_text(encoding="utf-8").split("\n")[0]
    assert data["test"][0]["translation"]["de"] == first_test_line
