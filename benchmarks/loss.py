"""The label-smoothed loss with and without the (N, V) logits: forward + backward from the decoder output through the
projection onto the vocabulary, as the plain cross-entropy of the logits (what `output_logits=True` computes, and
MarianMT always) and as `projected_cross_entropy` (our training path); time and peak memory, each in a fresh process.

    vanilla-benchmark loss --tokens 2048  # also --tokens 8192, --precision fp32
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/loss.py): this folder is the package `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import peak_added_mib, ratio, run_alone, run_isolated, time_it  # noqa: E402
from modeling_vanilla.utils.arguments import positive_int  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocab", type=positive_int, default=37000)
    parser.add_argument("--d-model", type=positive_int, default=512)
    parser.add_argument("--tokens", type=positive_int, default=8192, help="target positions (N)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--json", help="also write the results to this file")


def run(args: argparse.Namespace) -> dict:
    results = {path: run_isolated(_measure_loss, path, args) for path in ("plain", "projected")}
    plain, projected = results["plain"], results["projected"]
    print(f"\nLabel-smoothed loss and its gradients, N={args.tokens} positions, d_model {args.d_model}, "
          f"V={args.vocab}, {args.precision}, {args.device}")
    print("| path | forward + backward s | peak MiB added |\n| --- | ---: | ---: |")
    for path, r in results.items():
        print(f"| {path} | {r['seconds']:.3f} | {r['peak_mib']:.0f} |")
    print(f"projected / plain: time x{ratio(projected['seconds'], plain['seconds']):.2f}, peak memory "
          f"x{ratio(projected['peak_mib'], plain['peak_mib']):.2f}")
    return results


def _measure_loss(path: str, args: argparse.Namespace, queue) -> None:
    """In a fresh process: the seconds of forward + backward of the label-smoothed loss from the decoder output
    (N, d_model) through the projection onto V words, and the peak memory that it adds."""
    import torch

    from modeling_vanilla.modeling_vanilla import projected_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(args.tokens, args.d_model, device=args.device, requires_grad=True)
    weight = (torch.randn(args.vocab, args.d_model, device=args.device) * args.d_model**-0.5).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.tokens,), device=args.device)

    def step():
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            if path == "plain":  # what the model computes with output_logits=True, and MarianMT always
                logits = torch.nn.functional.linear(hidden, weight)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels, label_smoothing=0.1, reduction="sum")
            else:
                loss = projected_cross_entropy(hidden, weight, labels, 0.1)
        loss.backward()
        hidden.grad = weight.grad = None

    step()
    seconds = statistics.median(time_it(step, 1, args.repeats, args.device))
    queue.put({"seconds": seconds, "peak_mib": peak_added_mib(step, args.device)})


def main(argv=None) -> int:
    return run_alone(__file__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
