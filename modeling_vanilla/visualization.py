"""See inside the Transformer of "Attention Is All You Need": attention maps, a walk through one layer's
equations, and figures of the paper's formulas.

In the paper's order:

1. Loading: a model folder written by `save_pretrained` (model and tokenizer) or a Hub id, and one sentence
   encoded within the model's length limit.
2. Attention maps, as in the paper's Figures 3-5: the weights of the three uses of attention of section 3.2.3
   (encoder self-attention, decoder masked self-attention, encoder-decoder attention) as heatmaps per layer
   and head, and as bertviz's interactive `head_view` / `model_view` when bertviz is installed (optional).
3. The walk: one sentence through one encoder or decoder layer, recomputed from the layer's weights step by
   step (sections 3.4, 3.5, 3.2.1, 3.2.2, 3.1, 3.3), printed with its numbers and shapes, and compared at the
   end with the model's own forward.
4. Figures for the docs: positional encodings (section 3.5), the learning-rate schedule (section 5.3,
   Eq. (3)), the causal mask (section 3.2.3) and label smoothing's target distribution (section 5.4).

The package does not import this module: matplotlib is a dependency of the scripts and docs, not of the model.
Figures are `matplotlib.figure.Figure` objects built without pyplot (no global state, no GUI backend);
`savefig` renders them with Agg. matplotlib is imported when the first figure is made, so the walk runs
without it.

Shapes: S source length, T target length, L either, h heads, d_k / d_v per-head widths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .modeling_vanilla import MAX_OUTPUT_LENGTH_OFFSET, SinusoidalPositionalEncoding, causal_mask

MODEL_TYPE = "vanilla_transformer"
# Tokenizers saved without a length limit store a huge number (1e30) as model_max_length.
_UNSET_TOKENIZER_LIMIT = 1_000_000


# 1. Loading a model and encoding a sentence


def check_index(value: int, count: int, name: str, where: str) -> None:
    """Raise a ValueError naming the valid range, instead of an IndexError from deep inside torch."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise ValueError(
            f"{name} {value!r} does not exist: {where} has {count} {name}s, valid {name}s are 0..{count - 1}."
        )


def _check_vanilla(model: nn.Module):
    """The walk reads this package's layer structure; other models have other parameter names. Returns the config."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type != MODEL_TYPE:
        raise ValueError(f"expected a {MODEL_TYPE} model (modeling_vanilla), got model_type={model_type!r}.")
    return model.config


def load_model_and_tokenizer(model_name_or_path: str | Path):
    """Load a model and its tokenizer, both saved with `save_pretrained` into one folder (or a Hub repo id).

    The model is loaded in float32 whatever dtype it was saved in, so that the walk can be compared with the
    forward to float32 rounding. Returns (model in eval mode, tokenizer). Raises FileNotFoundError for a missing
    folder, a folder without a model or a tokenizer, or a Hub id that cannot be loaded; ValueError for a model
    that is not this package's.
    """
    import modeling_vanilla  # noqa: F401  registers the model with the Auto classes
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = Path(model_name_or_path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a model folder written by save_pretrained.")
        if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            raise FileNotFoundError(
                f"{path} holds a model but no tokenizer: save it next to the model with "
                "tokenizer.save_pretrained(folder)."
            )
    elif not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(model_name_or_path)):
        raise FileNotFoundError(
            f"model folder {str(model_name_or_path)!r} does not exist. Pass a folder written by save_pretrained "
            "that holds the model and its tokenizer, or a Hub repo id (owner/name)."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        model = AutoModelForSeq2SeqLM.from_pretrained(model_name_or_path, dtype=torch.float32)
    except OSError as error:  # what transformers raises for a repo id it cannot find or download
        raise FileNotFoundError(
            f"no model folder {str(model_name_or_path)!r}, and no Hub repo of that name could be loaded: {error}"
        ) from error
    _check_vanilla(model)
    return model.eval(), tokenizer


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


@torch.no_grad()
def translate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, limit: int) -> torch.Tensor:
    """The model's own translation with its generation config (beam 4, length penalty 0.6, at most input length
    + 50 tokens: section 6.1), kept within `limit` positions. Returns decoder inputs (1, T): <s> and the
    generated tokens, without the final </s> (predicted, never fed back)."""
    max_new_tokens = min(int(attention_mask.sum()) + MAX_OUTPUT_LENGTH_OFFSET, limit - 1)
    generated = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens)  # (1, T+1)
    tokens = generated[0].tolist()
    if model.config.eos_token_id in tokens[1:]:
        tokens = tokens[: tokens.index(model.config.eos_token_id, 1)]
    return torch.tensor([tokens])


@dataclass
class EncodedPair:
    """One sentence pair as the model sees it, a batch of 1."""

    input_ids: torch.Tensor  # (1, S): the source and </s>, then padding if asked for
    attention_mask: torch.Tensor  # (1, S): 1 for tokens, 0 for padding
    decoder_input_ids: torch.Tensor | None  # (1, T): <s> and the target, i.e. the target shifted right (3.1)
    source_tokens: list[str]
    target_tokens: list[str]


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
    config = _check_vanilla(model)
    limit, reason = length_limit(config, tokenizer)
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
    input_ids = torch.tensor([source_ids])  # (1, S)
    attention_mask = (torch.arange(len(source_ids)) < num_tokens).long()[None]  # (1, S): 0 on the padding

    decoder_input_ids = None
    if with_target and target is None:
        decoder_input_ids = translate(model, input_ids, attention_mask, limit)
    elif with_target:
        if not target.strip():
            raise ValueError(f"the target sentence is empty: got {target!r}. Leave it out for the model's translation.")
        target_ids = tokenizer(text_target=target, verbose=False)["input_ids"]
        _check_length(len(target_ids), limit, reason, "target sentence")
        if target_ids and target_ids[-1] == config.eos_token_id:
            target_ids = target_ids[:-1]  # </s> is predicted, never fed to the decoder
        decoder_input_ids = torch.tensor([[config.decoder_start_token_id, *target_ids]])  # (1, T)
    return EncodedPair(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        source_tokens=token_labels(tokenizer, source_ids),
        target_tokens=[] if decoder_input_ids is None else token_labels(tokenizer, decoder_input_ids[0].tolist()),
    )


# 2. Attention maps: the paper's Figures 3-5

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
    _check_vanilla(model)
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


def _figure(**kwargs):
    """A matplotlib Figure with no pyplot state; a clear error when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("the plots need matplotlib: pip install matplotlib") from error
    return Figure(layout="constrained", **kwargs)


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
    h, length_q, length_k = weights.shape
    if (length_q, length_k) != (len(query_tokens), len(key_tokens)):
        raise ValueError(f"weights {tuple(weights.shape)} do not match {len(query_tokens)} x {len(key_tokens)} tokens.")
    columns = min(h, 4)
    rows = math.ceil(h / columns)
    panel = min(max(2.2, 0.2 * max(length_q, length_k) + 0.8), 6.0)  # inches per head, grows with the sentence
    figure = _figure(figsize=(columns * panel + 1.5, rows * panel + 1.0))
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
    length_q, length_k = weights.shape
    if (length_q, length_k) != (len(query_tokens), len(key_tokens)):
        raise ValueError(f"weights {tuple(weights.shape)} do not match {len(query_tokens)} x {len(key_tokens)} tokens.")
    size = min(max(3.0, 0.35 * max(length_q, length_k) + 1.5), 10.0)
    figure = _figure(figsize=(size + 1.0, size))
    ax = figure.subplots()
    image = _heatmap(ax, weights, query_tokens, key_tokens, annotate=max(length_q, length_k) <= 16)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    figure.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
    ax.set_title(title, fontsize=10)
    return figure


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
    for kind in kinds:
        weights, _, _ = maps.of(kind)
        stack = "the encoder" if kind == "encoder" else "the decoder"
        for layer in layers if layers is not None else []:
            check_index(layer, weights.shape[0], "layer", stack)
        if head is not None:
            check_index(head, weights.shape[1], "head", f"each layer of {stack}")
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


# 3. The walk: one layer recomputed from its weights, step by step


class _Report:
    """Prints the walk. A silent report (print_fn=None) recomputes the layers before the chosen one."""

    def __init__(self, print_fn: Callable[[str], None] | None, max_items: int = 8):
        self.print_fn = print_fn
        self.max_items = max_items

    def __call__(self, text: str = "") -> None:
        if self.print_fn is not None:
            self.print_fn(text)

    def step(self, title: str) -> None:
        self()
        self(f"== {title} ==")

    def rows(self, name: str, matrix: torch.Tensor, labels: list[str], column_labels: list[str] | None = None) -> None:
        """A matrix (L, n) one row per token, at most max_items rows and columns, with its shape."""
        if self.print_fn is None:
            return
        self(f"{name}  shape {tuple(matrix.shape)}")
        width = min(max(len(label) for label in labels), 12) + 2
        shown = min(matrix.shape[1], self.max_items)
        if column_labels is not None:
            self(" " * (width + 4) + " ".join(f"{label[:8]:>8}" for label in column_labels[:shown]))
        for position, (label, row) in enumerate(zip(labels, matrix.tolist())):
            if position == self.max_items:
                self(f"    ... {len(labels) - position} more rows")
                break
            cells = " ".join("    -inf" if value == -math.inf else f"{value:+8.4f}" for value in row[:shown])
            more = f"  ... {len(row) - shown} more" if len(row) > shown else ""
            self(f"{position:>3} {label[:12]:<{width}}{cells}{more}")


@dataclass
class Walk:
    """The walk's result: the recomputed layer output next to the model's own, and the chosen head's weights."""

    output: torch.Tensor  # (L, d_model): recomputed from the weights
    reference: torch.Tensor  # (L, d_model): the model's forward (the stack's hidden state after this layer)
    attention: dict[str, torch.Tensor]  # sub-layer name -> recomputed weights (h, L_q, L_k)
    reference_attention: dict[str, torch.Tensor]  # the same, from the forward with output_attentions=True

    @property
    def max_abs_diff(self) -> float:
        return (self.output - self.reference).abs().max().item()


def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """x W + b with the layer's weights; nn.Linear stores W transposed, (out, in)."""
    y = x @ layer.weight.T
    return y if layer.bias is None else y + layer.bias


def _layer_norm(report: _Report, x: torch.Tensor, layer_norm: nn.LayerNorm, labels: list[str]) -> torch.Tensor:
    """Layer normalization (Ba et al., 2016; section 3.1): (x - mean) / sqrt(var + eps) * gamma + beta per token."""
    mean = x.mean(dim=-1, keepdim=True)  # (L, 1)
    variance = x.var(dim=-1, unbiased=False, keepdim=True)  # (L, 1)
    normalized = (x - mean) / torch.sqrt(variance + layer_norm.eps) * layer_norm.weight + layer_norm.bias
    report(f"LayerNorm, per token: (v - mean) / sqrt(var + {layer_norm.eps:g}) * gamma + beta, "
           f"gamma and beta {tuple(layer_norm.weight.shape)}")
    report.rows("  mean and std over d_model before normalizing", torch.cat([mean, variance.sqrt()], dim=-1), labels,
                ["mean", "std"])
    return normalized


def _positional_encoding(length: int, d_model: int) -> torch.Tensor:
    """Section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]  # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model/2,)
    angle = pos / 10000 ** (two_i / d_model)  # (L, d_model/2)
    pe = torch.empty(length, d_model, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = angle.sin(), angle.cos()
    return pe.float()


def _embed(report: _Report, stack: nn.Module, ids: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """Sections 3.4 and 3.5: token embedding times sqrt(d_model), plus the positional encoding. ids (L,)."""
    config = stack.config
    embedding = stack.embed_tokens.weight[ids]  # (L, d_model): rows of the embedding matrix
    report.rows("token embeddings E[id]", embedding, labels)
    if config.scale_embedding:
        scaled = embedding * math.sqrt(config.d_model)
        report.rows(f"times sqrt(d_model) = sqrt({config.d_model}) = {math.sqrt(config.d_model):.4f} (section 3.4)",
                    scaled, labels)
    else:
        scaled = embedding
        report("not scaled by sqrt(d_model): scale_embedding=False (not in the paper)")
    if config.positional_encoding == "sinusoidal":
        pe = _positional_encoding(len(ids), config.d_model)
        report.rows("positional encodings PE(pos, 2i) = sin(pos/10000^(2i/d_model)), PE(pos, 2i+1) = cos(...) "
                    "(section 3.5)", pe, labels)
    else:
        pe = stack.embed_positions.weight[: len(ids)]  # (L, d_model)
        report.rows("learned positional embeddings, one row per position (Table 3, row E)", pe, labels)
    x = scaled + pe
    report.rows("x = E[id] * sqrt(d_model) + PE, the input of the first layer (dropout is off at inference)", x,
                labels)
    return x


def _multi_head_attention(
    report: _Report,
    attention: nn.Module,
    x_q: torch.Tensor,
    x_kv: torch.Tensor,
    mask: torch.Tensor | None,
    head: int,
    query_labels: list[str],
    key_labels: list[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Section 3.2.2: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K,
    V W_i^V), each head Eq. (1). x_q (L_q, d_model) gives the queries, x_kv (L_k, d_model) the keys and values;
    mask (L_q, L_k) bool, True where attending is allowed. Prints the chosen head; returns the output
    (L_q, d_model) and the weights of all heads (h, L_q, L_k)."""
    h, d_k, d_v = attention.num_heads, attention.d_k, attention.d_v
    length_q, length_k = x_q.shape[0], x_kv.shape[0]
    # All heads at once: the h matrices W_i^Q (d_model, d_k) sit side by side in one (d_model, h*d_k).
    Q = _linear(x_q, attention.q_proj).view(length_q, h, d_k).transpose(0, 1)  # (h, L_q, d_k)
    K = _linear(x_kv, attention.k_proj).view(length_k, h, d_k).transpose(0, 1)  # (h, L_k, d_k)
    V = _linear(x_kv, attention.v_proj).view(length_k, h, d_v).transpose(0, 1)  # (h, L_k, d_v)
    report(f"Q = X W^Q, K = X W^K, V = X W^V for all h={h} heads at once: W^Q, W^K "
           f"({attention.q_proj.in_features} x {h}*{d_k}), W^V ({attention.v_proj.in_features} x {h}*{d_v}); "
           f"split into heads: Q {tuple(Q.shape)}, K {tuple(K.shape)}, V {tuple(V.shape)}")
    report(f"head i={head}: W_{head}^Q is columns {head * d_k}..{(head + 1) * d_k - 1} of W^Q")
    report.rows(f"q = x W_{head}^Q, one query per token", Q[head], query_labels)
    report.rows(f"k = x W_{head}^K, one key per token", K[head], key_labels)
    report.rows(f"v = x W_{head}^V, one value per token", V[head], key_labels)

    scores = Q @ K.transpose(-2, -1)  # (h, L_q, L_k)
    report.rows("scores Q K^T: row = query token, column = key token", scores[head], query_labels, key_labels)
    scaled = scores * d_k**-0.5
    report.rows(f"scaled by 1/sqrt(d_k) = 1/sqrt({d_k}) = {d_k**-0.5:.4f} (Eq. (1))", scaled[head], query_labels,
                key_labels)
    if mask is not None and not bool(mask.all()):
        scaled = scaled.masked_fill(~mask, -math.inf)
        report.rows("masked: illegal connections set to -inf (section 3.2.3)", scaled[head], query_labels, key_labels)
    weights = torch.softmax(scaled, dim=-1)  # (h, L_q, L_k)
    report.rows("softmax over each row: attention weights, every row sums to 1", weights[head], query_labels,
                key_labels)
    z = weights @ V  # (h, L_q, d_v)
    report.rows(f"z = softmax(...) V: each row a weighted sum of the values, head_{head}", z[head], query_labels)

    concatenated = z.transpose(0, 1).reshape(length_q, h * d_v)  # (L_q, h*d_v): Concat(head_1, ..., head_h)
    report.rows(f"the other heads the same way; Concat(head_1, ..., head_h), head {head} is columns "
                f"{head * d_v}..{(head + 1) * d_v - 1}", concatenated, query_labels)
    output = _linear(concatenated, attention.out_proj)  # (L_q, d_model)
    report.rows(f"MultiHead = Concat(...) W^O, W^O {h * d_v} x {attention.out_proj.out_features}", output, query_labels)
    return output, weights


def _feed_forward(report: _Report, ffn: nn.Module, x: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """Eq. (2): FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, the same for every position. x (L, d_model)."""
    hidden = _linear(x, ffn.fc1)  # (L, d_ff)
    report.rows(f"x W_1 + b_1, W_1 {tuple(ffn.fc1.weight.T.shape)}", hidden, labels)
    hidden = hidden.clamp(min=0)
    zeros = int((hidden == 0).sum())
    report.rows(f"max(0, .): ReLU, {zeros} of {hidden.numel()} entries are 0", hidden, labels)
    output = _linear(hidden, ffn.fc2)  # (L, d_model)
    report.rows(f"FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, W_2 {tuple(ffn.fc2.weight.T.shape)}", output, labels)
    return output


def _sublayer_input(report: _Report, layer: nn.Module, x: torch.Tensor, layer_norm: nn.LayerNorm, labels):
    """Post-norm (the paper) feeds x itself; pre-norm (not in the paper) feeds LayerNorm(x)."""
    if not layer.pre_norm:
        return x
    report("pre-norm (layer_norm='pre', not in the paper): the sub-layer reads LayerNorm(x)")
    return _layer_norm(report, x, layer_norm, labels)


def _add_and_norm(report: _Report, layer: nn.Module, x: torch.Tensor, sublayer_output: torch.Tensor,
                  layer_norm: nn.LayerNorm, labels) -> torch.Tensor:
    """Section 3.1: LayerNorm(x + Sublayer(x)) (post-norm), or x + Sublayer(LayerNorm(x)) (pre-norm)."""
    total = x + sublayer_output  # residual dropout (section 5.4) is off at inference
    report.rows("residual: x + Sublayer(x) (section 3.1)", total, labels)
    if layer.pre_norm:
        report("pre-norm: no LayerNorm after the add")
        return total
    normalized = _layer_norm(report, total, layer_norm, labels)
    report.rows("LayerNorm(x + Sublayer(x))", normalized, labels)
    return normalized


def _encoder_layer(report: _Report, layer: nn.Module, x: torch.Tensor, mask: torch.Tensor, head: int, labels):
    """Section 3.1, Figure 1 (left): multi-head self-attention, then the feed-forward network, each inside a
    residual connection and LayerNorm. x (S, d_model); mask (S, S)."""
    report.step("Sub-layer 1 of 2: multi-head self-attention (sections 3.2.1, 3.2.2)")
    x_in = _sublayer_input(report, layer, x, layer.self_attn_layer_norm, labels)
    attention, weights = _multi_head_attention(report, layer.self_attn, x_in, x_in, mask, head, labels, labels)
    x = _add_and_norm(report, layer, x, attention, layer.self_attn_layer_norm, labels)

    report.step("Sub-layer 2 of 2: position-wise feed-forward network (section 3.3, Eq. (2))")
    x_in = _sublayer_input(report, layer, x, layer.final_layer_norm, labels)
    x = _add_and_norm(report, layer, x, _feed_forward(report, layer.ffn, x_in, labels), layer.final_layer_norm, labels)
    return x, {"self_attention": weights}


def _decoder_layer(report: _Report, layer: nn.Module, y: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor,
                   cross_mask: torch.Tensor, head: int, target_labels, source_labels):
    """Section 3.1, Figure 1 (right): masked self-attention, encoder-decoder attention over the encoder output
    (`memory`), then the feed-forward network. y (T, d_model); memory (S, d_model); masks (T, T) and (T, S)."""
    report.step("Sub-layer 1 of 3: masked multi-head self-attention (section 3.2.3)")
    y_in = _sublayer_input(report, layer, y, layer.self_attn_layer_norm, target_labels)
    attention, self_weights = _multi_head_attention(
        report, layer.self_attn, y_in, y_in, self_mask, head, target_labels, target_labels)
    y = _add_and_norm(report, layer, y, attention, layer.self_attn_layer_norm, target_labels)

    report.step("Sub-layer 2 of 3: encoder-decoder attention, queries from the decoder, keys and values from "
                "the encoder output (section 3.2.3)")
    y_in = _sublayer_input(report, layer, y, layer.encoder_attn_layer_norm, target_labels)
    attention, cross_weights = _multi_head_attention(
        report, layer.encoder_attn, y_in, memory, cross_mask, head, target_labels, source_labels)
    y = _add_and_norm(report, layer, y, attention, layer.encoder_attn_layer_norm, target_labels)

    report.step("Sub-layer 3 of 3: position-wise feed-forward network (section 3.3, Eq. (2))")
    y_in = _sublayer_input(report, layer, y, layer.final_layer_norm, target_labels)
    y = _add_and_norm(report, layer, y, _feed_forward(report, layer.ffn, y_in, target_labels), layer.final_layer_norm,
                      target_labels)
    return y, {"self_attention": self_weights, "encoder_attention": cross_weights}


def _compare(report: _Report, walk: Walk, labels: list[str]) -> Walk:
    """The walk's output next to the model's forward: they must agree to float rounding."""
    report.step("Check against the model's own forward")
    report.rows("the walk's layer output", walk.output, labels)
    report.rows("the model's layer output (forward, output_hidden_states=True)", walk.reference, labels)
    report(f"max abs difference, layer output: {walk.max_abs_diff:.3e}")
    for name, weights in walk.attention.items():
        difference = (weights - walk.reference_attention[name]).abs().max().item()
        report(f"max abs difference, {name.replace('_', ' ')} weights (all heads): {difference:.3e}")
    return walk


def _prepare_walk(model: nn.Module, stack_name: str, layer: int, head: int):
    config = _check_vanilla(model)
    stack = getattr(model.model, stack_name)
    check_index(layer, len(stack.layers), "layer", f"the {stack_name}")
    check_index(head, config.num_heads, "head", "each attention layer")
    return config, stack


def _layers_before(layer: int) -> str:
    return "layer 0" if layer == 1 else f"layers 0..{layer - 1}"


def _header(report: _Report, config, what: str, layer: int, head: int, pair: EncodedPair) -> None:
    d_k = config.d_k or config.d_model // config.num_heads
    report(f"{what} layer {layer}, head {head}: d_model={config.d_model}, h={config.num_heads}, d_k={d_k}, "
           f"d_ff={config.d_ff}, {config.layer_norm}-norm, {config.positional_encoding} positions")
    report("layers and heads are counted from 0 here: the paper's head_1 is head 0")
    report(f"source: {len(pair.source_tokens)} tokens {pair.source_tokens}, ids {pair.input_ids[0].tolist()}")


@torch.no_grad()
def explain_encoder_layer(
    model: nn.Module,
    tokenizer,
    sentence: str,
    layer: int = 0,
    head: int = 0,
    print_fn: Callable[[str], None] | None = print,
    max_items: int = 8,
) -> Walk:
    """Sections 3.4, 3.5, 3.2.1, 3.2.2, 3.1 and 3.3: one sentence through encoder layer `layer`, recomputed
    from the weights and printed step by step for head `head`; the layers before it are recomputed silently.
    Returns the Walk, whose output is compared with the model's forward (max_abs_diff)."""
    config, encoder = _prepare_walk(model, "encoder", layer, head)
    pair = encode_pair(model, tokenizer, sentence, with_target=False)
    report = _Report(print_fn, max_items)
    labels = pair.source_tokens
    _header(report, config, "Encoder", layer, head, pair)
    key_mask = pair.attention_mask.bool()[0][None, :].expand(len(labels), -1)  # (S, S): padding keys are masked

    report.step("Input: embeddings and positional encodings (sections 3.4, 3.5)")
    x = _embed(report, encoder, pair.input_ids[0], labels)  # (S, d_model)
    if layer > 0:
        report(f"encoder {_layers_before(layer)} recomputed the same way (not printed)")
    for earlier in encoder.layers[:layer]:
        x, _ = _encoder_layer(_Report(None), earlier, x, key_mask, head, labels)
    x, weights = _encoder_layer(report, encoder.layers[layer], x, key_mask, head, labels)

    outputs = encoder(input_ids=pair.input_ids, attention_mask=pair.attention_mask,
                      output_hidden_states=True, output_attentions=True, return_dict=True)
    walk = Walk(
        output=x,
        reference=outputs.hidden_states[layer + 1][0],  # hidden_states[0] is the embedding output
        attention=weights,
        reference_attention={"self_attention": outputs.attentions[layer][0]},
    )
    return _compare(report, walk, labels)


@torch.no_grad()
def explain_decoder_layer(
    model: nn.Module,
    tokenizer,
    sentence: str,
    target: str | None = None,
    layer: int = 0,
    head: int = 0,
    print_fn: Callable[[str], None] | None = print,
    max_items: int = 8,
) -> Walk:
    """Sections 3.1, 3.2.3, 3.3: the target (by default the model's translation of `sentence`), shifted right,
    through decoder layer `layer`: masked self-attention, encoder-decoder attention and the feed-forward
    network, recomputed from the weights and printed for head `head`. The encoder output and the decoder layers
    before `layer` are recomputed silently. Returns the Walk compared with the model's forward."""
    config, decoder = _prepare_walk(model, "decoder", layer, head)
    encoder = model.model.encoder
    pair = encode_pair(model, tokenizer, sentence, target)
    report = _Report(print_fn, max_items)
    source_labels, target_labels = pair.source_tokens, pair.target_tokens
    _header(report, config, "Decoder", layer, head, pair)
    report(f"decoder input (target shifted right, section 3.1): {len(target_labels)} tokens {target_labels}")
    S, T = len(source_labels), len(target_labels)
    source_keys = pair.attention_mask.bool()[0]  # (S,)

    report.step(f"Encoder output (memory): the source through all {len(encoder.layers)} encoder layers (not printed)")
    memory = _embed(_Report(None), encoder, pair.input_ids[0], source_labels)  # (S, d_model)
    for encoder_layer in encoder.layers:
        memory, _ = _encoder_layer(_Report(None), encoder_layer, memory, source_keys[None, :].expand(S, -1), head,
                                   source_labels)
    if encoder.layer_norm is not None:
        memory = _layer_norm(_Report(None), memory, encoder.layer_norm, source_labels)  # pre-norm's final LayerNorm
    report.rows("memory", memory, source_labels)

    report.step("Input: target embeddings and positional encodings (sections 3.4, 3.5)")
    y = _embed(report, decoder, pair.decoder_input_ids[0], target_labels)  # (T, d_model)
    self_mask = causal_mask(T, T, y.device)[0, 0]  # (T, T): position i sees positions <= i
    cross_mask = source_keys[None, :].expand(T, -1)  # (T, S): padding keys are masked
    if layer > 0:
        report(f"decoder {_layers_before(layer)} recomputed the same way (not printed)")
    for earlier in decoder.layers[:layer]:
        y, _ = _decoder_layer(_Report(None), earlier, y, memory, self_mask, cross_mask, head, target_labels,
                              source_labels)
    y, weights = _decoder_layer(report, decoder.layers[layer], y, memory, self_mask, cross_mask, head, target_labels,
                                source_labels)

    outputs = model.model(input_ids=pair.input_ids, attention_mask=pair.attention_mask,
                          decoder_input_ids=pair.decoder_input_ids, output_hidden_states=True,
                          output_attentions=True, use_cache=False, return_dict=True)
    walk = Walk(
        output=y,
        reference=outputs.decoder_hidden_states[layer + 1][0],
        attention=weights,
        reference_attention={"self_attention": outputs.decoder_attentions[layer][0],
                             "encoder_attention": outputs.cross_attentions[layer][0]},
    )
    return _compare(report, walk, target_labels)


# 4. Figures of the paper's formulas, for the docs


def plot_positional_encoding(d_model: int = 512, num_positions: int = 100, dims: Sequence[int] = (0, 40, 100, 200)):
    """Section 3.5: the sinusoids the model adds to its embeddings (`SinusoidalPositionalEncoding.encode`), as a
    heatmap of positions x dimensions and as curves of a few dimensions over the positions."""
    if any(not 0 <= dim < d_model for dim in dims):
        raise ValueError(f"dims {tuple(dims)} must lie in 0..{d_model - 1} (d_model={d_model}).")
    pe = SinusoidalPositionalEncoding.encode(torch.arange(num_positions), d_model)  # (positions, d_model)
    figure = _figure(figsize=(10, 4))
    heatmap, curves = figure.subplots(1, 2, width_ratios=(1.2, 1))
    image = heatmap.imshow(pe.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    heatmap.set_xlabel("dimension (even: sin, odd: cos)")
    heatmap.set_ylabel("position")
    heatmap.set_title(f"PE(pos, i), d_model = {d_model}", fontsize=10)
    figure.colorbar(image, ax=heatmap)
    for dim in dims:
        function = "sin" if dim % 2 == 0 else "cos"
        wavelength = 2 * math.pi * 10000 ** ((dim - dim % 2) / d_model)
        curves.plot(pe[:, dim].numpy(), label=f"dim {dim} ({function}), wavelength {wavelength:.1f}")
    curves.set_xlabel("position")
    curves.set_title("dimensions 2i, 2i+1: wavelength 2π·10000^(2i/d_model)", fontsize=9)
    curves.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    figure.suptitle("Section 3.5: sinusoidal positional encodings")
    return figure


def plot_learning_rate(warmup_steps: int = 4000, total_steps: int = 100_000, d_models: Sequence[int] = (512, 1024)):
    """Section 5.3, Eq. (3): lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), the schedule the
    training code uses (`modeling_vanilla.training.inverse_sqrt_learning_rate`), for the base and big d_model."""
    from .training import inverse_sqrt_learning_rate

    steps = list(range(1, total_steps + 1, 100))
    figure = _figure(figsize=(7, 4))
    ax = figure.subplots()
    for d_model in d_models:
        ax.plot(steps, [inverse_sqrt_learning_rate(step, d_model, warmup_steps) for step in steps],
                label=f"d_model = {d_model}, warmup_steps = {warmup_steps}")
        peak = inverse_sqrt_learning_rate(warmup_steps, d_model, warmup_steps)
        ax.annotate(f"peak {peak:.2e} at step {warmup_steps}", (warmup_steps, peak), xytext=(10, 0),
                    textcoords="offset points", fontsize=8)
    ax.axvline(warmup_steps, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    ax.set_title("Eq. (3): linear warmup, then inverse square root decay")
    return figure


def plot_causal_mask(length: int = 10):
    """Section 3.2.3: the decoder's mask (`modeling_vanilla.causal_mask`): query i may attend to keys j <= i;
    the masked scores are set to -inf, so their softmax weight is 0."""
    mask = causal_mask(length, length, torch.device("cpu"))[0, 0]  # (T, T) bool
    figure = _figure(figsize=(4.6, 4.2))
    ax = figure.subplots()
    ax.imshow(mask.numpy(), cmap="Greys_r", vmin=0, vmax=1)
    ax.set_xticks(range(length))
    ax.set_yticks(range(length))
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
    ax.set_title("Causal mask: white = attend, black = -inf", fontsize=10)
    return figure


def label_smoothing_target(labels: torch.Tensor, vocab_size: int, epsilon: float = 0.1) -> torch.Tensor:
    """Section 5.4: the smoothed target distribution, 1 - epsilon on the reference token plus epsilon spread
    uniformly over all vocab_size tokens (Szegedy et al., 2016): the target of PyTorch's
    `cross_entropy(label_smoothing=epsilon)`, which training uses. labels (N,) -> (N, vocab_size)."""
    one_hot = torch.nn.functional.one_hot(labels, vocab_size).float()  # (N, V)
    return (1.0 - epsilon) * one_hot + epsilon / vocab_size


def plot_label_smoothing(vocab_size: int = 10, labels: Sequence[int] = (2, 5, 7, 3, 8), epsilon: float = 0.1):
    """Section 5.4: label smoothing with epsilon_ls = 0.1, the targets for a few reference tokens as a heatmap,
    each probability written in its cell."""
    target = label_smoothing_target(torch.tensor(labels), vocab_size, epsilon)  # (N, V)
    figure = _figure(figsize=(7, 3.4))
    ax = figure.subplots()
    image = ax.imshow(target.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(target.tolist()):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.5 else "black")
    ax.set_xticks(range(vocab_size))
    ax.set_yticks(range(len(labels)), [f"reference {label}" for label in labels])
    ax.set_xlabel("token id")
    figure.colorbar(image, ax=ax, shrink=0.8, label="target probability")
    ax.set_title(f"Label smoothing, epsilon = {epsilon}: 1 - epsilon + epsilon/V on the reference, epsilon/V elsewhere",
                 fontsize=9)
    return figure


FIGURES = {
    "positional_encoding.png": plot_positional_encoding,
    "learning_rate.png": plot_learning_rate,
    "causal_mask.png": plot_causal_mask,
    "label_smoothing.png": plot_label_smoothing,
}


def make_figures(out_dir: str | Path, dpi: int = 90) -> list[Path]:
    """Write the figures of sections 3.2.3, 3.5, 5.3 and 5.4 into out_dir (docs/figures/ in the repository)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in FIGURES.items():
        plot().savefig(out_dir / name, dpi=dpi)
        written.append(out_dir / name)
    return written
