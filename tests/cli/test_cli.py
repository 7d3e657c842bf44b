"""The installed commands: declared in pyproject.toml, installed, each with a working `--help`; clean errors."""

import importlib
import json
import shutil

import pytest
import tomllib
import torch

from tests.helpers import REPO_ROOT

COMMANDS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_is_a_main_of_a_cli_module_and_every_cli_module_has_a_command():
    modules = {target.split(":")[0] for target in COMMANDS.values()}
    assert all(target.endswith(":main") for target in COMMANDS.values())
    on_disk = {f"modeling_vanilla.cli.{p.stem}" for p in (REPO_ROOT / "modeling_vanilla" / "cli").glob("*.py")
               if not p.stem.startswith("_")}  # _arguments.py and the like are helpers, not commands
    assert modules == on_disk
    scripts = {f"modeling_vanilla.cli.{p.stem}" for p in (REPO_ROOT / "scripts").glob("*.py")}
    assert scripts <= modules  # every checkout script is one of the commands


def test_the_commands_are_installed():
    from importlib.metadata import entry_points

    installed = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("vanilla-")}
    assert installed == COMMANDS, "reinstall the package: pip install -e '.[dev]'"
    assert shutil.which("vanilla-train") is not None


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_the_command(name, capsys):
    module = importlib.import_module(COMMANDS[name].split(":")[0])
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {name}"), out[:200]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
    from modeling_vanilla.data.tokenization import train_bpe_tokenizer

    sentences = ["A man rides a bike.", "Ein Mann fährt Rad.", "Two dogs run.", "Zwei Hunde rennen."] * 8
    tokenizer = train_bpe_tokenizer(sentences, vocab_size=300, model_max_length=64)
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(vocab_size=len(tokenizer)))
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_push_console_errors_are_one_line_not_a_traceback(model_dir, tmp_path):
    from modeling_vanilla.cli import push_to_hub

    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.main([str(model_dir), "--repo-id", "you/model", "--dry-run", str(tmp_path / "upload")])
    message = str(exit_info.value.code)
    assert message.startswith("vanilla-push: error: not uploading: the model card")
    assert not (tmp_path / "upload").exists()


def test_evaluate_scores_its_own_translations_with_sacrebleu(model_dir, tmp_path, capsys):
    import sacrebleu

    from modeling_vanilla.cli import evaluate

    (tmp_path / "src.en").write_text("A man rides a bike.\n\nTwo dogs run.\n")
    (tmp_path / "ref.de").write_text("Ein Mann fährt Rad.\n\nZwei Hunde rennen.\n")
    result = evaluate.run([str(model_dir), "--source", str(tmp_path / "src.en"), "--reference",
                            str(tmp_path / "ref.de"), "--output", str(tmp_path / "hyp.de"), "--num-beams", "2"])
    hypotheses = (tmp_path / "hyp.de").read_text().split("\n")[:-1]
    assert len(hypotheses) == 3 and hypotheses[1] == ""  # an empty line translates to an empty line
    references = ["Ein Mann fährt Rad.", "", "Zwei Hunde rennen."]
    assert result["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2)
    assert result["chrf"] == round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sentences"] == 3


def test_evaluate_refuses_files_that_are_not_line_aligned(model_dir, tmp_path, capsys):
    from modeling_vanilla.cli import evaluate

    (tmp_path / "src.en").write_text("a\nb\n")
    (tmp_path / "ref.de").write_text("a\n")
    with pytest.raises(SystemExit):
        evaluate.main([str(model_dir), "--source", str(tmp_path / "src.en"), "--reference", str(tmp_path / "ref.de")])
    err = capsys.readouterr().err
    assert "has 2 lines but" in err and "line-aligned" in err


def test_evaluate_writes_one_output_line_per_input_line_whatever_the_translation_holds(model_dir, tmp_path,
                                                                                        monkeypatch):
    from modeling_vanilla.cli import evaluate

    monkeypatch.setattr("modeling_vanilla.inference.translation.translate",
                        lambda model, tokenizer, sources, **kwargs: ["a\nb", "c\rd"])
    (tmp_path / "src.en").write_text("one\ntwo\n")
    (tmp_path / "ref.de").write_text("eins\nzwei\n")
    evaluate.run([str(model_dir), "--source", str(tmp_path / "src.en"), "--reference", str(tmp_path / "ref.de"),
                  "--output", str(tmp_path / "hyp.de")])
    assert (tmp_path / "hyp.de").read_text() == "a b\nc d\n"
