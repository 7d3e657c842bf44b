"""Attention maps (the paper's Figures 3-5, `modeling_vanilla.insight.attention_maps`, `vanilla-visualize`): the plots show
what the model computes (one panel per head, rows summing to 1, masked positions at 0), bertviz gets every layer of
the three attentions with their tokens, and bad input to either command fails with a clear error.

The tiny model, its tokenizer and the sentences come from tests/helpers.py (shared with tests/insight/test_explain.py)."""

import json
import sys
import types

import pytest
import torch

pytest.importorskip("matplotlib", reason="the plots need matplotlib")

from modeling_vanilla.cli import explain as explain_cli  # noqa: E402
from modeling_vanilla.cli import visualize_attention as visualize_cli  # noqa: E402
from modeling_vanilla.inference.model_folder import load_model_and_tokenizer  # noqa: E402
from modeling_vanilla.insight import attention_maps as am  # noqa: E402
from tests.helpers import (  # noqa: E402
    CORPUS,
    SOURCE,
    TARGET,
    TOKEN_LIMIT,
    load_tokenizer,
    make_tokenizer,
    save_copy_model,
    tiny_model_for,
)

COMMANDS = {"explain": explain_cli, "visualize_attention": visualize_cli}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_copy_model(tmp_path_factory.mktemp("tiny-copy-model"), tokenizer)


@pytest.fixture(scope="module")
def trained(model_dir):
    return load_model_and_tokenizer(model_dir, dtype=torch.float32, vanilla_only=True)


@pytest.fixture(scope="module")
def plots_dir(model_dir, tmp_path_factory):
    """The attention plots of every layer and head 1 alone, written once by the command."""
    out_dir = tmp_path_factory.mktemp("attention")
    argv = [str(model_dir), SOURCE, "--target", TARGET, "--head", "1", "--out-dir", str(out_dir), "--no-html"]
    assert visualize_cli.main(argv) == 0
    return out_dir


def image_axes(figure):
    """The heatmap panels of a figure (the colorbar's axes holds no image)."""
    return [ax for ax in figure.axes if ax.images]


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
    maps = am.extract_attention(model, am.encode_pair(model, tokenizer, SOURCE, TARGET))
    for kind in am.ATTENTION_KINDS:
        weights, queries, keys = maps.of(kind)
        assert weights.shape[:2] == (2, 4)  # N = 2 layers, h = 4 heads
        figure = am.plot_attention_layer(weights[0], queries, keys, kind)
        assert len(image_axes(figure)) == 4
        assert [ax.get_title() for ax in image_axes(figure)] == ["head 0", "head 1", "head 2", "head 3"]
    six_heads = torch.softmax(torch.randn(6, 3, 5), dim=-1)  # a 2 x 4 grid with two empty cells removed
    figure = am.plot_attention_layer(six_heads, list("abc"), list("vwxyz"), "six heads")
    assert len(image_axes(figure)) == 6 and len(figure.axes) == 7  # six heads and the colorbar


def test_plotted_attention_rows_sum_to_one(trained):
    model, tokenizer = trained
    maps = am.extract_attention(model, am.encode_pair(model, tokenizer, SOURCE, TARGET))
    for kind in am.ATTENTION_KINDS:
        weights, queries, keys = maps.of(kind)
        for layer in range(weights.shape[0]):
            for ax in image_axes(am.plot_attention_layer(weights[layer], queries, keys, kind)):
                plotted = torch.as_tensor(ax.images[0].get_array())  # (L_q, L_k), what the panel shows
                assert plotted.shape == (len(queries), len(keys))
                torch.testing.assert_close(plotted.sum(-1), torch.ones(len(queries)), atol=1e-5, rtol=0)
        head = am.plot_attention_head(weights[0, 0], queries, keys, kind)
        plotted = torch.as_tensor(image_axes(head)[0].images[0].get_array())
        torch.testing.assert_close(plotted.sum(-1), torch.ones(len(queries)), atol=1e-5, rtol=0)


def test_plotted_decoder_self_attention_is_zero_above_the_diagonal(trained):
    model, tokenizer = trained
    maps = am.extract_attention(model, am.encode_pair(model, tokenizer, SOURCE, TARGET))
    weights, queries, keys = maps.of("decoder")
    T = len(queries)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for layer in range(weights.shape[0]):
        for ax in image_axes(am.plot_attention_layer(weights[layer], queries, keys, "decoder")):
            plotted = torch.as_tensor(ax.images[0].get_array())
            assert torch.all(plotted[future] == 0)
            assert torch.all(plotted[~future] > 0)


def test_plotted_padded_source_positions_get_zero_weight(trained):
    model, tokenizer = trained
    pair = am.encode_pair(model, tokenizer, SOURCE, TARGET, pad_source_to=12)
    num_tokens = len(tokenizer(SOURCE)["input_ids"])
    assert pair.input_ids.shape == (1, 12) and pair.source_tokens[num_tokens:] == ["<pad>"] * (12 - num_tokens)
    maps = am.extract_attention(model, pair)
    for kind in ("encoder", "cross"):
        weights, queries, keys = maps.of(kind)
        for layer in range(weights.shape[0]):
            for ax in image_axes(am.plot_attention_layer(weights[layer], queries, keys, kind)):
                plotted = torch.as_tensor(ax.images[0].get_array())
                assert torch.all(plotted[:, num_tokens:] == 0)
                assert torch.all(plotted[:, :num_tokens] > 0)


def test_default_target_is_the_models_own_translation(trained):
    model, tokenizer = trained
    pair = am.encode_pair(model, tokenizer, SOURCE)
    decoder_ids = pair.decoder_input_ids[0].tolist()
    generated = model.generate(pair.input_ids, attention_mask=pair.attention_mask, max_new_tokens=TOKEN_LIMIT - 1)
    generated = generated[0].tolist()
    assert decoder_ids[0] == model.config.decoder_start_token_id
    assert generated[: len(decoder_ids)] == decoder_ids  # the translation fed back, </s> left out
    assert len(generated) == len(decoder_ids) or generated[len(decoder_ids)] == model.config.eos_token_id
    assert pair.target_tokens == am.token_labels(tokenizer, decoder_ids)


# bertviz's HTML views


def bertviz_parameters(page: str) -> dict:
    """The parameters bertviz writes into its page as JSON (the attention of each kind, per layer, and the tokens)."""
    return json.JSONDecoder().raw_decode(page, page.index('{"attention": '))[0]


def test_bertviz_html_views_are_written(trained, tmp_path):
    pytest.importorskip("bertviz", reason="bertviz is an optional extra (pip install bertviz)")
    model, tokenizer = trained
    maps = am.extract_attention(model, am.encode_pair(model, tokenizer, SOURCE, TARGET))
    written = am.write_bertviz_html(maps, tmp_path)
    assert [path.name for path in written] == ["head_view.html", "model_view.html"]
    for path in written:
        page = path.read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>")
        for token in maps.source_tokens + maps.target_tokens:  # bertviz writes the tokens as JSON
            assert json.dumps(token) in page
        # What the page draws: the weights of every layer and head of each attention, with its query/key tokens.
        views = {view["name"]: view for view in bertviz_parameters(page)["attention"]}
        assert list(views) == ["Encoder", "Decoder", "Cross"]
        for name, kind in (("Encoder", "encoder"), ("Decoder", "decoder"), ("Cross", "cross")):
            weights, queries, keys = maps.of(kind)
            torch.testing.assert_close(torch.tensor(views[name]["attn"]), weights, atol=0, rtol=0)
            assert (views[name]["left_text"], views[name]["right_text"]) == (queries, keys)


def test_bertviz_views_get_every_layer_of_the_three_attentions_and_the_tokens(trained, tmp_path, monkeypatch):
    """Without bertviz installed too: a stand-in module records what head_view and model_view are handed."""
    handed = {}

    def view(name):
        def record(**arguments):
            handed[name] = arguments
            return types.SimpleNamespace(data=f"<div>{name} body</div>")
        return record

    stand_in = types.ModuleType("bertviz")
    stand_in.head_view, stand_in.model_view = view("head_view"), view("model_view")
    monkeypatch.setitem(sys.modules, "bertviz", stand_in)
    model, tokenizer = trained
    maps = am.extract_attention(model, am.encode_pair(model, tokenizer, SOURCE, TARGET))
    written = am.write_bertviz_html(maps, tmp_path)
    assert [path.name for path in written] == ["head_view.html", "model_view.html"]
    for name in ("head_view", "model_view"):
        arguments = handed[name]
        assert arguments["encoder_tokens"] == maps.source_tokens
        assert arguments["decoder_tokens"] == maps.target_tokens
        assert arguments["html_action"] == "return"  # a page to write, not a notebook display
        for kind in ("encoder", "decoder", "cross"):
            layers, weights = arguments[f"{kind}_attention"], getattr(maps, kind)  # weights (N, h, L_q, L_k)
            assert len(layers) == weights.shape[0]
            for layer, layer_weights in enumerate(layers):  # bertviz wants (1, h, L_q, L_k) per layer
                torch.testing.assert_close(layer_weights, weights[layer][None], atol=0, rtol=0)
        page = (tmp_path / f"{name}.html").read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>") and f"<div>{name} body</div>" in page


def test_html_view_is_skipped_with_a_message_without_bertviz(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bertviz", None)  # makes `import bertviz` raise ImportError
    argv = [str(model_dir), SOURCE, "--target", TARGET, "--layer", "0", "--out-dir", str(tmp_path)]
    assert visualize_cli.main(argv) == 0
    assert "skipping the HTML view: bertviz is not installed (pip install bertviz)" in capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cross_layer0.png", "decoder_layer0.png",
                                                                "encoder_layer0.png"]


# Bad input to either command: clear errors naming the problem and the valid range


LONG_SENTENCE = " ".join(["the cat sat on the mat"] * 6)


def test_sentence_longer_than_the_tokenizer_limit_is_a_clear_error(model_dir, trained, capsys):
    model, tokenizer = trained
    with pytest.raises(ValueError, match=rf"at most {TOKEN_LIMIT} \(tokenizer.model_max_length"):
        am.encode_pair(model, tokenizer, LONG_SENTENCE)
    with pytest.raises(ValueError, match="target sentence is .* at most 24"):
        am.encode_pair(model, tokenizer, SOURCE, LONG_SENTENCE)
    for command, extra in (("explain", []), ("visualize_attention", ["--out-dir", str(model_dir / "unused")])):
        assert COMMANDS[command].main([str(model_dir), LONG_SENTENCE, *extra]) == 1
        assert f"accepts at most {TOKEN_LIMIT}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command,options,message",
    [
        ("explain", ["--layer", "2"], "layer 2 does not exist: the encoder has 2 layers, valid layers are 0..1"),
        ("explain", ["--decoder", "--layer", "-1"], "layer -1 does not exist: the decoder has 2 layers"),
        ("explain", ["--head", "4"], "head 4 does not exist: each attention layer has 4 heads, valid heads are 0..3"),
        ("visualize_attention", ["--layer", "0", "5"], "layer 5 does not exist: the encoder has 2 layers"),
        ("visualize_attention", ["--head", "7"], "head 7 does not exist: each attention layer has 4 heads"),
    ],
)
def test_unknown_layer_or_head_is_a_clear_error(model_dir, tmp_path, capsys, command, options, message):
    extra = ["--out-dir", str(tmp_path)] if command == "visualize_attention" else []
    assert COMMANDS[command].main([str(model_dir), SOURCE, *options, *extra]) == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing drawn before the check


def test_unknown_layer_or_head_in_the_library_is_a_value_error(trained, tmp_path):
    from modeling_vanilla.insight.explain import explain_decoder_layer

    model, tokenizer = trained
    with pytest.raises(ValueError, match=r"valid heads are 0..3"):
        explain_decoder_layer(model, tokenizer, SOURCE, TARGET, head=4, print_fn=None)
    maps = am.extract_attention(model, am.encode_pair(model, tokenizer, SOURCE, TARGET))
    with pytest.raises(ValueError, match=r"valid layers are 0..1"):
        am.save_attention_plots(maps, tmp_path, layers=[3])
    with pytest.raises(ValueError, match="unknown attention 'memory'"):
        maps.of("memory")


def test_missing_model_folder_is_a_clear_error(tmp_path, tokenizer, capsys):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.* does not exist"):
        load_model_and_tokenizer(missing, dtype=torch.float32, vanilla_only=True)
    for command in ("explain", "visualize_attention"):
        assert COMMANDS[command].main([str(missing), SOURCE]) == 1
        assert "does not exist" in capsys.readouterr().err
    tiny_model_for(tokenizer).save_pretrained(tmp_path / "model-only")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_model_and_tokenizer(tmp_path / "model-only", dtype=torch.float32, vanilla_only=True)
