"""`vanilla-toy-data`: write a small generated English-German corpus for offline quickstarts:
{train,valid,test}.{en,de}.

    vanilla-toy-data data/toy --train 5000

The sentences come from `modeling_vanilla.data.toy_corpus` (a tiny caption grammar with a German rendering that needs
agreement and verb-second order); the same seed gives the same files.
"""

from __future__ import annotations

import argparse

from ..data.toy_corpus import write_toy_corpus
from ..utils.arguments import positive_int


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vanilla-toy-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", help="folder to write the files into (created if missing)")
    for split, default in (("train", 5000), ("valid", 200), ("test", 200)):
        parser.add_argument(f"--{split}", type=positive_int, default=default,
                            help=f"sentence pairs in {split}.{{en,de}} (default: {default})")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    path = write_toy_corpus(args.directory, args.train, args.valid, args.test, args.seed)
    print(f"wrote {path}/{{train,valid,test}}.{{en,de}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
