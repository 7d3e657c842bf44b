"""Walk one sentence through one layer, step by step (section 3.2), from a checkout: the same command as the
installed `vanilla-explain` (see modeling_vanilla/cli/explain.py for examples and `vanilla-explain --help`)."""

from modeling_vanilla.cli.explain import main

if __name__ == "__main__":
    raise SystemExit(main())  # main returns the exit status
