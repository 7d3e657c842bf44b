"""The Hub format and the Hub path, without the network.

- What `save_pretrained` writes: the weights, the model and pipeline code with `auto_map` and `custom_pipelines`
  (door 1 of the translation pipeline), also through `push_to_hub=True`; a folder in the previous version's layout
  still loads.
- Remote code: a saved folder, and a repo id in a local Hugging Face cache, load in a fresh process where this
  package cannot be imported, as a Hub user's would.
- scripts/push_to_hub.py: the upload goes through huggingface_hub's real `HfApi` code path up to its two network
  calls, `create_repo` and `upload_folder`, which are replaced by recorders. The download path puts the uploaded
  folder into a local Hugging Face cache (HF_HUB_CACHE/models--user--name/refs/main, snapshots/<revision>/...) and
  loads it by repo id with HF_HUB_OFFLINE=1.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

import modeling_vanilla.pipeline_translation
from modeling_vanilla import TranslationPipeline, VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from modeling_vanilla.data.tokenization import train_bpe_tokenizer
from tests.helpers import REPO_ROOT, WITHOUT_PACKAGE, random_batch, run_python

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
    """vanilla-push's namespace (modeling_vanilla/cli/push_to_hub.py): `ModelCardError`, `card_metadata`, ..., with
    `main` being the command that raises its errors (the console `main` turns them into one line and exit 1)."""
    from modeling_vanilla.cli import push_to_hub as command

    return {**vars(command), "main": command.run}


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

    def repo_info(self, repo_id, **kwargs):  # no such repository yet (vanilla-push refuses an existing one)
        request = httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
        raise RepositoryNotFoundError("404", response=httpx2.Response(404, request=request))

    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    argv = [str(model_dir), "--repo-id", REPO_ID, "--private", "--commit-message", "First upload", *CARD_ARGS]
    commit = push_to_hub()["main"](argv)

    assert calls["create_repo"] == {"repo_id": REPO_ID, "private": True, "exist_ok": False, "repo_type": "model"}
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


@pytest.mark.slow
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


# What save_pretrained writes: the model code, `auto_map`, and door 1 of the translation pipeline


def test_save_pretrained_writes_code_and_auto_map(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vanilla_transformer"
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_vanilla.VanillaTransformerForConditionalGeneration"
    assert config["auto_map"]["AutoConfig"] == "configuration_vanilla.VanillaTransformerConfig"
    assert (tmp_path / "modeling_vanilla.py").exists() and (tmp_path / "configuration_vanilla.py").exists()
    assert (tmp_path / "model.safetensors").exists()
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["num_beams"] == 4 and generation["length_penalty"] == 0.6


def test_save_pretrained_copies_the_pipeline_file_and_declares_it(tiny_model, tmp_path):
    """The model's save_pretrained writes door 1; the config in memory, and the config the installed package loads
    back, carry no declaration (door 2 needs none, and pipeline() would demand trust_remote_code for one)."""
    tiny_model.save_pretrained(tmp_path)
    source = Path(modeling_vanilla.pipeline_translation.__file__)
    assert (tmp_path / source.name).read_bytes() == source.read_bytes()
    declared = json.loads((tmp_path / "config.json").read_text())["custom_pipelines"]
    module, _, name = declared["translation"]["impl"].rpartition(".")
    assert (module + ".py", name) == (source.name, TranslationPipeline.__name__)
    assert declared == {"translation": {"impl": "pipeline_translation.TranslationPipeline",
                                        "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}}
    assert "custom_pipelines" not in tiny_model.config.to_dict()
    assert "custom_pipelines" not in AutoConfig.from_pretrained(tmp_path).to_dict()
    # The configuration file beside the weights imports nothing from the package: it runs on its own.
    assert "from ." not in (tmp_path / "configuration_vanilla.py").read_text()


@pytest.mark.parametrize("how", ["save_pretrained(push_to_hub=True)", "push_to_hub()"])
def test_pushing_to_the_hub_uploads_the_pipeline_file_and_its_declaration(tiny_model, tmp_path, monkeypatch, how):
    """transformers' own upload paths, up to the network: `save_pretrained(push_to_hub=True)` uploads only the files
    written during the save, `push_to_hub()` a temporary folder. Both must carry door 1."""
    commits = []

    def create_repo(self, repo_id, **kwargs):
        return SimpleNamespace(repo_id=repo_id)

    def create_commit(self, repo_id, operations, **kwargs):
        commits.append({op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations})

    def model_card(*args, **kwargs):  # instead of downloading the repo's card
        return ModelCard("---\nlibrary_name: transformers\n---\n")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr("transformers.modeling_utils.create_and_tag_model_card", model_card)
    monkeypatch.setattr("transformers.utils.hub.create_and_tag_model_card", model_card)
    if how == "push_to_hub()":
        tiny_model.push_to_hub(REPO_ID)
    else:
        tiny_model.save_pretrained(tmp_path / "tiny-transformer", push_to_hub=True, repo_id=REPO_ID)
    [uploaded] = commits
    source = Path(modeling_vanilla.pipeline_translation.__file__)
    assert uploaded[source.name] == source.read_bytes()
    assert {"config.json", "configuration_vanilla.py", "modeling_vanilla.py", "model.safetensors"} <= set(uploaded)
    config = json.loads(uploaded["config.json"])
    assert config["custom_pipelines"]["translation"]["impl"] == "pipeline_translation.TranslationPipeline"
    assert "AutoModelForSeq2SeqLM" in config["auto_map"]


# A folder written by the previous version still loads
#
# The layout that the previous version (commit 6b491f1, when the configuration wrote `custom_pipelines`) saved for
# VanillaTransformerConfig.tiny(vocab_size=300, d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1,
# num_decoder_layers=1, max_position_embeddings=64), pinned as data: config.json and generation_config.json as it
# wrote them, and the names and shapes of the tensors in model.safetensors (the tied decoder embedding and lm_head
# are saved once, as the encoder embedding). The weights are random here; the tokenizer is trained in the test.
PREVIOUS_CONFIG = {
    "activation_dropout": 0.0,
    "architectures": ["VanillaTransformerForConditionalGeneration"],
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_vanilla.VanillaTransformerConfig",
        "AutoModelForSeq2SeqLM": "modeling_vanilla.VanillaTransformerForConditionalGeneration",
    },
    "bos_token_id": 1,
    "custom_pipelines": {
        "translation": {"impl": "pipeline_translation.TranslationPipeline", "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}
    },
    "d_ff": 32,
    "d_k": None,
    "d_model": 16,
    "d_v": None,
    "decoder_start_token_id": 1,
    "dropout": 0.1,
    "dtype": "float32",
    "eos_token_id": 2,
    "is_encoder_decoder": True,
    "layer_norm": "post",
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 64,
    "model_type": "vanilla_transformer",
    "num_decoder_layers": 1,
    "num_encoder_layers": 1,
    "num_heads": 2,
    "pad_token_id": 0,
    "positional_encoding": "sinusoidal",
    "scale_embedding": True,
    "tie_word_embeddings": True,
    "transformers_version": "5.24.0",
    "use_cache": True,
    "vocab_size": 300,
}
PREVIOUS_GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 1,
    "decoder_start_token_id": 1,
    "eos_token_id": 2,
    "length_penalty": 0.6,
    "num_beams": 4,
    "output_attentions": False,
    "output_hidden_states": False,
    "pad_token_id": 0,
    "transformers_version": "5.24.0",
    "use_cache": True,
}
PREVIOUS_WEIGHTS = {
    "model.decoder.layers.0.encoder_attn.k_proj.weight": (16, 16),
    "model.decoder.layers.0.encoder_attn.out_proj.weight": (16, 16),
    "model.decoder.layers.0.encoder_attn.q_proj.weight": (16, 16),
    "model.decoder.layers.0.encoder_attn.v_proj.weight": (16, 16),
    "model.decoder.layers.0.encoder_attn_layer_norm.bias": (16,),
    "model.decoder.layers.0.encoder_attn_layer_norm.weight": (16,),
    "model.decoder.layers.0.ffn.fc1.bias": (32,),
    "model.decoder.layers.0.ffn.fc1.weight": (32, 16),
    "model.decoder.layers.0.ffn.fc2.bias": (16,),
    "model.decoder.layers.0.ffn.fc2.weight": (16, 32),
    "model.decoder.layers.0.final_layer_norm.bias": (16,),
    "model.decoder.layers.0.final_layer_norm.weight": (16,),
    "model.decoder.layers.0.self_attn.k_proj.weight": (16, 16),
    "model.decoder.layers.0.self_attn.out_proj.weight": (16, 16),
    "model.decoder.layers.0.self_attn.q_proj.weight": (16, 16),
    "model.decoder.layers.0.self_attn.v_proj.weight": (16, 16),
    "model.decoder.layers.0.self_attn_layer_norm.bias": (16,),
    "model.decoder.layers.0.self_attn_layer_norm.weight": (16,),
    "model.encoder.embed_tokens.weight": (300, 16),
    "model.encoder.layers.0.ffn.fc1.bias": (32,),
    "model.encoder.layers.0.ffn.fc1.weight": (32, 16),
    "model.encoder.layers.0.ffn.fc2.bias": (16,),
    "model.encoder.layers.0.ffn.fc2.weight": (16, 32),
    "model.encoder.layers.0.final_layer_norm.bias": (16,),
    "model.encoder.layers.0.final_layer_norm.weight": (16,),
    "model.encoder.layers.0.self_attn.k_proj.weight": (16, 16),
    "model.encoder.layers.0.self_attn.out_proj.weight": (16, 16),
    "model.encoder.layers.0.self_attn.q_proj.weight": (16, 16),
    "model.encoder.layers.0.self_attn.v_proj.weight": (16, 16),
    "model.encoder.layers.0.self_attn_layer_norm.bias": (16,),
    "model.encoder.layers.0.self_attn_layer_norm.weight": (16,),
}
# The previous version's code files sat beside the weights for remote-code users. With the package installed they
# must not run: here they raise if anything imports them.
PREVIOUS_CODE_FILES = ("configuration_vanilla.py", "modeling_vanilla.py", "pipeline_translation.py")
NOT_TO_BE_RUN = 'raise RuntimeError("the previous version\'s code in the folder ran, instead of the installed package")\n'


@pytest.fixture(scope="module")
def previous_version_dir(tmp_path_factory) -> tuple[Path, dict]:
    """A folder in the previous version's layout, and the tensors written into it."""
    folder = tmp_path_factory.mktemp("previous-version")
    (folder / "config.json").write_text(json.dumps(PREVIOUS_CONFIG, indent=2, sort_keys=True) + "\n")
    (folder / "generation_config.json").write_text(json.dumps(PREVIOUS_GENERATION_CONFIG, indent=2) + "\n")
    for name in PREVIOUS_CODE_FILES:
        (folder / name).write_text(NOT_TO_BE_RUN)
    generator = torch.Generator().manual_seed(0)
    tensors = {key: torch.randn(shape, generator=generator) for key, shape in PREVIOUS_WEIGHTS.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer = train_bpe_tokenizer(SENTENCES * 4 + ["Ein Hund rennt.", "Zwei Männer spielen Fußball."] * 4,
                                    vocab_size=300, model_max_length=64)
    assert len(tokenizer) == PREVIOUS_CONFIG["vocab_size"]
    tokenizer.save_pretrained(folder)
    return folder, tensors


def test_a_folder_written_by_the_previous_version_still_loads(previous_version_dir, tmp_path):
    folder, written = previous_version_dir
    model, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
    assert type(model) is VanillaTransformerForConditionalGeneration  # the installed class, not the folder's code
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    state = model.state_dict()
    # The previous version stored the embedding as the encoder's; it is now `shared`, which both stacks are tied to.
    assert set(state) == set(written) | {"model.shared.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}
    for key, tensor in written.items():
        assert torch.equal(state[key], tensor), key
    embedding = model.get_input_embeddings().weight
    assert model.model.decoder.embed_tokens.weight is embedding and model.lm_head.weight is embedding
    assert model.generation_config.num_beams == 4 and model.generation_config.length_penalty == 0.6

    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings = dict(num_beams=2, max_new_tokens=5)
    expected = []
    for sentence in SENTENCES:
        ids = model.generate(**tokenizer(sentence, return_tensors="pt"), **settings)
        assert ids[0, 0] == 1 and ids.shape[1] <= 1 + 5 and int(ids.max()) < 300
        expected += tokenizer.batch_decode(ids, skip_special_tokens=True)

    translator = pipeline("translation", model=str(folder))  # no trust_remote_code: the installed pipeline
    assert type(translator) is TranslationPipeline
    assert [output["translation_text"] for output in translator(SENTENCES, **settings)] == expected

    # Saved again, it has the current layout, which differs from the previous one in one name: section 3.4's matrix
    # is stored as the bare model's `shared` (issue 15), no longer as the encoder's embedding.
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert {key: config[key] for key in PREVIOUS_CONFIG if key != "transformers_version"} == {
        key: value for key, value in PREVIOUS_CONFIG.items() if key != "transformers_version"
    }
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as saved:
        current = dict(PREVIOUS_WEIGHTS)
        current["model.shared.weight"] = current.pop("model.encoder.embed_tokens.weight")
        assert {key: tuple(saved.get_slice(key).get_shape()) for key in saved.keys()} == current
    assert all((tmp_path / name).is_file() for name in PREVIOUS_CODE_FILES)


# Remote code: without this package


@pytest.mark.slow
def test_remote_code_round_trip_in_a_fresh_process_without_the_package(tiny_model, tmp_path):
    input_ids, attention_mask, _ = random_batch(99)
    expected = tiny_model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=10)
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask}, tmp_path / "inputs.pt")
    code = WITHOUT_PACKAGE + f"""
import torch
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
inputs = torch.load({str(tmp_path / "inputs.pt")!r})
out = model.generate(**inputs, max_new_tokens=10)
torch.save(out, {str(tmp_path / "out.pt")!r})
"""
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)



@pytest.mark.slow
@pytest.mark.parametrize("origin", ["folder", "repo id"])
def test_a_remote_code_model_saved_again_keeps_its_pipeline(model_dir, tmp_path, origin):
    """Without the package, the model's code runs from transformers' module cache, where the pipeline file is not
    beside it: save_pretrained takes it from the folder, or the cached Hub repo, the model was loaded from."""
    source = str(model_dir)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    if origin == "repo id":
        revision = "0123456789abcdef0123456789abcdef01234567"
        repo_cache = tmp_path / "hub" / f"models--{REPO_ID.replace('/', '--')}"
        (repo_cache / "refs").mkdir(parents=True)
        (repo_cache / "refs" / "main").write_text(revision)
        shutil.copytree(model_dir, repo_cache / "snapshots" / revision)
        source, env["HF_HUB_CACHE"] = REPO_ID, str(tmp_path / "hub")
    code = WITHOUT_PACKAGE + f"""
import json, os
from transformers import AutoModelForSeq2SeqLM, pipeline
model = AutoModelForSeq2SeqLM.from_pretrained({source!r}, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
model.save_pretrained({str(tmp_path / "again")!r})
translator = pipeline(model={str(tmp_path / "again")!r}, tokenizer={source!r}, trust_remote_code=True)
result = {{"files": sorted(os.listdir({str(tmp_path / "again")!r})), "pipeline": type(translator).__module__,
           "output": translator("A dog runs.", max_new_tokens=3)}}
json.dump(result, open({str(tmp_path / "result.json")!r}, "w"))
"""
    process = run_python(code, cwd=tmp_path, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert "pipeline_translation.py" in result["files"]
    assert (tmp_path / "again" / "pipeline_translation.py").read_bytes() == (model_dir / "pipeline_translation.py").read_bytes()
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["custom_pipelines"] == PREVIOUS_CONFIG["custom_pipelines"]
    assert result["pipeline"].startswith("transformers_modules") and isinstance(result["output"][0]["translation_text"], str)

@pytest.mark.slow
def test_import_touches_no_network(tmp_path):
    code = """
import socket
def refuse(*args, **kwargs):
    raise AssertionError("network access during import")
socket.socket.connect = refuse
socket.create_connection = refuse
import modeling_vanilla
from transformers import AutoConfig
assert AutoConfig.for_model("vanilla_transformer").model_type == "vanilla_transformer"
"""
    result = run_python(code, cwd=REPO_ROOT, env={"HF_HUB_OFFLINE": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
