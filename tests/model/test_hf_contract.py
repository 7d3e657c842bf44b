"""The transformers model contract: outputs (hidden states, attentions, tuples), inputs (ids, embeddings, bad ids,
the old `past_key_values` name), gradient checkpointing and Trainer, the base model and Auto classes, resizing the
vocabulary, loading in another dtype. Attention kernels are in test_attention.py, generation in test_generation.py,
save/load through the Hub format in test_hub.py."""

import warnings

import pytest
import torch
from transformers import AutoModel, AutoModelForSeq2SeqLM, Seq2SeqTrainer, Seq2SeqTrainingArguments

from modeling_vanilla import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
)
from tests.helpers import forward_kwargs, random_batch

# output_hidden_states / return_dict


def test_output_hidden_states_has_embeddings_plus_every_layer():
    config = VanillaTransformerConfig.tiny(num_encoder_layers=3, num_decoder_layers=2, dropout=0.0)
    model = VanillaTransformerForConditionalGeneration(config).eval()
    batch = forward_kwargs()
    out = model(**batch, output_hidden_states=True)
    assert len(out.encoder_hidden_states) == 3 + 1 and len(out.decoder_hidden_states) == 2 + 1
    encoder = model.model.encoder
    torch.testing.assert_close(out.encoder_hidden_states[0], encoder.embed(batch["input_ids"], None))
    torch.testing.assert_close(out.encoder_hidden_states[-1], out.encoder_last_hidden_state)
    torch.testing.assert_close(out.decoder_hidden_states[-1] @ model.lm_head.weight.T, out.logits)
    assert model(**batch).decoder_hidden_states is None  # off by default


def test_config_output_hidden_states_is_honoured(tiny_config):
    tiny_config.output_hidden_states = True
    model = VanillaTransformerForConditionalGeneration(tiny_config).eval()
    assert len(model(**forward_kwargs()).encoder_hidden_states) == 3


def test_return_dict_false_returns_tuples_in_the_standard_order(tiny_model):
    batch = forward_kwargs()
    labels = torch.randint(4, 99, (3, 7))
    as_dict = tiny_model(**batch, labels=labels, output_hidden_states=True)
    as_tuple = tiny_model(**batch, labels=labels, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = (as_dict.loss, as_dict.logits, as_dict.decoder_hidden_states, as_dict.encoder_last_hidden_state,
                as_dict.encoder_hidden_states)
    assert len(as_tuple) == len(expected)
    torch.testing.assert_close(as_tuple[0], expected[0])
    torch.testing.assert_close(as_tuple[1], expected[1])
    torch.testing.assert_close(as_tuple[3], expected[3])


def test_config_return_dict_false_is_honoured(tiny_config):
    tiny_config.return_dict = False
    model = VanillaTransformerForConditionalGeneration(tiny_config).eval()
    out = model(**forward_kwargs(), use_cache=False)
    assert isinstance(out, tuple) and out[0].shape == (3, 7, 99)
    bare = VanillaTransformerModel(tiny_config).eval()
    assert isinstance(bare(**forward_kwargs(), use_cache=False), tuple)
    assert isinstance(model(**forward_kwargs(), return_dict=True).logits, torch.Tensor)


# inputs_embeds


def test_inputs_embeds_give_the_same_output_as_ids(tiny_model):
    batch = forward_kwargs()
    embed = tiny_model.get_input_embeddings()
    by_ids = tiny_model(**batch).logits
    by_embeds = tiny_model(
        inputs_embeds=embed(batch["input_ids"]),
        attention_mask=batch["attention_mask"],
        decoder_inputs_embeds=embed(batch["decoder_input_ids"]),
    ).logits
    torch.testing.assert_close(by_embeds, by_ids)


@pytest.mark.parametrize("side", ["", "decoder_"])
def test_both_or_neither_ids_and_embeds_is_a_clear_error(tiny_model, side):
    batch = forward_kwargs()
    ids = batch[f"{side}input_ids"]
    with pytest.raises(ValueError, match=f"exactly one of {side}input_ids and {side}inputs_embeds"):
        tiny_model(**batch, **{f"{side}inputs_embeds": tiny_model.get_input_embeddings()(ids)})
    batch.pop(f"{side}input_ids")
    with pytest.raises(ValueError, match=f"exactly one of {side}input_ids and {side}inputs_embeds"):
        tiny_model(**batch)


# Token ids outside the vocabulary


@pytest.mark.parametrize("argument", ["input_ids", "decoder_input_ids"])
@pytest.mark.parametrize("bad_id", [99, 1000, -100])
def test_token_ids_outside_the_vocabulary_raise_a_clear_error(tiny_model, argument, bad_id):
    ids = {"input_ids": torch.tensor([[5, 6, 7]]), "decoder_input_ids": torch.tensor([[1, 5]])}
    ids[argument][0, 1] = bad_id
    with pytest.raises(ValueError, match=rf"{argument} contains token id {bad_id}.*vocab_size=99"):
        tiny_model(**ids)


# Gradient checkpointing


def gradients(model, batch, labels):
    model.zero_grad()
    model(**batch, labels=labels).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "layer_norm,enable", [("post", "gradient_checkpointing_enable"), ("pre", "activation_checkpointing_enable")]
)
def test_gradient_checkpointing_gives_the_same_gradients(layer_norm, enable):
    """transformers 5.24 renamed gradient_checkpointing_enable to activation_checkpointing_enable: both work."""
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(dropout=0.0, layer_norm=layer_norm))
    assert model.supports_gradient_checkpointing
    model.train()
    batch = forward_kwargs()
    batch.pop("decoder_input_ids")
    labels = torch.randint(4, 99, (3, 7))
    plain = gradients(model, batch, labels)

    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old name's deprecation notice
        getattr(model, enable)({"use_reentrant": False})
    layers = list(model.model.encoder.layers) + list(model.model.decoder.layers)
    assert all(layer.gradient_checkpointing for layer in layers)
    checkpoint = layers[0]._gradient_checkpointing_func
    for layer in layers:
        layer._gradient_checkpointing_func = lambda *a, _f=checkpoint, **k: calls.append(1) or _f(*a, **k)
    checkpointed = gradients(model, batch, labels)
    assert len(calls) == len(layers)  # every layer went through torch.utils.checkpoint
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("argument", ["gradient_checkpointing", "activation_checkpointing"])
def test_trainer_with_gradient_checkpointing_trains(tmp_path, tiny_config, argument):
    """Seq2SeqTrainer with checkpointing turned on by its argument: the same losses and the same trained weights as
    the run without it (dropout 0, same data order), and the weights moved."""
    from datasets import Dataset

    rows = [{"input_ids": torch.randint(4, 99, (6,)).tolist(), "labels": torch.randint(4, 99, (5,)).tolist()}
            for _ in range(16)]
    initial = VanillaTransformerForConditionalGeneration(tiny_config).state_dict()

    def train(checkpointing: bool):
        model = VanillaTransformerForConditionalGeneration(tiny_config)
        model.load_state_dict(initial)
        args = Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / str(checkpointing)), per_device_train_batch_size=4, max_steps=3,
            **{argument: checkpointing}, report_to=[], save_strategy="no", logging_steps=1, use_cpu=True,
            learning_rate=1e-3,
        )
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows))
        result = trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        return model, result, losses

    model, result, losses = train(checkpointing=True)
    assert all(layer.gradient_checkpointing for layer in model.model.decoder.layers)
    assert result.global_step == 3 and result.training_loss > 0
    reference, _, reference_losses = train(checkpointing=False)
    assert not any(layer.gradient_checkpointing for layer in reference.model.decoder.layers)
    assert len(losses) == 3 and losses == pytest.approx(reference_losses, rel=1e-5)
    trained = model.state_dict()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(trained[name], value, atol=1e-6, rtol=1e-5, msg=name)
    assert any(not torch.equal(trained[name], initial[name]) for name in initial)  # it did train


# Base model, accessors, Auto classes


def test_base_model_and_accessors(tiny_model):
    assert tiny_model.base_model_prefix == "model" and tiny_model.base_model is tiny_model.model
    assert tiny_model.get_encoder() is tiny_model.model.encoder
    assert tiny_model.get_decoder() is tiny_model.model.decoder
    assert tiny_model.get_input_embeddings() is tiny_model.model.encoder.embed_tokens
    assert tiny_model.get_output_embeddings() is tiny_model.lm_head

    new = torch.nn.Embedding(99, 32, padding_idx=0)
    tiny_model.set_input_embeddings(new)
    assert tiny_model.model.encoder.embed_tokens is new and tiny_model.model.decoder.embed_tokens is new


def test_auto_model_loads_the_bare_model_from_a_generation_checkpoint(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    bare = AutoModel.from_pretrained(tmp_path).eval()
    assert type(bare) is VanillaTransformerModel
    batch = forward_kwargs()
    torch.testing.assert_close(bare(**batch).last_hidden_state, tiny_model.model(**batch).last_hidden_state)
    assert type(AutoModelForSeq2SeqLM.from_pretrained(tmp_path)) is VanillaTransformerForConditionalGeneration


# resize_token_embeddings


def test_resize_token_embeddings_keeps_the_three_way_tie_and_generation(tiny_model, tmp_path):
    old = tiny_model.get_input_embeddings().weight.detach().clone()
    tiny_model.resize_token_embeddings(120)
    weight = tiny_model.get_input_embeddings().weight
    assert weight.shape == (120, 32) and tiny_model.config.vocab_size == 120
    assert tiny_model.model.decoder.embed_tokens.weight is weight and tiny_model.lm_head.weight is weight
    torch.testing.assert_close(weight[:99], old)
    input_ids = torch.tensor([[110, 119, 5, 2]])
    out = tiny_model.generate(input_ids, max_new_tokens=4, num_beams=2)
    assert out.shape[0] == 1
    tiny_model.save_pretrained(tmp_path)
    loaded = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight and loaded.config.vocab_size == 120


def test_resize_untied_model_resizes_all_three_matrices():
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(tie_word_embeddings=False))
    model.resize_token_embeddings(110)
    assert model.model.encoder.embed_tokens.num_embeddings == 110
    assert model.model.decoder.embed_tokens.num_embeddings == 110
    assert model.lm_head.out_features == 110
    model.generate(torch.tensor([[105, 5, 2]]), max_new_tokens=3)


# past_key_values, the pre-5 name of the cache


def test_past_key_values_still_works_with_a_deprecation_warning(tiny_model):
    batch = forward_kwargs()
    prefix, rest = batch["decoder_input_ids"][:, :4], batch["decoder_input_ids"][:, 4:]

    def cache_after_prefix():
        return tiny_model(**{**batch, "decoder_input_ids": prefix}, use_cache=True).cache

    reference = tiny_model(**{**batch, "decoder_input_ids": rest}, cache=cache_after_prefix()).logits
    with pytest.warns(FutureWarning, match="past_key_values.*deprecated.*Use `cache` instead"):
        legacy = tiny_model(**{**batch, "decoder_input_ids": rest}, past_key_values=cache_after_prefix())
    torch.testing.assert_close(legacy.logits, reference)
    full = tiny_model(**batch, use_cache=False).logits
    torch.testing.assert_close(legacy.logits, full[:, 4:], atol=1e-5, rtol=1e-5)
    # Ignoring it would decode `rest` without the prefix: the output would differ.
    assert (tiny_model(**{**batch, "decoder_input_ids": rest}).logits - reference).abs().max() > 1e-3


def test_cache_keyword_gives_no_warning(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        tiny_model(**forward_kwargs(), use_cache=True)


# Loading with dtype / device_map


def test_bfloat16_load_then_generate(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    model = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map="cpu")
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.lm_head.weight is model.get_input_embeddings().weight
    input_ids, attention_mask, _ = random_batch(99)
    out = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=5)
    assert out.shape[0] == 3 and 2 <= out.shape[1] <= 6
    assert out[:, 0].eq(1).all() and out.min() >= 0 and out.max() < 99  # starts with <s>, ids in the vocabulary
    logits = model(**forward_kwargs()).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_torch_dtype_keyword_also_loads_bfloat16(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
