"""The commands' import weight (issue 40, item 6): `--help` of every command imports neither torch nor transformers
nor datasets (seconds each), because `import modeling_vanilla` defers registering the model until transformers is
imported; the registration still happens before anything of transformers can be used. `vanilla-benchmark` reaches the
checkout's benchmarks/ folder, one module per benchmark, and every benchmark command in the docs parses."""

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from modeling_vanilla.cli import benchmark as benchmark_command
from tests.helpers import REPO_ROOT, run_python

COMMANDS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]  # name: "module:main"
HEAVY = ("torch", "transformers", "datasets")

HELP_CODE = """
import contextlib, io, sys
from {module} import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main({argv!r})
    except SystemExit as end:
        assert end.code in (0, None), end.code
assert out.getvalue().startswith("usage: {name}"), out.getvalue()[:300]
print(sorted(name for name in {heavy!r} if name in sys.modules))
"""


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_every_command_imports_neither_torch_nor_transformers_nor_datasets(name, tmp_path):
    code = HELP_CODE.format(module=COMMANDS[name].split(":")[0], argv=["--help"], name=name, heavy=HEAVY)
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", f"{name} --help imported {result.stdout.strip()}"


def test_help_of_every_benchmark_is_as_light(tmp_path):
    for name in benchmark_command.load_benchmarks().BENCHMARKS:
        code = HELP_CODE.format(module="modeling_vanilla.cli.benchmark", argv=[name, "--help"],
                                name=f"vanilla-benchmark {name}", heavy=HEAVY)
        result = run_python(code, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == "[]", f"vanilla-benchmark {name} --help imported {result.stdout.strip()}"


REGISTRATION_CODE = """
import sys
import modeling_vanilla
assert not [name for name in ("torch", "transformers") if name in sys.modules], "import modeling_vanilla is heavy"
{between}
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, pipelines
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING as SEQ2SEQ
config = AutoConfig.for_model("vanilla_transformer", **{{"num_encoder_layers": 1}})
assert type(config) is modeling_vanilla.VanillaTransformerConfig and config.num_encoder_layers == 1
assert SEQ2SEQ[type(config)] is modeling_vanilla.VanillaTransformerForConditionalGeneration
assert type(AutoModel.from_config(config.tiny())) is modeling_vanilla.VanillaTransformerModel
assert modeling_vanilla.VanillaTransformerForConditionalGeneration._auto_class == "AutoModelForSeq2SeqLM"
assert modeling_vanilla.VanillaTransformerConfig._auto_class == "AutoConfig"
assert modeling_vanilla.VanillaTransformerConfig.drop_on_load == {{"custom_pipelines"}}
assert "translation" not in pipelines.REMOVED_TASKS  # enable_translation_pipeline has run
assert type(modeling_vanilla.modeling_vanilla).__name__ == "module"
assert set(modeling_vanilla.__all__) <= set(dir(modeling_vanilla))
assert not [finder for finder in sys.meta_path if type(finder).__module__ == "modeling_vanilla"]  # the watch is over
import torch
assert type(torch.__loader__).__module__ != "modeling_vanilla"  # every module keeps its own loader
print("registered")
"""

# A module that uses the Auto classes while it is being imported, imported after the package.
USES_AUTO_AT_IMPORT = """
from transformers import AutoConfig
CONFIG = AutoConfig.for_model("vanilla_transformer")
"""


@pytest.mark.parametrize("between", [
    "",  # transformers imported after the package: registered when that import ends
    "from modeling_vanilla import VanillaTransformerConfig",  # a name of the package: registered on first use
    "import modeling_vanilla.modeling_vanilla",  # the model file alone: registered when its import ends
    "import user_module; assert user_module.CONFIG.model_type == 'vanilla_transformer'",
], ids=["transformers after", "a name", "the model file", "auto classes at import"])
@pytest.mark.slow
def test_import_modeling_vanilla_registers_the_model_before_transformers_can_be_used(between, tmp_path):
    (tmp_path / "user_module.py").write_text(USES_AUTO_AT_IMPORT)
    result = run_python(REGISTRATION_CODE.format(between=between), cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "registered", result.stderr[-3000:]


def test_with_transformers_already_imported_the_package_registers_at_once(tmp_path):
    code = "import transformers, modeling_vanilla\nprint('VanillaTransformerConfig' in vars(modeling_vanilla))"
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr[-3000:]


def test_the_commands_minimum_vocabulary_is_the_tokenizers():
    from modeling_vanilla.cli import data_report, train_tokenizer
    from modeling_vanilla.data.tokenization import SPECIAL_TOKENS

    assert train_tokenizer.MIN_VOCAB_SIZE == data_report.MIN_VOCAB_SIZE == 256 + len(SPECIAL_TOKENS)


# ------------------------------------------------------------------------------------------------------------------
# vanilla-benchmark and benchmarks/
# ------------------------------------------------------------------------------------------------------------------


def test_every_benchmark_module_is_listed_and_has_the_interface():
    benchmarks = benchmark_command.load_benchmarks()
    shared = {"__init__", "common", "models"}
    on_disk = {path.stem for path in (REPO_ROOT / "benchmarks").glob("*.py")} - shared
    assert on_disk == {benchmarks.module_name(name) for name in benchmarks.BENCHMARKS}
    for name in benchmarks.BENCHMARKS:
        module = benchmark_command.load_benchmarks(benchmarks.module_name(name))
        assert callable(module.add_arguments) and callable(module.run) and callable(module.main), name


def test_without_a_checkout_vanilla_benchmark_says_the_benchmarks_run_from_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "benchmarks")  # as in a process that has not loaded them
    monkeypatch.setattr(benchmark_command, "BENCHMARKS_FOLDER", tmp_path / "benchmarks")  # a wheel: no folder
    with pytest.raises(SystemExit) as exit_info:
        benchmark_command.main(["speed"])
    assert str(exit_info.value.code) == (
        f"vanilla-benchmark: error: no benchmarks at {tmp_path / 'benchmarks'}: the benchmarks run from a checkout of "
        "vanilla-transformer (git clone it, then pip install -e . in it), not a wheel.")
    assert "benchmarks" not in sys.modules


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every `vanilla-benchmark ...` and `python benchmarks/...` command written in README.md,
    docs/ and the benchmarks' docstrings: lines of code blocks and examples, and inline code (which may wrap), with
    continuation lines joined."""
    markdown = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    python = [REPO_ROOT / "modeling_vanilla" / "cli" / "benchmark.py", *sorted((REPO_ROOT / "benchmarks").glob("*.py"))]
    texts = {path: path.read_text(encoding="utf-8") for path in markdown}
    texts |= {path: ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "" for path in python}
    command = r"(?:[A-Z_]+=\S+\s+)*((?:vanilla-benchmark|python benchmarks/)\S*(?: .*)?)"  # after VAR=value words
    found, seen = [], set()
    for path, text in texts.items():
        text = re.sub(r"\\\n\s*", " ", text)  # continuation lines
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        text = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
        spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]
        lines = [line.strip() for part in [*blocks, re.sub(r"`[^`]+`", "", text)] for line in part.splitlines()]
        for candidate in spans + lines:
            if (match := re.fullmatch(command, candidate)) and match.group(1) not in seen:
                seen.add(match.group(1))
                found.append((path.relative_to(REPO_ROOT).as_posix(), match.group(1)))
    return found


# Excerpts rather than commands: an elided command (...), the command's bare name, and a benchmark that
# docs/experiments/cpu-speed.md planned and that was never built.
NOT_COMMANDS = re.compile(r".*\.\.\..*|vanilla-benchmark|vanilla-benchmark train")


def test_every_benchmark_command_in_the_docs_parses(capsys):
    """A command with options parses as written; a benchmark named alone (`vanilla-benchmark loop`) exists."""
    commands = [(where, command) for where, command in documented_commands() if not NOT_COMMANDS.fullmatch(command)]
    assert {"README.md", "docs/benchmarks.md", "benchmarks/speed.py"} <= {where for where, _ in commands}, commands
    benchmarks = benchmark_command.load_benchmarks()
    parser, _ = benchmark_command.build_parser(benchmarks)
    for where, command in commands:
        words = shlex.split(command, comments=True)
        if words[0] == "python":
            words = [words[1].removeprefix("benchmarks/").removesuffix(".py").replace("_", "-"), *words[2:]]
        else:
            words = words[1:]
        if len(words) == 1 and not words[0].startswith("-"):  # the benchmark's name in a sentence
            assert words[0] in benchmarks.BENCHMARKS, f"{where}: {command}: no such benchmark"
            continue
        try:
            parser.parse_args(words)
        except SystemExit as end:
            assert end.code == 0, f"{where}: {command}\n{capsys.readouterr().err}"  # --help ends with 0


def test_a_wrong_documented_command_would_be_found(capsys):
    parser, _ = benchmark_command.build_parser(benchmark_command.load_benchmarks())
    with pytest.raises(SystemExit) as end:
        parser.parse_args(["loop", "--steps", "60"])  # without --data
    assert end.value.code == 2 and "the following arguments are required: --data" in capsys.readouterr().err
    assert ("docs/experiments/cpu-speed.md", "vanilla-benchmark train") in documented_commands()  # found, and excused


@pytest.mark.slow
def test_the_installed_command_runs_a_benchmark_in_fresh_processes(tmp_path):
    """vanilla-benchmark from another folder: benchmarks/ is not on sys.path, so its fresh processes (spawn) load the
    benchmark from the checkout by path (`call_in_fresh_process`)."""
    command = [str(Path(sys.executable).parent / "vanilla-benchmark"), "checkpointing", "--preset", "tiny",
               "--batch-size", "2", "--length", "4"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("vanilla-benchmark checkpointing on ")
    assert "| checkpointing  |" in result.stdout and "checkpointing / plain: activation memory x" in result.stdout
