"""Write the generated English-German toy corpus, from a checkout: the same command as the installed
`vanilla-toy-data` (see modeling_vanilla/cli/make_toy_data.py; `vanilla-toy-data --help` for the options)."""

from modeling_vanilla.cli.make_toy_data import main

if __name__ == "__main__":
    raise SystemExit(main())
