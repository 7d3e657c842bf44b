"""`vanilla-benchmark`: run one benchmark of the checkout's benchmarks/ folder; it prints a table. Ratios between
settings measured in the same run are what to compare: the machine is shared and noisy, absolute numbers are not.
Every run starts with a line naming the machine (`modeling_vanilla.utils.hardware.describe_machine`: the GPU, or the
CPU's threads and bf16 units, AMX, AVX512-BF16 or none). `--device cuda` measures a GPU with the same commands.

    # Ours against MarianMTModel configured to the same architecture, in one process (docs/benchmarks.md):
    vanilla-benchmark speed --shapes base small --json benchmark.json

    # The real training loop (vanilla-train on token batches of a corpus) beside the isolated step of its model:
    vanilla-benchmark loop --data ../shared/data/multi30k --preset small --steps 60

    # Peak training memory with and without activation (gradient) checkpointing, base shape:
    vanilla-benchmark checkpointing --preset base --batch-size 64 --length 32

    # Does it run? The smallest settings take seconds (the numbers mean nothing):
    vanilla-benchmark speed --shapes tiny --warmup 0 --repeats 1

Each benchmark is a module of benchmarks/, and `python benchmarks/speed.py --help` is `vanilla-benchmark speed
--help`. They are not part of the installed package: they run from a checkout (an editable install, pip install -e .).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

# benchmarks/ lies beside the package in a checkout; a wheel installs the package alone.
BENCHMARKS_FOLDER = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmarks(module: str | None = None, folder: Path | None = None):
    """The checkout's `benchmarks` package, or its module `module`, imported from `folder` (default: beside the
    package) without putting the folder on sys.path. A benchmark run as a file, or a test, has imported the package
    already: that one is used."""
    package = sys.modules.get("benchmarks")
    if package is None:
        folder = Path(folder or BENCHMARKS_FOLDER)
        init = folder / "__init__.py"
        if not init.is_file():
            raise FileNotFoundError(f"no benchmarks at {folder}: the benchmarks run from a checkout of "
                                    "vanilla-transformer (git clone it, then pip install -e . in it), not a wheel.")
        spec = importlib.util.spec_from_file_location("benchmarks", init, submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = package
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules["benchmarks"]
            raise
    elif not hasattr(package, "BENCHMARKS"):
        raise ImportError(f"the module named benchmarks imported in this process ({getattr(package, '__file__', '?')}) "
                          "is not vanilla-transformer's benchmarks/ folder")
    return importlib.import_module(f"benchmarks.{module}") if module else package


def build_parser(benchmarks) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command's parser, with one subcommand per benchmark (its module's `add_arguments`), and the subparsers."""
    parser = argparse.ArgumentParser(
        prog="vanilla-benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="benchmark", required=True)
    subparsers = {}
    for name, summary in benchmarks.BENCHMARKS.items():
        module = load_benchmarks(benchmarks.module_name(name))
        subparsers[name] = sub.add_parser(name, help=summary, description=module.__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(subparsers[name])
    return parser, subparsers


def main(argv=None) -> int:
    try:
        benchmarks = load_benchmarks()
    except (FileNotFoundError, ImportError) as error:
        raise SystemExit(f"vanilla-benchmark: error: {error}") from None
    parser, subparsers = build_parser(benchmarks)
    args = parser.parse_args(argv)
    module = load_benchmarks(benchmarks.module_name(args.benchmark))
    if hasattr(module, "check_args"):
        module.check_args(subparsers[args.benchmark], args)
    return load_benchmarks("common").run_benchmark(module, args)


def call_in_fresh_process(folder: str, module: str, function: str, args: tuple, queue) -> None:
    """What `benchmarks.common.run_isolated` starts in a fresh process: `function(*args, queue)` of the benchmark
    module `module`, imported from `folder` (this module is importable there; benchmarks/ need not be)."""
    getattr(load_benchmarks(module, Path(folder)), function)(*args, queue)


if __name__ == "__main__":
    raise SystemExit(main())
