"""`vanilla-evaluate`: score a trained model on a test set with sacreBLEU (cased, detokenized, 13a) and chrF.

    vanilla-evaluate runs/multi30k --source ../shared/data/multi30k/test_2016_flickr.en \
        --reference ../shared/data/multi30k/test_2016_flickr.de --output hyp.de

Decoding is the model's generation config (section 6.1: beam 4, length penalty 0.6) unless --num-beams or
--length-penalty say otherwise. Prints one JSON line: BLEU, chrF, their signatures and the number of sentences.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..model_folder import load_model_and_tokenizer
from ..translation import score, translate


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder (save_pretrained, with its tokenizer) or Hub repo id")
    parser.add_argument("--source", type=Path, required=True, help="source sentences, one per line")
    parser.add_argument("--reference", type=Path, required=True, help="reference translations, line by line")
    parser.add_argument("--output", type=Path, help="also write the translations to this file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-beams", type=int, help="default: the model's (4, section 6.1)")
    parser.add_argument("--length-penalty", type=float, help="default: the model's (0.6, section 6.1)")
    args = parser.parse_args(argv)
    for path in (args.source, args.reference):
        if not path.is_file():
            parser.error(f"{path} does not exist or is not a file.")
    args.sources = args.source.read_text(encoding="utf-8").splitlines()
    args.references = args.reference.read_text(encoding="utf-8").splitlines()
    if len(args.sources) != len(args.references):
        parser.error(f"{args.source} has {len(args.sources)} lines but {args.reference} has {len(args.references)}: "
                     "they must be line-aligned.")
    for name in ("batch_size", "num_beams"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}.")
    return args


def run(argv=None) -> dict:
    """Translate and score; returns the scores (also printed as a JSON line)."""
    args = parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(args.model)
    generate_kwargs = {k: v for k, v in (("num_beams", args.num_beams), ("length_penalty", args.length_penalty))
                       if v is not None}
    hypotheses = translate(model, tokenizer, args.sources, batch_size=args.batch_size, **generate_kwargs)
    if args.output:
        args.output.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    result = {**score(hypotheses, args.references), "sentences": len(hypotheses)}
    print(json.dumps(result))
    return result


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
