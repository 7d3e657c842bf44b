"""`vanilla-export`: a model of ours as a native MarianMTModel folder (loads in transformers without remote code,
same logits and translations), or a MarianMTModel folder as ours (for fine-tuning and the attention tools).

    vanilla-export --to marian runs/multi30k runs/multi30k-marian
    vanilla-export --from marian opus-mt-folder runs/from-marian

Options without an exact equivalent on the other side (pre-norm, d_k != d_model / h, learned positions, untied
embeddings; Marian's non-ReLU activations, attention biases) are refused by name. modeling_vanilla/export.py says how.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..export import ExportError, export_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=["marian"], help="write ours as this format")
    direction.add_argument("--from", dest="from_format", choices=["marian"], help="read this format as ours")
    parser.add_argument("source", type=Path, help="the model folder to convert")
    parser.add_argument("destination", type=Path, help="a new or empty folder")
    args = parser.parse_args(argv)
    if not (args.source / "config.json").is_file():
        parser.error(f"{args.source} holds no config.json: pass a saved model folder")
    if args.destination.exists() and any(args.destination.iterdir()):
        parser.error(f"{args.destination} is not empty: choose a new folder")
    if args.destination.resolve() == args.source.resolve():
        parser.error("the destination is the source folder")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    direction = "to-marian" if args.to else "from-marian"
    try:
        out = export_folder(args.source, args.destination, direction)
    except ExportError as error:
        print(f"vanilla-export: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({'MarianMTModel' if args.to else 'VanillaTransformerForConditionalGeneration'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
