"""`vanilla-translate`: translate a file, or standard input, with a trained model.

One input line gives one output line (an empty line gives an empty line). Only "\n" ends a line: a lone "\r" inside
a line stays in it, so that line i of the output always answers line i of the input. The input must be UTF-8; a line
that is not is an error naming the file and the line, found before the model is loaded. On standard output each
translation is written as soon as its batch is done; `--output` is written to a temporary file beside it and renamed
into place at the end, so that an error never leaves it truncated or half written, and it may not be the input.

Examples:

    # A file, 32 sentences per generate() call, the model's own decoding (beam 4, length penalty 0.6, input + 50)
    vanilla-translate runs/multi30k-en-de --input ../shared/data/multi30k/test_2016_flickr.en \\
        --output hyp.de --batch-size 32

    # Standard input to standard output, greedy, at most 40 new tokens per sentence
    echo "A man rides a bike." | vanilla-translate runs/multi30k-en-de --num-beams 1 --max-new-tokens 40

    # With CTranslate2 (a folder written by vanilla-export --to ctranslate2; pip install "vanilla-transformer[serve]")
    vanilla-translate runs/multi30k-ct2 --backend ctranslate2 --input test.en --output hyp.de

The model is a folder written by `save_pretrained` (with its tokenizer) or a Hub repo id. Translation goes through
`modeling_vanilla.inference.translation.translate`, the helper that training's BLEU uses too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from functools import partial
from itertools import islice
from pathlib import Path

from ..publish.ctranslate2_types import COMPUTE_TYPES
from ..utils.arguments import TextFileError, output_file_problem, positive_int, read_lines, replacing, same_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-translate", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder (save_pretrained, with its tokenizer) or Hub repo id")
    parser.add_argument("--input", type=Path, help="text file, one sentence per line (default: standard input)")
    parser.add_argument("--output", type=Path, help="file to write the translations to (default: standard output)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="sentences per generate() call (default: 32)"
    )
    parser.add_argument(
        "--num-beams", type=positive_int,
        help="beam size (default: the model's generation config; 4 as in section 6.1)",
    )
    parser.add_argument(
        "--max-new-tokens", type=positive_int,
        help="most tokens per translation (default: input length + 50, section 6.1)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the first GPU if there is one, else cpu)")
    parser.add_argument(
        "--backend", choices=["transformers", "ctranslate2"], default="transformers",
        help="transformers: our generate() on a model folder (default); ctranslate2: a folder written by "
             "vanilla-export --to ctranslate2",
    )
    parser.add_argument(
        "--compute-type", choices=COMPUTE_TYPES, default="default",
        help="with --backend ctranslate2: the type to compute in (default: the type the weights were saved as)",
    )
    args = parser.parse_args(argv)
    if args.compute_type != "default" and args.backend != "ctranslate2":
        parser.error("--compute-type applies to --backend ctranslate2 only")
    if args.input is not None:
        if not args.input.is_file():
            parser.error(f"--input {args.input} does not exist or is not a file.")
        if args.output is not None and same_file(args.input, args.output):
            parser.error(f"--output {args.output} is the input file: it would be overwritten before it is read. "
                         "Write the translations to another file.")
        try:
            for _ in read_lines(args.input):  # every line UTF-8, before the model is loaded
                pass
        except TextFileError as error:
            parser.error(f"--input {error}")
    if args.output is not None and (problem := output_file_problem("--output", args.output)):
        parser.error(problem)
    return args


def translate_lines(translate_batch, lines: Iterable[str], batch_size: int) -> Iterator[str]:
    """Translations of `lines` (without their line ends), in order, one line each, a batch at a time.
    `translate_batch(sentences, batch_size=...)` gives the translations of a list of sentences."""
    from ..inference.translation import one_line

    lines = iter(lines)
    while batch := list(islice(lines, batch_size)):
        for text in translate_batch(batch, batch_size=batch_size):
            yield one_line(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch  # after parsing: --help and a bad option need neither torch nor transformers

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    generate_kwargs = {
        name: value for name, value in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens))
        if value is not None
    }
    try:
        if args.backend == "ctranslate2":
            from ..publish.serving import CTranslate2Translator

            translator = CTranslate2Translator(args.model, device=device.split(":")[0], compute_type=args.compute_type,
                                               device_index=int(device.split(":")[1]) if ":" in device else 0)
            translate_batch = partial(translator.translate, **generate_kwargs)
        else:
            from ..inference import translation
            from ..inference.model_folder import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(args.model)
            model.to(device)
            translate_batch = partial(translation.translate, model, tokenizer, **generate_kwargs)
    except (FileNotFoundError, ValueError, ImportError) as error:  # no such model; a tokenizer not the model's
        raise SystemExit(f"vanilla-translate: error: {error}") from None
    if args.input is not None:
        lines = read_lines(args.input)
    else:  # bytes where there are (a real stdin), so that only "\n" splits lines and a bad byte names its line
        lines = read_lines("standard input", getattr(sys.stdin, "buffer", sys.stdin))
    with replacing(args.output) if args.output else nullcontext(sys.stdout) as target:
        try:
            for translation in translate_lines(translate_batch, lines, args.batch_size):
                target.write(translation + "\n")
                target.flush()
        except TextFileError as error:  # only standard input can still hold one: files were checked
            raise SystemExit(f"vanilla-translate: error: {error}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
