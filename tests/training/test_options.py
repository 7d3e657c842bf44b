"""vanilla-train's options (modeling_vanilla/training/options.py): typed dataclasses parsed by transformers'
HfArgumentParser, frozen once checked, with `--config FILE` and `--recipe NAME` (a YAML file of flags) as defaults
that flags given on the command line override; a run folder saved by the earlier, argparse version still resumes.

The option tests that run vanilla-train (resume, overwrite, averaging) are in test_training.py.
"""

import dataclasses
import json
import typing

import pytest
import yaml

from modeling_vanilla.data.toy_corpus import write_toy_corpus
from modeling_vanilla.training.options import TrainOptions, parse_train_args
from modeling_vanilla.training.recipes import load_recipe, recipe_files


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("toy"), train=40, valid=8, test=8, seed=1)


def data(toy_data) -> list[str]:
    return ["--source-lang", "en", "--target-lang", "de", "--train-files", str(toy_data / "train"),
            "--valid-files", str(toy_data / "valid")]


def flags(toy_data, output_dir) -> list[str]:
    """A command line with a value for options of every kind: lists, a choice, a bool, ints, floats, --override."""
    return [*data(toy_data), "--output-dir", str(output_dir), "--preset", "tiny", "--max-steps", "7",
            "--lr-scale", "0.5", "--label-smoothing", "0.2", "--average-last", "2", "--average-choose", "loss",
            "--cpu", "--test-files", str(toy_data / "test"), "--override", "dropout=0.3", "num_heads=2",
            "--precision", "fp32", "--no-compile"]


def as_file_values(argv: list[str]) -> dict:
    """The same options as a config file writes them: {field name: value}."""
    values, key = {}, None
    lists = {"train_files", "valid_files", "test_files", "override"}
    for word in argv:
        if word.startswith("--"):
            key = word[2:].replace("-", "_")
            values[key] = [] if key in lists else True
        elif key in lists:
            values[key].append(word)
        else:
            values[key] = json.loads(word) if word.replace(".", "").isdigit() else word
    values["compile"] = not values.pop("no_compile")
    return values


def test_the_options_refuse_assignment_once_checked_and_replace_derives_new_ones(toy_data, tmp_path):
    options = parse_train_args(flags(toy_data, tmp_path / "out"))
    assert isinstance(options, TrainOptions)
    for name, value in (("max_tokens", 1024), ("precision", "bf16"), ("config_overrides", {})):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(options, name, value)
    # resolved before freezing: precision, compile, padding, and the overrides as config fields
    assert (options.precision, options.compile, options.pad_to_multiple_of) == ("fp32", False, None)
    assert options.config_overrides == {"dropout": 0.3, "num_heads": 2}
    derived = dataclasses.replace(options, override=["dropout=0.1"])
    assert derived.config_overrides == {"dropout": 0.1} and options.config_overrides["dropout"] == 0.3


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_config_file_gives_the_options_of_the_same_flags_and_a_flag_given_wins(toy_data, tmp_path, suffix):
    argv = flags(toy_data, tmp_path / "out")
    config = tmp_path / f"run{suffix}"
    values = as_file_values(argv)
    config.write_text(json.dumps(values) if suffix == ".json" else yaml.safe_dump(values))
    assert parse_train_args(["--config", str(config)]) == parse_train_args(argv)
    # A flag on the command line wins; --override adds to the file's items (the last value of a field wins).
    both = parse_train_args(["--config", str(config), "--lr-scale", "2", "--preset", "small", "--override",
                             "dropout=0.1"])
    assert (both.lr_scale, both.preset, both.max_steps) == (2.0, "small", 7)
    assert both.override == ["dropout=0.3", "num_heads=2", "dropout=0.1"]
    assert both.config_overrides == {"dropout": 0.1, "num_heads": 2}


@pytest.mark.parametrize("content,message", [
    ("max_tokens: 4096\ncolour: blue\n", "{path}: unknown option 'colour': not an option of vanilla-train"),
    ("max_tokens: 0\n", "{path}: max_tokens: must be a positive integer, got 0"),
    ("preset: huge\n", "{path}: preset: invalid choice: 'huge'"),
    ("train_files: data/train\n", "{path}: train_files: expected a list, got 'data/train'"),
    ("- max_tokens\n", "{path}: expected option names and values (a mapping), got a list"),
])
def test_a_bad_config_file_is_an_error_naming_the_file_and_the_key(toy_data, tmp_path, capsys, content, message):
    config = tmp_path / "run.yaml"
    config.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args([*data(toy_data), "--output-dir", str(tmp_path / "out"), "--max-steps", "1",
                          "--config", str(config)])
    assert exit_info.value.code == 2
    assert message.format(path=config) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_recipe_files_flags_are_what_recipe_parses_to(toy_data, tmp_path):
    recipe = load_recipe("multi30k")
    assert recipe_files()["multi30k"].name == "multi30k.yaml"
    options = parse_train_args(["--recipe", "multi30k", *data(toy_data), "--output-dir", str(tmp_path / "a")])
    for name, value in recipe.items():
        assert getattr(options, name) == value, name
    assert options.recipe == "multi30k"
    # --recipe is a --config file shipped with the package: the same options either way
    same = parse_train_args(["--config", str(recipe_files()["multi30k"]), *data(toy_data), "--output-dir",
                             str(tmp_path / "a")])
    assert dataclasses.replace(same, recipe="multi30k") == options


def test_an_unknown_recipe_is_an_error_that_lists_the_recipes(toy_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(["--recipe", "wmt99", *data(toy_data), "--output-dir", str(tmp_path / "a")])
    assert exit_info.value.code == 2
    assert "argument --recipe: invalid choice: 'wmt99' (choose from 'multi30k')" in capsys.readouterr().err


def test_dashes_and_underscores_name_the_same_flag_and_errors_use_dashes(toy_data, tmp_path, capsys):
    base = [*data(toy_data), "--output-dir", str(tmp_path / "out")]
    assert parse_train_args([*base, "--max_minutes", "2", "--update_freq", "2"]) == \
        parse_train_args([*base, "--max-minutes", "2", "--update-freq", "2"])
    with pytest.raises(SystemExit):
        parse_train_args([*base, "--max_minutes", "0"])
    assert "argument --max-minutes: must be a positive number, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_train_args(["--max-steps", "1"])
    assert "the following arguments are required: --source-lang, --target-lang, --output-dir" in \
        capsys.readouterr().err


def test_a_run_folder_saved_by_the_argparse_version_resumes(toy_data, tmp_path):
    """run_config.json is `vars(options)`: the keys the earlier version wrote (its Namespace, captured from it), so
    that its runs resume with the same settings, and the loop finds every name it reads."""
    from modeling_vanilla.training.run_folder import RUN_CONFIG, data_fingerprint, resume_differences

    earlier = {
        "recipe": None, "preset": "tiny", "override": ["dropout=0.0"], "source_lang": "en", "target_lang": "de",
        "dataset": None, "dataset_config": None, "train_files": [str(toy_data / "train")],
        "valid_files": [str(toy_data / "valid")], "test_files": None, "train_jsonl": None, "valid_jsonl": None,
        "test_jsonl": None, "max_length": 256, "num_proc": None, "tokenizer": None, "vocab_size": 37000,
        "tokenizer_type": "byte-level", "max_tokens": 4096, "update_freq": 1, "warmup_steps": 4000, "lr_scale": 1.0,
        "label_smoothing": 0.1, "lr_cooldown": 0.0, "weight_decay": 0.0, "clip_norm": 0.0, "precision": "fp32",
        "seed": 1, "cpu": False, "max_bad_updates": 5, "compile": False, "pad_to_multiple_of": None,
        "allocator": "auto", "num_workers": None, "max_steps": 2, "max_epochs": None, "max_minutes": None,
        "eval_every": 1000, "bleu_every": 0, "bleu_sentences": None, "num_beams": 4, "length_penalty": 0.6,
        "output_dir": str(tmp_path / "out"), "overwrite": False, "resume": False, "save_every": 0,
        "save_every_minutes": 10.0, "keep_checkpoints": 5, "average_last": 0, "average_choose": "none",
        "log_every": 10, "report_to": "none", "model_name": None, "card_dataset": None,
        "config_overrides": {"dropout": 0.0},
    }
    argv = [*data(toy_data), "--preset", "tiny", "--max-steps", "2", "--output-dir", str(tmp_path / "out"),
            "--precision", "fp32", "--override", "dropout=0.0"]
    options = parse_train_args(argv)
    assert set(vars(options)) == set(earlier)
    out = tmp_path / "out"
    out.mkdir()
    (out / RUN_CONFIG).write_text(json.dumps({**earlier, "data_fingerprint": data_fingerprint(options)}))
    resumed = parse_train_args([*argv, "--resume", "--max-steps", "4"])
    assert resumed.resume and resume_differences(json.loads((out / RUN_CONFIG).read_text()), resumed) == []


def test_the_tokenizer_kinds_are_the_data_layers():
    from modeling_vanilla.data.tokenization import KINDS

    assert typing.get_args(typing.get_type_hints(TrainOptions)["tokenizer_type"]) == KINDS
