"""Peak training memory with and without activation (gradient) checkpointing: one forward + backward step of a
preset's model, plain and checkpointed, each in a fresh process, with the step's time.

    vanilla-benchmark checkpointing --preset base --batch-size 64 --length 32
    vanilla-benchmark checkpointing --preset tiny --batch-size 2 --length 4  # does it run? (seconds, no meaning)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/checkpointing.py): this folder is the package `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import peak_rss, ratio, reset_peak_rss, run_alone, run_isolated  # noqa: E402
from modeling_vanilla.utils.arguments import positive_int  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="base", choices=["tiny", "small", "base", "big"])
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--length", type=positive_int, default=32, help="source and target tokens per sentence")
    parser.add_argument("--json", help="also write the results to this file")


def run(args: argparse.Namespace) -> dict:
    """Activation memory and step time of one training step, plain and with checkpointing, each in a fresh process."""
    results = {
        name: run_isolated(_measure_training_step, args.preset, args.batch_size, args.length, enabled)
        for name, enabled in (("plain", False), ("checkpointing", True))
    }
    plain = results["plain"]
    print(f"\nTraining step, preset {args.preset}, batch {args.batch_size} x {args.length} tokens, fp32")
    print(f"| {'setting':<14} | {'activation peak MiB':>19} | {'x plain':>7} | {'process peak MiB':>16} "
          f"| {'step s':>7} | {'x plain':>7} |")
    print(f"|{'-' * 16}|{'-' * 21}|{'-' * 9}|{'-' * 18}|{'-' * 9}|{'-' * 9}|")
    for name, r in results.items():
        memory, step = ratio(r["activation_mib"], plain["activation_mib"]), ratio(r["seconds"], plain["seconds"])
        print(f"| {name:<14} | {r['activation_mib']:>19.0f} | {memory:>7.2f} | {r['peak_mib']:>16.0f} "
              f"| {r['seconds']:>7.2f} | {step:>7.2f} |")
    ckpt = results["checkpointing"]
    memory, step = ratio(ckpt["activation_mib"], plain["activation_mib"]), ratio(ckpt["seconds"], plain["seconds"])
    print(f"\ncheckpointing / plain: activation memory x{memory:.2f}, step time x{step:.2f}")
    return results


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
    baseline_kib = reset_peak_rss()
    seconds = step(batch_size)
    peak_kib = peak_rss()
    queue.put({"activation_mib": (peak_kib - baseline_kib) / 1024, "peak_mib": peak_kib / 1024, "seconds": seconds})


def main(argv=None) -> int:
    return run_alone(__file__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
