"""The end of a training run: section 6.1's averaging of the last checkpoints, the final scores, and a Hub-ready model
folder, each written so that a failure later never loses what was already trained."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..publish.model_card import run_model_card
from ..utils.hardware import allocator_in_use
from .averaging import average_checkpoints, load_averaged_weights
from .evaluation import bleu, validation_loss
from .options import checkpointing
from .run import Corpus, Run


def finish(run: Run, corpus: Corpus) -> dict:
    """The trained model goes to disk before anything that can fail: the last step's weights (and a checkpoint),
    then the average of the last checkpoints (section 6.1) in their place, then the scores, the card, the summary."""
    accelerator, state = run.accelerator, run.state
    run.stats.read_back(state)
    if checkpointing(run.args):
        complete = run.checkpoints.complete()
        if not complete or complete[-1] != run.checkpoints.path(state.step):
            run.save_checkpoint()
    summary = run_summary(run, corpus)
    write_model_folder(run, corpus, summary)
    averaged, choice = average_last_checkpoints(run, corpus)
    if averaged:
        summary["averaged_checkpoints"] = len(averaged)
        summary.update(choice)
        write_model_folder(run, corpus, summary)
    summary.update(final_scores(run, corpus))
    run.print(json.dumps(summary, indent=1, default=str))
    write_model_folder(run, corpus, summary, weights=False)
    run.metrics.write({"step": state.step, **{k: v for k, v in summary.items() if isinstance(v, (int, float))}})
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def run_summary(run: Run, corpus: Corpus) -> dict:
    """training_summary.json before the averaging and the scores: where training ended and how it ran."""
    state, accelerator = run.state, run.accelerator
    return {"step": state.step, "epochs": state.epoch + state.batch_in_epoch / max(len(corpus.sampler), 1),
            "tokens_seen": state.tokens_seen, "train_minutes": round(state.elapsed_seconds / 60, 2),
            "skipped_updates": state.skipped_updates, "averaged_checkpoints": 0,
            "parameters": accelerator.unwrap_model(run.model).num_parameters(), "precision": run.args.precision,
            "processes": accelerator.num_processes, "allocator": allocator_in_use(), **compilation_report(run)}


def compilation_report(run: Run) -> dict:
    """With --compile: how many graphs torch.compile made (token batches come in many shapes) and the seconds it
    spent compiling them."""
    if run.compiled is None:
        return {}
    from torch._dynamo.utils import calculate_time_spent, counters

    return {"compiled_graphs": int(counters["stats"]["unique_graphs"]),
            "compile_seconds": round(calculate_time_spent().get("total_wall_time", 0.0), 1)}


def final_scores(run: Run, corpus: Corpus) -> dict:
    """Validation loss and BLEU, test BLEU (beam search as in section 6.1)."""
    args, scores = run.args, {}
    if "validation" in corpus.splits:
        scores.update(validation_loss(run.model, corpus.splits["validation"], args.max_tokens, run.accelerator,
                                      corpus.collator))
        scores["validation"] = bleu(run, corpus, "validation", args.bleu_sentences)
    if "test" in corpus.raw:
        scores["test"] = bleu(run, corpus, "test")
    return scores


def average_last_checkpoints(run: Run, corpus: Corpus) -> tuple[list[Path], dict]:
    """Section 6.1: with --average-last K, the final weights are the mean of the last K checkpoints. Not in the
    paper: with --average-choose, the mean of the last k for the k in 1..K with the best validation score. Returns
    the checkpoints averaged and, when chosen, the scores of every k for the summary."""
    args = run.args
    if not args.average_last:
        return [], {}
    unwrapped = run.accelerator.unwrap_model(run.model)
    candidates = run.checkpoints.complete()[-args.average_last :]
    choice = {}
    if args.average_choose != "none":
        scores = {}
        for count in range(1, len(candidates) + 1):
            load_averaged_weights(unwrapped, average_checkpoints(candidates[-count:]))
            scores[count] = average_score(run, corpus)
            run.print(f"The mean of the last {count} checkpoints: validation {args.average_choose} {scores[count]:.4g}")
        better = min if args.average_choose == "loss" else max
        best = better(scores, key=scores.get)  # on a tie, the fewest checkpoints
        candidates = candidates[-best:]
        choice = {"average_choice": {"by": f"validation {args.average_choose}", "scores": scores}}
    load_averaged_weights(unwrapped, average_checkpoints(candidates))
    run.print(f"Final weights: the average of {len(candidates)} checkpoints "
              f"({', '.join(p.name for p in candidates)}).")
    return candidates, choice


def average_score(run: Run, corpus: Corpus) -> float:
    """The score that --average-choose compares: validation NLL per token, or BLEU (as the final scores compute
    them)."""
    args = run.args
    if args.average_choose == "loss":
        return validation_loss(run.model, corpus.splits["validation"], args.max_tokens, run.accelerator,
                               corpus.collator)["valid_nll"]
    return bleu(run, corpus, "validation", args.bleu_sentences)["bleu"]


def write_model_folder(run: Run, corpus: Corpus, summary: dict, weights: bool = True) -> None:
    """config, safetensors, generation config, model code, tokenizer, training_summary.json and the model card,
    each written beside its final name and then renamed over it: a failure never leaves a half-written file."""
    if run.accelerator.is_main_process:
        model = run.accelerator.unwrap_model(run.model)
        staging = run.out / ".tmp-model"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        if weights:
            model.save_pretrained(staging, safe_serialization=True)
            corpus.tokenizer.save_pretrained(staging)
        (staging / "training_summary.json").write_text(json.dumps(summary, indent=1, default=str))
        card = run_model_card(run.args, model.config, summary, corpus.tokenizer)
        (staging / "README.md").write_text(card)
        for path in sorted(staging.iterdir()):
            os.replace(path, run.out / path.name)
        staging.rmdir()
    run.accelerator.wait_for_everyone()
