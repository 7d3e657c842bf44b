"""pipeline("translation") for the models transformers 4's translation pipeline served: Marian / opus-mt, NLLB,
M2M100, mBART-50, T5, and the task names `translation_XX_to_YY` (issue 17).

Every model is a tiny random one (width 16, one layer) built here, with a tokenizer assembled here:
- Marian: a byte-level BPE `PreTrainedTokenizerFast` trained on a few sentences (the pipeline treats Marian's
  sentencepiece tokenizer the same way: plain text in, no language codes);
- NLLB: transformers' own `NllbTokenizer`, built from a small vocabulary with three language codes;
- M2M100: transformers' own `M2M100Tokenizer`, on a sentencepiece model trained here (skipped without sentencepiece);
- mBART-50: transformers' own `MBart50Tokenizer`, on its built-in minimal vocabulary with all 52 language codes;
- T5: transformers' own `T5Tokenizer`, built from a small Unigram vocabulary.
The random outputs mean nothing: the tests check what reaches `generate()` (recorded by a wrapper): the language codes
in the input ids, the forced first token, the task prefix, the task-specific settings, and the output format.
"""

import json
import logging

import pytest
import torch
from transformers import (
    M2M100Config,
    M2M100ForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    MBart50Tokenizer,
    MBartConfig,
    MBartForConditionalGeneration,
    NllbTokenizer,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
    TextClassificationPipeline,
    pipeline,
)
from transformers.pipelines import PIPELINE_REGISTRY, REMOVED_TASKS, check_task

import modeling_vanilla
from modeling_vanilla import TranslationPipeline, enable_translation_pipeline
from modeling_vanilla.data.tokenization import train_bpe_tokenizer
from tests.helpers import REPO_ROOT, record_generate, run_python, texts

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64, dropout=0.0)
FRENCH = ["Ce cours est produit par Hugging Face.", "Un chien court dans le parc.", "Le chat dort sur le tapis."]
NLLB_CODES = ["eng_Latn", "fra_Latn", "deu_Latn", "zho_Hans", "zho_Hant"]
T5_TASKS = {
    "translation_en_to_de": {"early_stopping": True, "max_length": 9, "num_beams": 2,
                             "prefix": "translate English to German: "},
    "translation_en_to_ro": {"max_length": 7, "num_beams": 3, "prefix": "translate English to Romanian: "},
}


# The models and tokenizers


@pytest.fixture(scope="module")
def marian():
    tokenizer = train_bpe_tokenizer(FRENCH * 4 + ["This course is produced by Hugging Face."] * 4, vocab_size=300,
                                    model_max_length=64)
    config = MarianConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id, **TINY)
    return MarianMTModel(config).eval(), tokenizer


@pytest.fixture(scope="module")
def marian_dir(marian, tmp_path_factory):
    folder = tmp_path_factory.mktemp("opus-mt-fr-en")
    model, tokenizer = marian
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def nllb_tokenizer(codes=NLLB_CODES) -> NllbTokenizer:
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    merges = [("▁", "c"), ("▁c", "h"), ("a", "t"), ("▁ch", "at"), ("i", "e"), ("ie", "n"), ("▁ch", "ien")]
    for piece in ["▁", "c", "h", "a", "t", "i", "e", "n"] + ["".join(merge) for merge in merges]:
        vocab[piece] = len(vocab)
    return NllbTokenizer(vocab=vocab, merges=merges, extra_special_tokens=list(codes), src_lang="eng_Latn")


def m2m_model(vocab_size: int, pad: int, eos: int) -> M2M100ForConditionalGeneration:
    """The M2M100 architecture, which NLLB's dense checkpoints share."""
    config = M2M100Config(vocab_size=vocab_size, pad_token_id=pad, eos_token_id=eos, bos_token_id=0,
                          decoder_start_token_id=eos, scale_embedding=True, **TINY)
    return M2M100ForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def nllb():
    tokenizer = nllb_tokenizer()
    return m2m_model(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id), tokenizer


@pytest.fixture(scope="module")
def m2m100(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    import io

    from transformers import M2M100Tokenizer

    folder = tmp_path_factory.mktemp("m2m100")
    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(FRENCH * 4 + ["A dog runs in the park.", "Ein Hund rennt im Park."] * 4),
        model_writer=model_file, vocab_size=40, model_type="char", bos_id=0, pad_id=1, eos_id=2, unk_id=3,
        minloglevel=2,
    )
    (folder / "sentencepiece.bpe.model").write_bytes(model_file.getvalue())
    processor = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.bpe.model"))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for index in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(index), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = M2M100Tokenizer(str(folder / "vocab.json"), str(folder / "sentencepiece.bpe.model"), src_lang="en")
    # The language codes (__en__, ...) and the made-up words follow the vocabulary; len(tokenizer) leaves them out.
    vocab_size = max(tokenizer.lang_code_to_id.values()) + 1 + tokenizer.num_madeup_words
    return m2m_model(vocab_size, tokenizer.pad_token_id, tokenizer.eos_token_id), tokenizer


@pytest.fixture(scope="module")
def mbart50():
    tokenizer = MBart50Tokenizer(src_lang="en_XX")  # its built-in minimal vocabulary: specials, "▁", 52 codes, <mask>
    config = MBartConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id, **TINY)
    return MBartForConditionalGeneration(config).eval(), tokenizer


def t5_tokenizer() -> T5Tokenizer:
    words = ["translate", "English", "to", "German:", "Romanian:", "French:", "a", "dog", "runs."]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(f"▁{word}", -1.0) for word in words]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


@pytest.fixture(scope="module")
def t5():
    tokenizer = t5_tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                      num_heads=2, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                      task_specific_params=T5_TASKS)
    return T5ForConditionalGeneration(config).eval(), tokenizer


@pytest.fixture(scope="module")
def t5_dir(t5, tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5-small")
    model, tokenizer = t5
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# Marian / opus-mt: plain text


def test_marian_gets_the_plain_source_text_and_no_forced_token(marian, monkeypatch):
    model, tokenizer = marian
    calls = record_generate(model, monkeypatch)
    translator = pipeline("translation", model=model, tokenizer=tokenizer)
    assert type(translator) is TranslationPipeline

    outputs = translator(FRENCH, max_new_tokens=3)

    assert len(texts(outputs)) == len(FRENCH)
    assert calls[0]["input_ids"][0].tolist() == tokenizer(FRENCH[0])["input_ids"]
    assert "forced_bos_token_id" not in calls[0]["kwargs"] and calls[0]["kwargs"]["max_new_tokens"] == 3


@pytest.mark.slow
def test_the_course_example_works_with_the_switch_on_a_saved_marian_folder(marian_dir, tmp_path):
    """The Hugging Face course's `pipeline("translation", model="Helsinki-NLP/opus-mt-fr-en")`, a local folder standing
    in for the Hub id, in a fresh process: blocked by transformers 5 alone, working after the switch."""
    code = f"""
import json
from transformers import pipeline, pipelines
result = {{}}
try:
    pipeline("translation", model={str(marian_dir)!r})
except KeyError as error:
    result["before"] = str(error)
import modeling_vanilla
modeling_vanilla.enable_translation_pipeline()
translator = pipeline("translation", model={str(marian_dir)!r})
result["class"] = type(translator).__module__ + "." + type(translator).__name__
result["output"] = translator("Ce cours est produit par Hugging Face.", max_new_tokens=4)
json.dump(result, open({str(tmp_path / "result.json")!r}, "w"))
"""
    process = run_python(code, cwd=REPO_ROOT, env={"OMP_NUM_THREADS": "1"})
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    # Without the package imported, transformers 5 says the task is gone (what the course's readers meet).
    assert "The task translation has been removed" in result.get("before", ""), result
    assert result["class"] == "modeling_vanilla.pipeline_translation.TranslationPipeline"
    assert len(result["output"]) == 1 and isinstance(result["output"][0]["translation_text"], str)


# NLLB and M2M100: the source language's code in the input, the target's forced first


def test_nllb_source_code_in_the_input_and_target_code_forced_first(nllb, monkeypatch):
    model, tokenizer = nllb
    calls = record_generate(model, monkeypatch)
    code_id = tokenizer.convert_tokens_to_ids
    translator = pipeline("translation", model=model, tokenizer=tokenizer, src_lang="fra_Latn", tgt_lang="deu_Latn")

    outputs = translator("chat chien", max_new_tokens=3)

    assert len(texts(outputs)) == 1
    input_ids = calls[-1]["input_ids"][0].tolist()
    assert input_ids[0] == code_id("fra_Latn") and input_ids[-1] == tokenizer.eos_token_id  # [fra_Latn] ... </s>
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == code_id("deu_Latn")
    assert calls[-1]["output"][0, 1] == code_id("deu_Latn")  # after the decoder start token: the target code

    # In a batch, each input starts with the source code, padded on the right.
    translator(["chat chien chat", "chat"], batch_size=2, max_new_tokens=3)
    batch = calls[-1]["input_ids"]
    assert batch[:, 0].tolist() == [code_id("fra_Latn")] * 2 and batch[1, -1] == tokenizer.pad_token_id
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == code_id("deu_Latn")

    # Per call, the languages change; a two-letter code is mapped to the tokenizer's one code for it.
    translator("chat", src_lang="eng_Latn", tgt_lang="fr", max_new_tokens=3)
    assert calls[-1]["input_ids"][0, 0] == code_id("eng_Latn")
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == calls[-1]["output"][0, 1] == code_id("fra_Latn")
    # A forced token passed by the caller wins; the next call is back to the construction's languages.
    translator("chat", forced_bos_token_id=code_id("eng_Latn"), max_new_tokens=3)
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == code_id("eng_Latn")
    assert calls[-1]["input_ids"][0, 0] == code_id("fra_Latn")
    # Without src_lang: the tokenizer's own (eng_Latn here), not whatever a previous call set.
    default_source = pipeline("translation", model=model, tokenizer=nllb_tokenizer(), tgt_lang="deu_Latn")
    default_source("chat", src_lang="fra_Latn", max_new_tokens=3)
    default_source("chat", max_new_tokens=3)
    assert calls[-1]["input_ids"][0, 0] == code_id("eng_Latn")


def test_nllb_without_tgt_lang_is_a_clear_error_with_an_example(nllb):
    model, tokenizer = nllb
    translator = pipeline("translation", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"tgt_lang names.*for example.*src_lang='eng_Latn', tgt_lang='fra_Latn'"):
        translator("chat")
    with pytest.raises(ValueError, match="tgt_lang='xx_Yyyy' is not a language code of this tokenizer"):
        translator("chat", tgt_lang="xx_Yyyy")
    with pytest.raises(ValueError, match="tgt_lang='zh' is ambiguous .* zho_Hans, zho_Hant"):
        translator("chat", tgt_lang="zh")


def test_m2m100_source_code_in_the_input_and_target_code_forced_first(m2m100, monkeypatch):
    model, tokenizer = m2m100
    calls = record_generate(model, monkeypatch)
    translator = pipeline("translation", model=model, tokenizer=tokenizer, src_lang="fr", tgt_lang="de")

    assert len(texts(translator(FRENCH[:2], max_new_tokens=3))) == 2

    input_ids = calls[-1]["input_ids"][0].tolist()
    assert input_ids[0] == tokenizer.get_lang_id("fr") and tokenizer.convert_ids_to_tokens(input_ids[0]) == "__fr__"
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == tokenizer.get_lang_id("de")
    assert calls[-1]["output"][0, 1] == tokenizer.get_lang_id("de")
    with pytest.raises(ValueError, match="tgt_lang"):
        pipeline("translation", model=model, tokenizer=tokenizer)("Un chien.")


# mBART-50: language codes in the tokenizer


def test_mbart50_source_code_in_the_input_and_target_code_forced_first(mbart50, monkeypatch):
    model, tokenizer = mbart50
    calls = record_generate(model, monkeypatch)
    translator = pipeline("translation", model=model, tokenizer=tokenizer, src_lang="fr_XX", tgt_lang="de_DE")

    assert len(texts(translator(FRENCH[0], max_new_tokens=3))) == 1

    input_ids = calls[-1]["input_ids"][0].tolist()
    assert input_ids[0] == tokenizer.lang_code_to_id["fr_XX"] and input_ids[-1] == tokenizer.eos_token_id
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == tokenizer.lang_code_to_id["de_DE"]
    assert calls[-1]["output"][0, 1] == tokenizer.lang_code_to_id["de_DE"]
    translator(FRENCH[0], tgt_lang="ro", max_new_tokens=3)  # the one code starting with "ro": ro_RO
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == tokenizer.lang_code_to_id["ro_RO"]


# Task names translation_XX_to_YY


def test_task_name_sets_the_language_codes_of_mbart50_and_nllb(mbart50, nllb, monkeypatch):
    model, tokenizer = mbart50
    calls = record_generate(model, monkeypatch)
    pipeline("translation_en_to_de", model=model, tokenizer=tokenizer)("A dog.", max_new_tokens=3)
    assert calls[-1]["input_ids"][0, 0] == tokenizer.lang_code_to_id["en_XX"]
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == tokenizer.lang_code_to_id["de_DE"]

    model, tokenizer = nllb
    calls = record_generate(model, monkeypatch)
    translator = pipeline("translation_fr_to_en", model=model, tokenizer=tokenizer)
    translator("chat", max_new_tokens=3)
    assert calls[-1]["input_ids"][0, 0] == tokenizer.convert_tokens_to_ids("fra_Latn")
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == tokenizer.convert_tokens_to_ids("eng_Latn")
    translator("chat", tgt_lang="deu_Latn", max_new_tokens=3)  # the call overrides the name's pair
    assert calls[-1]["kwargs"]["forced_bos_token_id"] == tokenizer.convert_tokens_to_ids("deu_Latn")

    with pytest.raises(ValueError, match="tgt_lang='zh' is ambiguous"):
        pipeline("translation_en_to_zh", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="src_lang='xx' is not a language code of this tokenizer; it knows 5: eng_"):
        pipeline("translation_xx_to_en", model=model, tokenizer=tokenizer)


def test_t5_task_name_prepends_the_prefix_and_uses_the_task_settings(t5_dir, monkeypatch):
    translator = pipeline("translation_en_to_de", model=str(t5_dir))
    assert type(translator) is TranslationPipeline and translator.task == "translation_en_to_de"
    calls = record_generate(translator.model, monkeypatch)

    outputs = translator(["a dog runs.", "a dog"])

    assert len(texts(outputs)) == 2
    decoded = translator.tokenizer.decode(calls[0]["input_ids"][0], skip_special_tokens=True)
    assert decoded == "translate English to German: a dog runs."
    kwargs = calls[0]["kwargs"]
    assert (kwargs["max_length"], kwargs["num_beams"], kwargs["early_stopping"]) == (9, 2, True)
    assert calls[0]["output"].shape[1] <= 9
    assert "forced_bos_token_id" not in kwargs

    # The call's settings win over the task's; max_new_tokens replaces the task's max_length.
    translator("a dog", num_beams=1, max_new_tokens=2)
    assert calls[-1]["kwargs"]["num_beams"] == 1 and "max_length" not in calls[-1]["kwargs"]
    assert calls[-1]["output"].shape[1] <= 1 + 2
    # The plain task with the pair as arguments picks the same entry; the other pair, another prefix.
    plain = pipeline("translation", model=str(t5_dir))
    calls = record_generate(plain.model, monkeypatch)
    plain("a dog", src_lang="en", tgt_lang="ro")
    assert plain.tokenizer.decode(calls[-1]["input_ids"][0], skip_special_tokens=True).startswith(
        "translate English to Romanian: ")
    assert calls[-1]["kwargs"]["num_beams"] == 3
    plain("a dog", max_new_tokens=2)  # no pair: no prefix, as transformers 4's pipeline("translation")
    assert plain.tokenizer.decode(calls[-1]["input_ids"][0], skip_special_tokens=True) == "a dog"


def test_t5_pair_it_does_not_know_is_a_clear_error_listing_its_pairs(t5_dir, t5):
    message = (r"does not know the pair en -> fr \(translation_en_to_fr is not in its config.task_specific_params\)\. "
               r"The pairs it knows: translation_en_to_de, translation_en_to_ro")
    with pytest.raises(ValueError, match=message):
        pipeline("translation_en_to_fr", model=str(t5_dir))
    model, tokenizer = t5
    with pytest.raises(ValueError, match=message):
        pipeline("translation", model=model, tokenizer=tokenizer)("a dog", src_lang="en", tgt_lang="fr")


# Nothing else changes


def test_other_removed_tasks_still_raise_and_other_tasks_are_unchanged(t5):
    model, tokenizer = t5
    for task in ("summarization", "text2text-generation", "question-answering"):
        assert task in REMOVED_TASKS
        with pytest.raises(KeyError, match=f"The task {task} has been removed from transformers"):
            check_task(task)
    with pytest.raises(KeyError, match="The task summarization has been removed"):
        pipeline("summarization", model=model, tokenizer=tokenizer)
    with pytest.raises(KeyError, match="Unknown task translation-en-de"):
        check_task("translation-en-de")  # not a pair name: the registry's own error
    task, info, options = check_task("text-classification")
    assert (task, options) == ("text-classification", None)
    impl = info["impl"]  # the class, or its dotted path, which transformers 5 imports on first use
    assert impl is TextClassificationPipeline or impl.endswith(".text_classification.TextClassificationPipeline")
    assert check_task("translation_en_to_de") == ("translation", PIPELINE_REGISTRY.supported_tasks["translation"],
                                                  ("en", "de"))
    assert not any(name.startswith("translation_") for name in PIPELINE_REGISTRY.get_supported_tasks())


def test_enable_translation_pipeline_is_idempotent(caplog):
    check = PIPELINE_REGISTRY.check_task
    entry = PIPELINE_REGISTRY.supported_tasks["translation"]
    with caplog.at_level(logging.WARNING):
        enable_translation_pipeline()
        modeling_vanilla.enable_translation_pipeline()
    assert "already registered" not in caplog.text
    assert PIPELINE_REGISTRY.check_task is check and PIPELINE_REGISTRY.supported_tasks["translation"] is entry
    assert entry["impl"] is TranslationPipeline and "translation" not in REMOVED_TASKS
    assert check_task("translation")[1] is entry
