"""The output folder of a training command: one set of rules for `vanilla-train` and `vanilla-finetune`.

A run writes into a new or empty `--output-dir`. A folder that holds an earlier run of the same command is
continued with `--resume` (vanilla-train: only with the same settings and data, `resume_differences`) or replaced
with `--overwrite` (only a folder that holds such a run, never the current folder, one above it, the home folder or
one holding an input: `check_safe_to_delete`). Any other folder is refused. What marks a run differs by command
(`RunKind`): vanilla-train's run_config.json, Trainer's trainer_state.json, all_results.json or checkpoint-N folders.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

RUN_CONFIG = "run_config.json"
# Options that must match for --resume to continue a vanilla-train run (the rest, such as limits, may change).
RESUME_MUST_MATCH = ("preset", "override", "source_lang", "target_lang", "max_tokens", "update_freq", "seed",
                     "label_smoothing", "warmup_steps", "lr_scale", "weight_decay", "precision", "max_length")
NEWER_SETTINGS = {"weight_decay": 0.0}  # what a run saved before the setting existed trained with
DATA_FILES = ("train_files", "valid_files", "test_files", "train_jsonl", "valid_jsonl", "test_jsonl")
TRAINER_RUN_FILES = ("trainer_state.json", "all_results.json")  # what Seq2SeqTrainer writes at the end of a run


@dataclass(frozen=True)
class RunKind:
    """What one command leaves in its output folder: `marks` names it in messages, `holds_run` finds it, and
    `resume_problem` says why `--resume` cannot continue it (None: it can)."""

    marks: str
    holds_run: Callable[[Path], bool]
    resume_problem: Callable[[Path, object], str | None]


def check_output_dir(parser: argparse.ArgumentParser, options, kind: RunKind, inputs: Iterable[str] = ()) -> None:
    """A new or empty folder; with --resume, a run of this command to continue; with --overwrite, only a folder
    that holds such a run and none of the inputs (`inputs`: paths besides the data files)."""
    out = Path(options.output_dir)
    if options.overwrite and options.resume:
        parser.error("--overwrite and --resume contradict each other")
    if out.exists() and not out.is_dir():
        parser.error(f"--output-dir {out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        if options.resume:
            parser.error(f"--resume: {out} holds no run to continue")
        return
    if options.resume:
        problem = kind.resume_problem(out, options)
        if problem:
            parser.error(problem)
        return
    if not kind.holds_run(out):
        parser.error(f"{out} already holds other files and no run of this command ({kind.marks}): choose another "
                     "--output-dir (--overwrite only replaces an earlier run)")
    if not options.overwrite:
        parser.error(f"{out} already holds a different run. Pass --resume to continue it, --overwrite to replace it, "
                     "or choose another --output-dir")
    data = [path for name in DATA_FILES for path in getattr(options, name) or []]
    check_safe_to_delete(parser, out, [*inputs, *data])


def check_safe_to_delete(parser: argparse.ArgumentParser, out: Path, inputs: Iterable[str]) -> None:
    """--overwrite deletes `out`: never the current folder or one above it, and never one holding an input."""
    folder = out.resolve()
    if folder == Path.home().resolve() or Path.cwd().resolve().is_relative_to(folder):
        parser.error(f"--overwrite would delete {out}, which is the current folder, one above it or your home "
                     "folder: choose another --output-dir")
    for item in inputs:
        if Path(item).resolve().is_relative_to(folder):
            parser.error(f"--overwrite would delete {out}, which holds the input {item}: choose another --output-dir")


# vanilla-train: run_config.json, and a resume with the same settings and data


def train_resume_problem(out: Path, options) -> str | None:
    previous = out / RUN_CONFIG
    if not previous.is_file():
        return f"--resume: {out} holds no {RUN_CONFIG}, so no run of this command to continue"
    differences = resume_differences(json.loads(previous.read_text()), options)
    if differences:
        return (f"--resume: the run in {out} used other settings: {'; '.join(differences)}. Continue it with the same "
                "settings, or start a new run in another --output-dir")
    return None


def resume_differences(earlier: dict, options) -> list[str]:
    """What a resume changes that the saved run depends on: settings, the precision it resolved, the data."""
    now = {k: getattr(options, k) for k in RESUME_MUST_MATCH}  # precision resolved, as the run stored it
    then = {k: earlier.get(k, NEWER_SETTINGS.get(k)) for k in RESUME_MUST_MATCH}
    differences = [f"--{k.replace('_', '-')} was {then[k]!r}, now {now[k]!r}" for k in RESUME_MUST_MATCH
                   if then[k] != now[k]]
    fingerprint = data_fingerprint(options)
    if earlier.get("data_fingerprint") not in (None, fingerprint):
        differences.append("the training data changed (other files, other contents, or another --dataset)")
    tokenizer = Path(options.tokenizer) if options.tokenizer else None
    saved = Path(options.output_dir) / "tokenizer.json"
    if tokenizer is not None and saved.is_file() and file_digest(tokenizer / "tokenizer.json") != file_digest(saved):
        differences.append(f"--tokenizer {tokenizer} is not the tokenizer the run saved ({saved})")
    return differences


def data_fingerprint(options) -> str:
    """Names the training data: the Hub id and config, or each training file's name, size and contents."""
    if options.dataset:
        return f"hub:{options.dataset}:{options.dataset_config}"
    digests = []
    for prefix in options.train_files or []:
        for language in (options.source_lang, options.target_lang):
            candidates = [Path(f"{prefix}.{language}"), Path(f"{prefix}.{language}.gz")]
            path = next((c for c in candidates if c.is_file()), None)
            digests.append(f"{Path(prefix).name}.{language}:{file_digest(path) if path else 'missing'}")
    for path in options.train_jsonl or []:
        digests.append(f"{Path(path).name}:{file_digest(Path(path)) if Path(path).is_file() else 'missing'}")
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """Size and sha256 of the first and last MiB: cheap for multi-GB corpora, and changes with any edit of size."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            digest.update(f.read(chunk))
    return f"{size}:{digest.hexdigest()[:16]}"


TRAIN_RUN = RunKind(RUN_CONFIG, lambda out: (out / RUN_CONFIG).is_file(), train_resume_problem)


# vanilla-finetune: what Seq2SeqTrainer writes, and a checkpoint-N folder to resume from


def last_checkpoint(out: Path) -> str | None:
    """The checkpoint-N folder with the largest N, the one Trainer resumes from (None: there is none)."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(out)


def holds_finetune_run(out: Path) -> bool:
    """Trainer's trainer_state.json or all_results.json at the top, or a checkpoint-N folder (a run stopped before
    its end)."""
    return any((out / name).is_file() for name in TRAINER_RUN_FILES) or last_checkpoint(out) is not None


def finetune_resume_problem(out: Path, options) -> str | None:
    if last_checkpoint(out) is None:
        return (f"--resume: {out} holds no checkpoint-N folder to continue from (fine-tuning writes them every "
                "--save-steps updates)")
    return None


FINETUNE_RUN = RunKind(f"{', '.join(TRAINER_RUN_FILES)} or a checkpoint-N folder", holds_finetune_run,
                       finetune_resume_problem)
