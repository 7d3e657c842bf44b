"""The walk of section 3.2 (`modeling_vanilla.insight.explain`, `vanilla-explain`): it reproduces a layer's output from the
weights, puts the LayerNorm and the causal mask where the paper says (checked against hand computations written
here, not against the package), and, being independent of the model's code, catches a model that gets them wrong."""

import re

import pytest
import torch
from torch.nn import functional as F

from modeling_vanilla import modeling_vanilla as modeling
from modeling_vanilla.cli import explain as explain_cli
from modeling_vanilla.insight import explain
from tests.helpers import (
    SOURCE,
    TARGET,
    TOKEN_LIMIT,
    load_tokenizer,
    make_tokenizer,
    save_copy_model,
    tiny_model_for,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_copy_model(tmp_path_factory.mktemp("tiny-copy-model"), tokenizer)


def source_and_decoder_ids(tokenizer):
    """The source ids (1, S) and the decoder inputs (1, T): <s> and TARGET without </s>, i.e. shifted right."""
    ids = torch.tensor([tokenizer(SOURCE)["input_ids"]])
    target = tokenizer(text_target=TARGET)["input_ids"]
    return ids, torch.tensor([[1, *target[:-1]]])


def layer_norm(x, module):
    """LayerNorm with `module`'s own gamma, beta and eps, by torch's function (not by the package's code)."""
    return F.layer_norm(x, (x.shape[-1],), module.weight, module.bias, module.eps)


def residual(x, sublayer, norm, position):
    """Section 3.1: LayerNorm(x + Sublayer(x)) for post-norm (the paper); x + Sublayer(LayerNorm(x)) for pre-norm."""
    return layer_norm(x + sublayer(x), norm) if position == "post" else x + sublayer(layer_norm(x, norm))


def future_positions(T):
    """Section 3.2.3, written out: query i must not see keys j > i. (T, T) bool, True on the masked entries."""
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)


# The walk reproduces the model's forward


@pytest.mark.parametrize("layer_norm", ["post", "pre"])
def test_explain_walk_reproduces_the_encoder_layer_output(tokenizer, layer_norm):
    model = tiny_model_for(tokenizer, layer_norm=layer_norm)
    walk = explain.explain_encoder_layer(model, tokenizer, SOURCE, layer=1, head=2, print_fn=None)
    ids = torch.tensor([tokenizer(SOURCE)["input_ids"]])
    expected = model.model.encoder(ids, output_hidden_states=True).hidden_states[2][0]  # after layer 1
    assert walk.output.dtype == torch.float32
    assert (walk.output - expected).abs().max().item() < 1e-5
    assert walk.max_abs_diff < 1e-5


@pytest.mark.parametrize("layer_norm", ["post", "pre"])
def test_explain_walk_reproduces_the_decoder_layer_output(tokenizer, layer_norm):
    model = tiny_model_for(tokenizer, layer_norm=layer_norm)
    walk = explain.explain_decoder_layer(model, tokenizer, SOURCE, TARGET, layer=1, head=3, print_fn=None)
    ids, decoder_ids = source_and_decoder_ids(tokenizer)
    out = model.model(ids, decoder_input_ids=decoder_ids, output_hidden_states=True, use_cache=False)
    expected = out.decoder_hidden_states[2][0]
    assert (walk.output - expected).abs().max().item() < 1e-5
    for name in ("self_attention", "encoder_attention"):
        assert (walk.attention[name] - walk.reference_attention[name]).abs().max().item() < 1e-6


def test_explain_walk_recomputes_and_does_not_call_the_layer_forward(tokenizer, monkeypatch):
    model = tiny_model_for(tokenizer)
    ids = torch.tensor([tokenizer(SOURCE)["input_ids"]])
    true_output = model.model.encoder(ids, output_hidden_states=True).hidden_states[1][0]
    layer = model.model.encoder.layers[0]
    def sabotaged_forward(hidden_states, *args, **kwargs):
        length = hidden_states.shape[1]
        return torch.zeros_like(hidden_states), torch.zeros(1, 4, length, length)

    monkeypatch.setattr(layer, "forward", sabotaged_forward)
    walk = explain.explain_encoder_layer(model, tokenizer, SOURCE, layer=0, head=0, print_fn=None)
    torch.testing.assert_close(walk.output, true_output, atol=1e-5, rtol=0)
    assert walk.reference.abs().max() == 0  # only the final comparison used the (sabotaged) forward


# The norm position and the causal mask, against hand computations


@pytest.mark.parametrize("position", ["post", "pre"])
@torch.no_grad()
def test_explain_walk_puts_the_encoder_layer_norm_where_section_3_1_says(tokenizer, position):
    model = tiny_model_for(tokenizer, layer_norm=position)
    walk = explain.explain_encoder_layer(model, tokenizer, SOURCE, layer=1, head=0, print_fn=None)
    ids = torch.tensor([tokenizer(SOURCE)["input_ids"]])
    x = model.model.encoder(ids, output_hidden_states=True).hidden_states[1]  # (1, S, d_model): layer 1's input
    layer = model.model.encoder.layers[1]
    x = residual(x, lambda v: layer.self_attn(v)[0], layer.self_attn_layer_norm, position)
    x = residual(x, layer.ffn, layer.final_layer_norm, position)
    torch.testing.assert_close(walk.output, x[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", ["post", "pre"])
@torch.no_grad()
def test_explain_walk_decoder_layer_matches_a_hand_computation_with_the_causal_mask(tokenizer, position):
    model = tiny_model_for(tokenizer, layer_norm=position)
    walk = explain.explain_decoder_layer(model, tokenizer, SOURCE, TARGET, layer=1, head=0, print_fn=None)
    ids, decoder_ids = source_and_decoder_ids(tokenizer)
    out = model.model(ids, decoder_input_ids=decoder_ids, output_hidden_states=True, use_cache=False)
    memory, y = out.encoder_last_hidden_state, out.decoder_hidden_states[1]  # y (1, T, d_model): layer 1's input
    allowed = ~future_positions(y.shape[1])[None, None]  # (1, 1, T, T), True where attending is allowed
    layer = model.model.decoder.layers[1]
    y = residual(y, lambda v: layer.self_attn(v, attention_mask=allowed)[0], layer.self_attn_layer_norm, position)
    y = residual(y, lambda v: layer.encoder_attn(v, key_value_states=memory)[0], layer.encoder_attn_layer_norm,
                 position)
    y = residual(y, layer.ffn, layer.final_layer_norm, position)
    torch.testing.assert_close(walk.output, y[0], atol=1e-5, rtol=0)


def test_explain_walk_masks_exactly_the_future_positions(tokenizer):
    model = tiny_model_for(tokenizer)
    walk = explain.explain_decoder_layer(model, tokenizer, SOURCE, TARGET, layer=0, head=0, print_fn=None)
    weights = walk.attention["self_attention"]  # (h, T, T)
    future = future_positions(weights.shape[-1])
    assert torch.all(weights[:, future] == 0)
    assert torch.all(weights[:, ~future] > 0)


@pytest.mark.parametrize("position", ["post", "pre"])
def test_explain_walk_catches_a_model_with_the_layer_norm_on_the_wrong_side(tokenizer, position):
    model = tiny_model_for(tokenizer, layer_norm=position)
    for layer in model.model.encoder.layers:
        layer.pre_norm = not layer.pre_norm  # a bug in the model: its layers put LayerNorm where the config does not
    walk = explain.explain_encoder_layer(model, tokenizer, SOURCE, layer=0, head=0, print_fn=None)
    assert walk.max_abs_diff > 1e-2


def test_explain_walk_catches_a_model_whose_decoder_sees_the_future(tokenizer, monkeypatch):
    model = tiny_model_for(tokenizer)
    monkeypatch.setattr(modeling, "causal_mask",  # a bug in the model: no causal mask
                        lambda query_length, key_length, device: torch.ones(1, 1, query_length, key_length,
                                                                            dtype=torch.bool, device=device))
    walk = explain.explain_decoder_layer(model, tokenizer, SOURCE, TARGET, layer=0, head=0, print_fn=None)
    future = future_positions(walk.output.shape[0])
    assert torch.all(walk.reference_attention["self_attention"][:, future] > 0)  # the broken model looks ahead
    assert torch.all(walk.attention["self_attention"][:, future] == 0)  # the walk keeps the paper's mask
    assert walk.max_abs_diff > 1e-3


def test_explain_walk_catches_a_model_with_wrong_sinusoids(tokenizer, monkeypatch):
    right = modeling.SinusoidalPositionalEncoding.encode
    monkeypatch.setattr(modeling.SinusoidalPositionalEncoding, "encode",  # a bug in the model: sin and cos swapped
                        staticmethod(lambda positions, d_model: right(positions, d_model)
                                     .unflatten(-1, (-1, 2)).flip(-1).flatten(-2)))
    model = tiny_model_for(tokenizer)
    walk = explain.explain_encoder_layer(model, tokenizer, SOURCE, layer=0, head=0, print_fn=None)
    assert walk.max_abs_diff > 1e-2


# The command


STEPS = [
    "times sqrt(d_model)", "positional encodings", "x = E[id] * sqrt(d_model) + PE",
    "q = x W_2^Q", "k = x W_2^K", "v = x W_2^V",
    "scores Q K^T", "scaled by 1/sqrt(d_k) = 1/sqrt(8)", "softmax over each row", "z = softmax(...) V",
    "Concat(head_1, ..., head_h)", "MultiHead = Concat(...) W^O", "residual: x + Sublayer(x)",
    "LayerNorm(x + Sublayer(x))",
    "x W_1 + b_1", "max(0, .)", "FFN(x) = max(0, x W_1 + b_1) W_2 + b_2", "max abs difference, layer output",
]


def test_explain_script_prints_every_step_of_section_3_2(model_dir, capsys):
    assert explain_cli.main([str(model_dir), SOURCE, "--layer", "1", "--head", "2"]) == 0
    printed = capsys.readouterr().out
    position = 0
    for step in STEPS:  # in the order of the paper
        found = printed.find(step, position)
        assert found >= 0, f"step {step!r} missing or out of order"
        position = found
    difference = float(re.search(r"max abs difference, layer output: (\S+)", printed).group(1))
    assert difference < 1e-5
    num_tokens = len(load_tokenizer(model_dir)(SOURCE)["input_ids"])
    assert f"q = x W_2^Q, one query per token  shape ({num_tokens}, 8)" in printed  # d_k = d_model / h = 32 / 4


def test_explain_script_walks_the_decoder_with_the_models_translation(model_dir, capsys):
    assert explain_cli.main([str(model_dir), SOURCE, "--decoder", "--layer", "0", "--head", "1"]) == 0
    printed = capsys.readouterr().out
    assert "masked multi-head self-attention" in printed and "-inf" in printed  # the causal mask, section 3.2.3
    assert "encoder-decoder attention" in printed
    difference = float(re.search(r"max abs difference, layer output: (\S+)", printed).group(1))
    assert difference < 1e-5


def test_sentence_longer_than_the_learned_position_table_is_a_clear_error(tokenizer, tmp_path, capsys):
    model = tiny_model_for(tokenizer, positional_encoding="learned", max_position_embeddings=12)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    sentence = "the cat sat on the mat and the dog"
    assert TOKEN_LIMIT >= len(tokenizer(sentence)["input_ids"]) > 12
    with pytest.raises(ValueError, match=r"at most 12 \(config.max_position_embeddings"):
        explain.explain_encoder_layer(model, tokenizer, sentence, print_fn=None)
    assert explain_cli.main([str(tmp_path), sentence]) == 1
    assert "config.max_position_embeddings" in capsys.readouterr().err
