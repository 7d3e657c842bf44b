"""Export to CTranslate2 (issue 15, part 2): the same function as ours, the same translations, refusals named,
nothing half written."""

import os
import sys

import pytest
import torch

from modeling_vanilla.cli import export as export_command
from modeling_vanilla.cli import translate as translate_command
from modeling_vanilla.publish.export import ExportError
from modeling_vanilla.publish.serving import CTranslate2Translator, to_ctranslate2, vocabulary_tokens
from tests.helpers import CORPUS, make_tokenizer, save_copy_model, tiny_model_for

pytest.importorskip("ctranslate2", reason="CTranslate2 is the `serve` extra (installed with `dev`)")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def perturbed_model(tokenizer, **overrides):
    """A tiny model whose LayerNorms and biases are away from their initial values, so that a conversion that
    drops or misplaces one changes the scores."""
    torch.manual_seed(0)
    model = tiny_model_for(tokenizer, **overrides)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.eval()


@torch.no_grad()
def our_token_log_probs(model, tokenizer, source: str, target: str) -> torch.Tensor:
    """log p(y_t | y_<t, x) of every target token and the final </s>, teacher-forced."""
    source_ids = tokenizer(source, return_tensors="pt")["input_ids"]
    labels = tokenizer(target, return_tensors="pt")["input_ids"]  # ends with </s>
    start = torch.tensor([[model.config.decoder_start_token_id]])
    decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)
    logits = model(input_ids=source_ids, decoder_input_ids=decoder_input_ids).logits
    return logits.log_softmax(-1)[0].gather(-1, labels[0, :, None])[:, 0]


@pytest.mark.parametrize("overrides", [
    {},  # the paper's model: post-norm, sinusoids, tied embeddings, sqrt(d_model) scale
    {"layer_norm": "pre", "positional_encoding": "learned", "tie_word_embeddings": False},
    {"scale_embedding": False, "layer_norm_eps": 1e-6},
], ids=["paper", "pre-learned-untied", "unscaled-eps"])
def test_ctranslate2_computes_our_token_probabilities(tokenizer, tmp_path, overrides):
    model = perturbed_model(tokenizer, **overrides)
    to_ctranslate2(model, tokenizer, tmp_path / "ct2")
    translator = CTranslate2Translator(tmp_path / "ct2", threads=1)
    pairs = [(CORPUS[0], CORPUS[4]), (CORPUS[1], CORPUS[5]), (CORPUS[2], "der Hund")]
    sources = [tokenizer.convert_ids_to_tokens(tokenizer(s)["input_ids"]) for s, _ in pairs]
    targets = [tokenizer.convert_ids_to_tokens(tokenizer(t)["input_ids"])[:-1] for _, t in pairs]  # CT2 adds </s>
    results = translator.translator.score_batch(sources, targets)
    for (source, target), result in zip(pairs, results, strict=True):
        ours = our_token_log_probs(model, tokenizer, source, target)
        theirs = torch.tensor(result.log_probs)
        assert theirs.shape == ours.shape
        assert (theirs - ours).abs().max() <= 1e-4, (source, target)


def test_commands_translate_the_same_with_both_backends(tokenizer, tmp_path, capsys):
    """vanilla-export --to ctranslate2, then vanilla-translate with each backend: identical output files, with the
    model's own decoding (beam 4, length penalty 0.6) and with greedy decoding."""
    save_copy_model(tmp_path / "model", tokenizer)
    assert export_command.main(["--to", "ctranslate2", str(tmp_path / "model"), str(tmp_path / "ct2")]) == 0
    assert "CTranslate2, float32" in capsys.readouterr().out
    assert {"model.bin", "tokenizer.json", "generation_config.json"} <= set(os.listdir(tmp_path / "ct2"))
    source = tmp_path / "source.txt"
    source.write_text("\n".join(CORPUS + ["", "the cat runs"]) + "\n")
    for extra in ([], ["--num-beams", "1", "--max-new-tokens", "6"]):
        translate_command.main([str(tmp_path / "model"), "--input", str(source), "--output", str(tmp_path / "a"),
                                *extra])
        translate_command.main([str(tmp_path / "ct2"), "--backend", "ctranslate2", "--input", str(source),
                                "--output", str(tmp_path / "b"), "--batch-size", "3", *extra])
        ours, theirs = (tmp_path / "a").read_text(), (tmp_path / "b").read_text()
        assert ours == theirs
        assert ours.count("\n") == len(CORPUS) + 2 and ours.split("\n")[len(CORPUS)] == ""
        if not extra:  # the copy model copies: real translations, not empty strings that would match trivially
            assert ours.split("\n")[0] == CORPUS[0]


def test_int8_export_is_smaller_and_translates_the_same_here(tokenizer, tmp_path):
    save_copy_model(tmp_path / "model", tokenizer)
    assert export_command.main(["--to", "ctranslate2", str(tmp_path / "model"), str(tmp_path / "fp32")]) == 0
    assert export_command.main(["--to", "ctranslate2", str(tmp_path / "model"), str(tmp_path / "int8"),
                                "--quantization", "int8"]) == 0
    sizes = {name: (tmp_path / name / "model.bin").stat().st_size for name in ("fp32", "int8")}
    assert sizes["int8"] < 0.5 * sizes["fp32"]
    fp32 = CTranslate2Translator(tmp_path / "fp32", threads=1).translate(CORPUS)
    assert CTranslate2Translator(tmp_path / "int8", threads=1).translate(CORPUS) == fp32
    # int8 computation from float32 weights, chosen when loading
    assert CTranslate2Translator(tmp_path / "fp32", compute_type="int8", threads=1).translate(CORPUS) == fp32


def test_options_ctranslate2_cannot_compute_are_refused_by_name(tokenizer, tmp_path):
    with pytest.raises(ExportError, match=r"d_k=4 \(CTranslate2's heads are d_model / num_heads = 8 wide\)"):
        to_ctranslate2(tiny_model_for(tokenizer, d_k=4, d_v=4), tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="quantization='int4': choose one of int8, int8_float32"):
        to_ctranslate2(tiny_model_for(tokenizer), tokenizer, tmp_path / "out", quantization="int4")
    with pytest.raises(ExportError, match=r"the tokenizer has \d+ tokens but the model only 10"):
        vocabulary_tokens(tokenizer, 10)
    tokens = vocabulary_tokens(tokenizer, len(tokenizer) + 2)  # a model resized beyond its tokenizer
    assert tokens[-2:] == [f"<unused_{len(tokenizer)}>", f"<unused_{len(tokenizer) + 1}>"]


def test_an_occupied_destination_is_refused_and_a_failure_leaves_nothing(tokenizer, tmp_path, monkeypatch):
    model = tiny_model_for(tokenizer)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not an empty folder"):
        to_ctranslate2(model, tokenizer, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", fail)  # after CTranslate2 wrote its files
    with pytest.raises(OSError, match="disk full"):
        to_ctranslate2(model, tokenizer, tmp_path / "new")
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # no destination, no half-built folder beside it


def test_without_ctranslate2_the_error_says_how_to_install(tokenizer, tmp_path, monkeypatch, capsys):
    save_copy_model(tmp_path / "model", tokenizer)
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 now raises ImportError
    assert export_command.main(["--to", "ctranslate2", str(tmp_path / "model"), str(tmp_path / "ct2")]) == 2
    assert 'CTranslate2 is not installed: pip install "vanilla-transformer[serve]"' in capsys.readouterr().err
    assert not (tmp_path / "ct2").exists()


def test_translate_backend_errors_are_clear(tokenizer, tmp_path, capsys):
    save_copy_model(tmp_path / "model", tokenizer)
    with pytest.raises(SystemExit, match="has no model.bin: not a CTranslate2 folder. Convert a model with "
                                         "vanilla-export --to ctranslate2"):
        translate_command.main([str(tmp_path / "model"), "--backend", "ctranslate2"])
    with pytest.raises(SystemExit):
        translate_command.main([str(tmp_path / "model"), "--compute-type", "int8"])
    assert "--compute-type applies to --backend ctranslate2 only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_command.main(["--to", "marian", str(tmp_path / "model"), str(tmp_path / "x"), "--quantization", "int8"])
    assert "--quantization applies to --to ctranslate2 only" in capsys.readouterr().err
