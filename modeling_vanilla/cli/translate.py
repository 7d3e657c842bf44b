"""`vanilla-translate`: translate a file, or standard input, with a trained model.

One input line gives one output line (an empty line gives an empty line), written as soon as its batch is done.

Examples:

    # A file, 32 sentences per generate() call, the model's own decoding (beam 4, length penalty 0.6, input + 50)
    vanilla-translate runs/multi30k-en-de --input ../shared/data/multi30k/test_2016_flickr.en \\
        --output hyp.de --batch-size 32

    # Standard input to standard output, greedy, at most 40 new tokens per sentence
    echo "A man rides a bike." | vanilla-translate runs/multi30k-en-de --num-beams 1 --max-new-tokens 40

The model is a folder written by `save_pretrained` (with its tokenizer) or a Hub repo id. Translation goes through
`modeling_vanilla.translation.translate`, the helper that training's BLEU uses too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from ..model_folder import load_model_and_tokenizer
from ..translation import translate


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-translate", description=__doc__.split("\n\n")[0])
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
    if args.input is not None and not args.input.is_file():
        parser.error(f"--input {args.input} does not exist or is not a file.")
    return args


def translate_lines(model, tokenizer, lines: Iterable[str], batch_size: int, **generate_kwargs) -> Iterator[str]:
    """Translations of `lines` (without their line ends), in order, one line each, a batch at a time."""
    lines = iter(lines)
    while batch := list(islice(lines, batch_size)):
        for text in translate(model, tokenizer, batch, batch_size=batch_size, **generate_kwargs):
            yield text.replace("\r", " ").replace("\n", " ")


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(args.model)
    model.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generate_kwargs = {
        name: value for name, value in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens))
        if value is not None
    }
    source = open(args.input, encoding="utf-8") if args.input else sys.stdin
    target = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        lines = (line.rstrip("\r\n") for line in source)
        for translation in translate_lines(model, tokenizer, lines, args.batch_size, **generate_kwargs):
            target.write(translation + "\n")
            target.flush()
    finally:
        if args.input:
            source.close()
        if args.output:
            target.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
