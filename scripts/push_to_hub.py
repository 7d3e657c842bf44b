"""Publish a trained model folder to the Hugging Face Hub, from a checkout: the same command as the installed `vanilla-push` (see
modeling_vanilla/cli/push_to_hub.py for examples and `vanilla-push --help` for the options)."""

from modeling_vanilla.cli.push_to_hub import main

if __name__ == "__main__":
    raise SystemExit(main())
