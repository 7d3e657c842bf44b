"""Train the joint BPE tokenizer (section 5.1), from a checkout: the same command as the installed
`vanilla-train-tokenizer` (see modeling_vanilla/cli/train_tokenizer.py for examples; `--help` for the options)."""

from modeling_vanilla.cli.train_tokenizer import main

if __name__ == "__main__":
    raise SystemExit(main())
