"""Section 3.2: attention. Eq. (1) per head, multi-head split and concatenation, the masks of the three uses in
section 3.2.3, and the two kernels (eager, the equation as written; SDPA, PyTorch's fused one) computing the same."""

import math

import pytest
import torch

from modeling_vanilla import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
)
from tests.helpers import forward_kwargs, random_batch


def count_sdpa_calls(monkeypatch) -> list:
    """Replace PyTorch's SDPA by a wrapper that records each real call; returns the record."""
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


# Sections 3.2.1 and 3.2.2: Eq. (1) in every head, then Concat(head_1, ..., head_h) W^O


@pytest.mark.parametrize("num_heads,d_k,d_v", [(1, None, None), (4, None, None), (4, 6, 10)])
def test_eager_attention_is_equation_1(num_heads, d_k, d_v):
    """softmax(Q K^T / sqrt(d_k)) V, computed by hand head by head from the layer's own W^Q, W^K, W^V, W^O, then
    concatenated. With several heads and d_k != d_v != d_model / h, a 1/sqrt(d_model) or 1/sqrt(d_v) scale, a wrong
    head split or a wrong concatenation order gives other numbers. Padded keys get weight zero."""
    config = VanillaTransformerConfig.tiny(num_heads=num_heads, d_k=d_k, d_v=d_v, dropout=0.0)
    model = VanillaTransformerModel(config).eval()
    model.set_attn_implementation("eager")
    attention = model.encoder.layers[0].self_attn
    d_k, d_v = d_k or config.d_model // num_heads, d_v or config.d_model // num_heads
    x = torch.randn(2, 5, config.d_model)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    W_q, W_k, W_v, W_o = (p.weight.T for p in (attention.q_proj, attention.k_proj, attention.v_proj,
                                                 attention.out_proj))  # (d_model, h*d_k) ... (h*d_v, d_model)

    expected, expected_weights = [], []
    for b in range(2):
        heads, weights = [], []
        for i in range(num_heads):
            Q = x[b] @ W_q[:, i * d_k : (i + 1) * d_k]  # (T, d_k): Q W_i^Q
            K = x[b] @ W_k[:, i * d_k : (i + 1) * d_k]  # (T, d_k)
            V = x[b] @ W_v[:, i * d_v : (i + 1) * d_v]  # (T, d_v)
            scores = Q @ K.T / math.sqrt(d_k)  # (T, T)
            scores = scores.masked_fill(attention_mask[b] == 0, float("-inf"))  # the paper's -inf
            weights.append(torch.softmax(scores, dim=-1))
            heads.append(weights[-1] @ V)  # head_i (T, d_v)
        expected.append(torch.cat(heads, dim=-1) @ W_o)  # Concat(head_1, ..., head_h) W^O
        expected_weights.append(torch.stack(weights))
    output, returned_weights = attention(x, attention_mask=attention_mask[:, None, None, :].bool())
    torch.testing.assert_close(output, torch.stack(expected), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(returned_weights, torch.stack(expected_weights), atol=1e-6, rtol=1e-5)
    assert attention.q_proj.weight.shape == (num_heads * d_k, config.d_model)
    assert attention.v_proj.weight.shape == (num_heads * d_v, config.d_model)


# Section 3.2.3: the masks of the three uses


def test_decoder_future_positions_get_zero_attention_weight(tiny_model):
    input_ids, attention_mask, decoder_input_ids = random_batch(99)
    out = tiny_model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids, output_attentions=True)
    target_length = decoder_input_ids.shape[1]
    future = torch.triu(torch.ones(target_length, target_length, dtype=torch.bool), diagonal=1)
    for weights in out.decoder_attentions:  # (B, h, T, T)
        assert weights.shape == (3, 4, target_length, target_length)
        assert torch.all(weights[..., future] == 0)
        assert torch.all(weights[..., ~future] > 0)


def test_padded_source_tokens_get_zero_attention_weight(tiny_model):
    input_ids, attention_mask, decoder_input_ids = random_batch(99)
    out = tiny_model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids, output_attentions=True)
    padded = attention_mask == 0  # (B, S)
    assert padded.any()
    for weights in out.encoder_attentions + out.cross_attentions:  # (B, h, L, S)
        key_is_pad = padded[:, None, None, :].expand_as(weights)
        assert torch.all(weights[key_is_pad] == 0)
        assert torch.all(weights[~key_is_pad] > 0)


def test_attention_weights_sum_to_one(tiny_model):
    input_ids, attention_mask, decoder_input_ids = random_batch(99)
    out = tiny_model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids, output_attentions=True)
    for weights in out.encoder_attentions + out.decoder_attentions + out.cross_attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-6, rtol=0)


# Kernels: eager (Eq. 1 as written) and SDPA compute the same, and the configured one is the one that runs


def test_eager_and_sdpa_agree_on_outputs_and_gradients(tiny_config):
    input_ids, attention_mask, decoder_input_ids = random_batch(99)
    labels = torch.randint(4, 99, decoder_input_ids.shape)
    results = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = VanillaTransformerForConditionalGeneration(tiny_config)
        model.set_attn_implementation(implementation)
        assert model.config._attn_implementation == implementation
        out = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids, labels=labels)
        out.loss.backward()
        results[implementation] = (out.logits.detach(), {n: p.grad for n, p in model.named_parameters()})
    (eager_logits, eager_grads), (sdpa_logits, sdpa_grads) = results["eager"], results["sdpa"]
    assert (eager_logits - sdpa_logits).abs().max() < 1e-5
    for name, grad in eager_grads.items():
        assert (grad - sdpa_grads[name]).abs().max() < 1e-5, name


def test_the_kernel_in_use_is_the_one_configured(tiny_model, monkeypatch):
    """Guard against a silent fallback: the sdpa setting must really call PyTorch's SDPA."""
    calls = count_sdpa_calls(monkeypatch)
    tiny_model(**forward_kwargs())
    assert len(calls) == 2 + 2 * 2  # encoder self-attention, decoder self- and cross-attention
    calls.clear()
    tiny_model.set_attn_implementation("eager")
    tiny_model(**forward_kwargs())
    assert calls == []


def test_output_attentions_with_sdpa_falls_back_to_eager_for_that_call(tiny_model, monkeypatch):
    """SDPA returns no weights, so `output_attentions=True` runs eager for that call only: SDPA is not called then,
    the weights come back and the outputs are SDPA's; the next call is on SDPA again."""
    assert tiny_model.config._attn_implementation == "sdpa"
    batch = forward_kwargs()
    calls = count_sdpa_calls(monkeypatch)
    sdpa = tiny_model(**batch, output_attentions=True)
    assert calls == []  # that call ran eager
    assert len(sdpa.encoder_attentions) == len(sdpa.decoder_attentions) == len(sdpa.cross_attentions) == 2
    assert all(w is not None for w in sdpa.encoder_attentions + sdpa.decoder_attentions + sdpa.cross_attentions)
    assert sdpa.cross_attentions[0].shape == (3, 4, 7, 9)  # (B, h, T, S)

    plain = tiny_model(**batch)
    assert len(calls) == 2 + 2 * 2  # back on SDPA: every attention sub-layer of both stacks
    assert tiny_model.config._attn_implementation == "sdpa"
    assert plain.encoder_attentions is None
    torch.testing.assert_close(sdpa.logits, plain.logits, atol=1e-5, rtol=1e-5)  # same function, other kernel

    tiny_model.set_attn_implementation("eager")
    eager = tiny_model(**batch, output_attentions=True)
    for got, expected in zip(sdpa.cross_attentions, eager.cross_attentions):
        torch.testing.assert_close(got, expected)
    assert tiny_model(**batch).encoder_attentions is None


def test_attn_implementation_switches_at_load_time_and_after(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    batch = forward_kwargs()
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = VanillaTransformerForConditionalGeneration.from_pretrained(
            tmp_path, attn_implementation=implementation
        ).eval()
        assert model.config._attn_implementation == implementation
        outputs[implementation] = model(**batch).logits
    assert (outputs["eager"] - outputs["sdpa"]).abs().max() < 1e-5

    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    assert all(layer.self_attn.config._attn_implementation == "eager" for layer in model.model.encoder.layers)
    assert (model(**batch).logits - outputs["eager"]).abs().max() < 1e-5
