"""Average the last checkpoints of a run (section 6.1), from a checkout: the same command as the installed `vanilla-average` (see
modeling_vanilla/cli/average_checkpoints.py for examples and `vanilla-average --help` for the options)."""

from modeling_vanilla.cli.average_checkpoints import main

if __name__ == "__main__":
    raise SystemExit(main())
