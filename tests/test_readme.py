"""README.md's and the guides' examples and commands work as written.

The runnable documentation is README.md, docs/guides/*.md and docs/reference/*.md: their ```python blocks run, and the
command lines of their ```bash blocks run against the quickstart's model (or, for training on real data and uploads,
are left to the slow test and to users). The experiment log (docs/experiments) records commands as they were run, on
corpora and machines of their day: it is not run.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_python

README = (REPO_ROOT / "README.md").read_text()
RUNNABLE_DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs" / "guides").glob("*.md")),
                 *sorted((REPO_ROOT / "docs" / "reference").glob("*.md"))]
BIN = Path(sys.executable).parent  # where pip installed the vanilla-* commands
TRAINED = re.compile(r"runs/multi30k")  # a block that needs a trained model folder


def blocks(language: str) -> list[str]:
    """Every ```LANGUAGE block of the runnable docs, README's first, in document order."""
    return [block for doc in RUNNABLE_DOCS
            for block in re.findall(rf"```{language}\n(.*?)```", doc.read_text(), flags=re.S)]


@pytest.mark.slow
def test_readme_python_examples_run_as_written(tmp_path):
    examples = [block for block in blocks("python") if not TRAINED.search(block)]
    assert examples, "the docs have no python example"
    outputs = {}
    for block in examples:
        result = run_python(block, cwd=tmp_path)
        assert result.returncode == 0, f"example failed:\n{block}\n{result.stderr[-3000:]}"
        outputs[block] = result.stdout
    counted = [block for block in examples if "# 63.0M" in block]
    assert len(counted) == 1, "the model reference's example changed: update this test"
    assert "63.0M parameters" in outputs[counted[0]]  # the count the example's comment promises


def readme_commands() -> list[str]:
    """Every command line of the runnable docs' bash blocks, continuation lines joined, comments dropped, each once."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.startswith(("vanilla-", "echo ", "accelerate ")):
                continue  # `python -c '...'` examples span lines; they are Python, run by the test above
            words = shlex.split(line, comments=True)
            if words:
                command = shlex.join(words) if "|" not in line else line.split(" #")[0]
                if command not in commands:
                    commands.append(command)
    return commands


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def quickstart(scale_budget: bool) -> list[str]:
    toy = [c for c in readme_commands() if c.startswith("vanilla-toy-data")]
    train = [c for c in readme_commands() if c.startswith("vanilla-train --preset tiny")]
    assert len(toy) == 1 and len(train) == 1, "README's quickstart changed (or a guide's differs): update this test"
    if scale_budget:  # the same flags, a smaller budget
        train = [train[0].replace("--max-steps 600", "--max-steps 30").replace("--eval-every 200", "--eval-every 10")
                 .replace("--save-every 200", "--save-every 10")]
        assert train[0].count(" 10") >= 2 and "--max-steps 30" in train[0]
    return toy + train


def on_the_toy_model(text: str) -> str:
    """A command or example written for runs/multi30k and Multi30k's files, pointed at the quickstart's."""
    text = re.sub(r"runs/multi30k-(en-de|de-en)", "runs/toy", text)  # the recipe's runs (checkpoints)
    text = text.replace("../shared/data/multi30k/val.", "data/toy/valid.")
    return text.replace("runs/multi30k", "runs/toy").replace(
        "../shared/data/multi30k/test_2016_flickr.en", "data/toy/test.en").replace(
        "../shared/data/multi30k/test_2016_flickr.de", "data/toy/test.de")


@pytest.mark.slow
def test_readme_commands_run_as_written_on_the_quickstart_model(tmp_path):
    """The quickstart (with a 30-update budget), then every command and Python example of the docs that uses a
    trained folder, run against the quickstart's folder (runs/toy for runs/multi30k, its test file for Multi30k's):
    translate (the pipeline too), visualize, explain, figures, the Hub dry run, export, serving. Training runs on
    real data and uploads are left to the slow test and users."""
    toy, train = quickstart(scale_budget=True)
    for command in (toy, train + " --card-dataset bentrevett/multi30k"):  # as runs/multi30k's command (below)
        result = run(command, tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    assert (tmp_path / "runs" / "toy" / "model.safetensors").is_file()
    # The toy run stands in for runs/multi30k, whose command names its Hub dataset for the model card too.
    multi30k = [c for c in readme_commands() if re.search(r"--output-dir runs/multi30k( |$)", c)
                and c.startswith("vanilla-train")]
    assert len(multi30k) == 1 and "--card-dataset bentrevett/multi30k" in multi30k[0]
    ran = []
    for command in readme_commands():
        uses_a_model = "runs/multi30k" in command and "vanilla-" in command
        if not (uses_a_model or command.startswith(("vanilla-figures", "vanilla-train-tokenizer --help"))):
            continue
        if "--private" in command or command.startswith(("vanilla-finetune", "vanilla-train ", "accelerate")):
            continue  # an upload needs the Hub; training on Multi30k takes 10 minutes; tests/training/test_finetune.py
        command = on_the_toy_model(command)
        result = run(command, tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        ran.append(command.split()[0] if not command.startswith("echo") else "echo | vanilla-translate")
    assert {"vanilla-visualize", "vanilla-explain", "vanilla-figures", "vanilla-translate",
            "echo | vanilla-translate", "vanilla-push", "vanilla-train-tokenizer", "vanilla-export",
            "vanilla-benchmark"} <= set(ran), ran
    # The CTranslate2 folder translates like the model: the same lines as hyp.de
    assert (tmp_path / "hyp-ct2.de").read_text() == (tmp_path / "hyp.de").read_text()
    assert len((tmp_path / "hyp.de").read_text().splitlines()) == len((tmp_path / "data/toy/test.en").read_text().splitlines())
    assert (tmp_path / "upload" / "README.md").is_file()
    # README's "translate with a trained model" example, on the trained folder
    trained_examples = [block for block in blocks("python") if TRAINED.search(block)]
    assert trained_examples, "README no longer translates with a trained folder: update this test"
    for block in trained_examples:
        result = run_python(on_the_toy_model(block), cwd=tmp_path)
        assert result.returncode == 0, f"example failed:\n{block}\n{result.stderr[-3000:]}"
        assert "translation_text" in result.stdout, result.stdout


@pytest.mark.slow
def test_readme_quickstart_as_written_learns_the_toy_corpus(tmp_path):
    """The quickstart exactly as written (600 updates, about 2 minutes on 2 cores) reaches a test BLEU near 100."""
    for command in quickstart(scale_budget=False):
        result = run(command, tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    summary = json.loads((tmp_path / "runs" / "toy" / "training_summary.json").read_text())
    assert summary["step"] == 600 and summary["averaged_checkpoints"] == 2
    assert summary["test"]["bleu"] >= 90, summary["test"]
