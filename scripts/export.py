"""Convert a model to or from MarianMTModel, from a checkout: the same command as the installed `vanilla-export` (see
modeling_vanilla/cli/export.py for examples and `vanilla-export --help` for the options)."""

from modeling_vanilla.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
