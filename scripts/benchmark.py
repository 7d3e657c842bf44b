"""Benchmarks (speed against MarianMT, activation checkpointing), from a checkout: the same command as the installed
`vanilla-benchmark` (see modeling_vanilla/cli/benchmark.py and docs/benchmarks.md; `--help` for the options)."""

from modeling_vanilla.cli.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
