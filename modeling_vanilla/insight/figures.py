"""Figures of the paper's formulas for the docs (docs/figures/), and the one way this package makes a figure.

- `plot_positional_encoding`: the sinusoids of section 3.5, as the model computes them.
- `plot_learning_rate`: the schedule of section 5.3, Eq. (3), as training computes it.
- `plot_causal_mask`: the decoder's mask of section 3.2.3, as the model builds it.
- `plot_label_smoothing` and `label_smoothing_target`: the target distribution of section 5.4.
- `make_figures`: writes the four as PNG files (the `vanilla-figures` command).
- `plot_curves`: validation BLEU against training minutes of several runs (`curves.py` records; `vanilla-figures
  --curves`), the learning curves of docs/results.md.

Figures are `matplotlib.figure.Figure` objects built without pyplot (no global state, no GUI backend); `savefig`
renders them with Agg. matplotlib is imported when the first figure is made (`new_figure`), so importing this
module does not need it. The package's `__init__` does not import this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..modeling_vanilla import SinusoidalPositionalEncoding, causal_mask


def new_figure(**kwargs):
    """A matplotlib Figure with no pyplot state; a clear error when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("the plots need matplotlib: pip install matplotlib") from error
    return Figure(layout="constrained", **kwargs)


def plot_positional_encoding(d_model: int = 512, num_positions: int = 100, dims: Sequence[int] = (0, 40, 100, 200)):
    """Section 3.5: the sinusoids the model adds to its embeddings (`SinusoidalPositionalEncoding.encode`), as a
    heatmap of positions x dimensions and as curves of a few dimensions over the positions."""
    if any(not 0 <= dim < d_model for dim in dims):
        raise ValueError(f"dims {tuple(dims)} must lie in 0..{d_model - 1} (d_model={d_model}).")
    pe = SinusoidalPositionalEncoding.encode(torch.arange(num_positions), d_model)  # (positions, d_model)
    figure = new_figure(figsize=(10, 4))
    heatmap, curves = figure.subplots(1, 2, width_ratios=(1.2, 1))
    image = heatmap.imshow(pe.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    heatmap.set_xlabel("dimension (even: sin, odd: cos)")
    heatmap.set_ylabel("position")
    heatmap.set_title(f"PE(pos, i), d_model = {d_model}", fontsize=10)
    figure.colorbar(image, ax=heatmap)
    for dim in dims:
        function = "sin" if dim % 2 == 0 else "cos"
        wavelength = 2 * math.pi * 10000 ** ((dim - dim % 2) / d_model)
        curves.plot(pe[:, dim].numpy(), label=f"dim {dim} ({function}), wavelength {wavelength:.1f}")
    curves.set_xlabel("position")
    curves.set_title("dimensions 2i, 2i+1: wavelength 2π·10000^(2i/d_model)", fontsize=9)
    curves.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    figure.suptitle("Section 3.5: sinusoidal positional encodings")
    return figure


def plot_learning_rate(warmup_steps: int = 4000, total_steps: int = 100_000, d_models: Sequence[int] = (512, 1024)):
    """Section 5.3, Eq. (3): lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), the schedule the
    training code uses (`modeling_vanilla.training.optimization.inverse_sqrt_learning_rate`), for the base and big d_model."""
    from ..training.optimization import inverse_sqrt_learning_rate

    steps = list(range(1, total_steps + 1, 100))
    figure = new_figure(figsize=(7, 4))
    ax = figure.subplots()
    for d_model in d_models:
        ax.plot(steps, [inverse_sqrt_learning_rate(step, d_model, warmup_steps) for step in steps],
                label=f"d_model = {d_model}, warmup_steps = {warmup_steps}")
        peak = inverse_sqrt_learning_rate(warmup_steps, d_model, warmup_steps)
        ax.annotate(f"peak {peak:.2e} at step {warmup_steps}", (warmup_steps, peak), xytext=(10, 0),
                    textcoords="offset points", fontsize=8)
    ax.axvline(warmup_steps, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    ax.set_title("Eq. (3): linear warmup, then inverse square root decay")
    return figure


def plot_causal_mask(length: int = 10):
    """Section 3.2.3: the decoder's mask (`modeling_vanilla.modeling_vanilla.causal_mask`): query i may attend to
    keys j <= i; the masked scores are set to -inf, so their softmax weight is 0."""
    mask = causal_mask(length, length, torch.device("cpu"))[0, 0]  # (T, T) bool
    figure = new_figure(figsize=(4.6, 4.2))
    ax = figure.subplots()
    ax.imshow(mask.numpy(), cmap="Greys_r", vmin=0, vmax=1)
    ax.set_xticks(range(length))
    ax.set_yticks(range(length))
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
    ax.set_title("Causal mask: white = attend, black = -inf", fontsize=10)
    return figure


def label_smoothing_target(labels: torch.Tensor, vocab_size: int, epsilon: float = 0.1) -> torch.Tensor:
    """Section 5.4: the smoothed target distribution, 1 - epsilon on the reference token plus epsilon spread
    uniformly over all vocab_size tokens (Szegedy et al., 2016): the target of PyTorch's
    `cross_entropy(label_smoothing=epsilon)`, which training uses. labels (N,) -> (N, vocab_size)."""
    one_hot = torch.nn.functional.one_hot(labels, vocab_size).float()  # (N, V)
    return (1.0 - epsilon) * one_hot + epsilon / vocab_size


def plot_label_smoothing(vocab_size: int = 10, labels: Sequence[int] = (2, 5, 7, 3, 8), epsilon: float = 0.1):
    """Section 5.4: label smoothing with epsilon_ls = 0.1, the targets for a few reference tokens as a heatmap,
    each probability written in its cell."""
    target = label_smoothing_target(torch.tensor(labels), vocab_size, epsilon)  # (N, V)
    figure = new_figure(figsize=(7, 3.4))
    ax = figure.subplots()
    image = ax.imshow(target.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(target.tolist()):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.5 else "black")
    ax.set_xticks(range(vocab_size))
    ax.set_yticks(range(len(labels)), [f"reference {label}" for label in labels])
    ax.set_xlabel("token id")
    figure.colorbar(image, ax=ax, shrink=0.8, label="target probability")
    ax.set_title(f"Label smoothing, epsilon = {epsilon}: 1 - epsilon + epsilon/V on the reference, epsilon/V elsewhere",
                 fontsize=9)
    return figure


def plot_curves(curves: dict[str, Sequence[dict]], title: str = "Validation BLEU against training time"):
    """One line per run: BLEU ("bleu") against training minutes ("minutes"), points in the order of the minutes,
    labelled with the run's name and its last BLEU."""
    if not curves:
        raise ValueError("plot_curves needs at least one curve.")
    figure = new_figure(figsize=(7, 4.2))
    ax = figure.subplots()
    for label, records in curves.items():
        points = sorted((record["minutes"], record["bleu"]) for record in records)
        minutes, bleu = zip(*points)
        ax.plot(minutes, bleu, marker="o", markersize=3, label=f"{label} (last: {bleu[-1]:.1f})")
    ax.set_xlabel("training minutes (tokenizer included)")
    ax.set_ylabel("BLEU")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    return figure


FIGURES = {
    "positional_encoding.png": plot_positional_encoding,
    "learning_rate.png": plot_learning_rate,
    "causal_mask.png": plot_causal_mask,
    "label_smoothing.png": plot_label_smoothing,
}


def make_figures(out_dir: str | Path, dpi: int = 90) -> list[Path]:
    """Write the figures of sections 3.2.3, 3.5, 5.3 and 5.4 into out_dir (docs/figures/ in the repository)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in FIGURES.items():
        plot().savefig(out_dir / name, dpi=dpi)
        written.append(out_dir / name)
    return written
