"""`vanilla-train-tokenizer`: train the joint source-target BPE tokenizer of "Attention Is All You Need" (section 5.1).

Reads the training split of a parallel corpus (both languages), trains a byte-level BPE vocabulary with
`modeling_vanilla.data.tokenization.train_bpe_tokenizer`, saves it with `save_pretrained` (load it back with
`AutoTokenizer.from_pretrained(output)`), and, with `--check`, reports the exact round trip and the average
tokens per sentence on held-out text files. A tokenizer already in the output folder is replaced only with
`--overwrite` (a model trained with it would no longer match it).

Examples, from the repository root:

    # Multi30k EN-DE, 8000 tokens (reads ../shared/data/multi30k/train.en and train.de)
    vanilla-train-tokenizer --source-lang en --target-lang de --vocab-size 8000 \\
        --text-files ../shared/data/multi30k/train --output tokenizers/multi30k-en-de \\
        --check ../shared/data/multi30k/test_2016_flickr.en ../shared/data/multi30k/test_2016_flickr.de

    # The paper's WMT14 EN-DE vocabulary (downloads from the Hub)
    vanilla-train-tokenizer --source-lang en --target-lang de --vocab-size 37000 \\
        --hub-id wmt/wmt14 --hub-config de-en --output tokenizers/wmt14-en-de
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..utils.arguments import int_at_least, positive_int

# Byte-level BPE: every byte, and <pad> <s> </s> <unk> (data.tokenization.SPECIAL_TOKENS, which imports transformers;
# tests/cli/test_help.py checks the count).
MIN_VOCAB_SIZE = 256 + 4
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # what save_pretrained writes and loading reads


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-train-tokenizer", description=__doc__.split("\n\n")[0])
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
        "--vocab-size", type=int_at_least(MIN_VOCAB_SIZE, "256 bytes + 4 special tokens"), default=37000,
        help="vocabulary size (default: 37000, the paper's EN-DE)",
    )
    parser.add_argument(
        "--min-frequency", type=positive_int, default=2, help="minimum count of a merged pair (default: 2)"
    )
    parser.add_argument(
        "--model-max-length", type=int_at_least(2, "one token and </s>"), default=1024,
        help="model_max_length to store (default: 1024)",
    )
    parser.add_argument("--output", required=True, type=Path, help="folder to save the tokenizer in")
    parser.add_argument("--overwrite", action="store_true", help="replace a tokenizer already saved in --output")
    parser.add_argument(
        "--check",
        nargs="*",
        default=[],
        metavar="FILE",
        help="text files (one sentence per line) to check the round trip and count tokens on",
    )
    parser.add_argument("--cache-dir", help="datasets cache folder (Hub downloads only)")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"--output {args.output} is a file: give a folder.")
    existing = [name for name in TOKENIZER_FILES if (args.output / name).is_file()]
    if existing and not args.overwrite:
        parser.error(f"--output {args.output} already holds a tokenizer ({', '.join(existing)}): a model trained "
                     "with it needs it as it is. Pass --overwrite to replace it, or choose another --output.")
    return args


def main(argv=None) -> int:
    """Train, save, then check on the held-out files; 1 (with the reason on stderr) if the corpus cannot be read."""
    args = parse_args(argv)
    from ..data.corpus import TranslationDataError  # after parsing: --help needs neither datasets nor transformers

    try:
        start = time.perf_counter()
        tokenizer = train_on_corpus(args)
    except (TranslationDataError, FileNotFoundError, ConnectionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    tokenizer.save_pretrained(args.output)
    print(f"trained {len(tokenizer)} tokens in {time.perf_counter() - start:.1f}s; saved to {args.output}")
    for path in args.check:
        report_check(tokenizer, path)
    return 0


def train_on_corpus(args: argparse.Namespace):
    """The tokenizer trained on the sentences of both languages of the corpus's train split."""
    from ..data.corpus import TranslationDataError, iter_sentences, load_translation_dataset
    from ..data.tokenization import train_bpe_tokenizer

    if args.hub_id:
        source = {"hub_id": args.hub_id, "hub_config": args.hub_config}
    elif args.text_files:
        source = {"text_files": {"train": args.text_files}}
    else:
        source = {"jsonl_files": {"train": args.jsonl_files}}
    languages = [args.source_lang, args.target_lang]
    # Streaming: the corpus is read once, so converting it to the Arrow cache would only cost time and disk.
    corpus = load_translation_dataset(*languages, streaming=True, cache_dir=args.cache_dir, **source)
    if "train" not in corpus:
        raise TranslationDataError(f"the corpus has no 'train' split (splits: {', '.join(corpus)}).")
    return train_bpe_tokenizer(
        iter_sentences(corpus["train"], languages),
        args.vocab_size,
        min_frequency=args.min_frequency,
        model_max_length=args.model_max_length,
        show_progress=True,
    )


def report_check(tokenizer, path: str) -> None:
    """Print the exact round trip and the tokens per sentence on one held-out text file, with the first failures."""
    from ..data.tokenization import round_trip_failures

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


if __name__ == "__main__":
    raise SystemExit(main())
