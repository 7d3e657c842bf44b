"""Train the Transformer of "Attention Is All You Need" with Accelerate (section 5 of the paper).

    # Quickstart: a tiny model on Multi30k EN->DE, on a CPU, in minutes
    python scripts/train.py --preset tiny --source-lang en --target-lang de \
        --train-files ../shared/data/multi30k/train --valid-files ../shared/data/multi30k/val \
        --vocab-size 8000 --max-tokens 4096 --max-minutes 10 --output-dir runs/multi30k-tiny

    # Two processes on a CPU (gloo): accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...
    # The paper's base model on WMT14 EN-DE, 8 GPUs: see README.md, "Train".

All options: python scripts/train.py --help. The logic lives in modeling_vanilla/trainer.py.
"""

from modeling_vanilla.trainer import main

if __name__ == "__main__":
    main()
