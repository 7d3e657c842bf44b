"""The walk through section 3.2: one sentence through one encoder or decoder layer, recomputed from the layer's
weights step by step, printed with its numbers and shapes, and compared at the end with the model's own forward.

The walk takes the paper's steps in order: embeddings times sqrt(d_model) (section 3.4) plus positional encodings
(3.5); per head q, k, v, the scores Q K^T, the 1/sqrt(d_k) scaling and the softmax of Eq. (1) (3.2.1); the
concatenated heads times W^O (3.2.2); the decoder's mask and encoder-decoder attention (3.2.3); the residual
connection and LayerNorm (3.1); the feed-forward network of Eq. (2) (3.3).

An independent check of the model, not a second copy of it: the walk reads the weights and the config's choices,
and computes the rest from the paper's formulas with code of its own: the sinusoids (`_positional_encoding`), the
causal mask (`_causal_mask`), LayerNorm, and where the LayerNorm sits (from `config.layer_norm`, not from the
layers' own flag). A bug in any of these in `modeling_vanilla.py` then shows as a difference in the final check
(`Walk.max_abs_diff`) instead of being repeated by the walk.

Entry points: `explain_encoder_layer`, `explain_decoder_layer`; the `vanilla-explain` command
(`modeling_vanilla.cli.explain`) calls them. No matplotlib needed.

Shapes: S source length, T target length, L either, h heads, d_k / d_v per-head widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..inference.model_folder import check_vanilla
from .attention_maps import EncodedPair, check_index, encode_pair


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


# The paper's formulas, written here once more on purpose (see the module docstring)


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
    """Section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    A deliberate, independent re-derivation from the formula in section 3.5, not a call to the model's
    `SinusoidalPositionalEncoding`: the walk checks the model's sinusoids instead of repeating them (a wrong base,
    a sin/cos swap or a wrong interleaving in the model shows as a difference at the end of the walk).
    """
    pos = torch.arange(length, dtype=torch.float64)[:, None]  # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model/2,)
    angle = pos / 10000 ** (two_i / d_model)  # (L, d_model/2)
    pe = torch.empty(length, d_model, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = angle.sin(), angle.cos()
    return pe.float()


def _causal_mask(length: int) -> torch.Tensor:
    """Section 3.2.3: query i may attend to keys j <= i, never later ones. (T, T) bool, True where allowed.

    Written here on purpose rather than taken from the model's `causal_mask`, for the same reason as the sinusoids.
    """
    return torch.ones(length, length, dtype=torch.bool).tril()


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


# Section 3.2: attention


def _project(report: _Report, attention: nn.Module, x_q: torch.Tensor, x_kv: torch.Tensor, head: int,
             query_labels: list[str], key_labels: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Section 3.2.2: Q W_i^Q, K W_i^K, V W_i^V for every head i. Returns Q, K (h, L, d_k) and V (h, L_k, d_v)."""
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
    return Q, K, V


def _scaled_dot_product(report: _Report, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None,
                        head: int, query_labels: list[str], key_labels: list[str]):
    """Eq. (1), section 3.2.1: softmax(Q K^T / sqrt(d_k)) V for all heads, masked scores set to -inf.
    Q, K (h, L, d_k); V (h, L_k, d_v); mask (L_q, L_k) bool. Returns z (h, L_q, d_v) and the weights (h, L_q, L_k)."""
    d_k = Q.shape[-1]
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
    return z, weights


def _multi_head_attention(report: _Report, attention: nn.Module, x_q: torch.Tensor, x_kv: torch.Tensor,
                          mask: torch.Tensor | None, head: int, query_labels: list[str], key_labels: list[str]):
    """Section 3.2.2: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K,
    V W_i^V), each head Eq. (1). x_q (L_q, d_model) gives the queries, x_kv (L_k, d_model) the keys and values;
    mask (L_q, L_k) bool, True where attending is allowed. Prints the chosen head; returns the output
    (L_q, d_model) and the weights of all heads (h, L_q, L_k)."""
    Q, K, V = _project(report, attention, x_q, x_kv, head, query_labels, key_labels)
    z, weights = _scaled_dot_product(report, Q, K, V, mask, head, query_labels, key_labels)
    h, length_q, d_v = z.shape
    concatenated = z.transpose(0, 1).reshape(length_q, h * d_v)  # (L_q, h*d_v): Concat(head_1, ..., head_h)
    report.rows(f"the other heads the same way; Concat(head_1, ..., head_h), head {head} is columns "
                f"{head * d_v}..{(head + 1) * d_v - 1}", concatenated, query_labels)
    output = _linear(concatenated, attention.out_proj)  # (L_q, d_model)
    report.rows(f"MultiHead = Concat(...) W^O, W^O {h * d_v} x {attention.out_proj.out_features}", output, query_labels)
    return output, weights


# Section 3.3 and 3.1: the feed-forward network, residual connections and LayerNorm


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


def _sublayer_input(report: _Report, x: torch.Tensor, layer_norm: nn.LayerNorm, labels, pre_norm: bool):
    """Post-norm (the paper) feeds x itself; pre-norm (not in the paper) feeds LayerNorm(x)."""
    if not pre_norm:
        return x
    report("pre-norm (layer_norm='pre', not in the paper): the sub-layer reads LayerNorm(x)")
    return _layer_norm(report, x, layer_norm, labels)


def _add_and_norm(report: _Report, x: torch.Tensor, sublayer_output: torch.Tensor, layer_norm: nn.LayerNorm, labels,
                  pre_norm: bool) -> torch.Tensor:
    """Section 3.1: LayerNorm(x + Sublayer(x)) (post-norm), or x + Sublayer(LayerNorm(x)) (pre-norm)."""
    total = x + sublayer_output  # residual dropout (section 5.4) is off at inference
    report.rows("residual: x + Sublayer(x) (section 3.1)", total, labels)
    if pre_norm:
        report("pre-norm: no LayerNorm after the add")
        return total
    normalized = _layer_norm(report, total, layer_norm, labels)
    report.rows("LayerNorm(x + Sublayer(x))", normalized, labels)
    return normalized


def _feed_forward_sublayer(report: _Report, layer: nn.Module, x: torch.Tensor, labels, pre_norm: bool):
    """The last sub-layer of both layer kinds: the feed-forward network in its residual connection and LayerNorm."""
    x_in = _sublayer_input(report, x, layer.final_layer_norm, labels, pre_norm)
    return _add_and_norm(report, x, _feed_forward(report, layer.ffn, x_in, labels), layer.final_layer_norm, labels,
                         pre_norm)


# The layers, and the walks through them


def _encoder_layer(report: _Report, layer: nn.Module, x: torch.Tensor, mask: torch.Tensor, head: int, labels,
                   pre_norm: bool):
    """Section 3.1, Figure 1 (left): multi-head self-attention, then the feed-forward network, each inside a
    residual connection and LayerNorm. x (S, d_model); mask (S, S)."""
    report.step("Sub-layer 1 of 2: multi-head self-attention (sections 3.2.1, 3.2.2)")
    x_in = _sublayer_input(report, x, layer.self_attn_layer_norm, labels, pre_norm)
    attention, weights = _multi_head_attention(report, layer.self_attn, x_in, x_in, mask, head, labels, labels)
    x = _add_and_norm(report, x, attention, layer.self_attn_layer_norm, labels, pre_norm)

    report.step("Sub-layer 2 of 2: position-wise feed-forward network (section 3.3, Eq. (2))")
    x = _feed_forward_sublayer(report, layer, x, labels, pre_norm)
    return x, {"self_attention": weights}


def _decoder_layer(report: _Report, layer: nn.Module, y: torch.Tensor, memory: torch.Tensor,
                   masks: tuple[torch.Tensor, torch.Tensor], head: int, labels: tuple[list[str], list[str]],
                   pre_norm: bool):
    """Section 3.1, Figure 1 (right): masked self-attention, encoder-decoder attention over the encoder output
    (`memory`), then the feed-forward network. y (T, d_model); memory (S, d_model); masks (T, T) and (T, S);
    labels (target, source)."""
    self_mask, cross_mask = masks
    target_labels, source_labels = labels
    report.step("Sub-layer 1 of 3: masked multi-head self-attention (section 3.2.3)")
    y_in = _sublayer_input(report, y, layer.self_attn_layer_norm, target_labels, pre_norm)
    attention, self_weights = _multi_head_attention(
        report, layer.self_attn, y_in, y_in, self_mask, head, target_labels, target_labels)
    y = _add_and_norm(report, y, attention, layer.self_attn_layer_norm, target_labels, pre_norm)

    report.step("Sub-layer 2 of 3: encoder-decoder attention, queries from the decoder, keys and values from "
                "the encoder output (section 3.2.3)")
    y_in = _sublayer_input(report, y, layer.encoder_attn_layer_norm, target_labels, pre_norm)
    attention, cross_weights = _multi_head_attention(
        report, layer.encoder_attn, y_in, memory, cross_mask, head, target_labels, source_labels)
    y = _add_and_norm(report, y, attention, layer.encoder_attn_layer_norm, target_labels, pre_norm)

    report.step("Sub-layer 3 of 3: position-wise feed-forward network (section 3.3, Eq. (2))")
    y = _feed_forward_sublayer(report, layer, y, target_labels, pre_norm)
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
    """Check the model and the indices; returns (config, the stack, pre_norm as the config asks for it)."""
    check_vanilla(model)
    config = model.config
    stack = getattr(model.model, stack_name)
    check_index(layer, len(stack.layers), "layer", f"the {stack_name}")
    check_index(head, config.num_heads, "head", "each attention layer")
    return config, stack, config.layer_norm == "pre"


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
    config, encoder, pre_norm = _prepare_walk(model, "encoder", layer, head)
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
        x, _ = _encoder_layer(_Report(None), earlier, x, key_mask, head, labels, pre_norm)
    x, weights = _encoder_layer(report, encoder.layers[layer], x, key_mask, head, labels, pre_norm)

    outputs = encoder(input_ids=pair.input_ids, attention_mask=pair.attention_mask,
                      output_hidden_states=True, output_attentions=True, return_dict=True)
    walk = Walk(
        output=x,
        reference=outputs.hidden_states[layer + 1][0],  # hidden_states[0] is the embedding output
        attention=weights,
        reference_attention={"self_attention": outputs.attentions[layer][0]},
    )
    return _compare(report, walk, labels)


def _encoder_memory(encoder: nn.Module, pair: EncodedPair, head: int, pre_norm: bool) -> torch.Tensor:
    """The encoder output (S, d_model) the decoder attends to, recomputed silently with the walk's own code."""
    silent, labels = _Report(None), pair.source_tokens
    key_mask = pair.attention_mask.bool()[0][None, :].expand(len(labels), -1)  # (S, S): padding keys are masked
    memory = _embed(silent, encoder, pair.input_ids[0], labels)  # (S, d_model)
    for encoder_layer in encoder.layers:
        memory, _ = _encoder_layer(silent, encoder_layer, memory, key_mask, head, labels, pre_norm)
    if pre_norm:  # Not in the paper: a pre-norm stack ends with a LayerNorm.
        memory = _layer_norm(silent, memory, encoder.layer_norm, labels)
    return memory


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
    config, decoder, pre_norm = _prepare_walk(model, "decoder", layer, head)
    pair = encode_pair(model, tokenizer, sentence, target)
    report = _Report(print_fn, max_items)
    labels = (pair.target_tokens, pair.source_tokens)
    _header(report, config, "Decoder", layer, head, pair)
    report(f"decoder input (target shifted right, section 3.1): {len(labels[0])} tokens {labels[0]}")

    report.step(f"Encoder output (memory): the source through all {config.num_encoder_layers} encoder layers "
                "(not printed)")
    memory = _encoder_memory(model.model.encoder, pair, head, pre_norm)
    report.rows("memory", memory, pair.source_tokens)

    report.step("Input: target embeddings and positional encodings (sections 3.4, 3.5)")
    y = _embed(report, decoder, pair.decoder_input_ids[0], labels[0])  # (T, d_model)
    T = y.shape[0]
    masks = (_causal_mask(T),  # (T, T): position i sees positions <= i
             pair.attention_mask.bool()[0][None, :].expand(T, -1))  # (T, S): padding keys are masked
    if layer > 0:
        report(f"decoder {_layers_before(layer)} recomputed the same way (not printed)")
    for earlier in decoder.layers[:layer]:
        y, _ = _decoder_layer(_Report(None), earlier, y, memory, masks, head, labels, pre_norm)
    y, weights = _decoder_layer(report, decoder.layers[layer], y, memory, masks, head, labels, pre_norm)

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
    return _compare(report, walk, labels[0])
