"""Walk one sentence through one layer of a trained Transformer, printing each step of section 3.2 with the
real numbers and shapes, recomputed from the layer's weights, then compare with the model's own forward.

Examples, from the repository root:

    # encoder layer 0, head 0: embeddings (3.4) + positional encodings (3.5), q/k/v, Q K^T, 1/sqrt(d_k),
    # softmax, z, Concat(...) W^O, residual + LayerNorm, FFN (Eq. 2), residual + LayerNorm
    python scripts/explain.py MODEL_DIR "The cat sat on the mat." --layer 0 --head 0

    # decoder layer 2, head 5: masked self-attention and encoder-decoder attention (section 3.2.3);
    # the target is the model's own translation unless --target is given
    python scripts/explain.py MODEL_DIR "The cat sat on the mat." --decoder --layer 2 --head 5 \\
        --target "Die Katze saß auf der Matte."

MODEL_DIR is a folder holding the model and its tokenizer (both saved with save_pretrained), or a Hub repo id.
Post-norm (the paper) and pre-norm (layer_norm="pre") models are both walked. The last lines give the largest
absolute difference between the walk and the forward; the exit status is 2 if it exceeds --tolerance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_vanilla.visualization import (  # noqa: E402
    explain_decoder_layer,
    explain_encoder_layer,
    load_model_and_tokenizer,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder (model and tokenizer, saved with save_pretrained) or Hub repo id")
    parser.add_argument("sentence", help="source sentence")
    parser.add_argument("--layer", type=int, default=0, help="layer index (default: 0)")
    parser.add_argument("--head", type=int, default=0, help="head whose steps are printed (default: 0)")
    parser.add_argument("--decoder", action="store_true", help="walk a decoder layer instead of an encoder layer")
    parser.add_argument("--target", help="target sentence for --decoder (default: the model's own translation)")
    parser.add_argument("--max-items", type=int, default=8, help="rows and columns printed per matrix (default: 8)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest accepted difference from the forward (default: 1e-4)")
    args = parser.parse_args(argv)
    if args.target is not None and not args.decoder:
        parser.error("--target is only used with --decoder")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model, tokenizer = load_model_and_tokenizer(args.model)
        if args.decoder:
            walk = explain_decoder_layer(model, tokenizer, args.sentence, args.target, layer=args.layer,
                                         head=args.head, max_items=args.max_items)
        else:
            walk = explain_encoder_layer(model, tokenizer, args.sentence, layer=args.layer, head=args.head,
                                         max_items=args.max_items)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if walk.max_abs_diff > args.tolerance:
        print(f"the walk differs from the forward by {walk.max_abs_diff:.3e} > {args.tolerance:g}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from transformers.utils import logging

    logging.disable_progress_bar()  # no "Loading weights" bar above the output
    sys.exit(main())
