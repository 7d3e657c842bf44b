"""The benchmarks of benchmarks/ (one module each: speed, loop, loss, serve, checkpointing, ...), from a checkout: the
same command as the installed `vanilla-benchmark` (docs/benchmarks.md; `--help` for the list and the options)."""

from modeling_vanilla.cli.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
