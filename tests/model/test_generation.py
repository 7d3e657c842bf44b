"""Decoding: the cache (incremental decoding equals full decoding), beam search and sampling through `generate()`,
and the section 6.1 defaults (beam size 4, length penalty 0.6, output length input + 50)."""

import pytest
import torch

from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from tests.helpers import random_batch

# Incremental decoding with the cache


def test_cached_decoding_equals_full_decoding_step_by_step(tiny_model):
    input_ids, attention_mask, decoder_input_ids = random_batch(99)
    full = tiny_model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids, use_cache=False).logits
    encoder_outputs = tiny_model.get_encoder()(input_ids, attention_mask)
    cache, steps = None, []
    for t in range(decoder_input_ids.shape[1]):
        out = tiny_model(
            attention_mask=attention_mask,
            encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids[:, t : t + 1],
            cache=cache,
            use_cache=True,
        )
        cache = out.cache
        steps.append(out.logits)
    assert cache.get_seq_length() == decoder_input_ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_cached_generate_gives_the_same_tokens_as_uncached(num_beams):
    config = VanillaTransformerConfig.tiny(num_encoder_layers=3, num_decoder_layers=2)  # N may differ per stack
    model = VanillaTransformerForConditionalGeneration(config).eval()
    input_ids, attention_mask, _ = random_batch(99, batch_size=4)
    settings = dict(num_beams=num_beams, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    cached = model.generate(input_ids, attention_mask=attention_mask, use_cache=True, **settings)
    uncached = model.generate(input_ids, attention_mask=attention_mask, use_cache=False, **settings)
    assert cached.shape == (4, 13)
    assert torch.equal(cached, uncached)


def test_sampling_generates_with_the_cache(tiny_model, monkeypatch):
    """Sampling with the cache feeds the decoder one new token per step, and draws the same tokens as sampling
    without it (same seed): the cache changes the work, not the distribution."""
    input_ids, attention_mask, _ = random_batch(99)
    decoder_lengths = []
    decoder_forward = tiny_model.model.decoder.forward
    monkeypatch.setattr(tiny_model.model.decoder, "forward",
                        lambda *a, **k: decoder_lengths.append(k["input_ids"].shape[1]) or decoder_forward(*a, **k))
    settings = dict(attention_mask=attention_mask, do_sample=True, num_beams=1, max_new_tokens=8, min_new_tokens=8)

    torch.manual_seed(1)
    first = tiny_model.generate(input_ids, **settings)
    assert decoder_lengths == [1] * 8  # <s>, then one new token per step: the cache holds the rest
    torch.manual_seed(1)
    second = tiny_model.generate(input_ids, **settings)
    assert torch.equal(first, second) and first.shape[1] <= 9

    decoder_lengths.clear()
    torch.manual_seed(1)
    uncached = tiny_model.generate(input_ids, use_cache=False, **settings)
    assert decoder_lengths == list(range(1, 9))  # the whole prefix at every step
    assert torch.equal(uncached, first)
    torch.manual_seed(2)
    assert not torch.equal(tiny_model.generate(input_ids, **settings), first)  # the seed matters: it is sampling


def test_generate_can_return_attentions(tiny_model):
    input_ids, attention_mask, _ = random_batch(99)
    out = tiny_model.generate(
        input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=3,
        output_attentions=True, return_dict_in_generate=True,
    )
    assert len(out.encoder_attentions) == 2 and len(out.cross_attentions) >= 1


# Section 6.1: decoding settings


def test_generation_defaults_follow_section_6_1(tiny_model):
    assert tiny_model.generation_config.num_beams == 4
    assert tiny_model.generation_config.length_penalty == 0.6
    # Maximum output length: input length + 50. min_new_tokens keeps EOS from ending it early.
    input_ids, attention_mask, _ = random_batch(99, batch_size=2, source_length=6)
    out = tiny_model.generate(input_ids, attention_mask=attention_mask, num_beams=1, min_new_tokens=56)
    assert out.shape[1] == 1 + 6 + 50
    out = tiny_model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=3)
    assert out.shape[1] <= 1 + 3
