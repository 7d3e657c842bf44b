"""Attention maps, as in the paper's Figures 3-5: what each head of each layer attends to, for one sentence pair.

In reading order:

1. One sentence pair encoded as the model sees it, within the model's length limit (`length_limit`,
   `encode_pair`); the target is, by default, the model's own translation (`modeling_vanilla.inference.translation`).
2. The weights of the three uses of attention of section 3.2.3 (encoder self-attention, decoder masked
   self-attention, encoder-decoder attention), from one forward with output_attentions=True (`extract_attention`).
3. Heatmaps: all heads of one layer in a grid (`plot_attention_layer`), one head with its weights written in the
   cells (`plot_attention_head`), and PNG files for chosen layers (`save_attention_plots`).
4. bertviz's interactive `head_view` / `model_view` as HTML pages, when bertviz is installed (optional extra).

Loading a model folder is `modeling_vanilla.inference.model_folder.load_model_and_tokenizer`; the `vanilla-visualize`
command (`modeling_vanilla.cli.visualize_attention`) puts the pieces together. matplotlib is imported when the
first figure is made (`modeling_vanilla.insight.figures.new_figure`).

Shapes: S source length, T target length, L either, h heads, N layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..inference.model_folder import check_vanilla
from ..inference.translation import generate_ids
from ..modeling_vanilla import MAX_OUTPUT_LENGTH_OFFSET
from .figures import new_figure

# Tokenizers saved without a length limit store a huge number (1e30) as model_max_length.
_UNSET_TOKENIZER_LIMIT = 1_000_000


# 1. One sentence pair, within the model's length limit


def check_index(value: int, count: int, name: str, where: str) -> None:
    """Raise a ValueError naming the valid range, instead of an IndexError from deep inside torch."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise ValueError(
            f"{name} {value!r} does not exist: {where} has {count} {name}s, valid {name}s are 0..{count - 1}."
        )


def length_limit(config, tokenizer) -> tuple[int, str]:
    """The longest sequence (in tokens, </s> included) the plots and the walk accept, and where it comes from.

    Learned positions (Table 3, row E) have one row per position: config.max_position_embeddings. Sinusoids
    (section 3.5) have no limit of their own, so the tokenizer's model_max_length sets it, or, for a tokenizer
    saved without one, the size of the precomputed sinusoid table.
    """
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit is not None and tokenizer_limit >= _UNSET_TOKENIZER_LIMIT:
        tokenizer_limit = None
    if config.positional_encoding == "learned":
        if tokenizer_limit is not None and tokenizer_limit < config.max_position_embeddings:
            return tokenizer_limit, "tokenizer.model_max_length"
        return config.max_position_embeddings, "config.max_position_embeddings, the rows of the learned position table"
    if tokenizer_limit is not None:
        return tokenizer_limit, "tokenizer.model_max_length; sinusoidal positions have no limit of their own"
    return config.max_position_embeddings, "config.max_position_embeddings, the sinusoid table; the tokenizer sets none"


def _check_length(length: int, limit: int, reason: str, what: str) -> None:
    if length > limit:
        raise ValueError(
            f"the {what} is {length} tokens long (with </s>), but this model accepts at most {limit} ({reason}). "
            "Shorten the sentence."
        )


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """Readable labels for token ids: each id decoded alone, spaces shown as '▁' so that word starts show, and
    control characters (single byte tokens of byte-level BPE) written as escapes such as '\\x11'."""
    labels = []
    for token_id in ids:
        piece = tokenizer.decode([int(token_id)])
        piece = "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in piece)
        labels.append(piece.replace(" ", "▁") or "∅")
    return labels


def translation_decoder_inputs(model: nn.Module, tokenizer, source: str, num_tokens: int, limit: int) -> torch.Tensor:
    """The model's own translation of `source` (num_tokens long, </s> included) with its generation config (beam 4,
    length penalty 0.6, at most input length + 50 tokens: section 6.1), kept within `limit` positions. Returns
    decoder inputs (1, T): <s> and the generated tokens, without the final </s> (predicted, never fed back)."""
    max_new_tokens = min(num_tokens + MAX_OUTPUT_LENGTH_OFFSET, limit - 1)
    (generated,) = generate_ids(model, tokenizer, [source], max_new_tokens=max_new_tokens)  # no <s>, </s>, <pad>
    return torch.tensor([[model.config.decoder_start_token_id, *generated]])


@dataclass
class EncodedPair:
    """One sentence pair as the model sees it, a batch of 1."""

    input_ids: torch.Tensor  # (1, S): the source and </s>, then padding if asked for
    attention_mask: torch.Tensor  # (1, S): 1 for tokens, 0 for padding
    decoder_input_ids: torch.Tensor | None  # (1, T): <s> and the target, i.e. the target shifted right (3.1)
    source_tokens: list[str]
    target_tokens: list[str]


def _source_ids(config, tokenizer, source: str, pad_source_to: int | None, limit: int, reason: str):
    """The source's token ids (</s> included), right-padded with <pad> to `pad_source_to`, and the unpadded count."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"the source sentence is empty: got {source!r}.")
    source_ids = tokenizer(source, verbose=False)["input_ids"]  # no warning about the length: we raise our own
    num_tokens = len(source_ids)
    _check_length(num_tokens, limit, reason, "source sentence")
    if pad_source_to is not None:
        if not num_tokens <= pad_source_to <= limit:
            raise ValueError(
                f"pad_source_to={pad_source_to} must lie in {num_tokens}..{limit}: at least the source's "
                f"{num_tokens} tokens, at most the model's limit of {limit} ({reason})."
            )
        source_ids = source_ids + [config.pad_token_id] * (pad_source_to - num_tokens)
    return source_ids, num_tokens


def _target_decoder_inputs(config, tokenizer, target: str, limit: int, reason: str) -> torch.Tensor:
    """Teacher forcing's decoder inputs (1, T): <s> followed by the target without its final </s>."""
    if not target.strip():
        raise ValueError(f"the target sentence is empty: got {target!r}. Leave it out for the model's translation.")
    target_ids = tokenizer(text_target=target, verbose=False)["input_ids"]
    _check_length(len(target_ids), limit, reason, "target sentence")
    if target_ids and target_ids[-1] == config.eos_token_id:
        target_ids = target_ids[:-1]  # </s> is predicted, never fed to the decoder
    return torch.tensor([[config.decoder_start_token_id, *target_ids]])


def encode_pair(
    model: nn.Module,
    tokenizer,
    source: str,
    target: str | None = None,
    pad_source_to: int | None = None,
    with_target: bool = True,
) -> EncodedPair:
    """Tokenize a source sentence (and a target, or by default the model's own translation of the source).

    The decoder inputs are what teacher forcing feeds: <s> followed by the target without its final </s>, so
    row t of a decoder plot is the position that predicts target token t. `pad_source_to` right-pads the
    source with <pad> to that many tokens, to show that padding gets no attention. Raises ValueError for an
    empty sentence or one longer than the model's limit, naming the limit and where it comes from.
    """
    check_vanilla(model)
    config = model.config
    limit, reason = length_limit(config, tokenizer)
    source_ids, num_tokens = _source_ids(config, tokenizer, source, pad_source_to, limit, reason)
    decoder_input_ids = None
    if with_target and target is None:
        decoder_input_ids = translation_decoder_inputs(model, tokenizer, source, num_tokens, limit)
    elif with_target:
        decoder_input_ids = _target_decoder_inputs(config, tokenizer, target, limit, reason)
    return EncodedPair(
        input_ids=torch.tensor([source_ids]),  # (1, S)
        attention_mask=(torch.arange(len(source_ids)) < num_tokens).long()[None],  # (1, S): 0 on the padding
        decoder_input_ids=decoder_input_ids,
        source_tokens=token_labels(tokenizer, source_ids),
        target_tokens=[] if decoder_input_ids is None else token_labels(tokenizer, decoder_input_ids[0].tolist()),
    )


# 2. The weights of the three uses of attention (section 3.2.3)

ATTENTION_KINDS = {
    "encoder": "encoder self-attention",
    "decoder": "decoder masked self-attention",
    "cross": "encoder-decoder attention",
}


@dataclass
class AttentionMaps:
    """The attention weights of one sentence pair for each use of attention in section 3.2.3."""

    source_tokens: list[str]
    target_tokens: list[str]  # decoder inputs: <s> and the target shifted right
    encoder: torch.Tensor  # (N_enc, h, S, S)
    decoder: torch.Tensor  # (N_dec, h, T, T)
    cross: torch.Tensor  # (N_dec, h, T, S)

    def of(self, kind: str) -> tuple[torch.Tensor, list[str], list[str]]:
        """(weights (N, h, L_q, L_k), query tokens, key tokens) for 'encoder', 'decoder' or 'cross'."""
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {kind!r}: choose one of {', '.join(ATTENTION_KINDS)}.")
        queries = self.source_tokens if kind == "encoder" else self.target_tokens
        keys = self.target_tokens if kind == "decoder" else self.source_tokens
        return getattr(self, kind), queries, keys


@torch.no_grad()
def extract_attention(model: nn.Module, pair: EncodedPair) -> AttentionMaps:
    """Run the model once with output_attentions=True and keep the weights softmax(Q K^T / sqrt(d_k)) of
    Eq. (1) for every layer and head."""
    check_vanilla(model)
    if pair.decoder_input_ids is None:
        raise ValueError("the pair has no decoder inputs: encode it with with_target=True.")
    outputs = model(
        input_ids=pair.input_ids,
        attention_mask=pair.attention_mask,
        decoder_input_ids=pair.decoder_input_ids,
        output_attentions=True,
        use_cache=False,
    )
    return AttentionMaps(
        source_tokens=pair.source_tokens,
        target_tokens=pair.target_tokens,
        encoder=torch.stack(outputs.encoder_attentions)[:, 0].float(),  # N x (1, h, S, S) -> (N, h, S, S)
        decoder=torch.stack(outputs.decoder_attentions)[:, 0].float(),  # (N, h, T, T)
        cross=torch.stack(outputs.cross_attentions)[:, 0].float(),  # (N, h, T, S)
    )


# 3. Heatmaps: the paper's Figures 3-5


def _check_tokens(weights: torch.Tensor, query_tokens: list[str], key_tokens: list[str]) -> None:
    if tuple(weights.shape[-2:]) != (len(query_tokens), len(key_tokens)):
        raise ValueError(f"weights {tuple(weights.shape)} do not match {len(query_tokens)} x {len(key_tokens)} tokens.")


def _heatmap(ax, matrix: torch.Tensor, row_labels: list[str], column_labels: list[str], annotate: bool = False):
    """One attention matrix: rows are queries, columns the keys they attend to; weights in [0, 1]."""
    image = ax.imshow(matrix.numpy(), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(column_labels)), column_labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    if annotate:
        for i, row in enumerate(matrix.tolist()):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.6 else "white")
    return image


def plot_attention_layer(weights: torch.Tensor, query_tokens: list[str], key_tokens: list[str], title: str):
    """Section 3.2.2: the h heads of one multi-head attention layer, one heatmap per head, in a grid.

    weights (h, L_q, L_k). Returns the Figure: one axes with an image per head, plus the colorbar's axes.
    """
    _check_tokens(weights, query_tokens, key_tokens)
    h, length_q, length_k = weights.shape
    columns = min(h, 4)
    rows = math.ceil(h / columns)
    panel = min(max(2.2, 0.2 * max(length_q, length_k) + 0.8), 6.0)  # inches per head, grows with the sentence
    figure = new_figure(figsize=(columns * panel + 1.5, rows * panel + 1.0))
    # All heads share the tokens, so only the outer panels carry tick labels (drawing text is the slow part).
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= h:
            figure.delaxes(ax)
            continue
        image = _heatmap(ax, weights[i], query_tokens, key_tokens)
        ax.set_title(f"head {i}", fontsize=9)
        ax.tick_params(labelbottom=i >= h - columns, labelleft=i % columns == 0)
    figure.colorbar(image, ax=list(axes.flat[:h]), shrink=0.8, label="attention weight")
    figure.suptitle(f"{title} (rows: queries, columns: keys)", fontsize=10)
    return figure


def plot_attention_head(weights: torch.Tensor, query_tokens: list[str], key_tokens: list[str], title: str):
    """Eq. (1) for one head: softmax(Q K^T / sqrt(d_k)) as a heatmap, each weight written in its cell when the
    sentence is short. weights (L_q, L_k). Returns the Figure."""
    _check_tokens(weights, query_tokens, key_tokens)
    length_q, length_k = weights.shape
    size = min(max(3.0, 0.35 * max(length_q, length_k) + 1.5), 10.0)
    figure = new_figure(figsize=(size + 1.0, size))
    ax = figure.subplots()
    image = _heatmap(ax, weights, query_tokens, key_tokens, annotate=max(length_q, length_k) <= 16)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    figure.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
    ax.set_title(title, fontsize=10)
    return figure


def _check_plot_indices(maps: AttentionMaps, kinds: Sequence[str], layers: Sequence[int] | None, head: int | None):
    """Check every layer and head index against every kind before anything is drawn."""
    for kind in kinds:
        weights, _, _ = maps.of(kind)
        stack = "the encoder" if kind == "encoder" else "the decoder"
        for layer in layers if layers is not None else []:
            check_index(layer, weights.shape[0], "layer", stack)
        if head is not None:
            check_index(head, weights.shape[1], "head", f"each layer of {stack}")


def save_attention_plots(
    maps: AttentionMaps,
    out_dir: str | Path,
    layers: Sequence[int] | None = None,
    head: int | None = None,
    kinds: Sequence[str] = tuple(ATTENTION_KINDS),
    dpi: int = 100,
) -> list[Path]:
    """Write `{kind}_layer{l}.png` (all heads of layer l) for each kind and layer, and, with `head`,
    `{kind}_layer{l}_head{i}.png` (that head alone). Indices are checked before anything is drawn."""
    _check_plot_indices(maps, kinds, layers, head)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        weights, queries, keys = maps.of(kind)
        for layer in layers if layers is not None else range(weights.shape[0]):
            title = f"{ATTENTION_KINDS[kind]}, layer {layer}"
            figures = [(f"{kind}_layer{layer}.png", plot_attention_layer(weights[layer], queries, keys, title))]
            if head is not None:
                figures.append((f"{kind}_layer{layer}_head{head}.png",
                                plot_attention_head(weights[layer, head], queries, keys, f"{title}, head {head}")))
            for name, figure in figures:
                figure.savefig(out_dir / name, dpi=dpi)
                written.append(out_dir / name)
    return written


# 4. bertviz's interactive views (optional)


def write_bertviz_html(maps: AttentionMaps, out_dir: str | Path) -> list[Path]:
    """bertviz's interactive `head_view` and `model_view` of all three attentions, as two HTML pages.

    bertviz is an optional extra: raises ImportError with the install command when it is missing. The pages
    load require.js and d3 from a CDN, so they need a network connection to open.
    """
    try:
        from bertviz import head_view, model_view
    except ImportError as error:
        raise ImportError("bertviz is not installed (pip install bertviz): no HTML view written.") from error
    views = {
        "head_view.html": head_view,
        "model_view.html": model_view,
    }
    arguments = dict(
        encoder_attention=[layer[None] for layer in maps.encoder],  # N x (1, h, S, S), as bertviz expects
        decoder_attention=[layer[None] for layer in maps.decoder],
        cross_attention=[layer[None] for layer in maps.cross],
        encoder_tokens=maps.source_tokens,
        decoder_tokens=maps.target_tokens,
        prettify_tokens=False,
        html_action="return",
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, view in views.items():
        body = view(**arguments).data
        head = f'<head><meta charset="utf-8"><title>{name[:-5]}</title></head>'
        page = f"<!DOCTYPE html>\n<html>{head}\n<body>\n{body}\n</body></html>\n"
        (out_dir / name).write_text(page, encoding="utf-8")
        written.append(out_dir / name)
    return written
