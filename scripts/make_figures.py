"""Draw the docs' figures into docs/figures (run from the repository root), from a checkout: the same command as
the installed `vanilla-figures` (see modeling_vanilla/cli/make_figures.py and `vanilla-figures --help`)."""

from modeling_vanilla.cli.make_figures import main

if __name__ == "__main__":
    raise SystemExit(main())  # main returns the exit status
