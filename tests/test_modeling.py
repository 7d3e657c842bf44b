"""The model of section 3: masks, attention kernels, cached decoding, sizes, weight sharing, Hub format."""

import json
import math

import pytest
import torch
from tests.helpers import REPO_ROOT, WITHOUT_PACKAGE, random_batch, run_python

from modeling_vanilla import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
)
from modeling_vanilla.modeling_vanilla import SinusoidalPositionalEncoding, shift_tokens_right

# Masks and attention weights (sections 3.2.1 and 3.2.3)


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


def test_eager_attention_is_equation_1():
    """softmax(Q K^T / sqrt(d_k)) V, computed by hand for one head."""
    config = VanillaTransformerConfig.tiny(num_heads=1, dropout=0.0)
    model = VanillaTransformerModel(config).eval()
    model.set_attn_implementation("eager")
    attention = model.encoder.layers[0].self_attn
    x = torch.randn(1, 5, config.d_model)
    q, k, v = x @ attention.q_proj.weight.T, x @ attention.k_proj.weight.T, x @ attention.v_proj.weight.T
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(config.d_model), dim=-1) @ v @ attention.out_proj.weight.T
    output, _ = attention(x)
    torch.testing.assert_close(output, expected, atol=1e-6, rtol=1e-5)


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


def test_sampling_generates_with_the_cache(tiny_model):
    input_ids, attention_mask, _ = random_batch(99)
    torch.manual_seed(1)
    first = tiny_model.generate(input_ids, attention_mask=attention_mask, do_sample=True, num_beams=1, max_new_tokens=8)
    torch.manual_seed(1)
    second = tiny_model.generate(input_ids, attention_mask=attention_mask, do_sample=True, num_beams=1, max_new_tokens=8)
    assert torch.equal(first, second) and first.shape[1] <= 9


def test_generation_defaults_follow_section_6_1(tiny_model):
    assert tiny_model.generation_config.num_beams == 4
    assert tiny_model.generation_config.length_penalty == 0.6
    # Maximum output length: input length + 50. min_new_tokens keeps EOS from ending it early.
    input_ids, attention_mask, _ = random_batch(99, batch_size=2, source_length=6)
    out = tiny_model.generate(input_ids, attention_mask=attention_mask, num_beams=1, min_new_tokens=56)
    assert out.shape[1] == 1 + 6 + 50
    out = tiny_model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=3)
    assert out.shape[1] <= 1 + 3


# Sizes (Table 3)


def count_parameters(vocab, d_model, d_ff, h, d_k, d_v, n_enc, n_dec):
    """Parameters of the post-norm model with tied embeddings, from the formulas of section 3."""
    attention = d_model * h * d_k * 2 + d_model * h * d_v + h * d_v * d_model  # W^Q, W^K, W^V, W^O, no biases
    ffn = d_model * d_ff + d_ff + d_ff * d_model + d_model  # Eq. (2)
    layer_norm = 2 * d_model
    encoder_layer = attention + ffn + 2 * layer_norm
    decoder_layer = 2 * attention + ffn + 3 * layer_norm
    return vocab * d_model + n_enc * encoder_layer + n_dec * decoder_layer


def parameters_of(config):
    with torch.device("meta"):
        return VanillaTransformerForConditionalGeneration(config).num_parameters()


@pytest.mark.parametrize("preset,expected", [("base", 63.1e6), ("big", 214.3e6)])
def test_parameter_counts_match_table_3(preset, expected):
    config = getattr(VanillaTransformerConfig, preset)(vocab_size=37000)
    assert abs(parameters_of(config) - expected) / expected < 0.01


@pytest.mark.parametrize(
    "overrides",
    [{}, {"d_k": 16}, {"d_v": 48}, {"d_k": 8, "d_v": 24}, {"d_ff": 100}, {"num_encoder_layers": 3},
     {"num_decoder_layers": 1}, {"num_heads": 2}, {"num_heads": 8, "d_k": 6}],
)
def test_parameter_count_follows_the_formulas(overrides):
    config = VanillaTransformerConfig.tiny(**overrides)
    d_k = config.d_k or config.d_model // config.num_heads
    d_v = config.d_v or config.d_model // config.num_heads
    expected = count_parameters(config.vocab_size, config.d_model, config.d_ff, config.num_heads, d_k, d_v,
                                config.num_encoder_layers, config.num_decoder_layers)
    assert parameters_of(config) == expected


# Embeddings and positional encodings (sections 3.4 and 3.5)


def test_embeddings_shared_section_3_4(tiny_model, tmp_path):
    model = tiny_model
    shared = model.get_input_embeddings().weight
    assert model.model.decoder.embed_tokens.weight is shared
    assert model.lm_head.weight is shared
    assert torch.all(shared[model.config.pad_token_id] == 0)  # padding row zero at init

    input_ids, attention_mask, decoder_input_ids = random_batch(99)
    before = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits
    model.save_pretrained(tmp_path)
    loaded = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path).eval()
    weight = loaded.model.encoder.embed_tokens.weight
    assert loaded.model.decoder.embed_tokens.weight is weight and loaded.lm_head.weight is weight
    torch.testing.assert_close(loaded(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits, before)


def test_untied_embeddings_are_three_matrices():
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(tie_word_embeddings=False))
    weights = [model.model.encoder.embed_tokens.weight, model.model.decoder.embed_tokens.weight, model.lm_head.weight]
    assert len({w.data_ptr() for w in weights}) == 3


def test_embeddings_are_scaled_by_sqrt_d_model(tiny_model):
    encoder = tiny_model.model.encoder
    ids = torch.tensor([[5, 6, 7]])
    expected = encoder.embed_tokens(ids) * math.sqrt(32) + SinusoidalPositionalEncoding.encode(torch.arange(3), 32)
    torch.testing.assert_close(encoder.embed(ids, None), expected)


def test_sinusoidal_encoding_matches_section_3_5_beyond_the_table():
    pe = SinusoidalPositionalEncoding(num_positions=16, d_model=8)
    positions = torch.tensor([0, 3, 15, 16, 500])  # 16 and 500 lie beyond the precomputed table
    table = pe(positions)
    for row, pos in enumerate(positions.tolist()):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert table[row, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[row, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_table_is_not_nan_after_from_pretrained(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    loaded = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path)
    for stack in (loaded.model.encoder, loaded.model.decoder):
        table = stack.embed_positions.table
        expected = SinusoidalPositionalEncoding.encode(torch.arange(table.shape[0]), 32)
        torch.testing.assert_close(table, expected)


def test_long_inputs_beyond_max_position_embeddings_work(tiny_model):
    input_ids = torch.randint(4, 99, (1, 100))  # tiny's table holds 64 positions
    out = tiny_model(input_ids, decoder_input_ids=input_ids)
    assert torch.isfinite(out.logits).all()


def test_learned_positions_refuse_inputs_longer_than_the_table():
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(positional_encoding="learned"))
    assert model(torch.randint(4, 99, (1, 64)), decoder_input_ids=torch.tensor([[1]])).logits.shape == (1, 1, 99)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(torch.randint(4, 99, (1, 65)), decoder_input_ids=torch.tensor([[1]]))


def test_pre_norm_option_adds_a_final_layer_norm_and_runs():
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(layer_norm="pre")).eval()
    assert model.model.encoder.layer_norm is not None and model.model.decoder.layer_norm is not None
    input_ids, attention_mask, _ = random_batch(99)
    labels = torch.randint(4, 99, (3, 5))
    assert torch.isfinite(model(input_ids, attention_mask, labels=labels).loss)


# Loss from labels


def test_loss_is_cross_entropy_over_labels_ignoring_minus_100(tiny_model):
    input_ids, attention_mask, _ = random_batch(99)
    labels = torch.randint(4, 99, (3, 6))
    labels[1, 4:] = -100
    out = tiny_model(input_ids, attention_mask, labels=labels)
    decoder_input_ids = shift_tokens_right(labels, pad_token_id=0, decoder_start_token_id=1)
    assert decoder_input_ids[:, 0].tolist() == [1, 1, 1] and decoder_input_ids[1, 5] == 0
    assert torch.equal(decoder_input_ids[:, 1:], labels[:, :-1].clamp(min=0))
    logits = tiny_model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)


# Bad input


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"d_model": 30, "num_heads": 4}, "d_k"),
        ({"positional_encoding": "rotary"}, "positional_encoding"),
        ({"layer_norm": "middle"}, "layer_norm"),
        ({"dropout": -0.1}, "dropout"),
        ({"attention_dropout": 1.5}, "attention_dropout"),
        ({"num_heads": 0}, "num_heads"),
        ({"pad_token_id": 500}, "pad_token_id"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        VanillaTransformerConfig.tiny(**overrides)


def test_explicit_d_k_and_d_v_allow_d_model_not_divisible_by_heads():
    config = VanillaTransformerConfig.tiny(d_model=30, num_heads=4, d_k=8, d_v=8)
    model = VanillaTransformerForConditionalGeneration(config)
    assert model(torch.tensor([[5, 6]]), decoder_input_ids=torch.tensor([[1]])).logits.shape == (1, 1, 99)


@pytest.mark.parametrize("argument", ["input_ids", "decoder_input_ids"])
@pytest.mark.parametrize("bad_id", [99, 1000, -100])
def test_token_ids_outside_the_vocabulary_raise_a_clear_error(tiny_model, argument, bad_id):
    ids = {"input_ids": torch.tensor([[5, 6, 7]]), "decoder_input_ids": torch.tensor([[1, 5]])}
    ids[argument][0, 1] = bad_id
    with pytest.raises(ValueError, match=rf"{argument} contains token id {bad_id}.*vocab_size=99"):
        tiny_model(**ids)


# Learning: the model can actually learn, not just run


def test_tiny_model_learns_to_reverse_sequences():
    """A synthetic task in the spirit of the Annotated Transformer: output the source reversed."""
    torch.manual_seed(0)
    vocab, length = 16, 8
    config = VanillaTransformerConfig.tiny(vocab_size=vocab, d_model=64, d_ff=128, dropout=0.0)
    model = VanillaTransformerForConditionalGeneration(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.98), eps=1e-9)

    def batch(size):
        source = torch.randint(4, vocab, (size, length))
        eos = torch.full((size, 1), config.eos_token_id)
        return torch.cat([source, eos], 1), torch.cat([source.flip(1), eos], 1)

    model.train()
    for _ in range(700):
        source, target = batch(64)
        loss = model(input_ids=source, labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    source, target = batch(200)
    generated = model.generate(source, num_beams=1, max_new_tokens=length + 1)[:, 1:]
    exact = (generated[:, : length + 1] == target).all(dim=1).float().mean().item()
    assert exact >= 0.95, f"exact match {exact:.3f}, last loss {loss.item():.3f}"


# Hub format: the model code travels with the weights


def test_save_pretrained_writes_code_and_auto_map(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vanilla_transformer"
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_vanilla.VanillaTransformerForConditionalGeneration"
    assert config["auto_map"]["AutoConfig"] == "configuration_vanilla.VanillaTransformerConfig"
    assert (tmp_path / "modeling_vanilla.py").exists() and (tmp_path / "configuration_vanilla.py").exists()
    assert (tmp_path / "model.safetensors").exists()
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["num_beams"] == 4 and generation["length_penalty"] == 0.6


def test_remote_code_round_trip_in_a_fresh_process_without_the_package(tiny_model, tmp_path):
    input_ids, attention_mask, _ = random_batch(99)
    expected = tiny_model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=10)
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask}, tmp_path / "inputs.pt")
    code = WITHOUT_PACKAGE + f"""
import torch
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
inputs = torch.load({str(tmp_path / "inputs.pt")!r})
out = model.generate(**inputs, max_new_tokens=10)
torch.save(out, {str(tmp_path / "out.pt")!r})
"""
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_import_touches_no_network(tmp_path):
    code = """
import socket
def refuse(*args, **kwargs):
    raise AssertionError("network access during import")
socket.socket.connect = refuse
socket.create_connection = refuse
import modeling_vanilla
from transformers import AutoConfig
assert AutoConfig.for_model("vanilla_transformer").model_type == "vanilla_transformer"
"""
    result = run_python(code, cwd=REPO_ROOT, env={"HF_HUB_OFFLINE": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
