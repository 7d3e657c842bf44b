"""Translate a file or standard input with a trained model, from a checkout: the same command as the installed `vanilla-translate` (see
modeling_vanilla/cli/translate.py for examples and `vanilla-translate --help` for the options)."""

from modeling_vanilla.cli.translate import main

if __name__ == "__main__":
    raise SystemExit(main())
