"""Train the joint source-target BPE tokenizer of "Attention Is All You Need" (section 5.1) and save it.

Reads the training split of a parallel corpus (both languages), trains a byte-level BPE vocabulary with
`modeling_vanilla.tokenization.train_bpe_tokenizer`, saves it with `save_pretrained` (load it back with
`AutoTokenizer.from_pretrained(output)`), and, with `--check`, reports the exact round trip and the average
tokens per sentence on held-out text files.

Examples, from the repository root:

    # Multi30k EN-DE, 8000 tokens (reads ../shared/data/multi30k/train.en and train.de)
    python scripts/train_tokenizer.py --source-lang en --target-lang de --vocab-size 8000 \\
        --text-files ../shared/data/multi30k/train --output tokenizers/multi30k-en-de \\
        --check ../shared/data/multi30k/test_2016_flickr.en ../shared/data/multi30k/test_2016_flickr.de

    # The paper's WMT14 EN-DE vocabulary (downloads from the Hub)
    python scripts/train_tokenizer.py --source-lang en --target-lang de --vocab-size 37000 \\
        --hub-id wmt/wmt14 --hub-config de-en --output tokenizers/wmt14-en-de
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_vanilla.data import TranslationDataError, iter_sentences, load_translation_dataset  # noqa: E402
from modeling_vanilla.tokenization import round_trip_failures, train_bpe_tokenizer  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-lang", required=True, help="source language code, e.g. en")
    parser.add_argument("--target-lang", required=True, help="target language code, e.g. de")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--text-files",
        nargs="+",
        metavar="PREFIX",
        help="path prefixes of aligned text files: PREFIX.<source-lang> and PREFIX.<target-lang>",
    )
    source.add_argument(
        "--jsonl-files", nargs="+", metavar="FILE", help='JSON lines files, one {"translation": {...}} object per line'
    )
    source.add_argument("--hub-id", help="Hub dataset id, e.g. wmt/wmt14")
    parser.add_argument("--hub-config", help="Hub dataset config, e.g. de-en")
    parser.add_argument(
        "--vocab-size", type=int, default=37000, help="vocabulary size (default: 37000, the paper's EN-DE)"
    )
    parser.add_argument("--min-frequency", type=int, default=2, help="minimum count of a merged pair (default: 2)")
    parser.add_argument("--model-max-length", type=int, default=1024, help="model_max_length to store (default: 1024)")
    parser.add_argument("--output", required=True, type=Path, help="folder to save the tokenizer in")
    parser.add_argument(
        "--check",
        nargs="*",
        default=[],
        metavar="FILE",
        help="text files (one sentence per line) to check the round trip and count tokens on",
    )
    parser.add_argument("--cache-dir", help="datasets cache folder (Hub downloads only)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    source = (
        {"hub_id": args.hub_id, "hub_config": args.hub_config}
        if args.hub_id
        else (
            {"text_files": {"train": args.text_files}}
            if args.text_files
            else {"jsonl_files": {"train": args.jsonl_files}}
        )
    )
    languages = [args.source_lang, args.target_lang]
    try:
        # Streaming: the corpus is read once, so converting it to the Arrow cache would only cost time and disk.
        corpus = load_translation_dataset(*languages, streaming=True, cache_dir=args.cache_dir, **source)
        if "train" not in corpus:
            raise TranslationDataError(f"the corpus has no 'train' split (splits: {', '.join(corpus)}).")
        start = time.perf_counter()
        tokenizer = train_bpe_tokenizer(
            iter_sentences(corpus["train"], languages),
            args.vocab_size,
            min_frequency=args.min_frequency,
            model_max_length=args.model_max_length,
            show_progress=True,
        )
    except (TranslationDataError, FileNotFoundError, ConnectionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    tokenizer.save_pretrained(args.output)
    print(f"trained {len(tokenizer)} tokens in {time.perf_counter() - start:.1f}s; saved to {args.output}")

    for path in args.check:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        failures = round_trip_failures(tokenizer, lines)
        tokens = sum(len(ids) for ids in tokenizer(lines)["input_ids"])
        print(
            f"{path}: round trip exact on {len(lines) - len(failures)}/{len(lines)} lines; "
            f"{tokens / max(len(lines), 1):.2f} tokens per sentence with </s> "
            f"({(tokens - len(lines)) / max(len(lines), 1):.2f} without)"
        )
        for position, sentence, decoded in failures[:5]:
            print(f"  line {position + 1}: {sentence!r} -> {decoded!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
