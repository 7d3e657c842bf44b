"""Attention heatmaps per layer and head for one sentence pair (Figures 3-5), from a checkout: the same command as
the installed `vanilla-visualize` (see modeling_vanilla/cli/visualize_attention.py for examples and
`vanilla-visualize --help`)."""

from modeling_vanilla.cli.visualize_attention import main

if __name__ == "__main__":
    raise SystemExit(main())  # main returns the exit status
