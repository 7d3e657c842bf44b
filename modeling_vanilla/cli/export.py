"""`vanilla-export`: a model of ours as a native MarianMTModel folder (loads in transformers without remote code,
same logits and translations), or as a CTranslate2 folder for serving (float32 or quantized weights); or a
MarianMTModel folder as ours (for fine-tuning and the attention tools).

    vanilla-export --to marian runs/multi30k runs/multi30k-marian
    vanilla-export --to ctranslate2 runs/multi30k runs/multi30k-ct2-int8 --quantization int8
    vanilla-export --from marian opus-mt-folder runs/from-marian

Options without an exact equivalent on the other side (pre-norm, d_k != d_model / h, learned positions, untied
embeddings; Marian's non-ReLU activations, attention biases; d_k or d_v != d_model / h for CTranslate2) are
refused by name. modeling_vanilla/publish/export.py and modeling_vanilla/publish/serving.py say how. CTranslate2
needs the `serve` extra: pip install "vanilla-transformer[serve]".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..publish.ctranslate2_types import QUANTIZATIONS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=["marian", "ctranslate2"], help="write ours as this format")
    direction.add_argument("--from", dest="from_format", choices=["marian"], help="read this format as ours")
    parser.add_argument("source", type=Path, help="the model folder to convert")
    parser.add_argument("destination", type=Path, help="a new or empty folder")
    parser.add_argument("--quantization", choices=QUANTIZATIONS,
                        help="with --to ctranslate2: store the weights as this type (default: float32)")
    args = parser.parse_args(argv)
    if args.quantization and args.to != "ctranslate2":
        parser.error("--quantization applies to --to ctranslate2 only")
    if not (args.source / "config.json").is_file():
        parser.error(f"{args.source} holds no config.json: pass a saved model folder")
    if args.destination.exists() and any(args.destination.iterdir()):
        parser.error(f"{args.destination} is not empty: choose a new folder")
    if args.destination.resolve() == args.source.resolve():
        parser.error("the destination is the source folder")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from ..publish.export import export_folder  # after parsing: --help needs neither torch nor transformers
    from ..publish.serving import export_folder as ctranslate2_folder

    direction = f"to-{args.to}" if args.to else "from-marian"
    try:
        if direction == "to-ctranslate2":
            out = ctranslate2_folder(args.source, args.destination, args.quantization)
        else:
            out = export_folder(args.source, args.destination, direction)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as error:  # ExportError is a ValueError
        print(f"vanilla-export: error: {error}", file=sys.stderr)
        return 2
    written = {"to-marian": "MarianMTModel", "to-ctranslate2": f"CTranslate2, {args.quantization or 'float32'}",
               "from-marian": "VanillaTransformerForConditionalGeneration"}[direction]
    print(f"wrote {out} ({written})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
