"""Seeing inside the model (issue 8): the explain walk reproduces a layer's output from its weights, the attention
plots show what the model computes (one panel per head, rows summing to 1, masked positions at 0), bad input
fails with a clear error, and the docs figures follow the paper's formulas."""

import importlib.util
import json
import math
import re

import pytest
import torch
from tests.helpers import REPO_ROOT

pytest.importorskip("matplotlib", reason="the plots need matplotlib")

from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration  # noqa: E402
from modeling_vanilla import visualization as vis  # noqa: E402
from modeling_vanilla.tokenization import train_bpe_tokenizer  # noqa: E402

CORPUS = [
    "the cat sat on the mat", "a dog runs in the park", "the dog sat on the cat", "a cat runs in the park",
    "die Katze sitzt auf der Matte", "ein Hund läuft im Park", "der Hund sitzt auf der Katze",
    "eine Katze läuft im Park",
]
SOURCE = "the cat sat on the mat"
TARGET = "die Katze sitzt"
TOKEN_LIMIT = 24  # the tokenizer's model_max_length: the limit of a model with sinusoidal positions


def load_script(name: str):
    """Import scripts/<name>.py as a module, to call its main(argv)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(CORPUS * 4, vocab_size=300, model_max_length=TOKEN_LIMIT)


def tiny_model_for(tokenizer, **overrides):
    config = VanillaTransformerConfig.tiny(vocab_size=len(tokenizer), dropout=0.0, **overrides)
    return VanillaTransformerForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    """A tiny model trained for a few dozen steps to copy its input, saved with its tokenizer."""
    torch.manual_seed(0)
    model = tiny_model_for(tokenizer).train()
    batch = tokenizer(CORPUS, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # As the loss nears 0 the softmax fills with denormal floats, which are up to 100 times slower on CPU.
    torch.set_flush_denormal(True)
    try:
        for _ in range(60):
            loss = model(**batch, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_flush_denormal(False)  # PyTorch's default
    folder = tmp_path_factory.mktemp("tiny-copy-model")
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained(model_dir):
    return vis.load_model_and_tokenizer(model_dir)


@pytest.fixture(scope="module")
def plots_dir(model_dir, tmp_path_factory):
    """The attention plots of every layer and head 1 alone, written once by the script."""
    out_dir = tmp_path_factory.mktemp("attention")
    argv = [str(model_dir), SOURCE, "--target", TARGET, "--head", "1", "--out-dir", str(out_dir), "--no-html"]
    assert load_script("visualize_attention").main(argv) == 0
    return out_dir


def load_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def image_axes(figure):
    """The heatmap panels of a figure (the colorbar's axes holds no image)."""
    return [ax for ax in figure.axes if ax.images]


# The walk: section 3.2 step by step, recomputed from the weights


@pytest.mark.parametrize("layer_norm", ["post", "pre"])
def test_explain_walk_reproduces_the_encoder_layer_output(tokenizer, layer_norm):
    model = tiny_model_for(tokenizer, layer_norm=layer_norm)
    walk = vis.explain_encoder_layer(model, tokenizer, SOURCE, layer=1, head=2, print_fn=None)
    ids = torch.tensor([tokenizer(SOURCE)["input_ids"]])
    expected = model.model.encoder(ids, output_hidden_states=True).hidden_states[2][0]  # after layer 1
    assert walk.output.dtype == torch.float32
    assert (walk.output - expected).abs().max().item() < 1e-5
    assert walk.max_abs_diff < 1e-5


@pytest.mark.parametrize("layer_norm", ["post", "pre"])
def test_explain_walk_reproduces_the_decoder_layer_output(tokenizer, layer_norm):
    model = tiny_model_for(tokenizer, layer_norm=layer_norm)
    walk = vis.explain_decoder_layer(model, tokenizer, SOURCE, TARGET, layer=1, head=3, print_fn=None)
    ids = torch.tensor([tokenizer(SOURCE)["input_ids"]])
    target = tokenizer(text_target=TARGET)["input_ids"]
    decoder_ids = torch.tensor([[1, *target[:-1]]])  # <s> and the target without </s>: shifted right
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
    walk = vis.explain_encoder_layer(model, tokenizer, SOURCE, layer=0, head=0, print_fn=None)
    torch.testing.assert_close(walk.output, true_output, atol=1e-5, rtol=0)
    assert walk.reference.abs().max() == 0  # only the final comparison used the (sabotaged) forward


STEPS = [
    "times sqrt(d_model)", "positional encodings", "x = E[id] * sqrt(d_model) + PE",
    "q = x W_2^Q", "k = x W_2^K", "v = x W_2^V",
    "scores Q K^T", "scaled by 1/sqrt(d_k) = 1/sqrt(8)", "softmax over each row", "z = softmax(...) V",
    "Concat(head_1, ..., head_h)", "MultiHead = Concat(...) W^O", "residual: x + Sublayer(x)",
    "LayerNorm(x + Sublayer(x))",
    "x W_1 + b_1", "max(0, .)", "FFN(x) = max(0, x W_1 + b_1) W_2 + b_2", "max abs difference, layer output",
]


def test_explain_script_prints_every_step_of_section_3_2(model_dir, capsys):
    assert load_script("explain").main([str(model_dir), SOURCE, "--layer", "1", "--head", "2"]) == 0
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
    assert load_script("explain").main([str(model_dir), SOURCE, "--decoder", "--layer", "0", "--head", "1"]) == 0
    printed = capsys.readouterr().out
    assert "masked multi-head self-attention" in printed and "-inf" in printed  # the causal mask, section 3.2.3
    assert "encoder-decoder attention" in printed
    difference = float(re.search(r"max abs difference, layer output: (\S+)", printed).group(1))
    assert difference < 1e-5


# Attention plots


def test_visualize_script_writes_a_grid_per_layer_and_the_chosen_head(plots_dir):
    expected = {f"{kind}_layer{layer}{suffix}.png" for kind in ("encoder", "decoder", "cross") for layer in (0, 1)
                for suffix in ("", "_head1")}
    assert {path.name for path in plots_dir.iterdir()} == expected
    for name in expected:
        assert (plots_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (plots_dir / name).stat().st_size > 2000


def test_layer_figure_has_one_panel_per_head(trained):
    model, tokenizer = trained
    maps = vis.extract_attention(model, vis.encode_pair(model, tokenizer, SOURCE, TARGET))
    for kind in vis.ATTENTION_KINDS:
        weights, queries, keys = maps.of(kind)
        assert weights.shape[:2] == (2, 4)  # N = 2 layers, h = 4 heads
        figure = vis.plot_attention_layer(weights[0], queries, keys, kind)
        assert len(image_axes(figure)) == 4
        assert [ax.get_title() for ax in image_axes(figure)] == ["head 0", "head 1", "head 2", "head 3"]
    six_heads = torch.softmax(torch.randn(6, 3, 5), dim=-1)  # a 2 x 4 grid with two empty cells removed
    figure = vis.plot_attention_layer(six_heads, list("abc"), list("vwxyz"), "six heads")
    assert len(image_axes(figure)) == 6 and len(figure.axes) == 7  # six heads and the colorbar


def test_plotted_attention_rows_sum_to_one(trained):
    model, tokenizer = trained
    maps = vis.extract_attention(model, vis.encode_pair(model, tokenizer, SOURCE, TARGET))
    for kind in vis.ATTENTION_KINDS:
        weights, queries, keys = maps.of(kind)
        for layer in range(weights.shape[0]):
            for ax in image_axes(vis.plot_attention_layer(weights[layer], queries, keys, kind)):
                plotted = torch.as_tensor(ax.images[0].get_array())  # (L_q, L_k), what the panel shows
                assert plotted.shape == (len(queries), len(keys))
                torch.testing.assert_close(plotted.sum(-1), torch.ones(len(queries)), atol=1e-5, rtol=0)
        head = vis.plot_attention_head(weights[0, 0], queries, keys, kind)
        plotted = torch.as_tensor(image_axes(head)[0].images[0].get_array())
        torch.testing.assert_close(plotted.sum(-1), torch.ones(len(queries)), atol=1e-5, rtol=0)


def test_plotted_decoder_self_attention_is_zero_above_the_diagonal(trained):
    model, tokenizer = trained
    maps = vis.extract_attention(model, vis.encode_pair(model, tokenizer, SOURCE, TARGET))
    weights, queries, keys = maps.of("decoder")
    T = len(queries)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for layer in range(weights.shape[0]):
        for ax in image_axes(vis.plot_attention_layer(weights[layer], queries, keys, "decoder")):
            plotted = torch.as_tensor(ax.images[0].get_array())
            assert torch.all(plotted[future] == 0)
            assert torch.all(plotted[~future] > 0)


def test_plotted_padded_source_positions_get_zero_weight(trained):
    model, tokenizer = trained
    pair = vis.encode_pair(model, tokenizer, SOURCE, TARGET, pad_source_to=12)
    num_tokens = len(tokenizer(SOURCE)["input_ids"])
    assert pair.input_ids.shape == (1, 12) and pair.source_tokens[num_tokens:] == ["<pad>"] * (12 - num_tokens)
    maps = vis.extract_attention(model, pair)
    for kind in ("encoder", "cross"):
        weights, queries, keys = maps.of(kind)
        for layer in range(weights.shape[0]):
            for ax in image_axes(vis.plot_attention_layer(weights[layer], queries, keys, kind)):
                plotted = torch.as_tensor(ax.images[0].get_array())
                assert torch.all(plotted[:, num_tokens:] == 0)
                assert torch.all(plotted[:, :num_tokens] > 0)


def test_default_target_is_the_models_own_translation(trained):
    model, tokenizer = trained
    pair = vis.encode_pair(model, tokenizer, SOURCE)
    decoder_ids = pair.decoder_input_ids[0].tolist()
    generated = model.generate(pair.input_ids, attention_mask=pair.attention_mask, max_new_tokens=TOKEN_LIMIT - 1)
    generated = generated[0].tolist()
    assert decoder_ids[0] == model.config.decoder_start_token_id
    assert generated[: len(decoder_ids)] == decoder_ids  # the translation fed back, </s> left out
    assert len(generated) == len(decoder_ids) or generated[len(decoder_ids)] == model.config.eos_token_id
    assert pair.target_tokens == vis.token_labels(tokenizer, decoder_ids)


def test_bertviz_html_views_are_written(trained, tmp_path):
    pytest.importorskip("bertviz", reason="bertviz is an optional extra (pip install bertviz)")
    model, tokenizer = trained
    maps = vis.extract_attention(model, vis.encode_pair(model, tokenizer, SOURCE, TARGET))
    written = vis.write_bertviz_html(maps, tmp_path)
    assert [path.name for path in written] == ["head_view.html", "model_view.html"]
    for path in written:
        page = path.read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>")
        for token in maps.source_tokens + maps.target_tokens:  # bertviz writes the tokens as JSON
            assert json.dumps(token) in page


def test_html_view_is_skipped_with_a_message_without_bertviz(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "bertviz", None)  # makes `import bertviz` raise ImportError
    argv = [str(model_dir), SOURCE, "--target", TARGET, "--layer", "0", "--out-dir", str(tmp_path)]
    assert load_script("visualize_attention").main(argv) == 0
    assert "skipping the HTML view: bertviz is not installed (pip install bertviz)" in capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cross_layer0.png", "decoder_layer0.png",
                                                                "encoder_layer0.png"]


# Bad input: clear errors naming the problem and the valid range


LONG_SENTENCE = " ".join(["the cat sat on the mat"] * 6)


def test_sentence_longer_than_the_tokenizer_limit_is_a_clear_error(model_dir, trained, capsys):
    model, tokenizer = trained
    with pytest.raises(ValueError, match=rf"at most {TOKEN_LIMIT} \(tokenizer.model_max_length"):
        vis.encode_pair(model, tokenizer, LONG_SENTENCE)
    with pytest.raises(ValueError, match="target sentence is .* at most 24"):
        vis.encode_pair(model, tokenizer, SOURCE, LONG_SENTENCE)
    for script, extra in (("explain", []), ("visualize_attention", ["--out-dir", str(model_dir / "unused")])):
        assert load_script(script).main([str(model_dir), LONG_SENTENCE, *extra]) == 1
        assert f"accepts at most {TOKEN_LIMIT}" in capsys.readouterr().err


def test_sentence_longer_than_the_learned_position_table_is_a_clear_error(tokenizer, tmp_path, capsys):
    model = tiny_model_for(tokenizer, positional_encoding="learned", max_position_embeddings=12)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    sentence = "the cat sat on the mat and the dog"
    assert TOKEN_LIMIT >= len(tokenizer(sentence)["input_ids"]) > 12
    with pytest.raises(ValueError, match=r"at most 12 \(config.max_position_embeddings"):
        vis.explain_encoder_layer(model, tokenizer, sentence, print_fn=None)
    assert load_script("explain").main([str(tmp_path), sentence]) == 1
    assert "config.max_position_embeddings" in capsys.readouterr().err


@pytest.mark.parametrize(
    "script,options,message",
    [
        ("explain", ["--layer", "2"], "layer 2 does not exist: the encoder has 2 layers, valid layers are 0..1"),
        ("explain", ["--decoder", "--layer", "-1"], "layer -1 does not exist: the decoder has 2 layers"),
        ("explain", ["--head", "4"], "head 4 does not exist: each attention layer has 4 heads, valid heads are 0..3"),
        ("visualize_attention", ["--layer", "0", "5"], "layer 5 does not exist: the encoder has 2 layers"),
        ("visualize_attention", ["--head", "7"], "head 7 does not exist: each attention layer has 4 heads"),
    ],
)
def test_unknown_layer_or_head_is_a_clear_error(model_dir, tmp_path, capsys, script, options, message):
    extra = ["--out-dir", str(tmp_path)] if script == "visualize_attention" else []
    assert load_script(script).main([str(model_dir), SOURCE, *options, *extra]) == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing drawn before the check


def test_unknown_layer_or_head_in_the_library_is_a_value_error(trained, tmp_path):
    model, tokenizer = trained
    with pytest.raises(ValueError, match=r"valid heads are 0..3"):
        vis.explain_decoder_layer(model, tokenizer, SOURCE, TARGET, head=4, print_fn=None)
    maps = vis.extract_attention(model, vis.encode_pair(model, tokenizer, SOURCE, TARGET))
    with pytest.raises(ValueError, match=r"valid layers are 0..1"):
        vis.save_attention_plots(maps, tmp_path, layers=[3])
    with pytest.raises(ValueError, match="unknown attention 'memory'"):
        maps.of("memory")


def test_missing_model_folder_is_a_clear_error(tmp_path, tokenizer, capsys):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.* does not exist"):
        vis.load_model_and_tokenizer(missing)
    for script in ("explain", "visualize_attention"):
        assert load_script(script).main([str(missing), SOURCE]) == 1
        assert "does not exist" in capsys.readouterr().err
    tiny_model_for(tokenizer).save_pretrained(tmp_path / "model-only")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        vis.load_model_and_tokenizer(tmp_path / "model-only")


# Figures of the paper's formulas (docs/figures)


def test_make_figures_writes_the_four_figures(tmp_path):
    assert load_script("make_figures").main(["--out-dir", str(tmp_path)]) == 0
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["causal_mask.png", "label_smoothing.png", "learning_rate.png", "positional_encoding.png"]
    for name in names:
        assert 5_000 < (tmp_path / name).stat().st_size < 300_000  # small enough to commit as docs


def test_lr_schedule_figure_matches_eq_3():
    figure = vis.plot_learning_rate()
    steps, rates = figure.axes[0].lines[0].get_xydata().T  # d_model = 512, warmup 4000
    expected = [512**-0.5 * min(step**-0.5, step * 4000**-1.5) for step in steps]
    assert rates.tolist() == pytest.approx(expected, rel=1e-9)
    peak = 512**-0.5 * 4000**-0.5
    assert max(rates) <= peak and "peak 6.99e-04 at step 4000" in [text.get_text() for text in figure.axes[0].texts]


def test_label_smoothing_figure_is_the_target_the_training_loss_uses():
    vocab_size, epsilon = 10, 0.1
    labels = torch.tensor([2, 5, 7])
    target = vis.label_smoothing_target(labels, vocab_size, epsilon)  # (3, V)
    torch.testing.assert_close(target.sum(-1), torch.ones(3))
    assert target[0, 2].item() == pytest.approx(1 - epsilon + epsilon / vocab_size)
    assert target[0, 0].item() == pytest.approx(epsilon / vocab_size)
    # The loss the model trains with: cross_entropy(label_smoothing=0.1), i.e. cross-entropy against this target.
    logits = torch.randn(3, vocab_size)
    cross_entropy = -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    torch.testing.assert_close(cross_entropy, torch.nn.functional.cross_entropy(logits, labels, label_smoothing=epsilon))
    plotted = torch.as_tensor(vis.plot_label_smoothing(vocab_size, (2, 5, 7), epsilon).axes[0].images[0].get_array())
    torch.testing.assert_close(plotted, target)


def test_positional_encoding_and_mask_figures_follow_section_3_5_and_3_2_3():
    plotted = torch.as_tensor(vis.plot_positional_encoding(d_model=16, num_positions=20, dims=(0, 5)).axes[0].images[0].get_array())
    for pos, i in ((0, 0), (7, 3), (19, 5)):
        angle = pos / 10000 ** (2 * i / 16)
        assert plotted[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert plotted[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    mask = torch.as_tensor(vis.plot_causal_mask(6).axes[0].images[0].get_array())
    assert torch.equal(mask.bool(), torch.tril(torch.ones(6, 6, dtype=torch.bool)))


def test_the_model_package_does_not_import_the_visualization_module():
    for name in ("__init__.py", "modeling_vanilla.py", "configuration_vanilla.py"):
        assert "visualization" not in (REPO_ROOT / "modeling_vanilla" / name).read_text()
