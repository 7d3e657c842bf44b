"""The real training loop beside the isolated step of its model: vanilla-train for --steps updates on token batches
of a corpus (no validation, no checkpoints), then forward, backward and Adam of a fresh model of the same config on
the run's first batches, already collated and on the device: what the loop costs beyond the step itself.

    vanilla-benchmark loop --data ../shared/data/multi30k --preset small --steps 60
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/loop.py): this folder is the package `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import matmul_peak, ratio, run_alone, time_it  # noqa: E402
from benchmarks.models import train_step_fn, training_flops  # noqa: E402
from modeling_vanilla.utils.arguments import positive_int  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a folder with train.{en,de} and val.{en,de} (e.g. Multi30k)")
    parser.add_argument("--source-lang", default="en")
    parser.add_argument("--target-lang", default="de")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "base", "big"])
    parser.add_argument("--max-tokens", type=positive_int, default=4096)
    parser.add_argument("--vocab-size", type=positive_int, default=8000)
    parser.add_argument("--steps", type=positive_int, default=60, help="updates; the first --log-every are warmup")
    parser.add_argument("--log-every", type=positive_int, default=10)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed isolated steps")
    parser.add_argument("--train-option", action="append", default=[], metavar="OPTION",
                        help="an extra vanilla-train option, e.g. --train-option=--compile (repeatable)")
    parser.add_argument("--tokenizer", help="a saved tokenizer folder (default: one is trained, as vanilla-train does)")
    parser.add_argument("--json", help="also write the results to this file")


def run(args: argparse.Namespace) -> dict:
    """The loop's target tokens/s over its updates after the first metric lines, the isolated step's, and the MFU of
    each (of the bf16 matrix-multiply peak measured now)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        summary, records = run_training_loop(args, out)
        isolated = isolated_steps(args, out, summary["precision"])
    timed = records[2:]  # the first lines include start-up (and compilation)
    seconds = sum(r["target_tokens"] / r["target_tokens_per_s"] for r in timed)
    loop_rate = sum(r["target_tokens"] for r in timed) / seconds if seconds else float("nan")
    result = {"loop_target_tokens_per_s": loop_rate, "isolated_target_tokens_per_s": isolated["tokens_per_s"],
              "isolated_mfu_bf16": isolated["mfu_bf16"], "loop_mfu_bf16": isolated["mfu_bf16"] * ratio(
                  loop_rate, isolated["tokens_per_s"]), "precision": summary["precision"],
              "updates_timed": sum(r["updates"] for r in timed), "train_options": args.train_option}
    print(f"\nvanilla-train loop, preset {args.preset}, --max-tokens {args.max_tokens}, {summary['precision']}, "
          f"{args.device}, options: {' '.join(args.train_option) or 'none'}")
    print("| measurement | target tokens/s | MFU (of bf16 peak) |\n| --- | ---: | ---: |")
    print(f"| training loop (updates {timed[0]['step'] if timed else '-'}-{records[-1]['step']}) | {loop_rate:.0f} "
          f"| {result['loop_mfu_bf16']:.1%} |")
    print(f"| isolated step, same model and batches | {isolated['tokens_per_s']:.0f} | {isolated['mfu_bf16']:.1%} |")
    print(f"loop / isolated step: {ratio(loop_rate, isolated['tokens_per_s']):.2f}x")
    return result


def run_training_loop(args: argparse.Namespace, out: Path) -> tuple[dict, list[dict]]:
    """vanilla-train as a user runs it; returns its summary and its metric lines, each with its updates."""
    from modeling_vanilla.training.loop import main as train
    from modeling_vanilla.training.options import parse_train_args

    data = Path(args.data)
    argv = ["--source-lang", args.source_lang, "--target-lang", args.target_lang, "--train-files", str(data / "train"),
            "--preset", args.preset, "--vocab-size", str(args.vocab_size), "--max-tokens", str(args.max_tokens),
            "--max-steps", str(args.steps), "--log-every", str(args.log_every), "--eval-every", "0",
            "--save-every-minutes", "0", "--output-dir", str(out), *(["--cpu"] if args.device == "cpu" else []),
            *(["--tokenizer", args.tokenizer] if args.tokenizer else []), *args.train_option]
    summary = train(parse_train_args(argv))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in lines if "target_tokens_per_s" in r]
    for previous, record in zip([None, *records], records):
        record["updates"] = record["step"] - (previous["step"] if previous else 0)
    return summary, records


def isolated_steps(args: argparse.Namespace, out: Path, precision: str, count: int = 20) -> dict:
    """Forward, backward and Adam of a fresh model of the run's config on the run's first `count` batches, already
    collated and on the device: the step with nothing around it."""
    import torch
    from transformers import AutoTokenizer

    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
    from modeling_vanilla.data.batching import TokenBatchSampler, TranslationCollator
    from modeling_vanilla.data.corpus import load_corpus
    from modeling_vanilla.data.preprocessing import preprocess_translation

    tokenizer = AutoTokenizer.from_pretrained(out)
    raw = load_corpus(args.source_lang, args.target_lang, train_files=[str(Path(args.data) / "train")])
    splits, _ = preprocess_translation(raw, tokenizer, args.source_lang, args.target_lang)
    sampler = TokenBatchSampler.from_dataset(splits["train"], args.max_tokens, seed=1)
    collator = TranslationCollator(pad_token_id=tokenizer.pad_token_id)
    batches = [{k: v.to(args.device) for k, v in collator(splits["train"].__getitems__(indices)).items()}
               for indices in itertools.islice(sampler, count)]
    config = VanillaTransformerConfig.from_pretrained(out)
    model = VanillaTransformerForConditionalGeneration(config).to(args.device)
    steps = [train_step_fn(model, batch, True, precision) for batch in batches]
    for step in steps[:3]:
        step()
    times = time_it(lambda: [step() for step in steps], 0, args.repeats, args.device)
    seconds = statistics.median(times)
    tokens = sum(int((b["labels"] != -100).sum()) for b in batches)
    flops = sum(training_flops(config, *b["input_ids"].shape, b["labels"].shape[1]) for b in batches)
    peak = matmul_peak(torch.bfloat16, args.device)
    return {"tokens_per_s": tokens / seconds, "mfu_bf16": flops / seconds / peak}


def main(argv=None) -> int:
    return run_alone(__file__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
