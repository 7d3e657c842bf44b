"""`vanilla-explain`: walk one sentence through one layer of a trained Transformer, printing each step of
section 3.2 with the real numbers and shapes, recomputed from the layer's weights, then compare with the model's
own forward.

Examples:

    # encoder layer 0, head 0: embeddings (3.4) + positional encodings (3.5), q/k/v, Q K^T, 1/sqrt(d_k),
    # softmax, z, Concat(...) W^O, residual + LayerNorm, FFN (Eq. 2), residual + LayerNorm
    vanilla-explain MODEL_DIR "The cat sat on the mat." --layer 0 --head 0

    # decoder layer 2, head 5: masked self-attention and encoder-decoder attention (section 3.2.3);
    # the target is the model's own translation unless --target is given
    vanilla-explain MODEL_DIR "The cat sat on the mat." --decoder --layer 2 --head 5 \\
        --target "Die Katze saß auf der Matte."

From a checkout, `python scripts/explain.py ...` is the same command. MODEL_DIR is a folder holding the model and
its tokenizer (both saved with save_pretrained), or a Hub repo id. Post-norm (the paper) and pre-norm
(layer_norm="pre") models are both walked. The last lines give the largest absolute difference between the walk
and the forward; the exit status is 2 if it exceeds --tolerance. The walk is `modeling_vanilla.insight.explain`.
"""

from __future__ import annotations

import argparse
import sys

from ..utils.arguments import non_negative_float, positive_int


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder (model and tokenizer, saved with save_pretrained) or Hub repo id")
    parser.add_argument("sentence", help="source sentence")
    parser.add_argument("--layer", type=int, default=0, help="layer index (default: 0)")
    parser.add_argument("--head", type=int, default=0, help="head whose steps are printed (default: 0)")
    parser.add_argument("--decoder", action="store_true", help="walk a decoder layer instead of an encoder layer")
    parser.add_argument("--target", help="target sentence for --decoder (default: the model's own translation)")
    parser.add_argument("--max-items", type=positive_int, default=8,
                        help="rows and columns printed per matrix (default: 8)")
    parser.add_argument("--tolerance", type=non_negative_float, default=1e-4,
                        help="largest accepted difference from the forward (default: 1e-4)")
    args = parser.parse_args(argv)
    if args.target is not None and not args.decoder:
        parser.error("--target is only used with --decoder")
    return args


def main(argv=None) -> int:
    """Returns the exit status: 0, 1 for bad input (printed on stderr), 2 when the walk and the forward differ."""
    args = parse_args(argv)
    import torch  # after parsing: --help and a bad option need neither torch nor transformers
    from transformers.utils import logging as hf_logging

    from ..inference.model_folder import load_model_and_tokenizer
    from ..insight.explain import explain_decoder_layer, explain_encoder_layer

    hf_logging.disable_progress_bar()  # no "Loading weights" bar above the output
    try:
        # float32 whatever the saved dtype, so that the walk matches the forward to float32 rounding.
        model, tokenizer = load_model_and_tokenizer(args.model, dtype=torch.float32, vanilla_only=True)
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
    sys.exit(main())
