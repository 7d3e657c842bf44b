"""`vanilla-figures`: draw the figures of the docs: positional encodings (section 3.5), the learning-rate schedule
(section 5.3, Eq. (3)), the causal mask (section 3.2.3) and label smoothing's target distribution (section 5.4).

From the repository root:

    vanilla-figures                       # writes docs/figures/*.png
    vanilla-figures --out-dir /tmp/figures

Learning curves (validation BLEU against training minutes) from `vanilla-evaluate --checkpoints --curve` files, one
line per LABEL=FILE:

    vanilla-figures --curves ours=runs/a/val_curve.jsonl peer=runs/peer/val_curve.jsonl \
        --output docs/figures/multi30k_en_de_val_bleu_dropout_01_vs_02_vs_peer_amx.png --title "Multi30k EN->DE"

The results chart of each recipe (test BLEU per seed against the peer) from the measured runs' data file:

    vanilla-figures --results docs/results/runs.yaml     # writes docs/figures/<recipe>_test_bleu_by_seed_vs_peer.png

From a checkout, `python scripts/make_figures.py ...` is the same command. The figures are
`modeling_vanilla.insight.figures` and `modeling_vanilla.insight.results`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..insight.results import ResultsDataError, load_results, make_result_charts
from ..utils.arguments import output_file_problem, positive_int


def label_and_file(text: str) -> tuple[str, Path]:
    """LABEL=FILE of --curves."""
    label, separator, path = text.partition("=")
    if not separator or not label or not path:
        raise ValueError(f"{text!r} is not LABEL=FILE (e.g. ours=runs/a/val_curve.jsonl)")
    return label, Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vanilla-figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("docs/figures"),
                        help="folder for the PNG files (default: docs/figures, under the current folder)")
    parser.add_argument("--dpi", type=positive_int, default=90, help="resolution (default: 90)")
    parser.add_argument("--curves", nargs="+", metavar="LABEL=FILE",
                        help="draw only the learning curves of these files (vanilla-evaluate --checkpoints --curve)")
    parser.add_argument("--output", type=Path, help="with --curves: the PNG file to write")
    parser.add_argument("--title", default="Validation BLEU against training time", help="with --curves: the title")
    parser.add_argument("--results", type=Path, metavar="FILE",
                        help="draw only the results chart of each recipe in FILE (docs/results/runs.yaml) into "
                             "--out-dir")
    return parser


def read_curves(parser: argparse.ArgumentParser, texts) -> dict:
    """The curves of --curves LABEL=FILE ..., by label; a bad one ends the command with its name."""
    from ..training.curves import read_curve  # torch: only when there are curves to read

    curves = {}
    for text in texts or ():
        try:
            label, path = label_and_file(text)
        except ValueError as error:
            parser.error(f"--curves: {error}")
        if label in curves:
            parser.error(f"--curves: the label {label!r} is given twice.")
        try:
            curves[label] = read_curve(path)
        except (OSError, ValueError) as error:
            parser.error(f"--curves {label}={path}: {error}")
    return curves


def main(argv=None) -> int:
    """Returns the exit status: 0, or 1 without matplotlib."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.curves is None) != (args.output is None):
        parser.error("--curves and --output go together: the curves' files and the PNG file to draw them into.")
    if args.results is not None and args.curves is not None:
        parser.error("--results and --curves draw different charts: give one of them.")
    results = None
    if args.results is not None:
        try:
            results = load_results(args.results)
        except ResultsDataError as error:
            parser.error(f"--results: {error}")
    curves = read_curves(parser, args.curves)
    if curves and (problem := output_file_problem("--output", args.output)):
        parser.error(problem)
    try:
        from ..insight.figures import make_figures, plot_curves  # torch and matplotlib: after the arguments

        if curves:
            plot_curves(curves, title=args.title).savefig(args.output, dpi=args.dpi)
            written = [args.output]
        elif results is not None:
            written = make_result_charts(results, args.out_dir, dpi=args.dpi)
        else:
            written = make_figures(args.out_dir, dpi=args.dpi)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
