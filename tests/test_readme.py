"""README.md's examples and commands work as written."""

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
BIN = Path(sys.executable).parent  # where pip installed the vanilla-* commands


def test_readme_python_examples_run_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README.md has no python example"
    outputs = []
    for block in blocks:
        result = run_python(block, cwd=tmp_path)
        assert result.returncode == 0, f"README example failed:\n{block}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    assert "63.0M parameters" in outputs[0]  # the count the example's comment promises


def readme_commands() -> list[str]:
    """Every command line of README's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.startswith(("vanilla-", "echo ", "accelerate ")):
                continue  # `python -c '...'` examples span lines; they are Python, run by the test above
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words) if "|" not in line else line.split(" #")[0])
    return commands


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def quickstart(scale_budget: bool) -> list[str]:
    toy = [c for c in readme_commands() if c.startswith("vanilla-toy-data")]
    train = [c for c in readme_commands() if c.startswith("vanilla-train --preset tiny")]
    assert len(toy) == 1 and len(train) == 1, "README's quickstart changed: update this test"
    if scale_budget:  # the same flags, a smaller budget
        train = [train[0].replace("--max-steps 600", "--max-steps 30").replace("--eval-every 200", "--eval-every 10")
                 .replace("--save-every 200", "--save-every 10")]
        assert train[0].count(" 10") >= 2 and "--max-steps 30" in train[0]
    return toy + train


def test_readme_commands_run_as_written_on_the_quickstart_model(tmp_path):
    """The quickstart (with a 30-update budget), then every README command that uses a trained folder, run against
    the quickstart's folder (runs/toy for runs/multi30k, its test file for Multi30k's): translate, visualize,
    explain, figures, the Hub dry run. Training runs on real data and uploads are left to the slow test and users."""
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
        command = re.sub(r"runs/multi30k-(en-de|de-en)", "runs/toy", command)  # the recipe's runs (checkpoints)
        command = command.replace("../shared/data/multi30k/val.", "data/toy/valid.")
        command = command.replace("runs/multi30k", "runs/toy").replace(
            "../shared/data/multi30k/test_2016_flickr.en", "data/toy/test.en").replace(
            "../shared/data/multi30k/test_2016_flickr.de", "data/toy/test.de")
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


@pytest.mark.slow
def test_readme_quickstart_as_written_learns_the_toy_corpus(tmp_path):
    """The quickstart exactly as written (600 updates, about 2 minutes on 2 cores) reaches a test BLEU near 100."""
    for command in quickstart(scale_budget=False):
        result = run(command, tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    summary = json.loads((tmp_path / "runs" / "toy" / "training_summary.json").read_text())
    assert summary["step"] == 600 and summary["averaged_checkpoints"] == 2
    assert summary["test"]["bleu"] >= 90, summary["test"]
