"""`vanilla-data-report`: measure the tokenizer and data pipeline on the real corpora (Multi30k, WMT news tests).

Prints the numbers that issue 3 asks for: the round trip and tokens per sentence of an 8000-token BPE
vocabulary trained on Multi30k train (EN+DE), that plain text, JSON lines and streaming give the same pairs,
the preprocessing throughput with 1 and 2 processes, and the token batches' padding efficiency (4096 tokens),
limit and coverage over 2 replicas; then the same pipeline on the local WMT news test sets (train =
newstest2008-2012 + 2015-2016, validation = newstest2013, test = newstest2014, as in their README).

    vanilla-data-report [--data-dir ../shared/data] [--max-tokens 4096]

The data folder defaults to $VANILLA_SHARED_DATA, else ../shared/data beside the checkout that holds this
package. It reads `multi30k/{train,val,test_2016_flickr}.{en,de}` (and `test_2016_flickr.{fr,cs}` where present)
and `wmt-newstest/de-en/newstest*.{en,de}` where present. Everything written (cache, tokenizer, JSON lines copy)
goes to a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..utils.arguments import int_at_least, positive_int
from .train_tokenizer import MIN_VOCAB_SIZE

# modeling_vanilla/cli/data_report.py -> the folder that holds the checkout, beside which ../shared/data lies.
DEFAULT_DATA = Path(os.environ.get("VANILLA_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vanilla-data-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help=f"default: {DEFAULT_DATA}")
    parser.add_argument("--max-tokens", type=positive_int, default=4096,
                        help="token batch limit per side (default: 4096)")
    parser.add_argument("--vocab-size", type=int_at_least(MIN_VOCAB_SIZE, "256 bytes + 4 special tokens"),
                        default=8000, help="BPE vocabulary size (default: 8000)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed preprocessing runs per setting (median shown)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Tokenizer, loaders, preprocessing and batches on Multi30k, then the WMT news test sets if present."""
    args = parse_args(argv)
    multi30k, wmt = args.data_dir / "multi30k", args.data_dir / "wmt-newstest" / "de-en"
    if not multi30k.is_dir():
        print(f"error: no Multi30k data at {multi30k}; pass --data-dir or set VANILLA_SHARED_DATA.", file=sys.stderr)
        return 1
    from ..data.report import data_report  # after parsing: --help needs neither datasets nor transformers

    data_report(multi30k, wmt, args.vocab_size, args.max_tokens, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
