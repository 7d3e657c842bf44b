"""The benchmarks of vanilla-transformer: one module per benchmark, each printing a table whose first line names the
machine (the GPU, or the CPU's threads and bf16 units) and whose ratios are between settings measured in the same
run (the machine is shared and noisy: compare ratios, not absolute numbers). docs/benchmarks.md has the numbers.

Run one from a checkout, either way (the same parser, the same output):

    vanilla-benchmark speed --shapes tiny --warmup 0 --repeats 1
    python benchmarks/speed.py --shapes tiny --warmup 0 --repeats 1

A benchmark module has `add_arguments(parser)`, `run(args)` (prints the table and returns the results that `--json`
writes) and, where a check needs more than argparse, `check_args(parser, args)`. It imports torch, transformers and
the model inside the functions that measure, so that `vanilla-benchmark --help` lists every benchmark's options in
well under a second. Shared: common.py (the machine line, timing, memory in a fresh process, the run itself) and
models.py (MarianMT configured as ours, the training and generation steps both sides take).
"""

# Every benchmark: the module benchmarks/<name with _>.py, and what it measures (vanilla-benchmark --help).
BENCHMARKS = {
    "speed": "training and generation speed of ours and MarianMT, same architecture",
    "loop": "vanilla-train's loop on a corpus, beside the isolated step of its model",
    "loss": "the loss with and without the (N, V) logits: speed and peak memory",
    "serve": "translation speed of our generate() and of CTranslate2, same sentences",
    "checkpointing": "peak training memory with and without activation checkpointing",
    "dropout-mask": "dropout's CPU mask against torch.rand's and PyTorch's, alone and in whole training steps",
    "train-memory": "memory of a vanilla-train run on jemalloc, read from jemalloc itself, at each purge",
    "peer-curve": "a peer training script run unchanged, with snapshots scored into its learning curve",
}


def module_name(benchmark: str) -> str:
    """`dropout-mask` -> `dropout_mask`, the module's name in this folder."""
    return benchmark.replace("-", "_")
