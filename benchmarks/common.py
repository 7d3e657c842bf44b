"""What every benchmark shares: the machine line, timing, memory measured in a fresh process, and the run itself
(the header naming the machine, the benchmark's table, --json). torch is imported in the functions that use it."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from queue import Empty

from modeling_vanilla.cli.benchmark import call_in_fresh_process, main


def run_benchmark(module, args: argparse.Namespace) -> int:
    """One benchmark: the line naming it and the machine, then its table; with --json, also a file holding the
    arguments, the machine and the results."""
    machine = machine_line(getattr(args, "device", "cpu"))
    print(f"vanilla-benchmark {args.benchmark} on {machine}")
    results = module.run(args)
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "results": results}, f, indent=2, default=str)
    return 0


def run_alone(path: str, argv: list[str] | None = None) -> int:
    """A benchmark module run as a file, `python benchmarks/speed.py ARGS`: `vanilla-benchmark speed ARGS`."""
    return main([Path(path).stem.replace("_", "-"), *(sys.argv[1:] if argv is None else argv)])


def machine_line(device: str = "cpu") -> str:
    """`describe_machine()`; where a GPU is present, which device the numbers are of, and the CPU's bf16 units."""
    import torch

    from modeling_vanilla.utils.hardware import cpu_bf16_units, describe_machine

    line = describe_machine()
    if torch.cuda.is_available():  # describe_machine names the GPU
        line += f"; measured on {device}; CPU: {torch.get_num_threads()} threads, bf16 units: {cpu_bf16_units()}"
    return line


def ratio(value: float, peer: float) -> float:
    """`value / peer`, both measured in this run; nan where the peer measured 0 (tiny settings)."""
    return value / peer if peer else float("nan")


# Time


def synchronize(device: str) -> None:
    """Wait for the device, so that a timer measures the work and not its launch."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_it(fn, warmup: int, repeats: int, device: str = "cpu") -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(dtype, device: str = "cpu", size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square matrix product in `dtype` on this device, now."""
    import torch

    size = size * 4 if device == "cuda" else size  # a GPU needs a larger product to reach its peak
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    times = time_it(lambda: a @ b, 3, repeats, device)
    return 2 * size**3 / statistics.median(times)


# Memory: each measurement in a fresh process


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the process's peak resident memory (Linux) and return the current one, in KiB. (ru_maxrss cannot be
    used: a process started by fork + exec inherits its parent's peak.)"""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_kib("VmRSS")


def peak_rss() -> int:
    """Peak resident memory since `reset_peak_rss`, in KiB."""
    return status_kib("VmHWM")


def peak_added_mib(step, device: str) -> float:
    """MiB that one call of `step` adds at its peak: resident memory on the CPU, allocated memory on a GPU."""
    import torch

    if device == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated() - baseline) / 2**20
    baseline_kib = reset_peak_rss()
    step()
    return (peak_rss() - baseline_kib) / 1024


def run_isolated(target, *args) -> dict:
    """`target(*args, queue)` in a fresh process, and the result it puts in the queue. The fresh process imports
    `target` from this benchmarks/ folder by its path (`vanilla-benchmark` does not put the folder on sys.path)."""
    folder = str(Path(__file__).resolve().parent)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    module = target.__module__.rpartition(".")[2]
    process = context.Process(target=call_in_fresh_process, args=(folder, module, target.__name__, args, queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not process.is_alive():
                raise RuntimeError(f"{target.__name__} ended (exit status {process.exitcode}) without a result; "
                                   "its error is printed above") from None
    process.join()
    return result
