"""Dropout, section 5.4: `apply_dropout` against PyTorch's own dropout (same distribution, same scaling, same
gradient), and the places the model applies it: the sums of embeddings and positional encodings and each sub-layer
output."""

import pytest
import torch

from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, modeling_vanilla
from modeling_vanilla.modeling_vanilla import apply_dropout
from tests.helpers import random_batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.2, 0.3])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest_as_pytorch_does(p, dtype):
    torch.manual_seed(0)
    x = (torch.rand(400, 2500) + 0.5).to(dtype)  # no zeros in the input: a zero in the output is a dropped element
    ours = apply_dropout(x, p=p, training=True)
    pytorch = torch.nn.functional.dropout(x, p=p, training=True)

    n = x.numel()
    dropped = (ours == 0).float().mean().item()
    # A binomial fraction over 1e6 elements: its standard deviation is sqrt(p (1 - p) / n) < 5e-4.
    assert abs(dropped - p) < 5 * (p * (1 - p) / n) ** 0.5
    assert abs(dropped - (pytorch == 0).float().mean().item()) < 10 * (p * (1 - p) / n) ** 0.5
    # The kept elements are scaled exactly as PyTorch scales them (by 1 / (1 - p) in the input's dtype).
    both = (ours != 0) & (pytorch != 0)
    assert both.sum() > 0.9 * (1 - p) ** 2 * n  # independent masks keep the same element (1 - p)^2 of the time
    assert ours.dtype == dtype
    assert torch.equal(ours[both], pytorch[both])
    # Rows and columns are dropped alike: the mask is drawn element by element, not per row or column.
    per_row = (ours == 0).float().mean(dim=1)
    per_column = (ours == 0).float().mean(dim=0)
    assert (per_row - p).abs().max() < 6 * (p * (1 - p) / x.shape[1]) ** 0.5
    assert (per_column - p).abs().max() < 6 * (p * (1 - p) / x.shape[0]) ** 0.5


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_drops_each_of_the_four_elements_that_share_a_random_word_alike(p):
    """The CPU mask reads four elements from each 64-bit random word; each quarter must be uniform (a word with a
    fixed sign bit would never drop one of them), and a size that is not a multiple of four must work."""
    torch.manual_seed(2)
    x = torch.ones(4 * 300_000 + 3)
    ours = apply_dropout(x, p=p, training=True)
    assert ours.shape == x.shape
    n = x.numel() // 4
    for quarter in range(4):
        dropped = (ours[quarter:4 * n:4] == 0).float().mean().item()
        assert abs(dropped - p) < 6 * (p * (1 - p) / n) ** 0.5, (quarter, dropped)


def test_dropout_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = (torch.rand(64, 300) + 0.5).requires_grad_()
    upstream = torch.randn(64, 300)
    out = apply_dropout(x, p=0.25, training=True)
    out.backward(upstream)
    kept = (out != 0).float()
    torch.testing.assert_close(x.grad, upstream * kept / 0.75, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, x.detach() * kept / 0.75, rtol=0, atol=1e-6)


def test_dropout_is_the_identity_outside_training_and_at_zero():
    x = torch.randn(8, 16)
    assert apply_dropout(x, p=0.3, training=False) is x
    assert apply_dropout(x, p=0.0, training=True) is x


def test_dropout_draws_from_torch_seed_and_draws_anew_each_call():
    x = torch.rand(32, 64) + 0.5
    torch.manual_seed(7)
    first, second = apply_dropout(x, 0.2, True), apply_dropout(x, 0.2, True)
    torch.manual_seed(7)
    assert torch.equal(apply_dropout(x, 0.2, True), first)
    assert not torch.equal(first, second)


def test_dropout_of_one_zeroes_everything_and_a_bad_probability_is_refused_as_by_pytorch():
    x = torch.rand(4, 5)
    assert torch.equal(apply_dropout(x, 1.0, True), torch.zeros_like(x))
    # Rates closer to 0 or 1 than 16 random bits resolve: as PyTorch's (not all kept and scaled up, nor all dropped).
    torch.manual_seed(3)
    ones = torch.ones(100_000)
    assert (apply_dropout(ones, 1 - 1e-6, True) == 0).sum() > 99_900
    assert (apply_dropout(ones, 1e-7, True) == 0).sum() < 10
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
            apply_dropout(x, bad, True)


def test_other_devices_use_pytorchs_kernel(monkeypatch):
    """Only the CPU draws its own mask; elsewhere (here the meta device) the call is PyTorch's fused dropout."""
    calls = []
    original = torch.nn.functional.dropout
    monkeypatch.setattr(torch.nn.functional, "dropout", lambda *a, **k: calls.append(k) or original(*a, **k))
    out = apply_dropout(torch.empty(3, 4, device="meta"), 0.2, True)
    assert out.device.type == "meta" and calls == [{"p": 0.2, "training": True}]
    apply_dropout(torch.rand(3, 4), 0.2, True)
    assert len(calls) == 1


@pytest.mark.parametrize("layer_norm", ["post", "pre"])
def test_the_model_applies_residual_dropout_where_section_5_4_says(monkeypatch, layer_norm):
    """Once on each stack's embeddings plus positional encodings and once on each sub-layer's output: 2 + 2 per
    encoder layer + 3 per decoder layer, all at config.dropout; attention and activation dropout (not in the paper)
    at their own rates, and nothing is dropped in eval mode."""
    config = VanillaTransformerConfig.tiny(num_encoder_layers=3, num_decoder_layers=2, dropout=0.3,
                                           attention_dropout=0.05, activation_dropout=0.15, layer_norm=layer_norm)
    config._attn_implementation = "eager"
    model = VanillaTransformerForConditionalGeneration(config)
    rates = []
    original = modeling_vanilla.apply_dropout

    def recording(hidden_states, p, training):
        if training:
            rates.append(p)
        return original(hidden_states, p, training)

    monkeypatch.setattr(modeling_vanilla, "apply_dropout", recording)
    input_ids, attention_mask, decoder_input_ids = random_batch(config.vocab_size, batch_size=2)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    model.train()
    model(**batch)
    assert rates.count(0.3) == 2 + 2 * 3 + 3 * 2
    assert rates.count(0.05) == 3 + 2 * 2  # one self-attention per encoder layer, two attentions per decoder layer
    assert rates.count(0.15) == 3 + 2
    assert len(rates) == 14 + 7 + 5

    rates.clear()
    model.eval()
    with torch.no_grad():
        first, second = model(**batch).logits, model(**batch).logits
    assert rates == [] and torch.equal(first, second)
