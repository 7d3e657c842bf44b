"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017, arXiv:1706.03762).

The file follows section 3 of the paper, parts before the whole: scaled dot-product attention (3.2.1), multi-head
attention (3.2.2), the three uses of attention in the model and their masks (3.2.3), the position-wise feed-forward
network (3.3), embeddings and softmax (3.4), positional encoding (3.5), the encoder and decoder layers and stacks
(3.1), and last the Hugging Face models built from them. Every departure from the paper is a config option that
defaults to the paper and is marked `# Not in the paper:` where it is coded.

Shapes: B batch, S source length, T target length, h heads, d_k / d_v per-head widths, V vocabulary.
"""

import math
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_vanilla import VanillaTransformerConfig

# Section 6.1: "We set the maximum output length during inference to input length + 50".
MAX_OUTPUT_LENGTH_OFFSET = 50

# Callers written for transformers < 5 pass the cache as `past_key_values`; transformers 5 renamed it `cache`.
# The same decorator transformers' own models use: it maps the old name to the new one with a FutureWarning,
# and keeps warning after transformers' own removal date instead of going silent.
_accept_past_key_values = deprecate_kwarg(
    "past_key_values", "5.40.0", new_name="cache", warn_if_greater_or_equal_version=True
)


# Helpers: inputs


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: "the output embeddings are offset by one position" (section 3.1)."""
    shifted = labels.new_full(labels.shape, pad_token_id)  # (B, T)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)  # ignored label positions become padding


def check_token_ids(input_ids: torch.Tensor, vocab_size: int, name: str) -> None:
    """Raise a clear error for ids outside the vocabulary, instead of torch's index error in the embedding.

    The check must not stall an accelerator: on the CPU it reads the minimum and maximum back (nothing waits for
    them there); on a GPU it is an asynchronous device assertion, which fails the next synchronizing call with the
    same message; inside `torch.compile` it is left out (the training data pipeline checks every batch instead,
    `data.TranslationCollator(vocab_size=...)`).
    """
    if input_ids.numel() == 0 or torch.compiler.is_compiling():
        return
    if input_ids.device.type != "cpu":
        torch._assert_async(
            ((input_ids >= 0) & (input_ids < vocab_size)).all(),
            f"{name} contains a token id outside the model's vocabulary 0..{vocab_size - 1} (config.vocab_size="
            f"{vocab_size}). Use the tokenizer that was trained with this model.",
        )
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"{name} contains token id {bad}, but the model's vocabulary has ids 0..{vocab_size - 1} "
            f"(config.vocab_size={vocab_size}). Use the tokenizer that was trained with this model"
            + (", and pass labels (with -100 for ignored positions) as `labels`, not as ids." if bad == -100 else ".")
        )


# Section 5.4: dropout


def apply_dropout(hidden_states: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout as `nn.functional.dropout`: in training, zero each element with probability p and scale the rest by
    1 / (1 - p); otherwise return the input.

    On the CPU the mask is drawn from random bits: each element gets 16 of them, read as an integer from 0 to 65535,
    and is dropped when that integer is below p * 65536 (rounded, so the rate is p to within 1 / 131072). It is
    1.7-1.9x as fast as drawing one `torch.rand` number per element and 2-4x as fast as PyTorch's CPU dropout
    (`bernoulli_`), and training runs 17 dropouts or more per update (docs/benchmarks.md, benchmarks/dropout_mask.py).
    Other devices keep PyTorch's fused kernel.
    """
    if not training or p == 0.0:
        return hidden_states
    # PyTorch's kernel also for a p outside 0..1 (it refuses them) and for rates 16 bits cannot tell from 0 or 1.
    if hidden_states.device.type != "cpu" or not 2**-16 <= p <= 1 - 2**-16:
        return nn.functional.dropout(hidden_states, p=p, training=True)
    count = hidden_states.numel()
    # One 64-bit random word per four elements: its four 16-bit quarters, as signed integers, are uniform on
    # -32768..32767, so "dropped" is "below -32768 + round(p * 65536)". (randint's upper bound is exclusive, so one
    # word of 2^64 never comes, a bias of 2^-64; `Tensor.random_`, which has all of them, does not torch.compile.)
    words = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=hidden_states.device)
    keep = words.view(torch.int16)[:count].view(hidden_states.shape) >= round(p * 65536) - 32768
    # The kept elements' scale in the input's dtype, as PyTorch's own dropout multiplies by it.
    return hidden_states * keep.to(hidden_states.dtype).div_(1.0 - p)


# Section 3.2.1: scaled dot-product attention


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1): Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, the readable reference path.

    query (B, h, T_q, d_k), key (B, h, T_k, d_k), value (B, h, T_k, d_v), attention_mask bool, True = attend.
    Returns the output as (B, T_q, h, d_v) and the attention weights as (B, h, T_q, T_k).
    """
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling  # (B, h, T_q, T_k)
    if attention_mask is not None:
        # The paper sets illegal connections to -inf; the dtype's minimum avoids NaN on a fully masked row.
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    # Not in the paper: dropout on the attention weights (config.attention_dropout, default 0).
    weights = apply_dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # (B, h, T_q, d_v)
    return output.transpose(1, 2).contiguous(), weights


@contextmanager
def float32_on_cpu(query: torch.Tensor, implementation: str):
    """In training, the backward of PyTorch's CPU kernel of scaled_dot_product_attention is several times slower in
    bf16/fp16 than in float32 at the lengths of sentences (measured in docs/benchmarks.md), so on the CPU, when a
    backward will follow, the fused kernel gets float32 inputs, out of autocast. (Decoding keeps its dtype: there
    the cast of the whole cache at every step would cost more.) Yields the cast to apply to queries, keys and
    values. Not a change of the model: float32 is the more exact arithmetic."""
    low_precision_cpu = query.device.type == "cpu" and query.dtype != torch.float32
    if implementation != "sdpa" or not low_precision_cpu or not torch.is_grad_enabled():
        yield lambda tensor: tensor
        return
    with torch.autocast("cpu", enabled=False):
        yield lambda tensor: tensor.float()


# Section 3.2.2: multi-head attention


class VanillaMultiHeadAttention(nn.Module):
    """Multi-head attention, section 3.2.2 and Figure 2 (right).

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O with head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).
    The h projections W_i^Q are stored side by side as one (d_model -> h*d_k) matrix, likewise W^K and W^V.
    The paper's projections are plain matrices, so there are no biases.

    This class is self-attention: queries, keys and values all come from the same positions (the encoder's and the
    decoder's self-attention, section 3.2.3). `VanillaEncoderDecoderAttention` below takes its keys and values from
    the encoder output instead.

    The kernel comes from transformers' attention interface (`config._attn_implementation`): "sdpa" (PyTorch's
    fused scaled_dot_product_attention, the default) or "eager" (`eager_attention_forward` above). Both compute
    Eq. (1); only eager returns the weights, so `output_attentions=True` runs eager for that call.
    """

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.num_heads = config.num_heads
        self.d_k = config.d_k or config.d_model // config.num_heads
        self.d_v = config.d_v or config.d_model // config.num_heads
        self.scaling = self.d_k**-0.5  # the 1/sqrt(d_k) of Eq. (1)
        self.attention_dropout = config.attention_dropout
        self.is_causal = False  # masks are always passed explicitly, so the kernel must not add its own
        self.layer_idx = layer_idx  # which layer's keys and values this module keeps in the cache

        self.q_proj = nn.Linear(config.d_model, self.num_heads * self.d_k, bias=False)  # W^Q, all heads
        self.k_proj = nn.Linear(config.d_model, self.num_heads * self.d_k, bias=False)  # W^K
        self.v_proj = nn.Linear(config.d_model, self.num_heads * self.d_v, bias=False)  # W^V
        self.out_proj = nn.Linear(self.num_heads * self.d_v, config.d_model, bias=False)  # W^O

    def _split_heads(self, x: torch.Tensor, head_dim: int) -> torch.Tensor:
        batch_size, length, _ = x.shape
        return x.view(batch_size, length, self.num_heads, head_dim).transpose(1, 2)  # (B, h, L, head_dim)

    def keys_and_values(
        self, hidden_states: torch.Tensor, cache: EncoderDecoderCache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K W^K and V W^V of every head, from the positions being attended to: hidden_states (B, T_q, d_model)."""
        key = self._split_heads(self.k_proj(hidden_states), self.d_k)  # (B, h, T_q, d_k)
        value = self._split_heads(self.v_proj(hidden_states), self.d_v)  # (B, h, T_q, d_v)
        if cache is not None:
            # Incremental decoding: append this step's keys and values to the earlier ones.
            key, value = cache.self_attention_cache.update(key, value, self.layer_idx)  # (B, h, T_k, .)
        return key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, T_q, d_model) gives the queries; keys and values come from key_value_states
        (B, T_k, d_model) in encoder-decoder attention, else from hidden_states (self-attention)."""
        batch_size, query_length, _ = hidden_states.shape
        query = self._split_heads(self.q_proj(hidden_states), self.d_k)  # (B, h, T_q, d_k)
        key, value = self.keys_and_values(
            hidden_states if key_value_states is None else key_value_states, cache
        )  # (B, h, T_k, d_k), (B, h, T_k, d_v)

        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        dtype = query.dtype
        with float32_on_cpu(query, implementation) as cast:
            output, weights = attention(
                self,
                cast(query),
                cast(key),
                cast(value),
                attention_mask,
                scaling=self.scaling,
                dropout=self.attention_dropout if self.training else 0.0,
            )  # output (B, T_q, h, d_v)
        output = output.to(dtype).reshape(batch_size, query_length, self.num_heads * self.d_v)  # Concat(head_1..h)
        return self.out_proj(output), weights  # (B, T_q, d_model)


# Section 3.2.3: applications of attention in the model
#
# The same multi-head attention is used in three ways; what differs is where the keys and values come from and
# which connections the mask forbids (bool masks, True = may attend, broadcast over heads):
#
# 1. Encoder self-attention (`VanillaEncoderLayer.self_attn`): every source position attends to every source
#    position; only padding is masked (`padding_mask`).
# 2. Masked decoder self-attention (`VanillaDecoderLayer.self_attn`): each target position attends to the positions
#    up to and including itself (`causal_mask`), and not to target padding (`combine_masks`), "to preserve the
#    auto-regressive property".
# 3. Encoder-decoder attention (`VanillaDecoderLayer.encoder_attn`, `VanillaEncoderDecoderAttention`): queries from
#    the previous decoder layer, keys and values from the encoder output; source padding is masked.


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Uses 1-3: (B, L) with 1 for tokens and 0 for padding -> (B, 1, 1, L) bool, True where a key may be attended
    to."""
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].bool()


def causal_mask(query_length: int, key_length: int, device: torch.device) -> torch.Tensor:
    """Use 2, the decoder's mask: a query sees keys up to its own position, never later ones.

    With a cache the queries are the last `query_length` of `key_length` positions. Returns (1, 1, T_q, T_k) bool.
    """
    query_positions = torch.arange(key_length - query_length, key_length, device=device)
    key_positions = torch.arange(key_length, device=device)
    return (key_positions[None, :] <= query_positions[:, None])[None, None]


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of broadcastable bool masks, ignoring the ones that are None."""
    present = [mask for mask in masks if mask is not None]
    if not present:
        return None
    combined = present[0]
    for mask in present[1:]:
        combined = combined & mask
    return combined


class VanillaEncoderDecoderAttention(VanillaMultiHeadAttention):
    """Use 3, encoder-decoder attention: "the queries come from the previous decoder layer, and the memory keys and
    values come from the output of the encoder" (section 3.2.3). Every decoder position attends to every source
    position. Called with key_value_states, the encoder output (B, S, d_model)."""

    def keys_and_values(
        self, encoder_hidden_states: torch.Tensor, cache: EncoderDecoderCache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The encoder output does not change while decoding: project it once, then reuse it.
        if cache is not None and cache.is_updated.get(self.layer_idx):
            layer_cache = cache.cross_attention_cache.layers[self.layer_idx]
            return layer_cache.keys, layer_cache.values
        key = self._split_heads(self.k_proj(encoder_hidden_states), self.d_k)  # (B, h, S, d_k)
        value = self._split_heads(self.v_proj(encoder_hidden_states), self.d_v)  # (B, h, S, d_v)
        if cache is not None:
            key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        return key, value


# Section 3.3: position-wise feed-forward network


class VanillaFeedForward(nn.Module):
    """Eq. (2): FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position separately (section 3.3)."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.d_ff)  # W_1, b_1
        self.fc2 = nn.Linear(config.d_ff, config.d_model)  # W_2, b_2
        self.activation_dropout = config.activation_dropout

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = torch.relu(self.fc1(hidden_states))  # (B, L, d_ff)
        # Not in the paper: dropout after the ReLU (config.activation_dropout, default 0).
        hidden_states = apply_dropout(hidden_states, p=self.activation_dropout, training=self.training)
        return self.fc2(hidden_states)  # (B, L, d_model)


# Section 3.4: embeddings and softmax
#
# "We use learned embeddings to convert the input tokens and output tokens to vectors of dimension d_model. We also
# use the usual learned linear transformation and softmax function to convert the decoder output to predicted
# next-token probabilities. In our model, we share the same weight matrix between the two embedding layers and the
# pre-softmax linear transformation [...]. In the embedding layers, we multiply those weights by sqrt(d_model)."
# The pieces are built here; the stacks apply the scaling (`VanillaStack.embed`), the bare model holds the two
# embeddings, and the generation model the projection (`lm_head`), where transformers expects them. The softmax
# itself is in the loss (cross-entropy over the logits) and in `generate()`.


def token_embeddings(config: VanillaTransformerConfig) -> tuple[nn.Embedding, nn.Embedding]:
    """The encoder's and the decoder's embedding, (V, d_model) each: one module when the weights are tied."""
    encoder_embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
    if config.tie_word_embeddings:
        return encoder_embed, encoder_embed  # one weight matrix for both embedding layers
    # Not in the paper: tie_word_embeddings=False gives the encoder and decoder their own embeddings.
    return encoder_embed, nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)


def embedding_scale(config: VanillaTransformerConfig) -> float:
    """The factor sqrt(d_model) on the embedding weights, applied in `VanillaStack.embed`."""
    # Not in the paper: scale_embedding=False leaves the embeddings unscaled.
    return math.sqrt(config.d_model) if config.scale_embedding else 1.0


def pre_softmax_projection(config: VanillaTransformerConfig) -> nn.Linear:
    """The learned linear transformation from the decoder output (B, T, d_model) to next-token logits (B, T, V).
    A plain matrix, as the embeddings it is tied to: no bias."""
    return nn.Linear(config.d_model, config.vocab_size, bias=False)


# The loss: label-smoothed cross-entropy (section 5.4) of the pre-softmax projection, without the (N, V) logits.
#
# The plain path projects N target positions onto V words, keeps the (N, V) logits, their float32 copy and its
# gradient: at V = 37000 and 25k tokens that is several GB. `projected_cross_entropy` computes the same loss and
# gradients a block of rows at a time and never holds more than a block (8M logits by default): forward and
# backward of each block are done together (the softmax is its own gradient's main term), so no logits are kept
# for the backward pass, and the memory of a block is free again before the rest of the model's backward starts.


class _ProjectedCrossEntropy(torch.autograd.Function):
    """sum over rows n with labels[n] != -100 of the label-smoothed cross-entropy of softmax(hidden[n] W^T).

    With p = softmax(logits) and eps the smoothing, d loss / d logits = p - eps/V - (1 - eps) onehot(target). Only
    p goes through the (rows, V) products; the constant and one-hot terms are added afterwards as (V, d) and
    (N, d) corrections, which saves passes over the (rows, V) block, where the time goes.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, label_smoothing, dtype, rows, with_grad):
        compute_w = weight.to(dtype)  # (V, d): once, not once per block as autocast would
        compute_h = hidden.to(dtype)  # (N, d)
        keep = labels != -100  # (N,)
        all_kept = hidden.device.type == "cpu" and bool(keep.all())  # the CPU caller drops ignored rows
        target = labels.clamp_min(0)
        loss = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden, dtype=torch.float32) if with_grad else None
        grad_weight = None
        for start in range(0, hidden.shape[0], rows):
            block = slice(start, start + rows)
            log_p = torch.log_softmax(compute_h[block] @ compute_w.T, dim=-1, dtype=torch.float32)  # (rows, V)
            # -log p(target), and -(1/V) sum_j log p(j): F.cross_entropy(label_smoothing=)'s two terms
            row_loss = (label_smoothing - 1) * log_p.gather(1, target[block, None]).squeeze(1)
            row_loss -= label_smoothing * log_p.mean(-1)
            loss += torch.where(keep[block], row_loss, 0.0).sum()
            if with_grad:
                p = torch.exp(log_p, out=torch.empty(log_p.shape, dtype=dtype, device=log_p.device))  # softmax
                if not all_kept:
                    p.mul_(keep[block, None])  # no gradient from ignored rows
                grad_hidden[block] = p @ compute_w
                product = (p.T @ compute_h[block]).float()  # (V, d)
                grad_weight = product if grad_weight is None else grad_weight.add_(product)
        if with_grad:
            if grad_weight is None:  # no row to project (every label ignored)
                grad_weight = torch.zeros_like(weight, dtype=torch.float32)
            kept_hidden = hidden.float() * keep[:, None]  # (N, d)
            kept_weight = weight.float()
            vocab = weight.shape[0]
            # - eps/V on every logit of a kept row
            grad_hidden -= (label_smoothing / vocab) * kept_weight.sum(0) * keep[:, None]
            grad_weight -= (label_smoothing / vocab) * kept_hidden.sum(0)
            # - (1 - eps) on each kept row's target logit
            grad_hidden -= (1 - label_smoothing) * kept_weight[target] * keep[:, None]
            grad_weight.index_add_(0, target, kept_hidden, alpha=label_smoothing - 1)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.input_dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.input_dtypes
        return ((grad_hidden * grad_loss).to(hidden_dtype), (grad_weight * grad_loss).to(weight_dtype),
                None, None, None, None, None)


def projected_cross_entropy(
    hidden_states: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
    block_elements: int = 1 << 23,
) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of `hidden_states @ weight.T`, for labels != -100, without the logits.

    hidden_states (..., d_model), weight (V, d_model) (the pre-softmax projection), labels (...) with -100 where
    ignored. Equal to `F.cross_entropy(hidden_states @ weight.T, labels, reduction="sum", ignore_index=-100,
    label_smoothing=...)`, in loss and gradients, while holding at most `block_elements` logits at a time. Under
    autocast the products run in the autocast dtype and the softmax in float32, as the plain path does.
    """
    hidden_states, labels = hidden_states.reshape(-1, hidden_states.shape[-1]), labels.reshape(-1)
    device = hidden_states.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden_states.dtype
    if device == "cpu":  # ignored rows need no projection; selecting them reads nothing back from a GPU here
        kept = (labels != -100).nonzero().squeeze(1)
        hidden_states, labels = hidden_states[kept], labels[kept]
    blocks = max(1, -(-hidden_states.shape[0] * weight.shape[0] // block_elements))
    rows = max(1, -(-hidden_states.shape[0] // blocks))  # blocks of equal size: no small, slow last one
    with_grad = torch.is_grad_enabled() and (hidden_states.requires_grad or weight.requires_grad)
    with torch.autocast(device, enabled=False):
        return _ProjectedCrossEntropy.apply(hidden_states, weight, labels, label_smoothing, dtype, rows, with_grad)


# The weight sharing, as transformers declares it (`_tied_weights_keys`, target -> source): it ties the weights again
# after loading and after `resize_token_embeddings`, and saves the shared matrix once, as `shared.weight`. As in
# transformers' own encoder-decoders (BART, Marian), the bare model holds the one matrix as `shared`, and both stacks'
# embeddings and the pre-softmax projection are tied to it. Folders saved before `shared` existed hold the matrix as
# `encoder.embed_tokens.weight`: loading ties the other way round then (`PreTrainedModel.tie_weights`), and loads it.
TIED_EMBEDDINGS = {"encoder.embed_tokens.weight": "shared.weight",  # in VanillaTransformerModel
                   "decoder.embed_tokens.weight": "shared.weight"}
TIED_PRE_SOFTMAX_PROJECTION = {"lm_head.weight": "model.shared.weight"}  # in ...ForConditionalGeneration


# Section 3.5: positional encoding


class SinusoidalPositionalEncoding(nn.Module):
    """Section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    A table for the first `num_positions` positions is kept as a non-persistent buffer (not saved: it is a
    function of the shapes). Longer inputs are encoded on the fly, so there is no length limit.
    """

    def __init__(self, num_positions: int, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", self.encode(torch.arange(num_positions), d_model), persistent=False)

    @staticmethod
    def encode(positions: torch.Tensor, d_model: int) -> torch.Tensor:
        """Encodings for integer `positions` (any shape) -> (*positions.shape, d_model), in float32."""
        two_i = torch.arange(0, d_model, 2, dtype=torch.float64, device=positions.device)  # 2i
        angles = positions.to(torch.float64)[..., None] / torch.pow(10000.0, two_i / d_model)  # (..., d_model/2)
        encoding = torch.stack((angles.sin(), angles.cos()), dim=-1)  # even dims sin, odd dims cos
        return encoding.flatten(-2).to(torch.float32)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids (T,) or (B, T) -> (..., d_model)."""
        if int(position_ids.max()) < self.table.shape[0]:
            return self.table[position_ids]
        return self.encode(position_ids, self.d_model).to(self.table.dtype)

    def span(self, start: int, length: int) -> torch.Tensor:
        """The encodings of positions start .. start + length - 1, (length, d_model): what the stacks use. The
        bounds are Python numbers, so nothing is read back from the device (and `torch.compile` sees no break)."""
        if start + length <= self.table.shape[0]:
            return self.table[start : start + length]
        positions = torch.arange(start, start + length, device=self.table.device)
        return self.encode(positions, self.d_model).to(self.table.dtype)


class LearnedPositionalEmbedding(nn.Embedding):
    """Learned positional embeddings, Table 3 row (E): "nearly identical results" to the sinusoids."""

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        self._check_length(int(position_ids.max()) + 1)
        return super().forward(position_ids)

    def span(self, start: int, length: int) -> torch.Tensor:
        """Embeddings of positions start .. start + length - 1, (length, d_model), with no read-back."""
        self._check_length(start + length)
        return self.weight[start : start + length]

    def _check_length(self, positions: int) -> None:
        if positions > self.num_embeddings:
            raise ValueError(
                f"Sequence of {positions} positions is longer than the learned position table "
                f"(config.max_position_embeddings={self.num_embeddings}). Truncate the input, or use "
                f'positional_encoding="sinusoidal", which has no length limit.'
            )


# Section 3.1: encoder and decoder layers


class VanillaSublayers(GradientCheckpointingLayer):
    """The residual connection around each sub-layer, section 3.1, with residual dropout, section 5.4.

    Post-norm (the paper): LayerNorm(x + Dropout(Sublayer(x))). Pre-norm: x + Dropout(Sublayer(LayerNorm(x))).
    """

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.dropout = config.dropout
        # Not in the paper: layer_norm="pre" normalizes each sub-layer's input instead of the residual sum.
        self.pre_norm = config.layer_norm == "pre"

    def sublayer_input(self, hidden_states: torch.Tensor, layer_norm: nn.LayerNorm) -> torch.Tensor:
        return layer_norm(hidden_states) if self.pre_norm else hidden_states

    def add_and_norm(self, residual: torch.Tensor, output: torch.Tensor, layer_norm: nn.LayerNorm) -> torch.Tensor:
        hidden_states = residual + apply_dropout(output, p=self.dropout, training=self.training)
        return hidden_states if self.pre_norm else layer_norm(hidden_states)


class VanillaEncoderLayer(VanillaSublayers):
    """Encoder layer, section 3.1 and Figure 1 (left): multi-head self-attention, then the feed-forward network."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int = 0):
        super().__init__(config)
        self.self_attn = VanillaMultiHeadAttention(config, layer_idx=layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = VanillaFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, S, d_model); attention_mask (B, 1, 1, S), False on source padding."""
        # Sub-layer 1: self-attention (section 3.2.3, use 1); every position attends to every non-padding source
        # position.
        attention, weights = self.self_attn(
            self.sublayer_input(hidden_states, self.self_attn_layer_norm),
            attention_mask=attention_mask,
            output_attentions=output_attentions,
        )
        hidden_states = self.add_and_norm(hidden_states, attention, self.self_attn_layer_norm)

        # Sub-layer 2: position-wise feed-forward network.
        output = self.ffn(self.sublayer_input(hidden_states, self.final_layer_norm))
        hidden_states = self.add_and_norm(hidden_states, output, self.final_layer_norm)
        return hidden_states, weights


class VanillaDecoderLayer(VanillaSublayers):
    """Decoder layer, section 3.1 and Figure 1 (right): masked self-attention, encoder-decoder attention over
    the encoder stack's output (section 3.2.3), then the feed-forward network."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int = 0):
        super().__init__(config)
        self.self_attn = VanillaMultiHeadAttention(config, layer_idx=layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.encoder_attn = VanillaEncoderDecoderAttention(config, layer_idx=layer_idx)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = VanillaFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """hidden_states (B, T, d_model); encoder_hidden_states (B, S, d_model); attention_mask
        (B or 1, 1, T, T_k) causal and target padding; encoder_attention_mask (B, 1, 1, S) source padding."""
        # Sub-layer 1: masked self-attention (section 3.2.3, use 2); position i sees positions <= i only.
        attention, self_weights = self.self_attn(
            self.sublayer_input(hidden_states, self.self_attn_layer_norm),
            attention_mask=attention_mask,
            cache=cache,
            output_attentions=output_attentions,
        )
        hidden_states = self.add_and_norm(hidden_states, attention, self.self_attn_layer_norm)

        # Sub-layer 2: encoder-decoder attention (section 3.2.3, use 3); queries from the decoder, keys and values
        # from the encoder.
        attention, cross_weights = self.encoder_attn(
            self.sublayer_input(hidden_states, self.encoder_attn_layer_norm),
            key_value_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask,
            cache=cache,
            output_attentions=output_attentions,
        )
        hidden_states = self.add_and_norm(hidden_states, attention, self.encoder_attn_layer_norm)

        # Sub-layer 3: position-wise feed-forward network.
        output = self.ffn(self.sublayer_input(hidden_states, self.final_layer_norm))
        hidden_states = self.add_and_norm(hidden_states, output, self.final_layer_norm)
        return hidden_states, self_weights, cross_weights


# Section 3.1: the encoder and decoder stacks


class VanillaStack(nn.Module):
    """What the encoder and decoder stacks share: embeddings (3.4), positional encodings (3.5), N layers."""

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding, layers: list[nn.Module]):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_scale = embedding_scale(config)  # section 3.4
        if config.positional_encoding == "sinusoidal":
            self.embed_positions = SinusoidalPositionalEncoding(config.max_position_embeddings, config.d_model)
        else:
            self.embed_positions = LearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.ModuleList(layers)
        # Not in the paper: a pre-norm stack ends with a LayerNorm, as its layers leave their output unnormalized.
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.layer_norm == "pre" else None

    def embed(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        past_length: int = 0,
        name: str = "input_ids",
    ) -> torch.Tensor:
        """Token embedding times sqrt(d_model) plus positional encoding, then dropout (sections 3.4, 3.5, 5.4).

        `inputs_embeds` stands for the unscaled embedding lookup: it is scaled and position-encoded exactly as
        ids would be.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"Pass exactly one of {name} and {name.replace('input_ids', 'inputs_embeds')}.")
        if inputs_embeds is None:
            check_token_ids(input_ids, self.embed_tokens.num_embeddings, name)
            inputs_embeds = self.embed_tokens(input_ids)  # (B, L, d_model)
        positions = self.embed_positions.span(past_length, inputs_embeds.shape[1])  # (L, d_model)
        hidden_states = inputs_embeds * self.embed_scale + positions.to(inputs_embeds.dtype)
        return apply_dropout(hidden_states, p=self.config.dropout, training=self.training)

    def _resolve(self, output_attentions, output_hidden_states, return_dict):
        config = self.config
        return (
            config.output_attentions if output_attentions is None else output_attentions,
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.return_dict if return_dict is None else return_dict,
        )


class VanillaTransformerEncoder(VanillaStack):
    """The encoder, section 3.1: a stack of N identical layers over the embedded source."""

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding):
        layers = [VanillaEncoderLayer(config, layer_idx=i) for i in range(config.num_encoder_layers)]
        super().__init__(config, embed_tokens, layers)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        """input_ids (B, S); attention_mask (B, S), 1 for tokens and 0 for padding."""
        output_attentions, output_hidden_states, return_dict = self._resolve(
            output_attentions, output_hidden_states, return_dict
        )
        hidden_states = self.embed(input_ids, inputs_embeds)  # (B, S, d_model)
        mask = padding_mask(attention_mask)  # (B, 1, 1, S)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)

        output = BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )
        return output if return_dict else output.to_tuple()


class VanillaTransformerDecoder(VanillaStack):
    """The decoder, section 3.1: a stack of N identical layers over the embedded, right-shifted target."""

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding):
        layers = [VanillaDecoderLayer(config, layer_idx=i) for i in range(config.num_decoder_layers)]
        super().__init__(config, embed_tokens, layers)

    @_accept_past_key_values
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """input_ids (B, T) (with a cache, only the new positions); attention_mask (B, T_past + T), 1 for target
        tokens; encoder_hidden_states (B, S, d_model); encoder_attention_mask (B, S)."""
        output_attentions, output_hidden_states, return_dict = self._resolve(
            output_attentions, output_hidden_states, return_dict
        )
        if encoder_hidden_states is None:
            raise ValueError("The decoder attends to the encoder output: pass encoder_hidden_states (B, S, d_model).")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        elif cache is not None and not isinstance(cache, EncoderDecoderCache):
            # A decoder-only cache holds the self-attention keys; encoder-decoder attention needs its own.
            cache = EncoderDecoderCache(cache, DynamicCache())
        if not use_cache:
            cache = None
        past_length = cache.get_seq_length() if cache is not None else 0

        hidden_states = self.embed(input_ids, inputs_embeds, past_length, name="decoder_input_ids")  # (B, T, d)
        query_length = hidden_states.shape[1]
        self_mask = None
        if query_length > 1 or attention_mask is not None:
            self_mask = combine_masks(
                causal_mask(query_length, past_length + query_length, hidden_states.device),  # (1, 1, T, T_k)
                padding_mask(attention_mask),  # (B, 1, 1, T_k)
            )
        cross_mask = padding_mask(encoder_attention_mask)  # (B, 1, 1, S)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_self_attentions = () if output_attentions else None
        all_cross_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, self_weights, cross_weights = layer(
                hidden_states,
                encoder_hidden_states,  # positional, so that gradient checkpointing sees it
                self_mask,
                cross_mask,
                cache=cache,
                output_attentions=output_attentions,
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_self_attentions += (self_weights,)
                all_cross_attentions += (cross_weights,)
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)

        output = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            cache=cache,
            hidden_states=all_hidden_states,
            attentions=all_self_attentions,
            cross_attentions=all_cross_attentions,
        )
        return output if return_dict else output.to_tuple()


# The Hugging Face models

# Door 1 of the translation pipeline (see modeling_vanilla/pipeline_translation.py): a saved folder or Hub repo carries
# the pipeline's code and declares it in config.json, in the form `Pipeline.save_pretrained` writes, so that users
# without this package can run `pipeline("translation", model=folder, trust_remote_code=True)`. Named here as data:
# this file imports nothing from the package but the configuration, so the pipeline module is never imported by it.
PIPELINE_FILE = "pipeline_translation.py"
CUSTOM_PIPELINES = {
    "translation": {"impl": "pipeline_translation.TranslationPipeline", "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}
}


class VanillaTransformerPreTrainedModel(PreTrainedModel):
    """Weight initialization and the transformers integration shared by both models.

    `save_pretrained` also writes door 1 of the translation pipeline into the folder (see there).
    """

    config_class = VanillaTransformerConfig
    config: VanillaTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["VanillaEncoderLayer", "VanillaDecoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        """The paper gives no initialization. Ours, and why:

        - Linear layers: Xavier/Glorot uniform, biases zero. It keeps the activation variance about constant
          through each projection, and it is what the paper's own code base (tensor2tensor) used.
        - Token embeddings: N(0, d_model^-1/2), padding row zero. Times sqrt(d_model) (section 3.4) the
          embedding has unit variance, the same scale as the positional encodings in [-1, 1]; as the tied
          pre-softmax projection it gives initial logits of about unit variance.
        - LayerNorm: gain one, bias zero. Sinusoidal table: recomputed, since it is never saved.
        """
        if isinstance(module, SinusoidalPositionalEncoding):
            init.copy_(module.table, module.encode(torch.arange(module.table.shape[0]), module.d_model))
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.d_model**-0.5)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def mark_tied_weights_as_initialized(self, loading_info) -> None:
        """As transformers', but a tie's source that the checkpoint lacks stays missing, so that it is initialized.

        transformers flags every tied copy as initialized, then, for models defined outside transformers, drops from
        the missing keys every parameter that carries the flag (a rule for code that shares whole modules). Both
        stacks' embeddings are the module `shared` (section 3.4), so `shared.weight` carries its copies' flag; without
        this, a checkpoint that lacks it would leave it on the meta device and report nothing missing. A source
        whose copy the checkpoint holds (`encoder.embed_tokens.weight`, in folders saved before `shared` existed)
        is loaded through that copy: it is not missing."""
        ties = getattr(self, "all_tied_weights_keys", {})
        missing = loading_info.missing_keys
        missing_sources = {source for source in ties.values() if source in missing}
        missing_sources -= {source for target, source in ties.items() if target not in missing}
        super().mark_tied_weights_as_initialized(loading_info)
        loading_info.missing_keys |= missing_sources

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, plus door 1 of the translation pipeline.

        transformers copies the model's code (this file and its relative import, the configuration) and writes
        `auto_map`. This also copies `pipeline_translation.py` into the folder (from where `_pipeline_file` finds
        it) and declares it in the saved config.json as `custom_pipelines`. Where no copy is found, nothing is
        declared, unless the folder already holds the file.

        The copy happens before transformers saves, so that `push_to_hub=True` uploads it (see
        `_get_files_timestamps`). The declaration is set on the config only for the save: a config in memory or
        loaded by the installed package carries none (see modeling_vanilla/__init__.py for why).
        """
        folder = Path(save_directory)
        source, target = self._pipeline_file(), folder / PIPELINE_FILE
        if is_main_process and source is not None and not folder.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            if not (target.exists() and target.samefile(source)):
                shutil.copyfile(source, target)
        missing = object()
        declared = self.config.__dict__.get("custom_pipelines", missing)
        if target.is_file():
            self.config.custom_pipelines = CUSTOM_PIPELINES
        elif declared is not missing:
            del self.config.custom_pipelines  # the folder lacks the file the declaration would point to
        try:
            super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        finally:
            self.config.__dict__.pop("custom_pipelines", None)
            if declared is not missing:
                self.config.custom_pipelines = declared

    def _pipeline_file(self) -> Path | None:
        """pipeline_translation.py: beside this module in the installed package. A remote-code copy of this module
        sits alone in transformers' module cache, so for it: the folder the model was loaded from, or that Hub
        repo's files in the local Hugging Face cache (never the network)."""
        beside = Path(__file__).with_name(PIPELINE_FILE)
        if beside.is_file():
            return beside
        origin = str(self.name_or_path or "")
        if origin and Path(origin, PIPELINE_FILE).is_file():
            return Path(origin, PIPELINE_FILE)
        if origin and not Path(origin).exists():
            from huggingface_hub import try_to_load_from_cache

            try:
                cached = try_to_load_from_cache(origin, PIPELINE_FILE)
            except ValueError:  # not a repo id
                return None
            return Path(cached) if isinstance(cached, str) else None
        return None

    def _get_files_timestamps(self, working_dir: str | os.PathLike) -> dict[str, float]:
        """With `push_to_hub=True`, `save_pretrained` uploads the files that are new or changed after this snapshot
        of the folder. The pipeline file is copied before it (see `save_pretrained`), so it is left out of the
        snapshot to be uploaded with the rest."""
        timestamps = super()._get_files_timestamps(working_dir)
        timestamps.pop(PIPELINE_FILE, None)
        return timestamps


class VanillaTransformerModel(VanillaTransformerPreTrainedModel):
    """The encoder-decoder of Figure 1, without the output projection. Returns the decoder's last hidden states."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        encoder_embed, decoder_embed = token_embeddings(config)  # section 3.4
        if config.tie_word_embeddings:
            self.shared = encoder_embed  # the one matrix of section 3.4, which both stacks use
            self._tied_weights_keys = dict(TIED_EMBEDDINGS)
        self.encoder = VanillaTransformerEncoder(config, encoder_embed)
        self.decoder = VanillaTransformerDecoder(config, decoder_embed)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared if self.config.tie_word_embeddings else self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder.embed_tokens = value
        if self.config.tie_word_embeddings:
            self.shared = self.decoder.embed_tokens = value

    @_accept_past_key_values
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> Seq2SeqModelOutput | tuple:
        """input_ids (B, S) and attention_mask (B, S) for the source; decoder_input_ids (B, T) for the
        right-shifted target. Returns the decoder's last hidden state (B, T, d_model) and the encoder output."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)

        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            inputs_embeds=decoder_inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class VanillaTransformerForConditionalGeneration(VanillaTransformerPreTrainedModel, GenerationMixin):
    """The full model of Figure 1: encoder-decoder, then the linear pre-softmax projection (section 3.4), with
    the cross-entropy loss from `labels` and `generate()` (beam size 4, length penalty 0.6: section 6.1)."""

    _tied_weights_keys = TIED_PRE_SOFTMAX_PROJECTION  # section 3.4, with the embeddings when tie_word_embeddings
    # Trainer passes `num_items_in_batch` (the label tokens of the whole accumulated batch, over all processes) to
    # forward, and then does not divide the loss by the accumulation steps itself: the loss is then the mean over
    # every token of the update, whatever the accumulation steps, number of processes and lengths of the micro-batches.
    accepts_loss_kwargs = True

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.model = VanillaTransformerModel(config)
        self.lm_head = pre_softmax_projection(config)  # section 3.4
        self.post_init()
        # Section 6.1: beam search with a beam size of 4 and length penalty alpha = 0.6. The paper used GNMT's
        # penalty lp(Y) = ((5 + |Y|) / 6)^alpha; transformers divides the log-probability by |Y|^alpha instead.
        # Both favour longer outputs as alpha grows; the rankings they give can differ.
        self.generation_config.num_beams = 4
        self.generation_config.length_penalty = 0.6

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if not self.config.tie_word_embeddings:  # the untied decoder embedding is resized alongside
            decoder = self.model.decoder
            decoder.embed_tokens = self._get_resized_embeddings(
                decoder.embed_tokens, embeddings.num_embeddings, mean_resizing=mean_resizing
            )
        return embeddings

    @_accept_past_key_values
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        output_logits: bool = True,
    ) -> Seq2SeqLMOutput | tuple:
        """As `VanillaTransformerModel.forward`, plus `labels` (B, T): target ids, -100 where ignored. With
        labels and no decoder inputs, the decoder inputs are the labels shifted right. Returns logits (B, T, V)
        and, with labels, the mean cross-entropy over non-ignored positions; with `num_items_in_batch` (passed by
        Trainer), their summed cross-entropy divided by it instead. `label_smoothing` (section 5.4: 0.1 in training)
        smooths the target uniformly over the vocabulary. `output_logits=False` returns no logits and computes the
        loss with `projected_cross_entropy`, which never holds the (B, T, V) logits (training's path)."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if labels is not None:
            use_cache = False  # teacher forcing sees the whole target at once
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, d_model)
        # Section 3.4: the pre-softmax projection; the softmax is inside the cross-entropy below.
        logits = self.lm_head(hidden_states) if output_logits else None  # (B, T, V)

        loss = None
        if labels is not None:
            labels = labels.to(hidden_states.device)
            if output_logits or torch.compiler.is_compiling():
                # torch.compile fuses this plain path itself (the blocked one is a Python loop over rows).
                full = self.lm_head(hidden_states) if logits is None else logits  # (B, T, V)
                loss = nn.functional.cross_entropy(
                    full.float().flatten(0, -2), labels.flatten(), reduction="sum", label_smoothing=label_smoothing
                )  # ignores the -100 positions
            else:  # only the loss is wanted: no (B, T, V) logits are ever held
                loss = projected_cross_entropy(hidden_states, self.lm_head.weight, labels, label_smoothing)
            # The mean over this batch's targets, or Trainer's share of the mean over the whole accumulated batch.
            loss = loss / ((labels != -100).sum() if num_items_in_batch is None else num_items_in_batch)
        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )
        return output if return_dict else output.to_tuple()

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Used by `DataCollatorForSeq2Seq` to build decoder inputs for `Seq2SeqTrainer`."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate`, with the paper's output length limit as the default: input length + 50
        (section 6.1), used when neither the call nor the generation config sets max_length/max_new_tokens."""
        config = generation_config if generation_config is not None else self.generation_config
        length_set = any(kwargs.get(key) is not None for key in ("max_length", "max_new_tokens")) or (
            config.max_length is not None or config.max_new_tokens is not None
        )
        if not length_set:
            source = inputs if inputs is not None else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            if source is None and kwargs.get("encoder_outputs") is not None:
                source = kwargs["encoder_outputs"][0]
            if source is not None:
                kwargs["max_new_tokens"] = source.shape[1] + MAX_OUTPUT_LENGTH_OFFSET
        return super().generate(inputs, generation_config=generation_config, **kwargs)


__all__ = [
    "VanillaTransformerPreTrainedModel",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
]
