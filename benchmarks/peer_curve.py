"""The peer's learning curve: run a peer training script unchanged, keep a snapshot of its model every few minutes,
then score the snapshots on validation data (after training, so that scoring costs the run no time).

    python benchmarks/peer_curve.py ../shared/peers/marian_multi30k.py en de runs/peer-en-de --minutes 60 --every 5 \\
        --valid-source ../shared/data/multi30k/val.en --valid-reference ../shared/data/multi30k/val.de

(or `vanilla-benchmark peer-curve ...`, the same.)

The script's own arguments are `SRC TGT OUT --minutes M` (as ../shared/peers/marian_multi30k.py takes them); it must
train with transformers' `Seq2SeqTrainer`, which this wrapper replaces, for the run, by a subclass that adds one
callback: every --every minutes since the wrapper started (the peer's own clock starts a moment later), the model and
its tokenizer are saved into OUT-snapshots/snapshot-NNN/ with snapshot.json (step, epoch, minutes). The peer's final
folder OUT is the last point. Each is scored with beam 4 and room for 128 new tokens (the peer's generation config has
no max_length; transformers' default of 20 tokens would cut its translations), length penalty as the peer saved it.
The curve (`modeling_vanilla.training.curves` records) goes to OUT-snapshots/val_curve.jsonl, or --curve.

Not an installed command: it exists to compare with the peers in ../shared/peers (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/peer_curve.py): this folder is the package `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_alone  # noqa: E402
from modeling_vanilla.utils.arguments import (  # noqa: E402
    TextFileError,
    output_file_problem,
    positive_float,
    positive_int,
    read_lines,
)

SNAPSHOT_FILE = "snapshot.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", type=Path, help="the peer's training script (SRC TGT OUT --minutes M)")
    parser.add_argument("src")
    parser.add_argument("tgt")
    parser.add_argument("out", type=Path, help="the peer's output folder")
    parser.add_argument("--minutes", type=positive_float, required=True, help="the peer's budget")
    parser.add_argument("--every", type=positive_float, default=5.0, help="minutes between snapshots (default: 5)")
    parser.add_argument("--valid-source", type=Path, required=True)
    parser.add_argument("--valid-reference", type=Path, required=True)
    parser.add_argument("--curve", type=Path, help="default: OUT-snapshots/val_curve.jsonl")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="sentences per generate() call when scoring")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Everything that would fail after the hour of training fails now; sets `args.snapshots`, `args.sources`,
    `args.references` and `args.curve`."""
    if not args.script.is_file():
        parser.error(f"{args.script} is not a file.")
    if args.curve is not None and (problem := output_file_problem("--curve", args.curve)):
        parser.error(problem)  # before the hour of training, not after it
    args.snapshots = args.out.parent / f"{args.out.name}-snapshots"
    for path in (args.out, args.snapshots):
        if path.exists():
            parser.error(f"{path} exists: choose another OUT (nothing is overwritten).")
    try:
        args.sources, args.references = list(read_lines(args.valid_source)), list(read_lines(args.valid_reference))
    except (OSError, TextFileError) as error:  # a missing file; a line that is not UTF-8 (named)
        parser.error(str(error))
    if len(args.sources) != len(args.references):
        parser.error(f"{args.valid_source} and {args.valid_reference} are not line-aligned.")
    args.curve = args.curve or args.snapshots / "val_curve.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def train_with_snapshots(args: argparse.Namespace) -> list[tuple[Path, dict]]:
    """Run the peer's script with snapshots; returns (folder, {step, epoch, minutes}) of each snapshot and the end."""
    import transformers

    started = time.time()
    points: list[tuple[Path, dict]] = []

    class Snapshots(transformers.TrainerCallback):
        def __init__(self, trainer):
            self.trainer, self.next_minute = trainer, args.every

        def on_step_end(self, training_args, state, control, **kwargs):
            minutes = (time.time() - started) / 60
            if minutes >= self.next_minute:
                folder = args.snapshots / f"snapshot-{len(points) + 1:03d}"
                self.trainer.model.save_pretrained(folder)
                self.trainer.processing_class.save_pretrained(folder)
                point = {"step": state.global_step, "epoch": round(state.epoch, 2), "minutes": round(minutes, 2)}
                (folder / SNAPSHOT_FILE).write_text(json.dumps(point))
                points.append((folder, point))
                while self.next_minute <= minutes:
                    self.next_minute += args.every

        def on_train_end(self, training_args, state, control, **kwargs):
            self.final = {"step": state.global_step, "epoch": round(state.epoch, 2),
                          "minutes": round((time.time() - started) / 60, 2)}

    peer_trainer = transformers.Seq2SeqTrainer
    callbacks: list[Snapshots] = []

    class SnapshottingTrainer(peer_trainer):
        def __init__(self, *pargs, **kwargs):
            super().__init__(*pargs, **kwargs)
            callbacks.append(Snapshots(self))
            self.add_callback(callbacks[-1])

    argv = sys.argv
    transformers.Seq2SeqTrainer = SnapshottingTrainer
    sys.argv = [str(args.script), args.src, args.tgt, str(args.out), "--minutes", str(args.minutes)]
    try:
        runpy.run_path(str(args.script), run_name="__main__")
    finally:
        transformers.Seq2SeqTrainer, sys.argv = peer_trainer, argv
    if len(callbacks) != 1 or not hasattr(callbacks[0], "final"):
        raise RuntimeError(f"{args.script} did not train one Seq2SeqTrainer to the end: no curve.")
    final = callbacks[0].final
    if points and points[-1][1]["step"] == final["step"]:
        points.pop()  # a snapshot of the last step is the peer's final model again: one point, not two
    return [*points, (args.out, final)]


def score_points(args: argparse.Namespace, points: list[tuple[Path, dict]]) -> list[dict]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from modeling_vanilla.inference.translation import score, translate

    records = []
    for folder, point in points:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        hypotheses = translate(model, tokenizer, args.sources, batch_size=args.batch_size, num_beams=4,
                               max_new_tokens=128)
        scores = score(hypotheses, args.references)
        record = {**point, "averaged": 1, "bleu": scores["bleu"], "chrf": scores["chrf"],
                  "sentences": len(args.sources), "folder": str(folder)}
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


def run(args: argparse.Namespace) -> None:
    from modeling_vanilla.training.curves import write_curve

    args.snapshots.mkdir(parents=True)
    points = train_with_snapshots(args)
    write_curve(score_points(args, points), args.curve)
    print(f"wrote {args.curve}")


def main(argv=None) -> int:
    return run_alone(__file__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
