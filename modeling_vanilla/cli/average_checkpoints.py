"""`vanilla-average`: average the weights of the last checkpoints of a run into a model folder (section 6.1 of the
paper: "averaging the last 5 checkpoints, which were written at 10-minute intervals" for the base models, 20 for big).

    vanilla-average runs/base --last 5 --output runs/base-avg5
    vanilla-average runs/base/checkpoints/step-0090000 runs/base/checkpoints/step-0100000 \
        --config runs/base --output runs/base-avg2

The output folder holds config, weights (safetensors), generation config, tokenizer and the model code, like
vanilla-train's own output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..utils.arguments import positive_int


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-average", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="a run folder (with --last), or checkpoint folders")
    parser.add_argument("--last", type=positive_int,
                        help="average the last N (>= 1) complete checkpoints of the run folder")
    parser.add_argument("--config", help="folder with config.json and the tokenizer (default: the run folder)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    from ..inference.model_folder import check_model_folder  # torch: after the arguments, so --help stays quick
    from ..training.checkpoints import CheckpointManager

    if args.last is not None:
        if len(args.inputs) != 1:
            parser.error("--last takes one run folder")
        run = Path(args.inputs[0])
        complete = CheckpointManager(run / "checkpoints", log=lambda m: print(m, file=sys.stderr)).complete()
        if len(complete) < args.last:
            parser.error(f"{run / 'checkpoints'} holds {len(complete)} complete checkpoints, fewer than --last {args.last}")
        args.folders, args.source = complete[-args.last :], Path(args.config or run)
    else:
        args.folders = [Path(p) for p in args.inputs]
        args.source = Path(args.config or args.folders[0].parent.parent)
    try:
        check_model_folder(args.source, need_tokenizer=False)
    except FileNotFoundError as error:
        parser.error(f"{error} Pass --config with the run's output folder.")
    output = Path(args.output)
    if output.exists() and any(output.iterdir()):
        parser.error(f"{output} is not empty: choose a new --output folder")
    return args


def run(argv=None) -> Path:
    """Average; returns the output folder."""
    args = parse_args(argv)
    from transformers import AutoConfig, AutoTokenizer

    from .. import VanillaTransformerForConditionalGeneration
    from ..training.averaging import average_checkpoints, load_averaged_weights

    model = VanillaTransformerForConditionalGeneration(AutoConfig.from_pretrained(args.source))
    load_averaged_weights(model, average_checkpoints(args.folders))
    model.save_pretrained(args.output)
    if (args.source / "tokenizer.json").is_file():
        AutoTokenizer.from_pretrained(args.source).save_pretrained(args.output)
    print(f"averaged {len(args.folders)} checkpoints ({', '.join(f.name for f in args.folders)}) into {args.output}")
    return Path(args.output)


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
