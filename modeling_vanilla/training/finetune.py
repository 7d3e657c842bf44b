"""Fine-tuning with transformers' `Seq2SeqTrainer` (`vanilla-finetune`), scored with sacreBLEU.

The loss Trainer logs is the mean over every label token of an update, whatever --gradient_accumulation_steps and
the number of processes: the model takes Trainer's `num_items_in_batch` (see its `accepts_loss_kwargs`). Label
smoothing (`--label_smoothing_factor`) is the model's own (section 5.4, its `forward(label_smoothing=...)`), the same
definition vanilla-train uses, not Trainer's LabelSmoother. The output folder holds the fine-tuned model
(safetensors, code, tokenizer, generation config), all_results.json and trainer_state.json.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import numpy as np
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    set_seed,
)

from ..data.corpus import load_corpus
from ..data.preprocessing import preprocess_translation
from ..inference.model_folder import check_model_folder
from ..inference.translation import score
from ..utils.hardware import FreePages
from .finetune_options import FinetuneOptions
from .options import data_source_options


class Seq2SeqTrainerForVanilla(Seq2SeqTrainer):
    """`Seq2SeqTrainer` with the model's own label smoothing, whose evaluation leaves the generation config alone.

    Label smoothing: `args.label_smoothing_factor` goes to the model's forward as `label_smoothing` (section 5.4),
    which divides the summed loss by Trainer's `num_items_in_batch`: the same definition as vanilla-train's under any
    accumulation. Trainer's own LabelSmoother is not used.

    In transformers 5.24, `Seq2SeqTrainer.prediction_step` fills every unset field of `model.generation_config` with
    GenerationConfig's global defaults after its first `generate()`, max_length=20 among them. Every later
    `generate()` (the rest of the evaluation, and the saved model in any pipeline) would then stop at 20 tokens
    instead of the paper's input length + 50 (section 6.1), which the model applies when no length is set.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_smoothing, self.label_smoother = self.args.label_smoothing_factor, None  # the model smooths

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.label_smoothing and "labels" in inputs:
            inputs = {**inputs, "label_smoothing": self.label_smoothing}
        if model.training and "labels" in inputs:  # training needs only the loss: no (B, T, V) logits are kept
            inputs = {**inputs, "output_logits": False}
        return super().compute_loss(model, inputs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        generation_config = copy.deepcopy(self.model.generation_config)
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)
        finally:
            self.model.generation_config = generation_config


def bleu_metrics(tokenizer):
    """`compute_metrics` for `predict_with_generate`: sacreBLEU BLEU and chrF on detokenized, cased text."""

    def compute_metrics(prediction) -> dict[str, float]:
        # Generated and label ids come padded with -100 between batches.
        predictions = np.where(prediction.predictions < 0, tokenizer.pad_token_id, prediction.predictions)
        labels = np.where(prediction.label_ids < 0, tokenizer.pad_token_id, prediction.label_ids)
        hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        scores = score(hypotheses, references)
        return {"bleu": scores["bleu"], "chrf": scores["chrf"]}

    return compute_metrics


class FreePagesCallback(TrainerCallback):
    """Hands jemalloc's kept pages back to the kernel once a minute (`hardware.FreePages`), as vanilla-train does."""

    def __init__(self):
        self.free_pages = FreePages()

    def on_step_end(self, args, state, control, **kwargs):
        self.free_pages()


def build_trainer(model, tokenizer, training_args: Seq2SeqTrainingArguments, splits: dict,
                  pad_to_multiple_of: int | None = None) -> Seq2SeqTrainer:
    """The Trainer of `splits["train"]`, evaluated on `splits["validation"]` where there is one."""
    return Seq2SeqTrainerForVanilla(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("validation"),
        # Pads inputs and labels (-100) and adds decoder_input_ids (the labels shifted right).
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100,
                                             pad_to_multiple_of=pad_to_multiple_of),
        processing_class=tokenizer,
        compute_metrics=bleu_metrics(tokenizer),
        callbacks=[FreePagesCallback()],
    )


def fine_tune(options: FinetuneOptions, training_args: Seq2SeqTrainingArguments) -> dict:
    """Fine-tune as the parsed options say (`finetune_options.parse_finetune_args`); returns the metrics."""
    set_seed(training_args.seed)
    check_model_folder(options.model)
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(options.model)
    raw = load_corpus(options.source_lang, options.target_lang, **data_source_options(options))
    if "validation" not in raw and training_args.eval_strategy != "no":  # a Hub dataset without a validation split
        training_args = dataclasses.replace(training_args, eval_strategy="no", eval_steps=None)
    out = Path(options.output_dir)
    if options.overwrite:  # checked by the options: the folder holds an earlier fine-tuning run, and nothing it needs
        with training_args.main_process_first(desc="removing the earlier run", local=False):
            if training_args.process_index == 0 and out.exists():
                shutil.rmtree(out)
                print(f"removed the earlier fine-tuning run in {out} (--overwrite)")
    with training_args.main_process_first(desc="tokenizing"):  # the main process fills the datasets cache first
        tokenized, counts = preprocess_translation(raw, tokenizer, options.source_lang, options.target_lang,
                                                   max_length=options.max_length, num_proc=options.num_proc)
    if training_args.process_index == 0:
        for split, count in (counts or {}).items():
            print(f"{split}: {count}")
    limits = {"train": options.max_train_samples, "validation": options.max_eval_samples,
              "test": options.max_eval_samples}
    splits = {split: data.select(range(min(limits.get(split) or len(data), len(data))))
              for split, data in tokenized.items()}

    trainer = build_trainer(model, tokenizer, training_args, splits, pad_to_multiple_of=options.pad_to_multiple_of)
    resume = training_args.resume_from_checkpoint or (True if options.resume else None)
    metrics = dict(trainer.train(resume_from_checkpoint=resume).metrics)
    if "validation" in raw:
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    if "test" in splits:
        metrics.update(trainer.predict(splits["test"], metric_key_prefix="test").metrics)
    trainer.save_model(str(out))  # safetensors, model and pipeline code, tokenizer, generation config
    trainer.save_metrics("all", metrics)
    trainer.save_state()  # trainer_state.json, with every logged loss
    if trainer.is_world_process_zero():
        bleu = metrics.get("test_bleu", metrics.get("eval_bleu"))
        print(f"Saved the fine-tuned model to {out}. Publish it with:\n  vanilla-push {out} --repo-id you/name "
              f"--language {options.source_lang} {options.target_lang} --dataset <Hub dataset id>"
              + (f" --bleu {bleu}" if bleu is not None else ""))
    return metrics
