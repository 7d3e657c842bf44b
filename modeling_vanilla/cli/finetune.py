"""`vanilla-finetune`: fine-tune a trained model with transformers' `Seq2SeqTrainer`, scored with sacreBLEU.

The same command runs on a CPU, one GPU, or several processes through `accelerate launch`. Data comes from any
source the data layer reads (local text files, JSON lines, a Hub dataset), with the same options as vanilla-train.
Every flag of transformers' `Seq2SeqTrainingArguments` works, under Trainer's name (`--help-all` lists them; the
defaults that differ, and what --eval_steps, --save_steps, --label_smoothing_factor and --torch_compile add, are in
modeling_vanilla/training/finetune_options.py). `--config run.yaml` takes the options from a file.

Examples:

    # Continue a Multi30k EN->DE model, validation BLEU every 500 steps, test BLEU at the end
    vanilla-finetune runs/multi30k --source-lang en --target-lang de \\
        --train-files ../shared/data/multi30k/train --valid-files ../shared/data/multi30k/val \\
        --test-files ../shared/data/multi30k/test_2016_flickr --output-dir runs/multi30k-ft \\
        --max_steps 2000 --learning_rate 1e-4 --label_smoothing_factor 0.1 --eval_steps 500

    # Two processes on a CPU (gloo); `accelerate launch --cpu --num_processes 2` would silently run one
    accelerate launch --multi_gpu --num_processes 2 -m modeling_vanilla.cli.finetune runs/multi30k ...

    # A Hub dataset (needs the network or the datasets cache), Trainer's cosine schedule, TensorBoard
    vanilla-finetune runs/wmt14-base --source-lang en --target-lang de \\
        --dataset wmt/wmt14 --dataset-config de-en --output-dir runs/wmt14-ft --max_steps 10000 \\
        --lr_scheduler_type cosine --warmup_steps 0.05 --report_to tensorboard

The output folder: never the model folder (nor inside it, nor around it). A folder that is not empty is refused
unless --resume (continue the run in it from its last checkpoint-N folder, written every --save_steps updates) or
--overwrite (replace it, only when it holds an earlier fine-tuning run: trainer_state.json, all_results.json or a
checkpoint-N folder; never the current folder or one holding the data) is given. Only the newest
--save_total_limit checkpoints are kept (default 2), since each holds the optimizer state too.
"""

from __future__ import annotations

from ..training.finetune_options import parse_finetune_args


def parse_args(argv=None, restart: bool = False) -> tuple:
    """The command line as (FinetuneOptions, Seq2SeqTrainingArguments), checked before any model or data work
    (`restart`: a CPU run may restart itself on jemalloc or tcmalloc first, `parse_finetune_args`)."""
    return parse_finetune_args(argv, restart)


def run(argv=None) -> dict:
    """Fine-tune; returns the metrics (also written to all_results.json)."""
    options, training_args = parse_args(argv)
    from ..training.finetune import fine_tune  # torch and Trainer: after the options, so that --help is quick

    return fine_tune(options, training_args)


def main(argv=None) -> int:
    """The console command: exit status 0 after a finished run (errors raise). A CPU run first restarts itself on
    jemalloc or tcmalloc where one is installed (`--allocator`, `hardware.preload_allocator`); called from Python
    with `argv` (a notebook, a script of yours), the process is never restarted."""
    options, training_args = parse_args(argv, restart=argv is None)  # the command line is this process's own
    from ..training.finetune import fine_tune

    fine_tune(options, training_args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
