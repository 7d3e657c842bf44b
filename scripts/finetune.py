"""Fine-tune a trained model with Seq2SeqTrainer, from a checkout: the same command as the installed `vanilla-finetune` (see
modeling_vanilla/cli/finetune.py for examples and `vanilla-finetune --help` for the options)."""

from modeling_vanilla.cli.finetune import main

if __name__ == "__main__":
    raise SystemExit(main())
