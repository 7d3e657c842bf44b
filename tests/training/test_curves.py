"""Learning curves: a run's checkpoints scored after training (`vanilla-evaluate --checkpoints`), the peer's snapshots
(benchmarks/peer_curve.py), and the figure (`vanilla-figures --curves`)."""

import json
import sys

import pytest
import transformers

from modeling_vanilla.data.toy_corpus import write_toy_corpus
from modeling_vanilla.training.curves import checkpoint_points, read_curve
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("toy"), train=300, valid=24, test=8, seed=3)


@pytest.fixture(scope="module")
def run_dir(toy_data, tmp_path_factory):
    """A toy run of 6 updates with a checkpoint every 2 (steps 2, 4, 6) and no averaging."""
    from modeling_vanilla.cli.train import run as train

    out = tmp_path_factory.mktemp("curve") / "run"
    train(["--preset", "tiny", "--source-lang", "en", "--target-lang", "de", "--train-files", str(toy_data / "train"),
           "--valid-files", str(toy_data / "valid"), "--vocab-size", "300", "--max-tokens", "512", "--max-length", "64",
           "--warmup-steps", "4", "--max-steps", "6", "--eval-every", "0", "--save-every", "2",
           "--save-every-minutes", "0", "--keep-checkpoints", "5", "--bleu-sentences", "4", "--num-beams", "2",
           "--override", "dropout=0.0", "--output-dir", str(out)])
    return out


def evaluate(run_dir, toy_data, *extra):
    from modeling_vanilla.cli.evaluate import run

    return run([str(run_dir), "--source", str(toy_data / "valid.en"), "--reference", str(toy_data / "valid.de"),
                "--num-beams", "2", *extra])


def test_each_checkpoint_is_scored_with_its_step_and_minutes_and_the_last_is_the_final_model(run_dir, toy_data, tmp_path):
    curve = tmp_path / "curve.jsonl"
    records = evaluate(run_dir, toy_data, "--checkpoints", "--curve", str(curve))
    assert [r["step"] for r in records] == [2, 4, 6]
    states = [json.loads((run_dir / "checkpoints" / f"step-{s:07d}" / "train_state.json").read_text()) for s in (2, 4, 6)]
    assert [r["minutes"] for r in records] == [round(s["elapsed_seconds"] / 60, 2) for s in states]
    assert [r["tokens_seen"] for r in records] == [s["tokens_seen"] for s in states]
    assert all(r["averaged"] == 1 and r["sentences"] == 24 for r in records)
    # Step 6's checkpoint holds the final model's weights: the same translations, the same scores.
    final = evaluate(run_dir, toy_data)
    assert (records[-1]["bleu"], records[-1]["chrf"]) == (final["bleu"], final["chrf"])
    assert read_curve(curve) == records


def test_average_scores_the_mean_of_each_checkpoint_and_those_before_it(run_dir, toy_data, tmp_path):
    from modeling_vanilla.cli.average_checkpoints import run as average

    records = evaluate(run_dir, toy_data, "--checkpoints", "--average", "2")
    assert [(r["step"], r["averaged"]) for r in records] == [(4, 2), (6, 2)]
    average([str(run_dir), "--last", "2", "--output", str(tmp_path / "avg")])
    averaged = evaluate(tmp_path / "avg", toy_data)
    assert (records[-1]["bleu"], records[-1]["chrf"]) == (averaged["bleu"], averaged["chrf"])


@pytest.mark.parametrize("extra, message", [
    (["--curve", "c.jsonl"], "--curve and --average score a run's checkpoints: add --checkpoints"),
    (["--average", "2"], "--curve and --average score a run's checkpoints: add --checkpoints"),
    (["--checkpoints", "--output", "out.de"], "--output writes one model's translations"),
    (["--checkpoints", "--curve", "no/such/folder/c.jsonl"], "the folder"),
    (["--checkpoints", "--curve", "."], "--curve . is a folder: give a file name."),
    (["--output", "."], "--output . is a folder: give a file name."),
])
def test_misplaced_curve_flags_are_refused_by_name(run_dir, toy_data, extra, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        evaluate(run_dir, toy_data, *extra)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_too_few_checkpoints_and_a_folder_without_any_are_clear_errors(run_dir, toy_data, tmp_path):
    with pytest.raises(SystemExit, match=r"--average 4 needs at least 4 checkpoints"):
        evaluate(run_dir, toy_data, "--checkpoints", "--average", "4")
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(SystemExit, match=r"holds no complete checkpoint: train with --save-every-minutes"):
        evaluate(bare, toy_data, "--checkpoints")
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint"):
        checkpoint_points(bare)


@pytest.mark.parametrize("text, message", [
    ('{"minutes": 1, "bleu": 2}\nnot json\n', "line 2: not JSON"),
    ('{"minutes": 1}\n', 'line 1: a curve record needs numbers "minutes" and "bleu"'),
    ('{"minutes": true, "bleu": 3}\n', "line 1: a curve record needs numbers"),
    ("\n", "holds no curve records"),
])
def test_a_bad_curve_file_is_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "curve.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        read_curve(path)
    assert str(path) in str(error.value)


def test_figures_draw_the_curves_into_one_png_and_refuse_bad_arguments(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from modeling_vanilla.cli.make_figures import main

    ours, peer = tmp_path / "ours.jsonl", tmp_path / "peer.jsonl"
    ours.write_text('{"minutes": 5, "bleu": 20.5}\n{"minutes": 10, "bleu": 30.1}\n')
    peer.write_text('{"minutes": 5, "bleu": 15}\n{"minutes": 10, "bleu": 25}\n')
    png = tmp_path / "curves.png"
    assert main(["--curves", f"ours={ours}", f"peer={peer}", "--output", str(png), "--out-dir", str(tmp_path / "x")]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "x").exists()  # only the curves were drawn
    from modeling_vanilla.insight.figures import plot_curves

    axes = plot_curves({"ours": read_curve(ours), "peer": read_curve(peer)}).axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["ours (last: 30.1)", "peer (last: 25.0)"]
    assert list(axes.get_lines()[0].get_ydata()) == [20.5, 30.1]
    for argv, message in ([["--curves", str(ours), "--output", str(png)], "is not LABEL=FILE"],
                          [["--curves", f"ours={ours}"], "--curves and --output go together"],
                          [["--curves", f"a={ours}", f"a={peer}", "--output", str(png)], "given twice"],
                          [["--curves", f"a={tmp_path / 'none.jsonl'}", "--output", str(png)], "none.jsonl"],
                          [["--curves", f"a={ours}", "--output", str(tmp_path)], "is a folder: give a file name"],
                          [["--curves", f"a={ours}", "--output", str(tmp_path / "no" / "c.png")], "does not exist"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


# A stand-in for ../shared/peers/marian_multi30k.py: the same command line, a tiny MarianMTModel trained with
# Seq2SeqTrainer for a few seconds, saved to OUT.
FAKE_PEER = '''
import argparse, time
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, processors
from datasets import Dataset
from transformers import (DataCollatorForSeq2Seq, MarianConfig, MarianMTModel, PreTrainedTokenizerFast,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback)
ap = argparse.ArgumentParser()
ap.add_argument("src"); ap.add_argument("tgt"); ap.add_argument("out"); ap.add_argument("--minutes", type=float)
args = ap.parse_args()
start = time.time()
D = "{data}"
read = lambda p: open(p, encoding="utf-8").read().splitlines()
tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
tk.pre_tokenizer = pre_tokenizers.Whitespace()
tk.train([f"{{D}}/train.{{args.src}}", f"{{D}}/train.{{args.tgt}}"],
         trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
cfg = MarianConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                   decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, pad_token_id=0, eos_token_id=2,
                   decoder_start_token_id=0, max_position_embeddings=256)
model = MarianMTModel(cfg)
ds = Dataset.from_dict({{"s": read(f"{{D}}/train.{{args.src}}"), "t": read(f"{{D}}/train.{{args.tgt}}")}})
train = ds.map(lambda b: tok(b["s"], text_target=b["t"]), batched=True, remove_columns=["s", "t"])
class Budget(TrainerCallback):
    def on_step_end(self, a, state, control, **kw):
        time.sleep(0.05)
        if time.time() - start > args.minutes * 60:
            control.should_training_stop = True
targs = Seq2SeqTrainingArguments(output_dir=args.out + "-ckpt", per_device_train_batch_size=16, learning_rate=1e-3,
    num_train_epochs=100, use_cpu=True, save_strategy="no", report_to=[], logging_steps=1000)
trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=train, data_collator=DataCollatorForSeq2Seq(tok, model=model),
                         processing_class=tok, callbacks=[Budget()])
trainer.train()
model.save_pretrained(args.out); tok.save_pretrained(args.out)
'''


def load_peer_curve():
    import importlib.util

    spec = importlib.util.spec_from_file_location("peer_curve", REPO_ROOT / "benchmarks" / "peer_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_peer_runs_unchanged_with_snapshots_scored_after_training(toy_data, tmp_path, monkeypatch, capsys):
    peer_curve = load_peer_curve()
    script = tmp_path / "peer.py"
    script.write_text(FAKE_PEER.format(data=toy_data))
    out = tmp_path / "peer-out"
    # Snapshots every 1.5 s of a 6-second budget: the last one falls on (or next to) the peer's final step.
    argv = [str(script), "en", "de", str(out), "--minutes", "0.1", "--every", "0.025",
            "--valid-source", str(toy_data / "valid.en"), "--valid-reference", str(toy_data / "valid.de")]
    monkeypatch.setattr(sys, "argv", ["outer"])
    assert peer_curve.main(argv) == 0
    assert transformers.Seq2SeqTrainer.__name__ == "Seq2SeqTrainer" and sys.argv == ["outer"]  # restored
    records = read_curve(tmp_path / "peer-out-snapshots" / "val_curve.jsonl")
    assert len(records) >= 3  # snapshots at 0.025 and 0.05 minutes (at least), and the end
    assert records[-1]["folder"] == str(out)
    minutes, steps = [r["minutes"] for r in records], [r["step"] for r in records]
    assert minutes == sorted(minutes) and minutes[-1] >= 0.1 and minutes[0] >= 0.025
    assert all(a < b for a, b in zip(steps, steps[1:])), steps  # no step twice, the final one included
    for record in records[:-1]:
        saved = json.loads((tmp_path / record["folder"] / "snapshot.json").read_text())
        assert saved == {k: record[k] for k in ("step", "epoch", "minutes")}
    assert all(0 <= r["bleu"] <= 100 and r["sentences"] == 24 for r in records)
    # Nothing is overwritten: the same OUT again is refused before anything runs.
    with pytest.raises(SystemExit):
        peer_curve.main(argv)
    assert "exists: choose another OUT" in capsys.readouterr().err
    # A --curve that could not be written is refused before training, not after it.
    for curve, message in ((tmp_path / "no" / "c.jsonl", "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(SystemExit):
            peer_curve.parse_args([*argv[:3], str(tmp_path / "other"), "--minutes", "1", "--valid-source",
                                   argv[-3], "--valid-reference", argv[-1], "--curve", str(curve)])
        assert message in capsys.readouterr().err
