"""Dropout's mask on the CPU: `apply_dropout` (16 random bits per element) against the mask it replaced (one
`torch.rand` number per element) and PyTorch's `nn.functional.dropout`, forward and backward on the recipe's shapes,
then whole bf16 training steps of the `--recipe multi30k` model with the two masks, alternating.

    python benchmarks/dropout_mask.py --rounds 3  # or: vanilla-benchmark dropout-mask --rounds 3

Prints the machine line (AMX or not) and ratios measured in the same run; the machine is shared, so read ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/dropout_mask.py): this folder is the package `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_alone, time_it  # noqa: E402
from modeling_vanilla.utils.arguments import positive_int  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="alternating rounds of the whole-step comparison")


def run(args: argparse.Namespace) -> None:
    print()
    mask_table()
    step_table(args.rounds)


def rand_mask_dropout(hidden_states, p, training):
    """The CPU mask before: one float32 uniform number per element, compared with p."""
    import torch

    if not training or p == 0.0:
        return hidden_states
    keep = torch.rand(hidden_states.shape, dtype=torch.float32) >= p
    return hidden_states * keep.to(hidden_states.dtype).div_(1.0 - p)


def median_ms(run, repeats: int, warmup: int = 3) -> float:
    return statistics.median(time_it(run, warmup, repeats)) * 1000


def mask_table(p: float = 0.1, repeats: int = 20) -> None:
    import torch
    from torch import nn

    from modeling_vanilla import modeling_vanilla

    kinds = {"nn.functional.dropout": lambda x: nn.functional.dropout(x, p, True),
             "torch.rand mask": lambda x: rand_mask_dropout(x, p, True),
             "apply_dropout": lambda x: modeling_vanilla.apply_dropout(x, p, True)}
    print(f"| shape, dtype (p={p}, forward + backward) | " + " | ".join(kinds) + " | rand / apply_dropout |")
    print("| --- |" + " ---: |" * (len(kinds) + 1))
    for shape in [(128, 17, 1024), (128, 17, 256), (128, 4, 17, 17)]:
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.rand(shape).to(dtype).requires_grad_()
            grad = torch.ones(shape, dtype=dtype)
            ms = {name: median_ms(lambda: fn(x).backward(grad), repeats) for name, fn in kinds.items()}
            cells = " | ".join(f"{v:.2f} ms" for v in ms.values())
            print(f"| {shape}, {str(dtype)[6:]} | {cells} | {ms['torch.rand mask'] / ms['apply_dropout']:.2f}x |")


def step_table(rounds: int, repeats: int = 10) -> None:
    import torch

    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, modeling_vanilla
    from modeling_vanilla.training.options import parse_overrides
    from modeling_vanilla.training.recipes import load_recipe

    torch.manual_seed(0)
    recipe = load_recipe("multi30k")
    vocab_size = recipe["vocab_size"]
    preset = getattr(VanillaTransformerConfig, recipe["preset"])
    config = preset(vocab_size=vocab_size, **parse_overrides(recipe.get("override", [])))
    model = VanillaTransformerForConditionalGeneration(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    source = torch.randint(4, vocab_size, (128, 16))
    labels = torch.randint(4, vocab_size, (128, 17))  # ~2,200 target tokens, Multi30k's lengths

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=source, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    ours = modeling_vanilla.apply_dropout
    results = {"torch.rand mask": [], "apply_dropout": []}
    try:
        for _ in range(rounds):
            for name, fn in (("torch.rand mask", rand_mask_dropout), ("apply_dropout", ours)):
                modeling_vanilla.apply_dropout = fn
                results[name].append(median_ms(step, repeats))
    finally:
        modeling_vanilla.apply_dropout = ours
    before, after = (statistics.median(v) for v in results.values())
    print("\n| bf16 training step, recipe multi30k model, 128 x 17 tokens | torch.rand mask | apply_dropout | ratio |")
    print("| --- | ---: | ---: | ---: |")
    cells = f"{before:.1f} ms | {after:.1f} ms | {before / after:.3f}x"
    print(f"| median of {rounds} rounds of {repeats} steps | {cells} |")


def main(argv=None) -> int:
    return run_alone(__file__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
