"""Draw the figures of the docs: positional encodings (section 3.5), the learning-rate schedule (section 5.3,
Eq. (3)), the causal mask (section 3.2.3) and label smoothing's target distribution (section 5.4).

From the repository root:

    python scripts/make_figures.py                  # writes docs/figures/*.png
    python scripts/make_figures.py --out-dir /tmp/figures
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Run from a checkout without installing the package; render figures off-screen.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

from modeling_vanilla.visualization import make_figures  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs" / "figures",
                        help="folder for the PNG files (default: docs/figures)")
    parser.add_argument("--dpi", type=int, default=90, help="resolution (default: 90)")
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
