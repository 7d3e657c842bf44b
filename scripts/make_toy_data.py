"""Write a small generated English-German corpus for offline quickstarts: {train,valid,test}.{en,de}.

    python scripts/make_toy_data.py data/toy --train 5000
"""

import argparse

from modeling_vanilla.toy_corpus import write_toy_corpus

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--valid", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = write_toy_corpus(args.directory, args.train, args.valid, args.test, args.seed)
    print(f"wrote {path}/{{train,valid,test}}.{{en,de}}")
