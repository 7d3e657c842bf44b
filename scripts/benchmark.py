"""Benchmarks that print a table. Ratios between settings measured in the same run are what to compare:
the machine is shared and noisy, absolute numbers are not.

    # Peak training memory with and without activation (gradient) checkpointing, base shape:
    python scripts/benchmark.py checkpointing --preset base --batch-size 64 --length 32
"""

import argparse
import json
import multiprocessing
import resource
import time


def _measure_training_step(preset: str, batch_size: int, length: int, checkpointing: bool, queue) -> None:
    """In a fresh process: peak resident memory added by one forward + backward step, and its time."""
    import torch

    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    torch.manual_seed(0)
    config = getattr(VanillaTransformerConfig, preset)()
    model = VanillaTransformerForConditionalGeneration(config).train()
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})

    def step(size: int) -> float:
        input_ids = torch.randint(4, config.vocab_size, (size, length))
        labels = torch.randint(4, config.vocab_size, (size, length))
        start = time.perf_counter()
        model(input_ids=input_ids, labels=labels).loss.backward()
        return time.perf_counter() - start

    step(1)  # allocates the gradients, so that the baseline holds weights + gradients
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = step(batch_size)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"activation_mib": (peak_kib - baseline_kib) / 1024, "peak_mib": peak_kib / 1024, "seconds": seconds})


def run_isolated(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def checkpointing(args: argparse.Namespace) -> dict:
    results = {
        name: run_isolated(_measure_training_step, args.preset, args.batch_size, args.length, enabled)
        for name, enabled in (("plain", False), ("checkpointing", True))
    }
    print(f"\nTraining step, preset {args.preset}, batch {args.batch_size} x {args.length} tokens, fp32, CPU")
    print(f"| {'setting':<14} | {'activation peak MiB':>19} | {'process peak MiB':>16} | {'step s':>7} |")
    print(f"|{'-' * 16}|{'-' * 21}|{'-' * 18}|{'-' * 9}|")
    for name, r in results.items():
        print(f"| {name:<14} | {r['activation_mib']:>19.0f} | {r['peak_mib']:>16.0f} | {r['seconds']:>7.2f} |")
    plain, ckpt = results["plain"], results["checkpointing"]
    ratio = ckpt["activation_mib"] / plain["activation_mib"]
    print(f"\ncheckpointing / plain: activation memory x{ratio:.2f}, step time x{ckpt['seconds'] / plain['seconds']:.2f}")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    ckpt = sub.add_parser("checkpointing", help="peak training memory with and without activation checkpointing")
    ckpt.add_argument("--preset", default="base", choices=["tiny", "base", "big"])
    ckpt.add_argument("--batch-size", type=int, default=64)
    ckpt.add_argument("--length", type=int, default=32, help="source and target tokens per sentence")
    ckpt.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = {"checkpointing": checkpointing}[args.benchmark](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
