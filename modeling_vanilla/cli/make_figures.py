"""`vanilla-figures`: draw the figures of the docs: positional encodings (section 3.5), the learning-rate schedule
(section 5.3, Eq. (3)), the causal mask (section 3.2.3) and label smoothing's target distribution (section 5.4).

From the repository root:

    vanilla-figures                       # writes docs/figures/*.png
    vanilla-figures --out-dir /tmp/figures

From a checkout, `python scripts/make_figures.py ...` is the same command. The figures are
`modeling_vanilla.figures`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..arguments import positive_int
from ..figures import make_figures


def main(argv=None) -> int:
    """Returns the exit status: 0, or 1 without matplotlib."""
    parser = argparse.ArgumentParser(prog="vanilla-figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("docs/figures"),
                        help="folder for the PNG files (default: docs/figures, under the current folder)")
    parser.add_argument("--dpi", type=positive_int, default=90, help="resolution (default: 90)")
    args = parser.parse_args(argv)
    try:
        written = make_figures(args.out_dir, dpi=args.dpi)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
