"""Section 3.4's one embedding matrix, as transformers' loading code expects it (issue 15, part 3).

The bare model holds the matrix as `shared` (as BART and Marian do) and declares both stacks' embeddings tied to it;
the generation model ties the pre-softmax projection to it. These are the properties transformers' common tests
`test_can_init_all_missing_weights` and `test_model_weights_reload_no_missing_tied_weights` check, and folders saved
before `shared` existed (the matrix stored as `encoder.embed_tokens.weight`) still load.
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, set_seed

from modeling_vanilla import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
)
from modeling_vanilla.training.averaging import load_model_weights
from tests.helpers import forward_kwargs

CLASSES = [VanillaTransformerModel, VanillaTransformerForConditionalGeneration]


@pytest.fixture
def seeded_init(monkeypatch):
    """Every weight initialization starts from the same seed, so that two ways of building a model can be compared
    weight for weight (what transformers' own test does)."""
    original = PreTrainedModel._initialize_weights

    def seeded(*args, **kwargs):
        set_seed(42)
        original(*args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)


def embedding_parameters(model) -> list[torch.nn.Parameter]:
    bare = model.model if isinstance(model, VanillaTransformerForConditionalGeneration) else model
    found = [bare.shared.weight, bare.encoder.embed_tokens.weight, bare.decoder.embed_tokens.weight]
    return found + ([model.lm_head.weight] if bare is not model else [])


@pytest.mark.parametrize("model_class", CLASSES)
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_weights_missing_from_the_checkpoint_are_initialized_as_init_does(model_class, tie, seeded_init):
    config = VanillaTransformerConfig.tiny(tie_word_embeddings=tie)
    from_init = model_class(copy.deepcopy(config))
    from_nothing, info = model_class.from_pretrained(None, config=copy.deepcopy(config), state_dict={},
                                                     output_loading_info=True)
    on_meta = [name for name, tensor in [*from_nothing.named_parameters(), *from_nothing.named_buffers()]
               if tensor.device.type == "meta"]
    assert on_meta == []
    expected, got = from_init.state_dict(), from_nothing.state_dict()
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []
    assert ("shared.weight" in {key.removeprefix("model.") for key in info["missing_keys"]}) == tie


@pytest.mark.parametrize("model_class", CLASSES)
def test_a_checkpoint_without_weights_reports_every_parameter_missing(model_class, tmp_path):
    """Nothing reported missing that is not a parameter, no parameter silently left out: a tied copy may go
    unreported only when another member of its tie is."""
    model_class(VanillaTransformerConfig.tiny()).save_pretrained(tmp_path)
    save_file({"tensor": torch.tensor([1, 2])}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    names = {name for name, _ in [*reloaded.named_parameters(remove_duplicate=False), *reloaded.named_buffers()]}
    persistent = names & set(reloaded.state_dict())
    missing = set(info["missing_keys"])
    assert missing <= names
    tie = {name for name in persistent if name.endswith(("shared.weight", "embed_tokens.weight", "lm_head.weight"))}
    assert persistent - missing <= tie and tie & missing  # the shared matrix is reported
    assert persistent - tie <= missing


@pytest.mark.parametrize("model_class", CLASSES)
def test_the_matrix_is_saved_once_as_shared_and_tied_again_on_load(model_class, tmp_path):
    model = model_class(VanillaTransformerConfig.tiny())
    prefix = "model." if model_class is VanillaTransformerForConditionalGeneration else ""
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    assert f"{prefix}shared.weight" in stored
    assert not {f"{prefix}encoder.embed_tokens.weight", f"{prefix}decoder.embed_tokens.weight", "lm_head.weight"} & set(stored)
    loaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    weights = embedding_parameters(loaded)
    assert all(weight is weights[0] for weight in weights)
    torch.testing.assert_close(weights[0], stored[f"{prefix}shared.weight"], rtol=0, atol=0)


def test_resizing_keeps_the_tie_through_save_and_load(tmp_path):
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny())
    model.resize_token_embeddings(110)
    weights = embedding_parameters(model)
    assert weights[0].shape == (110, 32) and all(weight is weights[0] for weight in weights)
    model.save_pretrained(tmp_path)
    loaded = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path)
    weights = embedding_parameters(loaded)
    assert loaded.config.vocab_size == 110 and all(weight is weights[0] for weight in weights)
    batch = forward_kwargs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model.eval()(**batch).logits)


def old_layout(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A state dict as saved before `shared`: the matrix under the encoder's name, its copies left out."""
    state = {name: tensor.contiguous() for name, tensor in state.items()}
    state[f"{prefix}encoder.embed_tokens.weight"] = state.pop(f"{prefix}shared.weight")
    for copy_name in (f"{prefix}decoder.embed_tokens.weight", "lm_head.weight"):
        state.pop(copy_name, None)
    return state


@pytest.mark.parametrize("model_class", CLASSES)
def test_folders_saved_before_shared_still_load(model_class, tmp_path):
    torch.manual_seed(0)
    model = model_class(VanillaTransformerConfig.tiny()).eval()
    prefix = "model." if model_class is VanillaTransformerForConditionalGeneration else ""
    model.save_pretrained(tmp_path)
    save_file(old_layout(model.state_dict(), prefix), tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    weights = embedding_parameters(loaded)
    assert all(weight is weights[0] for weight in weights)
    batch = forward_kwargs()
    with torch.no_grad():
        expected, got = model(**batch), loaded(**batch)
    output = "logits" if prefix else "last_hidden_state"
    torch.testing.assert_close(got[output], expected[output], rtol=0, atol=0)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True


def test_training_checkpoints_saved_before_shared_still_resume():
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny()).eval()
    fresh = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny()).eval()
    load_model_weights(fresh, old_layout(model.state_dict(), "model."), "checkpoint-100")
    weights = embedding_parameters(fresh)
    assert all(weight is weights[0] for weight in weights)
    torch.testing.assert_close(weights[0], model.model.shared.weight, rtol=0, atol=0)
    state = old_layout(model.state_dict(), "model.")
    del state["model.encoder.embed_tokens.weight"]  # now the matrix is really missing
    with pytest.raises(ValueError, match=r"do not fit the model: missing \['model.shared.weight'\]"):
        load_model_weights(fresh, state, "checkpoint-100")


def test_the_bare_model_exposes_shared_as_its_input_embeddings():
    model = VanillaTransformerModel(VanillaTransformerConfig.tiny())
    assert model.get_input_embeddings() is model.shared
    new = torch.nn.Embedding(99, 32, padding_idx=0)
    model.set_input_embeddings(new)
    assert model.shared is new and model.encoder.embed_tokens is new and model.decoder.embed_tokens is new
    untied = VanillaTransformerModel(VanillaTransformerConfig.tiny(tie_word_embeddings=False))
    assert not hasattr(untied, "shared") and untied.get_input_embeddings() is untied.encoder.embed_tokens


def test_checkpoints_saved_before_shared_average_with_newer_ones(tmp_path):
    from modeling_vanilla.training.averaging import average_checkpoints

    torch.manual_seed(0)
    older = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny())
    newer = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny())
    newer.save_pretrained(tmp_path / "newer")
    older.save_pretrained(tmp_path / "older")
    save_file(old_layout(older.state_dict(), "model."), tmp_path / "older" / "model.safetensors",
              metadata={"format": "pt"})
    averaged = average_checkpoints([tmp_path / "older", tmp_path / "newer"])
    assert "model.shared.weight" in averaged and "model.encoder.embed_tokens.weight" not in averaged
    torch.testing.assert_close(averaged["model.shared.weight"],
                               (older.model.shared.weight + newer.model.shared.weight).detach() / 2)
    untied = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(tie_word_embeddings=False))
    untied.save_pretrained(tmp_path / "untied")  # its encoder embedding is its own: not renamed
    assert "model.encoder.embed_tokens.weight" in average_checkpoints([tmp_path / "untied"])
