"""The data pipeline measured on the real corpora, for `vanilla-data-report`: the BPE vocabulary's round trip and
tokens per sentence, the loaders (plain text, JSON lines, streaming) giving the same pairs, the preprocessing
throughput, and the token batches' padding efficiency, limit and coverage over 2 replicas; on Multi30k, then on the
WMT news test sets (train = newstest2008-2012 + 2015-2016, validation = newstest2013, test = newstest2014)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import datasets

from .batching import TokenBatchSampler
from .corpus import iter_sentences, load_translation_dataset
from .preprocessing import preprocess_translation
from .tokenization import round_trip_failures, train_bpe_tokenizer

WMT_TRAIN_YEARS = (2008, 2009, 2010, 2011, 2012, 2015, 2016)
LANGUAGES = ("en", "de")


def data_report(multi30k: Path, wmt: Path, vocab_size: int, max_tokens: int, repeats: int) -> None:
    """Tokenizer, loaders, preprocessing and batches on Multi30k (the folder `multi30k`), then the WMT news test sets
    if the folder `wmt` exists; everything written goes to a temporary folder, deleted at the end."""
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        splits = {"train": multi30k / "train", "validation": multi30k / "val", "test": multi30k / "test_2016_flickr"}
        corpus = load_translation_dataset(*LANGUAGES, text_files=splits, cache_dir=scratch / "cache")
        tokenizer = report_tokenizer(corpus, multi30k, vocab_size)
        report_loaders(corpus, multi30k, scratch)
        report_preprocessing(splits["train"], tokenizer, scratch, repeats)
        processed, _ = preprocess_translation(corpus, tokenizer, *LANGUAGES)
        report_sampler("Multi30k train", processed["train"], max_tokens)
        if wmt.is_dir():
            report_wmt_news(wmt, scratch / "cache", vocab_size, max_tokens)


def read_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def pairs(dataset, languages) -> list[tuple[str, str]]:
    return [(row["translation"][languages[0]], row["translation"][languages[1]]) for row in dataset]


def report_tokenizer(corpus, multi30k: Path, vocab_size: int):
    """Train the BPE vocabulary on Multi30k train EN+DE; print its round trip and tokens per sentence on test2016."""
    start = time.perf_counter()
    tokenizer = train_bpe_tokenizer(iter_sentences(corpus["train"], LANGUAGES), vocab_size)
    print(f"tokenizer: {len(tokenizer)} tokens trained on Multi30k train EN+DE in {time.perf_counter() - start:.1f}s")
    for language in ("en", "de", "fr", "cs"):
        path = multi30k / f"test_2016_flickr.{language}"
        if language not in LANGUAGES and not path.is_file():
            continue
        lines = read_lines(path)
        failures = round_trip_failures(tokenizer, lines)
        tokens = sum(len(ids) for ids in tokenizer(lines)["input_ids"])
        trained = "" if language in LANGUAGES else " (language not in the training data)"
        print(
            f"  test2016.{language}{trained}: round trip exact on {len(lines) - len(failures)}/{len(lines)} "
            f"lines; {tokens / len(lines):.2f} tokens per sentence with </s>, "
            f"{(tokens - len(lines)) / len(lines):.2f} without"
        )
    return tokenizer


def report_loaders(corpus, multi30k: Path, scratch: Path) -> None:
    """Print whether JSON lines and streaming (text, JSON lines) give the same pairs as plain text, in order."""
    jsonl = scratch / "train.jsonl"
    with jsonl.open("w", encoding="utf-8") as handle:
        for english, german in zip(read_lines(multi30k / "train.en"), read_lines(multi30k / "train.de")):
            handle.write(json.dumps({"translation": {"de": german, "en": english}}, ensure_ascii=False) + "\n")
    reference = pairs(corpus["train"], LANGUAGES)
    cache = scratch / "cache"
    variants = {
        "JSON lines": load_translation_dataset(*LANGUAGES, jsonl_files={"train": jsonl}, cache_dir=cache),
        "streaming text": load_translation_dataset(
            *LANGUAGES, text_files={"train": multi30k / "train"}, streaming=True
        ),
        "streaming JSON lines": load_translation_dataset(*LANGUAGES, jsonl_files={"train": jsonl}, streaming=True),
    }
    for name, dataset in variants.items():
        print(
            f"loading: {name} gives the same {len(reference)} pairs in the same order as plain text: "
            f"{pairs(dataset['train'], LANGUAGES) == reference}"
        )


def report_preprocessing(train_prefix: Path, tokenizer, scratch: Path, repeats: int) -> None:
    """Print preprocessing throughput with 1 and 2 processes, then the time of a run that reads the cache.

    Each timed run converts the corpus into a fresh cache, so nothing is reused; the median of `repeats` runs
    damps the noise of a shared machine.
    """
    for num_proc in (1, 2):
        runs = []
        for repeat in range(repeats):
            fresh = load_translation_dataset(
                *LANGUAGES, text_files={"train": train_prefix}, cache_dir=scratch / f"c{num_proc}-{repeat}"
            )
            start = time.perf_counter()
            _, counts = preprocess_translation(
                fresh, tokenizer, *LANGUAGES, num_proc=num_proc if num_proc > 1 else None
            )
            runs.append(time.perf_counter() - start)
        seconds = statistics.median(runs)
        print(
            f"preprocess Multi30k train, {num_proc} process(es): {len(fresh['train']) / seconds:,.0f} pairs/s "
            f"(median of {repeats}: {seconds:.2f}s; runs {', '.join(f'{r:.2f}' for r in runs)}); "
            f"{counts['train']}"
        )
    start = time.perf_counter()
    preprocess_translation(fresh, tokenizer, *LANGUAGES, num_proc=2)
    print(f"  again, from the cache: {time.perf_counter() - start:.2f}s")


def report_sampler(name: str, processed, max_tokens: int) -> None:
    """Print the token batches of one split: count, largest padded side, padding efficiency, 2-replica coverage."""
    sampler = TokenBatchSampler.from_dataset(processed, max_tokens, seed=0)
    sources, targets = sampler.source_lengths, sampler.target_lengths
    batches = sampler.epoch_batches()
    largest = max(max(len(b) * int(sources[b].max()), len(b) * int(targets[b].max())) for b in batches)
    replicas = [
        list(TokenBatchSampler.from_dataset(processed, max_tokens, num_replicas=2, rank=rank)) for rank in (0, 1)
    ]
    covered = sorted(i for replica in replicas for batch in replica for i in batch)
    print(
        f"{name}: {len(processed)} pairs -> {sampler.num_batches} batches of <= {max_tokens} tokens per side "
        f"(largest padded side {largest}); padding efficiency {sampler.padding_efficiency():.4f}; "
        f"2 replicas: {len(replicas[0])} + {len(replicas[1])} batches, every pair exactly once: "
        f"{covered == list(range(len(processed)))}"
    )


def report_wmt_news(wmt: Path, cache: Path, vocab_size: int, max_tokens: int) -> None:
    """The same pipeline on the WMT news test sets, as a small WMT-domain corpus (splits as in their README)."""
    wmt_splits = {
        "train": [wmt / f"newstest{year}" for year in WMT_TRAIN_YEARS],
        "validation": wmt / "newstest2013",
        "test": wmt / "newstest2014",
    }
    news = load_translation_dataset(*LANGUAGES, text_files=wmt_splits, cache_dir=cache)
    print("WMT news: " + ", ".join(f"{split} {len(data)} pairs" for split, data in news.items()))
    news_tokenizer = train_bpe_tokenizer(iter_sentences(news["train"], LANGUAGES), vocab_size)
    news_processed, news_counts = preprocess_translation(news, news_tokenizer, *LANGUAGES, num_proc=2)
    for split, count in news_counts.items():
        print(f"  {split}: {count}")
    report_sampler("WMT news train", news_processed["train"], max_tokens)
