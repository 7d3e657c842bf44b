"""Translate a file, or standard input, with a trained model through `pipeline("translation")`.

One input line gives one output line (an empty line gives an empty line), written as soon as its batch is done.

Examples, from the repository root:

    # A file, 32 sentences per generate() call, the model's own decoding (beam 4, length penalty 0.6, input + 50)
    python scripts/translate.py runs/multi30k-en-de --input ../shared/data/multi30k/test_2016_flickr.en \\
        --output hyp.de --batch-size 32

    # Standard input to standard output, greedy, at most 40 new tokens per sentence
    echo "A man rides a bike." | python scripts/translate.py runs/multi30k-en-de --num-beams 1 --max-new-tokens 40

The model is a folder written by `save_pretrained` (with its tokenizer) or a Hub repo id.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling_vanilla  # noqa: E402, F401  (registers the translation pipeline)
from transformers import pipeline  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder (save_pretrained, with its tokenizer) or Hub repo id")
    parser.add_argument("--input", type=Path, help="text file, one sentence per line (default: standard input)")
    parser.add_argument("--output", type=Path, help="file to write the translations to (default: standard output)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per generate() call (default: 32)")
    parser.add_argument(
        "--num-beams", type=int, help="beam size (default: the model's generation config; 4 as in section 6.1)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, help="most tokens per translation (default: input length + 50, section 6.1)"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the first GPU if there is one, else cpu)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "num_beams", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}.")
    return args


def translate_lines(translator, lines: Iterable[str], batch_size: int, **generate_kwargs) -> Iterator[str]:
    """Translations of `lines` (without their line ends), in order, one line each."""
    # A generator is streamed: translations come back batch by batch, each as [{"translation_text": ...}].
    for output in translator((line for line in lines), batch_size=batch_size, **generate_kwargs):
        yield output[0]["translation_text"].replace("\r", " ").replace("\n", " ")


def main(argv=None) -> None:
    args = parse_args(argv)
    translator = pipeline("translation", model=args.model, device=args.device)
    generate_kwargs = {
        name: value for name, value in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens))
        if value is not None
    }
    source = open(args.input, encoding="utf-8") if args.input else sys.stdin
    target = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        lines = (line.rstrip("\r\n") for line in source)
        for translation in translate_lines(translator, lines, args.batch_size, **generate_kwargs):
            target.write(translation + "\n")
            target.flush()
    finally:
        if args.input:
            source.close()
        if args.output:
            target.close()


if __name__ == "__main__":
    main()
