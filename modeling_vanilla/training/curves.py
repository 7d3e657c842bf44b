"""Learning curves: a run's checkpoints scored with BLEU after training, so that scoring costs the run no time.

- `checkpoint_points`: the complete checkpoints of a `vanilla-train` run folder, with the step, the epoch, the target
  tokens and the training minutes each was written at (its `train_state.json`).
- `score_checkpoints`: each checkpoint (or, with `average=K`, the mean of it and the K-1 before it, section 6.1)
  loaded into the run's model and scored on a line-aligned source/reference pair: one record per checkpoint.
- `read_curve` / `write_curve`: those records as JSON lines (`vanilla-evaluate RUN --checkpoints --curve FILE`), the
  input of `figures.plot_curves` (`vanilla-figures --curves`).

A record: {"step", "epoch", "tokens_seen", "minutes", "averaged", "bleu", "chrf", "sentences"}; other programs (the
peer's snapshots in docs/results.md) write the same keys, and the figure needs only "minutes" and "bleu".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..utils.arguments import replacing
from .averaging import average_checkpoints, load_averaged_weights
from .checkpoints import TRAIN_STATE_FILE, CheckpointManager


def checkpoint_points(run_dir: str | os.PathLike) -> list[dict]:
    """The complete checkpoints of a run, oldest first: {"folder", "step", "epoch", "tokens_seen", "minutes"}."""
    directory = Path(run_dir) / "checkpoints"
    folders = CheckpointManager(directory).complete()
    if not folders:
        raise FileNotFoundError(f"{directory} holds no complete checkpoint: train with --save-every-minutes N or "
                                "--save-every N (and --keep-checkpoints large enough) to keep some.")
    points = []
    for folder in folders:
        state = json.loads((folder / TRAIN_STATE_FILE).read_text())
        points.append({"folder": folder, "step": state["step"], "epoch": state["epoch"],
                       "tokens_seen": state["tokens_seen"], "minutes": round(state["elapsed_seconds"] / 60, 2)})
    return points


def score_checkpoints(model, tokenizer, run_dir: str | os.PathLike, text: tuple[Sequence[str], Sequence[str]],
                      average: int = 1, **translate_kwargs) -> Iterator[dict]:
    """Yield one record per checkpoint of `run_dir` (the `average`-th onwards): the BLEU and chrF of `model` holding
    that checkpoint's weights, or the mean of it and the `average - 1` checkpoints before it, on `text` (the source
    sentences and their references, line-aligned). `translate_kwargs` go to `translate` (batch_size, num_beams, ...).
    `model` is changed."""
    from ..inference.translation import score, translate

    sources, references = text

    if average < 1:
        raise ValueError(f"average must be >= 1, not {average}.")
    points = checkpoint_points(run_dir)
    if len(points) < average:
        raise ValueError(f"--average {average} needs at least {average} checkpoints in "
                         f"{Path(run_dir) / 'checkpoints'}, which holds {len(points)}.")
    for i in range(average - 1, len(points)):
        window = points[i + 1 - average : i + 1]
        load_averaged_weights(model, average_checkpoints([point["folder"] for point in window]))
        hypotheses = translate(model, tokenizer, sources, **translate_kwargs)
        scores = score(hypotheses, references)
        point = {k: v for k, v in points[i].items() if k != "folder"}
        yield {**point, "averaged": average, "bleu": scores["bleu"], "chrf": scores["chrf"],
               "sentences": len(sources)}


def write_curve(records: Sequence[dict], path: str | os.PathLike) -> None:
    """JSON lines, written to a temporary file beside `path` and renamed into place."""
    with replacing(Path(path)) as output:
        output.write("".join(json.dumps(record) + "\n" for record in records))


def read_curve(path: str | os.PathLike) -> list[dict]:
    """The records of a curve file, each checked for the "minutes" and "bleu" numbers a figure needs."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg}).") from None
        if not isinstance(record, dict) or not all(
                isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)
                for k in ("minutes", "bleu")):
            raise ValueError(f"{path}, line {number}: a curve record needs numbers \"minutes\" and \"bleu\".")
        records.append(record)
    if not records:
        raise ValueError(f"{path} holds no curve records.")
    return records
