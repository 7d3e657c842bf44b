"""`vanilla-visualize`: attention heatmaps for one sentence pair: encoder self-attention, decoder masked
self-attention and encoder-decoder attention (section 3.2.3), per layer and head, like the paper's Figures 3-5.

Examples:

    # every layer: a grid of all heads for each of the three attentions, and bertviz's HTML views
    vanilla-visualize MODEL_DIR "The cat sat on the mat." --out-dir attention

    # a given target instead of the model's own translation; layer 5, head 3 alone as well
    vanilla-visualize MODEL_DIR "The cat sat on the mat." \\
        --target "Die Katze saß auf der Matte." --layer 5 --head 3

    # pad the source to 16 tokens: the padded keys get attention weight 0
    vanilla-visualize MODEL_DIR "The cat sat." --pad-to 16

From a checkout, `python scripts/visualize_attention.py ...` is the same command. MODEL_DIR is a folder holding
the model and its tokenizer (both saved with save_pretrained), or a Hub repo id. Writes
{encoder,decoder,cross}_layer{l}.png, with --head also {kind}_layer{l}_head{h}.png, and, when bertviz is installed
(`pip install bertviz`, optional), head_view.html and model_view.html. Runs on CPU in seconds. The plots are
`modeling_vanilla.insight.attention_maps`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..utils.arguments import positive_int


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-visualize", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder (model and tokenizer, saved with save_pretrained) or Hub repo id")
    parser.add_argument("sentence", help="source sentence")
    parser.add_argument("--target", help="target sentence (default: the model's own translation, beam search)")
    parser.add_argument("--out-dir", type=Path, default=Path("attention"),
                        help="folder for the files (default: attention)")
    parser.add_argument("--layer", type=int, nargs="+", help="layer indices to plot (default: all)")
    parser.add_argument("--head", type=int, help="also plot this head alone, with its weights written in the cells")
    parser.add_argument("--pad-to", type=positive_int, help="right-pad the source with <pad> to this many tokens")
    parser.add_argument("--no-html", action="store_true", help="skip bertviz's HTML views")
    parser.add_argument("--dpi", type=positive_int, default=100, help="resolution of the PNG files (default: 100)")
    return parser.parse_args(argv)


def check_indices(config, layers: list[int] | None, head: int | None) -> None:
    """Check the layer and head indices against the config, before translating (the slow part on a large model)."""
    from ..insight.attention_maps import check_index

    for stack, count in (("the encoder", config.num_encoder_layers), ("the decoder", config.num_decoder_layers)):
        for layer in layers or []:
            check_index(layer, count, "layer", stack)
    if head is not None:
        check_index(head, config.num_heads, "head", "each attention layer")


def main(argv=None) -> int:
    """Returns the exit status: 0, or 1 for bad input (printed on stderr)."""
    args = parse_args(argv)
    import torch  # after parsing: --help and a bad option need neither torch nor transformers
    from transformers.utils import logging as hf_logging

    from ..inference.model_folder import load_model_and_tokenizer
    from ..insight.attention_maps import encode_pair, extract_attention, save_attention_plots, write_bertviz_html

    hf_logging.disable_progress_bar()  # no "Loading weights" bar above the output
    try:
        model, tokenizer = load_model_and_tokenizer(args.model, dtype=torch.float32, vanilla_only=True)
        check_indices(model.config, args.layer, args.head)
        pair = encode_pair(model, tokenizer, args.sentence, args.target, pad_source_to=args.pad_to)
        maps = extract_attention(model, pair)
        written = save_attention_plots(maps, args.out_dir, layers=args.layer, head=args.head, dpi=args.dpi)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"source ({len(pair.source_tokens)} tokens): {' '.join(pair.source_tokens)}")
    print(f"decoder input ({len(pair.target_tokens)} tokens, target shifted right): {' '.join(pair.target_tokens)}")
    if not args.no_html:
        try:
            written += write_bertviz_html(maps, args.out_dir)
        except ImportError as error:
            print(f"skipping the HTML view: {error}")
    print(f"wrote {len(written)} files to {args.out_dir}:")
    for path in written:
        print(f"  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
