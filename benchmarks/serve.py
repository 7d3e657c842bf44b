"""Serving: our generate() (fp32, bf16) against CTranslate2 (fp32, int8) on the same sentences, beam 4 by default;
sentences and tokens per second, the ratio to ours-fp32, the weights' size, the share of outputs identical to
ours-fp32's, and BLEU with --reference.

    vanilla-benchmark serve --model runs/multi30k --input ../shared/data/multi30k/test_2016_flickr.en \\
        --reference ../shared/data/multi30k/test_2016_flickr.de
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/serve.py): this folder is the package `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ratio, run_alone  # noqa: E402
from modeling_vanilla.utils.arguments import positive_int, read_lines  # noqa: E402

# name: (engine, weights): our generate() with the model cast to a dtype, or CTranslate2 with weights quantized so
SERVE_BACKENDS = {"ours-fp32": ("ours", "float32"), "ours-bf16": ("ours", "bfloat16"),
                  "ctranslate2-fp32": ("ctranslate2", None), "ctranslate2-int8": ("ctranslate2", "int8")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model folder of ours, with its tokenizer")
    parser.add_argument("--input", required=True, type=Path, help="sentences to translate, one per line")
    parser.add_argument("--reference", type=Path, help="their translations, one per line: BLEU of every backend")
    parser.add_argument("--sentences", type=positive_int, default=1000, help="the first N lines of --input")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--num-beams", type=positive_int, default=4)
    parser.add_argument("--backends", nargs="+", choices=SERVE_BACKENDS, default=list(SERVE_BACKENDS))
    parser.add_argument("--json", help="also write the results to this file")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag, path in (("--input", args.input), ("--reference", args.reference)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path} does not exist or is not a file.")


def run(args: argparse.Namespace) -> dict:
    """Translate the first --sentences lines of --input with each backend, beam --num-beams, --batch-size sentences
    per call (one untimed batch first). Tokens/s counts each output's tokens (re-tokenized, plus </s>), the same rule
    for every backend; "same as ours" is the share of outputs identical to ours-fp32's (when it ran)."""
    import copy
    import tempfile

    import torch

    from modeling_vanilla.inference.model_folder import load_model_and_tokenizer
    from modeling_vanilla.inference.translation import score, translate
    from modeling_vanilla.publish.serving import CTranslate2Translator, to_ctranslate2

    sentences = list(itertools.islice(read_lines(args.input), args.sentences))
    references = list(itertools.islice(read_lines(args.reference), args.sentences)) if args.reference else None
    model, tokenizer = load_model_and_tokenizer(args.model, vanilla_only=True)
    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.backends:
            engine, weights = SERVE_BACKENDS[name]
            if engine == "ours":
                backend = copy.deepcopy(model).to(getattr(torch, weights))  # the float32 model stays as it was
                call = lambda batch, m=backend: translate(m, tokenizer, batch, batch_size=args.batch_size,  # noqa: E731
                                                          num_beams=args.num_beams)
                distinct = {p.data_ptr(): p for p in backend.parameters()}.values()  # tied matrices once
                size = sum(p.numel() * p.element_size() for p in distinct)
            else:
                path = to_ctranslate2(model, tokenizer, Path(folder) / name, quantization=weights)
                translator = CTranslate2Translator(path)
                call = lambda batch, t=translator: t.translate(batch, batch_size=args.batch_size,  # noqa: E731
                                                               num_beams=args.num_beams)
                size = (path / "model.bin").stat().st_size
            call(sentences[: args.batch_size])  # warmup
            start = time.perf_counter()
            hypotheses = call(sentences)
            seconds = time.perf_counter() - start
            tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 for text in hypotheses)
            outputs[name] = hypotheses
            results[name] = {"seconds": seconds, "sentences_per_s": len(sentences) / seconds,
                             "tokens_per_s": tokens / seconds, "weights_mib": size / 2**20,
                             **({"bleu": score(hypotheses, references)["bleu"]} if references else {})}
    print_serve_table(args, results, outputs)
    return results


def print_serve_table(args: argparse.Namespace, results: dict, outputs: dict) -> None:
    first = next(iter(results))
    reference = outputs.get("ours-fp32")
    print(f"\n{len(outputs[first])} sentences of {args.input}, beam {args.num_beams}, batches of {args.batch_size}")
    print("| backend | sentences/s | tokens/s | x ours-fp32 | weights MiB | same as ours-fp32 | BLEU |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        ours = results.get("ours-fp32")
        speedup = ratio(r["sentences_per_s"], ours["sentences_per_s"]) if ours else None
        same = (sum(a == b for a, b in zip(outputs[name], reference, strict=True)) / len(reference)
                if reference is not None else None)
        r["same_as_ours_fp32"] = same
        print(f"| {name} | {r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{'-' if speedup is None else f'{speedup:.2f}x'} | {r['weights_mib']:.1f} | "
              f"{'-' if same is None else f'{same:.1%}'} | {r.get('bleu', '-')} |")


def main(argv=None) -> int:
    return run_alone(__file__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
