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
