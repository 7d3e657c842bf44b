"""Export to a native MarianMTModel and back (issue 15, part 1): the same function, refused options named."""

import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, MarianMTModel

from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from modeling_vanilla.cli import export as export_command
from modeling_vanilla.publish.export import ExportError, from_marian, marian_permutation, to_marian


def trained_looking_model(**overrides):
    """A tiny model whose LayerNorms and biases are not at their initial values, so that a mapping that drops or
    misplaces them changes the output."""
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(vocab_size=60, **overrides))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def inputs():
    torch.manual_seed(1)
    input_ids = torch.randint(4, 60, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "decoder_input_ids": torch.randint(4, 60, (3, 7))}


@torch.no_grad()
def test_the_permutation_turns_interleaved_sinusoids_into_marians_halves():
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    from modeling_vanilla.modeling_vanilla import SinusoidalPositionalEncoding

    ours = SinusoidalPositionalEncoding(50, 16).table
    marian = MarianSinusoidalPositionalEmbedding(50, 16).create_weight()
    assert not torch.allclose(ours, marian)  # the layouts differ ...
    assert torch.allclose(ours[:, marian_permutation(16)], marian, atol=1e-6)  # ... by exactly this permutation


@torch.no_grad()
def test_ours_to_marian_to_ours_gives_the_same_logits_and_beams():
    model = trained_looking_model()
    marian = to_marian(model)
    assert type(marian) is MarianMTModel
    reference = model(**inputs()).logits
    assert (marian(**inputs()).logits - reference).abs().max() <= 1e-4
    back = from_marian(marian)
    assert (back(**inputs()).logits - reference).abs().max() <= 1e-4
    source = {k: v for k, v in inputs().items() if k != "decoder_input_ids"}
    ours_beams = model.generate(**source, num_beams=4, max_new_tokens=10)
    assert torch.equal(marian.generate(**source, num_beams=4, max_new_tokens=10), ours_beams)
    assert marian.generation_config.num_beams == 4 and marian.generation_config.length_penalty == 0.6


@torch.no_grad()
def test_a_marian_model_imports_as_ours_with_the_same_logits():
    from benchmarks.models import marian_like

    torch.manual_seed(2)
    config = VanillaTransformerConfig.tiny(vocab_size=60)
    marian = marian_like(config).eval()  # MarianMTModel's own initialization, ReLU, shared embeddings
    with torch.no_grad():
        for name, parameter in marian.named_parameters():
            if "layer_norm" in name or name.endswith(("fc1.bias", "fc2.bias")):
                parameter.add_(torch.randn_like(parameter) * 0.2)
            elif name.endswith("_proj.bias"):
                parameter.zero_()
    ours = from_marian(marian)
    assert (ours(**inputs()).logits - marian(**inputs()).logits).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "overrides,words",
    [
        ({"layer_norm": "pre"}, "layer_norm='pre'"),
        ({"d_k": 4}, "d_k=4"),
        ({"positional_encoding": "learned"}, "positional_encoding='learned'"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings=False"),
        ({"layer_norm_eps": 1e-6}, "layer_norm_eps=1e-06"),
    ],
)
def test_options_marian_cannot_compute_are_refused_by_name(overrides, words):
    with pytest.raises(ExportError, match=f"cannot export to MarianMTModel exactly: .*{words}"):
        to_marian(trained_looking_model(**overrides))


def test_marian_options_ours_cannot_compute_are_refused_by_name():
    marian = to_marian(trained_looking_model())
    marian.config.activation_function = "swish"  # opus-mt's
    with torch.no_grad():
        marian.model.encoder.layers[0].self_attn.q_proj.bias.fill_(0.5)
    with pytest.raises(ExportError, match="activation_function='swish'.*non-zero attention or logits biases "
                                          "\\(model.encoder.layers.0.self_attn.q_proj.bias"):
        from_marian(marian)


def test_the_command_writes_a_folder_that_plain_transformers_loads(tmp_path, capsys):
    model = trained_looking_model()
    model.save_pretrained(tmp_path / "ours")
    (tmp_path / "ours" / "tokenizer.json").write_text("{}")  # copied beside the weights as it is
    assert export_command.main(["--to", "marian", str(tmp_path / "ours"), str(tmp_path / "marian")]) == 0
    config = json.loads((tmp_path / "marian" / "config.json").read_text())
    assert config["model_type"] == "marian" and "auto_map" not in config  # no remote code
    assert (tmp_path / "marian" / "tokenizer.json").read_text() == "{}"
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "marian")
    assert type(loaded) is MarianMTModel
    with torch.no_grad():
        assert (loaded(**inputs()).logits - model(**inputs()).logits).abs().max() <= 1e-4
    # ... and back, through the command
    assert export_command.main(["--from", "marian", str(tmp_path / "marian"), str(tmp_path / "back")]) == 0
    back = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path / "back")
    with torch.no_grad():
        assert (back(**inputs()).logits - model(**inputs()).logits).abs().max() <= 1e-4
    # A refused option is an error naming it, exit status 2; an occupied destination is refused before any work.
    trained_looking_model(layer_norm="pre").save_pretrained(tmp_path / "pre")
    assert export_command.main(["--to", "marian", str(tmp_path / "pre"), str(tmp_path / "pre-marian")]) == 2
    assert "layer_norm='pre'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_command.main(["--to", "marian", str(tmp_path / "ours"), str(tmp_path / "marian")])
    assert "is not empty: choose a new folder" in capsys.readouterr().err
