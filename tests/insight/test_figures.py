"""The docs' figures (`modeling_vanilla.insight.figures`, `vanilla-figures`) follow the paper's formulas, and the model
package does not import the modules that see inside it (matplotlib stays a dependency of the plots only)."""

import math
import re

import pytest
import torch

from tests.helpers import REPO_ROOT, run_python

pytest.importorskip("matplotlib", reason="the plots need matplotlib")

from modeling_vanilla.cli import make_figures as figures_cli  # noqa: E402
from modeling_vanilla.insight import figures  # noqa: E402


def test_make_figures_writes_the_four_figures(tmp_path):
    assert figures_cli.main(["--out-dir", str(tmp_path)]) == 0
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["causal_mask.png", "label_smoothing.png", "learning_rate.png", "positional_encoding.png"]
    for name in names:
        assert 5_000 < (tmp_path / name).stat().st_size < 300_000  # small enough to commit as docs


def test_make_figures_writes_into_docs_figures_under_the_current_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an installed command: no repository around it
    assert figures_cli.main([]) == 0
    assert sorted(path.name for path in (tmp_path / "docs" / "figures").iterdir()) == sorted(figures.FIGURES)


def test_lr_schedule_figure_matches_eq_3():
    figure = figures.plot_learning_rate()
    steps, rates = figure.axes[0].lines[0].get_xydata().T  # d_model = 512, warmup 4000
    expected = [512**-0.5 * min(step**-0.5, step * 4000**-1.5) for step in steps]
    assert rates.tolist() == pytest.approx(expected, rel=1e-9)
    peak = 512**-0.5 * 4000**-0.5
    assert max(rates) <= peak and "peak 6.99e-04 at step 4000" in [text.get_text() for text in figure.axes[0].texts]


def test_label_smoothing_figure_is_the_target_the_training_loss_uses():
    vocab_size, epsilon = 10, 0.1
    labels = torch.tensor([2, 5, 7])
    target = figures.label_smoothing_target(labels, vocab_size, epsilon)  # (3, V)
    torch.testing.assert_close(target.sum(-1), torch.ones(3))
    assert target[0, 2].item() == pytest.approx(1 - epsilon + epsilon / vocab_size)
    assert target[0, 0].item() == pytest.approx(epsilon / vocab_size)
    # The loss the model trains with: cross_entropy(label_smoothing=0.1), i.e. cross-entropy against this target.
    logits = torch.randn(3, vocab_size)
    cross_entropy = -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    torch.testing.assert_close(cross_entropy, torch.nn.functional.cross_entropy(logits, labels, label_smoothing=epsilon))
    plotted = torch.as_tensor(figures.plot_label_smoothing(vocab_size, (2, 5, 7), epsilon).axes[0].images[0].get_array())
    torch.testing.assert_close(plotted, target)


def test_positional_encoding_and_mask_figures_follow_section_3_5_and_3_2_3():
    figure = figures.plot_positional_encoding(d_model=16, num_positions=20, dims=(0, 5))
    plotted = torch.as_tensor(figure.axes[0].images[0].get_array())
    for pos, i in ((0, 0), (7, 3), (19, 5)):
        angle = pos / 10000 ** (2 * i / 16)
        assert plotted[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert plotted[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    mask = torch.as_tensor(figures.plot_causal_mask(6).axes[0].images[0].get_array())
    assert torch.equal(mask.bool(), torch.tril(torch.ones(6, 6, dtype=torch.bool)))


SMALL_RESULTS = {
    "machines": {"box": {"cpu": "CPU", "cores": 2}},
    "recipes": {"toy": {"goal_test_bleu": {"en-de": 30.0}, "test_set": "toy test (3 sentences)"}},
    "runs": [
        {"id": "a-s2", "kind": "ours", "recipe": "toy", "direction": "en-de", "seed": 2, "hour": "slow",
         "commit": "abc", "machine": "box", "command": "vanilla-train --seed 2", "minutes": 1.0, "updates": 10,
         "val": {"bleu": 1.0, "chrf": 2.0}, "test": {"bleu": 31.5, "chrf": 50.0}, "peer": "p"},
        {"id": "a-s1", "kind": "ours", "recipe": "toy", "direction": "en-de", "seed": 1, "hour": "faster",
         "commit": "abc", "machine": "box", "command": "vanilla-train --seed 1", "minutes": 1.0, "updates": 20,
         "val": {"bleu": 1.0, "chrf": 2.0}, "test": {"bleu": 29.25, "chrf": 49.0}, "peer": "p"},
        {"id": "p", "kind": "peer", "recipe": "toy", "direction": "en-de", "hour": "faster", "machine": "box",
         "command": "python peer.py", "minutes": 1.0, "updates": 5, "test": {"bleu": 27.0, "chrf": 45.0}},
    ],
}


def test_the_results_chart_draws_each_seeds_test_bleu_beside_its_peer_and_the_goal(tmp_path):
    import yaml

    from modeling_vanilla.insight import results

    data_file = tmp_path / "runs.yaml"
    data_file.write_text(yaml.safe_dump(SMALL_RESULTS))
    assert figures_cli.main(["--results", str(data_file), "--out-dir", str(tmp_path / "out"), "--dpi", "40"]) == 0
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["toy_test_bleu_by_seed_vs_peer.png"]
    assert 2_000 < (tmp_path / "out" / "toy_test_bleu_by_seed_vs_peer.png").stat().st_size < 100_000
    (ax,) = results.plot_test_bleu_by_seed(results.load_results(data_file), "toy").axes
    lines = {line.get_label(): [float(y) for y in line.get_ydata()] for line in ax.lines}
    assert lines["ours"] == [29.25, 31.5]  # by seed
    assert lines["peer"] == [27.0, 27.0]
    assert lines["ours, mean of the seeds"] == [30.375, 30.375] and lines["goal"] == [30.0, 30.0]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["seed 1\nfaster hour", "seed 2\nslow hour"]


def test_the_results_chart_refuses_bad_data_and_other_charts_at_once(tmp_path, capsys):
    import yaml

    broken = {**SMALL_RESULTS, "runs": SMALL_RESULTS["runs"][:2]}  # the peer is gone
    data_file = tmp_path / "runs.yaml"
    data_file.write_text(yaml.safe_dump(broken))
    with pytest.raises(SystemExit) as exit_info:
        figures_cli.main(["--results", str(data_file), "--out-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "a-s2: its peer 'p' is not a run of kind peer in this file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        figures_cli.main(["--results", str(data_file), "--curves", "a=b", "--output", str(tmp_path / "c.png")])
    assert "--results and --curves draw different charts: give one of them." in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


SEE_INSIDE = ("visualization", "attention_maps", "explain", "figures")


def test_the_model_package_does_not_import_the_visualization_module():
    imports = re.compile(rf"^\s*(from|import)\s[^\n#]*\b({'|'.join(SEE_INSIDE)})\b", re.MULTILINE)
    for name in ("__init__.py", "modeling_vanilla.py", "configuration_vanilla.py"):
        text = (REPO_ROOT / "modeling_vanilla" / name).read_text()
        assert "visualization" not in text
        assert not imports.search(text), f"{name} imports {imports.search(text).group(0)!r}"
    # What an import loads, in a fresh process: none of them, and no matplotlib.
    modules = [f"modeling_vanilla.{module}" for module in SEE_INSIDE]
    loaded = f"sorted(m for m in sys.modules if m in {modules!r} or m.split('.')[0] == 'matplotlib')"
    process = run_python(f"import sys, modeling_vanilla\nprint({loaded})", cwd=REPO_ROOT)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "[]"
