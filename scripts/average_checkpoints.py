"""Average the weights of the last checkpoints of a run into a model folder (section 6.1 of the paper:
"averaging the last 5 checkpoints, which were written at 10-minute intervals" for the base models, 20 for big).

    python scripts/average_checkpoints.py runs/base --last 5 --output runs/base-avg5
    python scripts/average_checkpoints.py runs/base/checkpoints/step-0090000 runs/base/checkpoints/step-0100000 \
        --config runs/base --output runs/base-avg2

The output folder holds config, weights (safetensors), generation config, tokenizer and the model code, like
the training script's own output.
"""

import argparse
import sys
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from modeling_vanilla import VanillaTransformerForConditionalGeneration
from modeling_vanilla.training import CheckpointManager, average_checkpoints, load_averaged_weights


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="a run folder (with --last), or checkpoint folders")
    parser.add_argument("--last", type=int, help="average the last N complete checkpoints of the run folder")
    parser.add_argument("--config", help="folder with config.json and the tokenizer (default: the run folder)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    if args.last is not None:
        if len(args.inputs) != 1:
            parser.error("--last takes one run folder")
        run = Path(args.inputs[0])
        complete = CheckpointManager(run / "checkpoints", log=lambda m: print(m, file=sys.stderr)).complete()
        if len(complete) < args.last:
            parser.error(f"{run / 'checkpoints'} holds {len(complete)} complete checkpoints, fewer than --last {args.last}")
        folders, source = complete[-args.last :], Path(args.config or run)
    else:
        folders = [Path(p) for p in args.inputs]
        source = Path(args.config or folders[0].parent.parent)
    if not (source / "config.json").is_file():
        parser.error(f"{source} has no config.json: pass --config with the run's output folder")
    output = Path(args.output)
    if output.exists() and any(output.iterdir()):
        parser.error(f"{output} is not empty: choose a new --output folder")

    config = AutoConfig.from_pretrained(source)
    model = VanillaTransformerForConditionalGeneration(config)
    load_averaged_weights(model, average_checkpoints(folders))
    model.save_pretrained(output)
    if (source / "tokenizer.json").is_file():
        AutoTokenizer.from_pretrained(source).save_pretrained(output)
    print(f"averaged {len(folders)} checkpoints ({', '.join(f.name for f in folders)}) into {output}")
    return output


if __name__ == "__main__":
    main()
