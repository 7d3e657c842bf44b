"""vanilla-finetune (modeling_vanilla/cli/finetune.py, training/finetune.py): Seq2SeqTrainer fine-tuning, the loss it
reports under gradient accumulation and DDP, and its options (training/finetune_options.py): Trainer's own flags.

Data is the project's generated toy corpus (modeling_vanilla.data.toy_corpus) and a JSON lines file written here; the
model is a tiny one, saved with dropout 0 so that losses computed in different batchings can be compared exactly.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, pipeline

from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from modeling_vanilla.data.tokenization import train_bpe_tokenizer
from modeling_vanilla.data.toy_corpus import write_toy_corpus
from tests.helpers import REPO_ROOT

LANGUAGES = ["--source-lang", "en", "--target-lang", "de"]


pytestmark = pytest.mark.usefixtures("one_thread")


def finetune(argv: list[str]) -> dict:
    from modeling_vanilla.cli.finetune import run

    return run(argv)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_toy_corpus(tmp_path_factory.mktemp("toy"), train=64, valid=8, test=8, seed=0)


@pytest.fixture(scope="module")
def model_dir(corpus, tmp_path_factory) -> Path:
    lines = [line for name in ("train.en", "train.de") for line in (corpus / name).read_text().splitlines()]
    tokenizer = train_bpe_tokenizer(lines, vocab_size=400, model_max_length=128)
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(
        VanillaTransformerConfig.tiny(vocab_size=len(tokenizer), dropout=0.0)
    )
    folder = tmp_path_factory.mktemp("trained")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def uneven_pairs(corpus, tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    """8 pairs, 4 short and 4 long, as JSON lines: micro-batches of them hold very different numbers of tokens."""
    english = (corpus / "train.en").read_text().splitlines()
    german = (corpus / "train.de").read_text().splitlines()
    short = [
        ("A dog.", "Ein Hund."), ("Two men.", "Zwei Männer."), ("A boat.", "Ein Boot."), ("A girl.", "Ein Mädchen.")
    ]
    long = [(" ".join(english[i : i + 3]), " ".join(german[i : i + 3])) for i in range(0, 12, 3)]
    pairs = short + long
    path = tmp_path_factory.mktemp("jsonl") / "train.jsonl"
    path.write_text("".join(json.dumps({"translation": {"en": en, "de": de}}) + "\n" for en, de in pairs))
    return path, pairs


def logged_losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def one_batch_loss(model_dir: Path, pairs: list[tuple[str, str]], label_smoothing: float) -> torch.Tensor:
    """The loss of one forward pass over `pairs` as a single batch, without Trainer."""
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer([en for en, _ in pairs], text_target=[de for _, de in pairs])
    features = [{"input_ids": ids, "labels": labels} for ids, labels in zip(encoded["input_ids"], encoded["labels"])]
    batch = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)(features)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_input_ids"]).logits
    # Section 5.4 from torch's own definition: (1 - eps) * NLL + eps * the mean of -log p over the vocabulary.
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                                             label_smoothing=label_smoothing)


def test_each_trainer_step_may_hand_jemalloc_pages_back(model_dir, uneven_pairs, tmp_path, monkeypatch):
    # vanilla-finetune runs on jemalloc, which keeps freed pages (hardware.JEMALLOC_CONF) until FreePages hands them back.
    from modeling_vanilla.utils import hardware

    calls = []
    monkeypatch.setattr(hardware.FreePages, "__call__", lambda self: calls.append(self.every_s) or False)
    path, _ = uneven_pairs
    finetune([str(model_dir), *LANGUAGES, "--train-jsonl", str(path), "--max-steps", "3",
              "--per-device-train-batch-size", "4", "--output-dir", str(tmp_path / "ft")])
    assert calls == [hardware.FREE_PAGES_EVERY_S] * 3


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_logged_loss_under_gradient_accumulation_equals_one_step_on_the_same_examples(
    model_dir, uneven_pairs, tmp_path, label_smoothing
):
    path, pairs = uneven_pairs
    common = [str(model_dir), *LANGUAGES, "--train-jsonl", str(path), "--max-steps", "1", "--logging-steps", "1",
              "--label_smoothing_factor", str(label_smoothing)]
    finetune([*common, "--output-dir", str(tmp_path / "accumulated"), "--per-device-train-batch-size", "4",
              "--gradient-accumulation-steps", "2"])
    finetune([*common, "--output-dir", str(tmp_path / "single"), "--per-device-train-batch-size", "8"])
    accumulated, single = logged_losses(tmp_path / "accumulated")[0], logged_losses(tmp_path / "single")[0]

    reference = one_batch_loss(model_dir, pairs, label_smoothing).item()
    assert accumulated == pytest.approx(reference, abs=1e-4)
    assert single == pytest.approx(reference, abs=1e-4)
    # What would be logged if each micro-batch's loss were its own mean (a model ignoring num_items_in_batch):
    halves = [one_batch_loss(model_dir, half, label_smoothing).item() for half in (pairs[:4], pairs[4:])]
    assert abs(sum(halves) / 2 - reference) > 1e-2


def test_twenty_trainer_steps_lower_the_loss_and_score_bleu(model_dir, corpus, tmp_path):
    output = tmp_path / "finetuned"
    metrics = finetune([
        str(model_dir), *LANGUAGES, "--train-files", str(corpus / "train"), "--valid-files", str(corpus / "valid"),
        "--test-files", str(corpus / "test"), "--output-dir", str(output), "--max-steps", "20",
        "--per-device-train-batch-size", "8", "--learning-rate", "3e-3", "--logging-steps", "1",
        "--generation_num_beams", "1",
    ])
    losses = logged_losses(output)
    assert len(losses) == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3, losses
    for key in ("eval_bleu", "eval_chrf", "test_bleu", "test_chrf"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics)
    # The reported scores are sacreBLEU's on the fine-tuned model's own greedy translations of the test set.
    import sacrebleu

    from modeling_vanilla.inference.model_folder import load_model_and_tokenizer
    from modeling_vanilla.inference.translation import translate

    sources = (corpus / "test.en").read_text().splitlines()
    references = (corpus / "test.de").read_text().splitlines()
    model, tokenizer = load_model_and_tokenizer(output)
    hypotheses = translate(model, tokenizer, sources, num_beams=1)
    assert metrics["test_bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=0.01)
    assert metrics["test_chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score, abs=0.01)
    assert metrics["test_chrf"] > 0  # a non-empty comparison: the hypotheses share characters with the references
    assert json.loads((output / "all_results.json").read_text())["test_bleu"] == metrics["test_bleu"]

    # The saved model keeps the paper's decoding: beam 4 and no max_length, so generate() stops at input length + 50.
    # (Seq2SeqTrainer's evaluation would have set max_length=20 in it; --generation_num_beams 1 was for evaluation.)
    generation = json.loads((output / "generation_config.json").read_text())
    assert generation["num_beams"] == 4 and "max_length" not in generation
    translated = pipeline("translation", model=str(output))("A man is riding a bicycle.", max_new_tokens=5)
    assert isinstance(translated[0]["translation_text"], str)


def test_bad_arguments_are_clear_errors(model_dir, corpus, capsys):
    with pytest.raises(SystemExit):
        finetune([str(model_dir), *LANGUAGES, "--output-dir", "out"])
    assert "give exactly one training source: --dataset, --train-files or --train-jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        finetune([str(model_dir), *LANGUAGES, "--train-files", str(corpus / "train"), "--output-dir", "out",
                  "--gradient-accumulation-steps", "0"])
    assert "argument --gradient-accumulation-steps: must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_logged_loss_with_two_processes_equals_one_step_on_the_same_examples(model_dir, uneven_pairs, tmp_path):
    path, pairs = uneven_pairs
    with socket.socket() as probe:  # a free port, so that concurrent runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # `--cpu --num_processes 2` would silently run one process; --multi_gpu runs two over gloo.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        str(REPO_ROOT / "scripts" / "finetune.py"), str(model_dir), *LANGUAGES, "--train-jsonl", str(path),
        "--output-dir", str(tmp_path / "ddp"), "--max-steps", "1", "--logging-steps", "1",
        "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "2", "--label_smoothing_factor", "0.1",
    ]
    process = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert process.returncode == 0, process.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())
    assert state["log_history"][0]["epoch"] == 1.0  # 2 processes x 2 x 2 = all 8 pairs in the one step
    reference = one_batch_loss(model_dir, pairs, 0.1).item()
    assert logged_losses(tmp_path / "ddp")[0] == pytest.approx(reference, abs=1e-4)


# The options: Seq2SeqTrainingArguments itself, old names for one release, a config file, frozen, a quick --help


def parse(argv: list[str]):
    from modeling_vanilla.cli.finetune import parse_args

    return parse_args(argv)


def parsing_argv(tmp_path: Path, *extra: str) -> list[str]:
    """A command line that parses without a model or data on disk (nothing is read before training)."""
    return [str(tmp_path / "model"), *LANGUAGES, "--train-files", str(tmp_path / "train"), "--valid-files",
            str(tmp_path / "valid"), "--output-dir", str(tmp_path / "ft"), *extra]


def test_trainer_flags_reach_seq2seq_training_arguments(tmp_path, capsys):
    from transformers import Seq2SeqTrainingArguments

    options, training = parse(parsing_argv(tmp_path, "--lr_scheduler_type", "cosine", "--logging_steps", "3",
                                           "--report_to", "none", "--adam-beta2", "0.98", "--warmup_steps", "0.1",
                                           "--optim", "adafactor", "--eval-steps", "7", "--save_steps", "0"))
    assert isinstance(training, Seq2SeqTrainingArguments)
    assert (training.lr_scheduler_type.value, training.logging_steps, training.report_to) == ("cosine", 3, [])
    assert (training.adam_beta2, training.warmup_steps, training.optim.value) == (0.98, 0.1, "adafactor")
    # vanilla-finetune's meaning of --eval_steps and --save_steps 0; its defaults where they are not Trainer's
    assert (training.eval_strategy.value, training.eval_steps, training.save_strategy.value) == ("steps", 7, "no")
    assert (training.learning_rate, training.per_device_train_batch_size, training.seed) == (1e-4, 32, 1)
    assert (training.label_smoothing_factor, training.predict_with_generate) == (0.1, True)
    assert training.output_dir == options.output_dir == str(tmp_path / "ft")
    ds_config = tmp_path / "ds.json"
    ds_config.write_text("{}")
    try:
        import deepspeed  # noqa: F401
    except ImportError:  # Trainer's own check of --deepspeed, as a one-line error before any work
        with pytest.raises(SystemExit) as exit_info:
            parse(parsing_argv(tmp_path, "--deepspeed", str(ds_config)))
        assert exit_info.value.code == 2 and "deepspeed" in capsys.readouterr().err.splitlines()[-1]
    else:
        assert parse(parsing_argv(tmp_path, "--deepspeed", str(ds_config)))[1].deepspeed == str(ds_config)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("old,new,field,value", [
    (["--num-beams", "2"], ["--generation_num_beams", "2"], "generation_num_beams", 2),
    (["--label-smoothing", "0.2"], ["--label_smoothing_factor", "0.2"], "label_smoothing_factor", 0.2),
    (["--cpu"], ["--use_cpu"], "use_cpu", True),
    (["--compile", "--cpu"], ["--torch_compile", "--use_cpu"], "torch_compile", True),
    (["--no-compile"], ["--torch_compile", "false"], "torch_compile", False),
    (["--group-by-length"], ["--train_sampling_strategy", "group_by_length"], "train_sampling_strategy",
     "group_by_length"),
])
def test_an_old_flag_name_still_works_and_names_the_flag_that_replaces_it(tmp_path, capsys, old, new, field, value):
    training = parse(parsing_argv(tmp_path, *old))[1]
    assert getattr(training, field) == value
    assert f"vanilla-finetune: {old[0]} is deprecated and goes in the next release: use {new[0]}" \
        in capsys.readouterr().err
    assert getattr(parse(parsing_argv(tmp_path, *new))[1], field) == value
    assert "deprecated" not in capsys.readouterr().err


def test_a_cpu_run_restarts_on_its_allocator_before_trainers_arguments_set_up_the_processes(tmp_path, monkeypatch):
    """Making Seq2SeqTrainingArguments sets up the device and a launch's processes (gloo): restarted after that,
    the processes of `accelerate launch` would wait for each other forever."""
    from transformers import Seq2SeqTrainingArguments

    from modeling_vanilla.cli.finetune import parse_args
    from modeling_vanilla.utils import hardware

    events = []
    monkeypatch.setattr(hardware, "preload_allocator", lambda choice, command: events.append(("restart", command)))
    made = Seq2SeqTrainingArguments.__post_init__
    monkeypatch.setattr(Seq2SeqTrainingArguments, "__post_init__", lambda self: events.append(("made",)) or made(self))
    parse_args(parsing_argv(tmp_path, "--use_cpu"), restart=True)  # the console command's own command line
    assert events == [("restart", "vanilla-finetune"), ("made",)]
    events.clear()
    parse_args(parsing_argv(tmp_path, "--use_cpu"))  # called from Python: never restarted
    assert events == [("made",)]


def test_finetune_options_are_frozen_and_share_only_the_output_folder_with_trainer(tmp_path):
    import dataclasses

    from transformers import Seq2SeqTrainingArguments

    from modeling_vanilla.training.finetune_options import FinetuneOptions

    options, _ = parse(parsing_argv(tmp_path, "--max-train-samples", "4"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_train_samples = 8
    assert dataclasses.replace(options, max_train_samples=8).max_train_samples == 8 and options.max_train_samples == 4
    ours = {f.name for f in dataclasses.fields(FinetuneOptions)}
    assert ours & {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)} == {"output_dir"}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_config_file_gives_what_its_flags_give_and_flags_given_win(tmp_path, suffix):
    values = {"model": str(tmp_path / "model"), "source_lang": "en", "target_lang": "de",
              "train_files": [str(tmp_path / "train")], "output_dir": str(tmp_path / "ft"), "learning_rate": 3e-4,
              "lr_scheduler_type": "cosine", "max_steps": 50, "num_beams": 2, "max_eval_samples": 16}
    config = tmp_path / f"run{suffix}"
    config.write_text(json.dumps(values) if suffix == ".json" else
                      "".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    from_file = parse(["--config", str(config)])
    from_flags = parse([str(tmp_path / "model"), *LANGUAGES, "--train-files", str(tmp_path / "train"), "--output-dir",
                        str(tmp_path / "ft"), "--learning_rate", "3e-4", "--lr_scheduler_type", "cosine",
                        "--max_steps", "50", "--num-beams", "2", "--max-eval-samples", "16"])
    assert from_file[0] == from_flags[0] and from_file[1].to_dict() == from_flags[1].to_dict()
    both = parse(["--config", str(config), "--max_steps", "60", str(tmp_path / "other")])
    assert (both[1].max_steps, both[1].learning_rate, both[0].model) == (60, 3e-4, str(tmp_path / "other"))


@pytest.mark.slow
def test_help_lists_our_options_without_torch_and_help_all_adds_trainers(tmp_path):
    code = ("import sys\nfrom modeling_vanilla.cli import finetune\ntry:\n    finetune.main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: vanilla-finetune") and "--max-train-samples" in result.stdout
    assert "--learning_rate 0.0001" in result.stdout and "--help-all" in result.stdout
    assert "--lr_scheduler_type" not in result.stdout and result.stdout.splitlines()[-1] == "False False"
    result = subprocess.run([sys.executable, "-m", "modeling_vanilla.cli.finetune", "--help-all"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--lr_scheduler_type" in result.stdout and "--deepspeed" in result.stdout
