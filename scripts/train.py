"""Train with Accelerate from a checkout: the same command as the installed `vanilla-train` (see
modeling_vanilla/cli/train.py for examples), e.g. `accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...`.
"""

from modeling_vanilla.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
