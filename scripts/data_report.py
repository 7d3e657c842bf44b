"""Measure the tokenizer and data pipeline on the real corpora in ../shared/data (Multi30k, WMT news tests).

Prints the numbers that issue 3 asks for: the round trip and tokens per sentence of an 8000-token BPE
vocabulary trained on Multi30k train (EN+DE), that plain text, JSON lines and streaming give the same pairs,
the preprocessing throughput with 1 and 2 processes, and the token batches' padding efficiency (4096 tokens),
limit and coverage over 2 replicas; then the same pipeline on the local WMT news test sets (train =
newstest2008-2012 + 2015-2016, validation = newstest2013, test = newstest2014, as in their README).

    python scripts/data_report.py [--data-dir ../shared/data] [--max-tokens 4096]

The data folder defaults to $VANILLA_SHARED_DATA, else ../shared/data from the repository root. Everything
written (cache, tokenizer, JSON lines copy) goes to a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_vanilla.data import (  # noqa: E402
    TokenBatchSampler,
    iter_sentences,
    load_translation_dataset,
    preprocess_translation,
)
from modeling_vanilla.tokenization import round_trip_failures, train_bpe_tokenizer  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("VANILLA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WMT_TRAIN_YEARS = (2008, 2009, 2010, 2011, 2012, 2015, 2016)


def read_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def pairs(dataset, languages) -> list[tuple[str, str]]:
    return [(row["translation"][languages[0]], row["translation"][languages[1]]) for row in dataset]


def report_sampler(name: str, processed, max_tokens: int) -> None:
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3, help="timed preprocessing runs per setting (median shown)")
    args = parser.parse_args(argv)
    multi30k, wmt = args.data_dir / "multi30k", args.data_dir / "wmt-newstest" / "de-en"
    if not multi30k.is_dir():
        print(f"error: no Multi30k data at {multi30k}; pass --data-dir or set VANILLA_SHARED_DATA.", file=sys.stderr)
        return 1
    datasets.disable_progress_bars()
    languages = ("en", "de")

    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        splits = {"train": multi30k / "train", "validation": multi30k / "val", "test": multi30k / "test_2016_flickr"}
        corpus = load_translation_dataset(*languages, text_files=splits, cache_dir=cache)

        # Tokenizer.
        start = time.perf_counter()
        tokenizer = train_bpe_tokenizer(iter_sentences(corpus["train"], languages), args.vocab_size)
        print(
            f"tokenizer: {len(tokenizer)} tokens trained on Multi30k train EN+DE in {time.perf_counter() - start:.1f}s"
        )
        for language in ("en", "de", "fr", "cs"):
            lines = read_lines(multi30k / f"test_2016_flickr.{language}")
            failures = round_trip_failures(tokenizer, lines)
            tokens = sum(len(ids) for ids in tokenizer(lines)["input_ids"])
            trained = "" if language in languages else " (language not in the training data)"
            print(
                f"  test2016.{language}{trained}: round trip exact on {len(lines) - len(failures)}/{len(lines)} "
                f"lines; {tokens / len(lines):.2f} tokens per sentence with </s>, "
                f"{(tokens - len(lines)) / len(lines):.2f} without"
            )

        # Same pairs from every loader.
        jsonl = Path(scratch) / "train.jsonl"
        with jsonl.open("w", encoding="utf-8") as handle:
            for english, german in zip(read_lines(multi30k / "train.en"), read_lines(multi30k / "train.de")):
                handle.write(json.dumps({"translation": {"de": german, "en": english}}, ensure_ascii=False) + "\n")
        reference = pairs(corpus["train"], languages)
        variants = {
            "JSON lines": load_translation_dataset(*languages, jsonl_files={"train": jsonl}, cache_dir=cache)["train"],
            "streaming text": load_translation_dataset(
                *languages, text_files={"train": splits["train"]}, streaming=True
            )["train"],
            "streaming JSON lines": load_translation_dataset(*languages, jsonl_files={"train": jsonl}, streaming=True)[
                "train"
            ],
        }
        for name, dataset in variants.items():
            print(
                f"loading: {name} gives the same {len(reference)} pairs in the same order as plain text: "
                f"{pairs(dataset, languages) == reference}"
            )

        # Preprocessing throughput: each run converts the corpus into a fresh cache, so nothing is reused; the
        # median of --repeats runs damps the noise of a shared machine.
        for num_proc in (1, 2):
            runs = []
            for repeat in range(args.repeats):
                fresh = load_translation_dataset(
                    *languages, text_files={"train": splits["train"]}, cache_dir=Path(scratch) / f"c{num_proc}-{repeat}"
                )
                start = time.perf_counter()
                _, counts = preprocess_translation(
                    fresh, tokenizer, *languages, num_proc=num_proc if num_proc > 1 else None
                )
                runs.append(time.perf_counter() - start)
            seconds = statistics.median(runs)
            print(
                f"preprocess Multi30k train, {num_proc} process(es): {len(fresh['train']) / seconds:,.0f} pairs/s "
                f"(median of {args.repeats}: {seconds:.2f}s; runs {', '.join(f'{r:.2f}' for r in runs)}); "
                f"{counts['train']}"
            )
        start = time.perf_counter()
        preprocess_translation(fresh, tokenizer, *languages, num_proc=2)
        print(f"  again, from the cache: {time.perf_counter() - start:.2f}s")

        processed, counts = preprocess_translation(corpus, tokenizer, *languages)
        report_sampler("Multi30k train", processed["train"], args.max_tokens)

        # WMT news test sets, as a small WMT-domain corpus.
        if wmt.is_dir():
            wmt_splits = {
                "train": [wmt / f"newstest{year}" for year in WMT_TRAIN_YEARS],
                "validation": wmt / "newstest2013",
                "test": wmt / "newstest2014",
            }
            news = load_translation_dataset(*languages, text_files=wmt_splits, cache_dir=cache)
            print("WMT news: " + ", ".join(f"{split} {len(data)} pairs" for split, data in news.items()))
            news_tokenizer = train_bpe_tokenizer(iter_sentences(news["train"], languages), args.vocab_size)
            news_processed, news_counts = preprocess_translation(news, news_tokenizer, *languages, num_proc=2)
            for split, count in news_counts.items():
                print(f"  {split}: {count}")
            report_sampler("WMT news train", news_processed["train"], args.max_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
