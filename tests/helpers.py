"""Helpers shared by the tests: paths, the real-data skip, fresh-process runs, random batches.

Import them as `from tests.helpers import ...` (tests/ is a package); fixtures live in tests/conftest.py.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real corpora (Multi30k, WMT news test sets) live beside the repository; tests that need them skip without them.
SHARED_DATA = Path(os.environ.get("VANILLA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MULTI30K = SHARED_DATA / "multi30k"
needs_multi30k = pytest.mark.skipif(
    not (MULTI30K / "train.en").is_file(), reason=f"real data not found at {MULTI30K} (set VANILLA_SHARED_DATA)"
)

# Prefix for code run in a fresh process as a user without this package (a Hub user): the package is installed
# here, so its import is blocked, and checked to be.
WITHOUT_PACKAGE = """
import sys
sys.modules["modeling_vanilla"] = None
try:
    import modeling_vanilla
    raise SystemExit("modeling_vanilla is still importable")
except ImportError:
    pass
"""


def run_python(code: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    """Run `code` in a fresh Python process; returns the completed process (stdout, stderr, returncode)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def random_batch(vocab_size: int, batch_size: int = 3, source_length: int = 9, target_length: int = 7, pad: int = 0):
    """Random source/target ids (no special ids below 4) with right padding of different lengths in the source."""
    input_ids = torch.randint(4, vocab_size, (batch_size, source_length))
    attention_mask = torch.ones_like(input_ids)
    for row in range(1, batch_size):
        pad_from = source_length - 2 * row
        input_ids[row, pad_from:] = pad
        attention_mask[row, pad_from:] = 0
    decoder_input_ids = torch.randint(4, vocab_size, (batch_size, target_length))
    return input_ids, attention_mask, decoder_input_ids


def forward_kwargs():
    """A random tiny-vocabulary batch (`random_batch(99)`) as the keyword arguments of a forward call."""
    input_ids, attention_mask, decoder_input_ids = random_batch(99)
    return dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)


# A tiny model that copies its input, and its tokenizer: for the attention maps and the explain walk.

CORPUS = [
    "the cat sat on the mat", "a dog runs in the park", "the dog sat on the cat", "a cat runs in the park",
    "die Katze sitzt auf der Matte", "ein Hund läuft im Park", "der Hund sitzt auf der Katze",
    "eine Katze läuft im Park",
]
SOURCE = "the cat sat on the mat"
TARGET = "die Katze sitzt"
TOKEN_LIMIT = 24  # the tokenizer's model_max_length: the limit of a model with sinusoidal positions


def make_tokenizer():
    from modeling_vanilla.data.tokenization import train_bpe_tokenizer

    return train_bpe_tokenizer(CORPUS * 4, vocab_size=300, model_max_length=TOKEN_LIMIT)


def tiny_model_for(tokenizer, **overrides):
    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    config = VanillaTransformerConfig.tiny(vocab_size=len(tokenizer), dropout=0.0, **overrides)
    return VanillaTransformerForConditionalGeneration(config).eval()


def save_copy_model(folder, tokenizer):
    """A tiny model trained for a few dozen steps to copy its input, saved with its tokenizer into `folder`."""
    torch.manual_seed(0)
    model = tiny_model_for(tokenizer).train()
    batch = tokenizer(CORPUS, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # As the loss nears 0 the softmax fills with denormal floats, which are up to 100 times slower on CPU.
    torch.set_flush_denormal(True)
    try:
        for _ in range(60):
            loss = model(**batch, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_flush_denormal(False)  # PyTorch's default
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


# The translation pipeline: what reaches generate(), and what comes out.


def record_generate(model, monkeypatch) -> list[dict]:
    """Each model.generate call: its keyword arguments, input ids and output ids."""
    calls, original = [], model.generate

    def generate(*args, **kwargs):
        output = original(*args, **kwargs)
        calls.append({"kwargs": kwargs, "input_ids": kwargs["input_ids"], "output": output})
        return output

    monkeypatch.setattr(model, "generate", generate)
    return calls


def texts(outputs) -> list[str]:
    """The translation texts of a pipeline's output, checked to be one {"translation_text": ...} dict each."""
    assert all(isinstance(output, dict) and set(output) == {"translation_text"} for output in outputs), outputs
    return [output["translation_text"] for output in outputs]
