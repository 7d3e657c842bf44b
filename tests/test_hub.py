"""scripts/push_to_hub.py and the Hub download path, without the network.

The upload goes through huggingface_hub's real `HfApi` code path up to its two network calls, `create_repo` and
`upload_folder`, which are replaced by recorders. The download path puts the uploaded folder into a local Hugging
Face cache (HF_HUB_CACHE/models--user--name/refs/main, snapshots/<revision>/...) and loads it by repo id with
HF_HUB_OFFLINE=1, in a fresh process where this package cannot be imported, as a Hub user would.
"""

import json
import runpy
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tests.helpers import REPO_ROOT, WITHOUT_PACKAGE, run_python
from huggingface_hub import HfApi
from transformers import pipeline

from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from modeling_vanilla.tokenization import train_bpe_tokenizer

REPO_ID = "user/tiny-transformer"
CARD_ARGS = ["--language", "en", "de", "--dataset", "bentrevett/multi30k", "--bleu", "12.3"]
SENTENCES = ["A dog runs.", "Two men play football in the park."]
COMPLETE_CARD = """---
language: [en, de]
license: apache-2.0
library_name: transformers
pipeline_tag: translation
tags: [translation, vanilla-transformer]
datasets: [bentrevett/multi30k]
metrics: [bleu, chrf]
model-index:
- name: tiny-transformer
  results:
  - task: {type: translation}
    dataset: {type: bentrevett/multi30k, name: Multi30k}
    metrics:
    - {type: bleu, value: 12.3}
---

# tiny-transformer

Written by hand for this test: kept as it is.
"""


def push_to_hub():
    """A fresh run of scripts/push_to_hub.py's namespace: `main(argv)`, `ModelCardError`, ..."""
    return runpy.run_path(str(REPO_ROOT / "scripts" / "push_to_hub.py"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A trained folder as save_pretrained writes it: a tiny (untrained) model and its tokenizer, no model card."""
    tokenizer = train_bpe_tokenizer(SENTENCES * 4 + ["Ein Hund rennt.", "Zwei Männer spielen Fußball."] * 4,
                                    vocab_size=300, model_max_length=64)
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(vocab_size=len(tokenizer)))
    folder = tmp_path_factory.mktemp("trained")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dry_run_dir(model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dry-run") / "upload"
    push_to_hub()["main"]([str(model_dir), "--repo-id", REPO_ID, "--dry-run", str(folder), *CARD_ARGS])
    return folder


def test_dry_run_writes_a_complete_hub_folder(dry_run_dir):
    assert sorted(path.name for path in dry_run_dir.iterdir()) == [
        "README.md", "config.json", "configuration_vanilla.py", "generation_config.json", "model.safetensors",
        "modeling_vanilla.py", "pipeline_translation.py", "tokenizer.json", "tokenizer_config.json",
    ]
    config = json.loads((dry_run_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_vanilla.VanillaTransformerForConditionalGeneration"
    assert config["custom_pipelines"]["translation"]["impl"] == "pipeline_translation.TranslationPipeline"
    assert json.loads((dry_run_dir / "generation_config.json").read_text())["num_beams"] == 4

    metadata = push_to_hub()["card_metadata"]((dry_run_dir / "README.md").read_text())
    assert metadata["language"] == ["en", "de"] and metadata["license"] == "apache-2.0"
    assert metadata["datasets"] == ["bentrevett/multi30k"] and "translation" in metadata["tags"]
    assert metadata["pipeline_tag"] == "translation" and metadata["library_name"] == "transformers"
    assert "bleu" in metadata["metrics"]
    result = metadata["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "bleu", "value": 12.3}
    assert result["dataset"] == {"type": "bentrevett/multi30k", "name": "bentrevett/multi30k"}
    assert "# tiny-transformer" in (dry_run_dir / "README.md").read_text()


def test_upload_sends_the_dry_run_folder_through_create_repo_and_upload_folder(
    model_dir, dry_run_dir, monkeypatch
):
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        calls["upload_folder"] = {**kwargs, "files": {path.name: path.read_bytes() for path in folder.iterdir()}}
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/0123abc")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    argv = [str(model_dir), "--repo-id", REPO_ID, "--private", "--commit-message", "First upload", *CARD_ARGS]
    commit = push_to_hub()["main"](argv)

    assert calls["create_repo"] == {"repo_id": REPO_ID, "private": True, "exist_ok": True, "repo_type": "model"}
    upload = calls["upload_folder"]
    assert (upload["repo_id"], upload["repo_type"], upload["commit_message"]) == (REPO_ID, "model", "First upload")
    assert upload["files"] == {path.name: path.read_bytes() for path in dry_run_dir.iterdir()}  # byte for byte
    assert not Path(upload["folder_path"]).exists()  # the staging folder is removed
    assert commit.commit_url.endswith("/commit/0123abc")


def test_a_model_card_in_the_folder_is_kept_as_it_is(model_dir, tmp_path):
    folder = tmp_path / "trained"
    shutil.copytree(model_dir, folder)
    (folder / "README.md").write_text(COMPLETE_CARD)
    push_to_hub()["main"]([str(folder), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "upload")])
    assert (tmp_path / "upload" / "README.md").read_text() == COMPLETE_CARD


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("datasets: [bentrevett/multi30k]\n", "", "field 'datasets' is missing or empty"),
        ("language: [en, de]", "language: []", "field 'language' is missing or empty"),
        ("license: apache-2.0\n", "", "field 'license' is missing or empty"),
        ("pipeline_tag: translation", "pipeline_tag: text-generation", "field 'pipeline_tag' must be 'translation'"),
        ("metrics: [bleu, chrf]", "metrics: [chrf]", "field 'metrics' must list bleu"),
        ("value: 12.3", "value: null", "field 'model-index[0].results[0].metrics[0].value' (BLEU) is None"),
        ("    dataset: {type: bentrevett/multi30k, name: Multi30k}\n", "",
         "field 'model-index[0].results[0].dataset.type' is missing"),
    ],
)
def test_an_incomplete_model_card_is_refused_naming_the_field(model_dir, tmp_path, old, new, message):
    folder = tmp_path / "trained"
    shutil.copytree(model_dir, folder)
    assert old in COMPLETE_CARD
    (folder / "README.md").write_text(COMPLETE_CARD.replace(old, new))
    script = push_to_hub()
    refused = "not uploading: the model card .*README.md is incomplete"
    with pytest.raises(script["ModelCardError"], match=refused) as error:
        script["main"]([str(folder), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "upload")])
    assert message in str(error.value)
    assert not (tmp_path / "upload").exists()  # refused before writing anything


def test_without_a_card_the_template_needs_language_dataset_and_bleu(model_dir, tmp_path):
    script = push_to_hub()
    with pytest.raises(script["ModelCardError"], match="pass --language / --dataset / --bleu") as error:
        script["main"]([str(model_dir), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "upload")])
    for field in ("'language'", "'datasets'", "(BLEU) is None"):
        assert field in str(error.value)


def test_a_folder_without_a_tokenizer_is_refused(model_dir, tmp_path):
    folder = tmp_path / "trained"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(FileNotFoundError, match="has no tokenizer: save it there with tokenizer.save_pretrained"):
        push_to_hub()["main"]([str(folder), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "upload"), *CARD_ARGS])


def test_the_hub_repo_loads_by_repo_id_offline_in_a_fresh_process_without_the_package(dry_run_dir, tmp_path):
    # The local cache layout huggingface_hub downloads into.
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(revision)
    shutil.copytree(dry_run_dir, repo_cache / "snapshots" / revision)

    translator = pipeline("translation", model=str(dry_run_dir))  # door 2, same weights
    expected = [output["translation_text"] for output in translator(SENTENCES, max_new_tokens=8)]
    code = WITHOUT_PACKAGE + f"""
import json
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

repo, sentences = {REPO_ID!r}, {SENTENCES!r}
model = AutoModelForSeq2SeqLM.from_pretrained(repo, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(repo)
ids = model.generate(**tokenizer(sentences, padding=True, return_tensors="pt"), max_new_tokens=8)
result = {{"model_module": type(model).__module__, "generate": tokenizer.batch_decode(ids, skip_special_tokens=True)}}
for name, translator in (("by_task", pipeline("translation", model=repo, trust_remote_code=True)),
                         ("by_config", pipeline(model=repo, trust_remote_code=True))):
    outputs = translator(sentences, batch_size=2, max_new_tokens=8)
    result[name] = [type(translator).__module__, [output["translation_text"] for output in outputs]]
json.dump(result, open({str(tmp_path / "result.json")!r}, "w"))
"""
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    process = run_python(code, cwd=tmp_path, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["model_module"].startswith("transformers_modules")
    assert result["generate"] == expected
    for name in ("by_task", "by_config"):
        assert result[name][0].startswith("transformers_modules") and result[name][1] == expected
