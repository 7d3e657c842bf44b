"""`vanilla-evaluate`: score a trained model on a test set with sacreBLEU (cased, detokenized, 13a) and chrF.

    vanilla-evaluate runs/multi30k --source ../shared/data/multi30k/test_2016_flickr.en \
        --reference ../shared/data/multi30k/test_2016_flickr.de --output hyp.de

Learning curve of a `vanilla-train` run: `--checkpoints` scores every checkpoint the run kept (the run folder's
model with each checkpoint's weights; `--average K`: the mean of each and the K-1 before it, section 6.1), one JSON
line each with the step and training minutes it was written at; `--curve FILE` also writes them (JSON lines) for
`vanilla-figures --curves`:

    vanilla-evaluate runs/multi30k --checkpoints --source ../shared/data/multi30k/val.en \
        --reference ../shared/data/multi30k/val.de --curve runs/multi30k/val_curve.jsonl

Decoding is the model's generation config (section 6.1: beam 4, length penalty 0.6) unless --num-beams or
--length-penalty say otherwise. Prints one JSON line: BLEU, chrF, their signatures and the number of sentences.

Both files are read as UTF-8, one sentence per "\n" (a lone "\r" stays inside its line); a line that is not UTF-8 is
an error naming the file and the line. --output may not be one of the inputs; it is written to a temporary file
beside it and renamed into place once every sentence is translated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..utils.arguments import (
    TextFileError,
    finite_float,
    output_file_problem,
    positive_int,
    read_lines,
    replacing,
    same_file,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder (save_pretrained, with its tokenizer) or Hub repo id")
    parser.add_argument("--source", type=Path, required=True, help="source sentences, one per line")
    parser.add_argument("--reference", type=Path, required=True, help="reference translations, line by line")
    parser.add_argument("--output", type=Path, help="also write the translations to this file")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="sentences per generate() call")
    parser.add_argument("--num-beams", type=positive_int, help="default: the model's (4, section 6.1)")
    parser.add_argument("--length-penalty", type=finite_float, help="default: the model's (0.6, section 6.1)")
    parser.add_argument("--max-new-tokens", type=positive_int,
                        help="most tokens per translation (default: the model's; ours: input length + 50, section "
                             "6.1). Give it for a model whose generation config has none, e.g. 128")
    curve = parser.add_argument_group("learning curve")
    curve.add_argument("--checkpoints", action="store_true",
                       help="score every kept checkpoint of the run folder MODEL instead of its final model")
    curve.add_argument("--average", type=positive_int, default=1,
                       help="with --checkpoints: score the mean of each checkpoint and the N-1 before it (default: 1)")
    curve.add_argument("--curve", type=Path, help="with --checkpoints: also write the scores to this file, JSON lines")
    args = parser.parse_args(argv)
    if not args.checkpoints and (args.curve is not None or args.average != 1):
        parser.error("--curve and --average score a run's checkpoints: add --checkpoints.")
    if args.checkpoints and args.output is not None:
        parser.error("--output writes one model's translations: leave it out with --checkpoints.")
    for flag, path in (("--curve", args.curve), ("--output", args.output)):
        if path is not None and (problem := output_file_problem(flag, path)):
            parser.error(problem)
    for flag, path in (("--source", args.source), ("--reference", args.reference)):
        if not path.is_file():
            parser.error(f"{flag} {path} does not exist or is not a file.")
        if args.output is not None and same_file(path, args.output):
            parser.error(f"--output {args.output} is the {flag} file: it would be overwritten. "
                         "Write the translations to another file.")
    try:
        args.sources, args.references = list(read_lines(args.source)), list(read_lines(args.reference))
    except TextFileError as error:
        parser.error(str(error))
    if len(args.sources) != len(args.references):
        parser.error(f"{args.source} has {len(args.sources)} lines but {args.reference} has {len(args.references)}: "
                     "they must be line-aligned.")
    return args


def run(argv=None) -> dict | list[dict]:
    """Translate and score; returns the scores (also printed as a JSON line), with --checkpoints one per checkpoint."""
    args = parse_args(argv)
    from ..inference.model_folder import load_model_and_tokenizer  # torch and transformers: after the arguments
    from ..inference.translation import one_line, score, translate

    try:
        model, tokenizer = load_model_and_tokenizer(args.model)
    except (FileNotFoundError, ValueError) as error:  # no such model; a tokenizer that is not the model's
        raise SystemExit(f"vanilla-evaluate: error: {error}") from None
    generate_kwargs = {k: v for k, v in (("num_beams", args.num_beams), ("length_penalty", args.length_penalty),
                                         ("max_new_tokens", args.max_new_tokens)) if v is not None}
    if args.checkpoints:
        return score_run(args, model, tokenizer, generate_kwargs)
    hypotheses = translate(model, tokenizer, args.sources, batch_size=args.batch_size, **generate_kwargs)
    if args.output:
        with replacing(args.output) as output:
            output.write("".join(one_line(hypothesis) + "\n" for hypothesis in hypotheses))
    result = {**score(hypotheses, args.references), "sentences": len(hypotheses)}
    print(json.dumps(result))
    return result


def score_run(args: argparse.Namespace, model, tokenizer, generate_kwargs: dict) -> list[dict]:
    """--checkpoints: one JSON line per checkpoint (printed as each is scored); the curve file is written once, at
    the end."""
    from ..training.curves import score_checkpoints, write_curve

    records = []
    try:
        for record in score_checkpoints(model, tokenizer, args.model, (args.sources, args.references), args.average,
                                        batch_size=args.batch_size, **generate_kwargs):
            print(json.dumps(record), flush=True)
            records.append(record)
    except (FileNotFoundError, ValueError) as error:  # no checkpoints, too few for --average, a broken one
        raise SystemExit(f"vanilla-evaluate: error: {error}") from None
    if args.curve is not None:
        write_curve(records, args.curve)
    return records


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
