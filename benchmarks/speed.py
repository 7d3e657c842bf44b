"""Ours against MarianMTModel configured to the same architecture, in one process: per shape, training target
tokens/s (fp32, bf16, and compiled with --compile), peak memory of a training step (each in a fresh process), MFU,
generation tokens/s (beam 4 and greedy), each with its ratio ours / MarianMT.

    vanilla-benchmark speed --shapes base small --json benchmark.json
    vanilla-benchmark speed --shapes base --device cuda --batch-size 512 --length 64 --compile
    vanilla-benchmark speed --shapes tiny --warmup 0 --repeats 1  # does it run? (seconds, no meaning)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/speed.py): this folder is the package `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    matmul_peak,
    peak_added_mib,
    ratio,
    run_alone,
    run_isolated,
    synchronize,
    time_it,
)
from benchmarks.models import adam, generate_fn, marian_like, train_step_fn, training_flops  # noqa: E402
from modeling_vanilla.utils.arguments import non_negative_int, positive_int  # noqa: E402

SHAPES = {
    # name: (config preset, vocabulary, training batch (sentences x tokens per side))
    "base": ("base", 37000, 64, 32),
    "small": ("small", 8000, 128, 16),
    "tiny": ("tiny", 99, 8, 8),  # a check that the benchmark runs, in seconds; not a measurement
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["base", "small"])
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs before the timed ones")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs (the median is shown)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=positive_int, help="training sentences (default: the shape's)")
    parser.add_argument("--length", type=positive_int, help="tokens per side (default: the shape's)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of both training steps")
    parser.add_argument("--skip-generation", action="store_true", help="training only")


def run(args: argparse.Namespace) -> dict:
    """Per shape: training and generation speed, memory and MFU of ours and MarianMT, with ratios of the two."""
    import torch

    torch.manual_seed(0)
    peaks = {"bf16": matmul_peak(torch.bfloat16, args.device), "fp32": matmul_peak(torch.float32, args.device)}
    print(f"matmul peak now: bf16 {peaks['bf16'] / 1e12:.2f} TFLOP/s, fp32 {peaks['fp32'] / 1e12:.2f} TFLOP/s "
          f"(bf16 / fp32: {ratio(peaks['bf16'], peaks['fp32']):.2f}x)")
    results = {"matmul_peak_flops": peaks, "shapes": {}}
    for shape in args.shapes:
        results["shapes"][shape] = speed_of_shape(shape, peaks, args)
    return results


def speed_of_shape(shape: str, peaks: dict, args: argparse.Namespace) -> dict:
    """Both models built from one config, measured on the same random batch, then the table."""
    import torch

    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    preset, vocab, batch_size, length = SHAPES[shape]
    batch_size, length = args.batch_size or batch_size, args.length or length
    config = getattr(VanillaTransformerConfig, preset)(vocab_size=vocab)
    torch.manual_seed(0)
    models = {"ours": VanillaTransformerForConditionalGeneration(config).to(args.device),
              "marian": marian_like(config).to(args.device)}
    input_ids = torch.randint(4, vocab, (batch_size, length), device=args.device)
    labels = torch.randint(4, vocab, (batch_size, length), device=args.device)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    flops = training_flops(config, batch_size, length, length)
    rows = measure_training((preset, vocab, batch_size, length), models, batch, flops, peaks, args)
    if not args.skip_generation:
        rows.update(measure_generation(shape, models, batch, length, args))
        rows["bf16_generation_token_agreement"] = bf16_token_agreement(models["ours"], batch, length)
    print_speed_table(shape, rows)
    return {"batch": [batch_size, length], "train_flops_per_step": flops, "rows": rows}


def measure_training(shape: tuple, models: dict, batch: dict, flops: float, peaks: dict, args) -> dict:
    """Target tokens/s, step time, peak memory (fresh process) and MFU of a training step, per model and precision;
    with --compile, also of the compiled step (bf16), with its compilation time."""
    import torch

    batch_size, length = batch["labels"].shape
    rows = {}
    settings = [(name, precision, False) for name in models for precision in ("fp32", "bf16")]
    settings += [(name, "bf16", True) for name in models] if args.compile else []
    for name, precision, compiled in settings:
        model = models[name]
        label = f"train {name} {precision}" + (" compiled" if compiled else "")
        if compiled:
            torch._dynamo.reset()
            model = torch.compile(model)
        step = train_step_fn(model, batch, name == "ours", precision)
        start = time.perf_counter()
        step()  # the first step compiles
        synchronize(args.device)
        first = time.perf_counter() - start
        seconds = statistics.median(time_it(step, args.warmup, args.repeats, args.device))
        rows[label] = {
            "target_tokens_per_s": batch_size * length / seconds, "seconds": seconds,
            "first_step_seconds": first,
            "mfu_bf16": flops / seconds / peaks["bf16"], "mfu_fp32": flops / seconds / peaks["fp32"],
        }
        if not compiled:  # memory in a fresh process each: in this one, the allocator keeps what earlier runs freed
            rows[label]["peak_mib"] = run_isolated(_measure_peer_training_memory, shape, name == "ours", precision,
                                                   args.device)
        print(f"{label}: {batch_size * length / seconds:.0f} target tokens/s" +
              (f" (first step, with compilation: {first:.0f} s)" if compiled else ""))
    return rows


def _measure_peer_training_memory(shape: tuple, ours: bool, precision: str, device: str, queue) -> None:
    """In a fresh process: peak memory that one training step adds (weights, gradients and Adam's state excluded):
    resident memory on the CPU, allocated memory on a GPU."""
    import torch

    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    preset, vocab, batch_size, length = shape
    config = getattr(VanillaTransformerConfig, preset)(vocab_size=vocab)
    model = (VanillaTransformerForConditionalGeneration(config) if ours else marian_like(config)).to(device)

    def batch(size):
        ids = torch.randint(4, vocab, (size, length), device=device)
        labels = torch.randint(4, vocab, (size, length), device=device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    optimizer = adam(model)
    train_step_fn(model, batch(2), ours, precision, optimizer)()  # gradients and Adam's state exist from here on
    step = train_step_fn(model, batch(batch_size), ours, precision, optimizer)
    queue.put(peak_added_mib(step, device))


def measure_generation(shape: str, models: dict, batch: dict, length: int, args) -> dict:
    """Generated tokens/s with beam 4 (batch 16) and greedy (batch 64), per model and precision."""
    source = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    rows = {}
    for beams, gen_batch in ((4, 16), (1, 64)):
        gen_inputs = {k: v[:gen_batch] for k, v in source.items()}
        gen_batch = len(gen_inputs["input_ids"])  # the tiny shape has fewer sentences
        for name, model in models.items():
            for precision in ("fp32", "bf16"):
                run = generate_fn(model, gen_inputs, beams, length, precision)
                seconds = statistics.median(time_it(run, 1, max(2, args.repeats // 2), args.device))
                rows[f"generate beam{beams} {name} {precision}"] = {
                    "tokens_per_s": gen_batch * length / seconds, "seconds": seconds}
                print(f"{shape} generate beam {beams} {name} {precision}: {gen_batch * length / seconds:.0f} tokens/s")
    return rows


def bf16_token_agreement(model, batch: dict, length: int) -> float:
    """Share of beam-4 tokens of our bf16 path equal to our fp32 path's, on the first 16 sentences."""
    import torch

    source = {k: batch[k][:16] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        ref = generate_fn(model, source, 4, length, "fp32")()
        fast = generate_fn(model, source, 4, length, "bf16")()
    return (ref == fast).float().mean().item()


def print_speed_table(shape: str, rows: dict) -> None:
    """Ours against MarianMT, each row measured in this run, with the ratio of the two."""
    print(f"\n{shape}:\n| measurement | ours | MarianMT | ours / MarianMT |\n| --- | ---: | ---: | ---: |")
    kinds = [("train", p) for p in ("fp32", "bf16")]
    kinds += [("train", "bf16 compiled")] * ("train ours bf16 compiled" in rows)
    kinds += [(k, p) for k in ("generate beam4", "generate beam1") for p in ("fp32", "bf16")
              if f"{k} ours {p}" in rows]
    for kind, precision in kinds:
        key = "target_tokens_per_s" if kind == "train" else "tokens_per_s"
        o, m = rows[f"{kind} ours {precision}"][key], rows[f"{kind} marian {precision}"][key]
        print(f"| {kind} {precision} tokens/s | {o:.0f} | {m:.0f} | {ratio(o, m):.2f}x |")
    for precision in ("fp32", "bf16"):
        o, m = rows[f"train ours {precision}"], rows[f"train marian {precision}"]
        print(f"| train {precision} peak MiB | {o['peak_mib']:.0f} | {m['peak_mib']:.0f} "
              f"| {ratio(o['peak_mib'], m['peak_mib']):.2f}x |")
        print(f"| train {precision} MFU (of bf16 peak) | {o['mfu_bf16']:.1%} | {m['mfu_bf16']:.1%} "
              f"| {ratio(o['mfu_bf16'], m['mfu_bf16']):.2f}x |")
    train = {k: v["target_tokens_per_s"] for k, v in rows.items() if k.startswith("train ")}
    best = {name: max(v for k, v in train.items() if k.split()[1] == name) for name in ("ours", "marian")}
    eager_marian = max(train[f"train marian {p}"] for p in ("fp32", "bf16"))
    line = (f"ours best / MarianMT best: {ratio(best['ours'], best['marian']):.2f}x; ours best / MarianMT best eager: "
            f"{ratio(best['ours'], eager_marian):.2f}x; ours bf16 / MarianMT fp32: "
            f"{ratio(train['train ours bf16'], train['train marian fp32']):.2f}x")
    if "bf16_generation_token_agreement" in rows:
        line += f"; bf16 beam-4 tokens equal to fp32: {rows['bf16_generation_token_agreement']:.1%}"
    print(line)


def main(argv=None) -> int:
    return run_alone(__file__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
