"""The translation pipeline: text in, translated text out, through `generate()` (decoding as in section 6.1).

transformers 5 removed its `translation` task. This module brings it back for this model, through two doors:

1. A saved folder or Hub repo, where this package is not installed. The model's `save_pretrained`
   (`VanillaTransformerPreTrainedModel.save_pretrained`) copies this file next to the model code and declares it in
   config.json under `custom_pipelines`. Then `pipeline("translation", model=folder, trust_remote_code=True)` and
   `pipeline(model=folder, trust_remote_code=True)` load it as remote code. That is why this file imports nothing but
   transformers and the standard library, and why no other module of the package imports it but `__init__`.
2. This package imported: `enable_translation_pipeline()`, called once by `modeling_vanilla/__init__.py` and public
   as `modeling_vanilla.enable_translation_pipeline`, makes `pipeline("translation", model=folder_or_model, ...)` and
   `pipeline("translation_en_to_de", ...)` build it without remote code, for any encoder-decoder model. The whole
   mechanism, and why, is in that function's docstring.

Besides this package's model, it translates as transformers 4's translation pipeline did with the models people use:
Marian / opus-mt (plain text), NLLB, M2M100 and mBART-50 (language codes: `src_lang=`, `tgt_lang=`), and T5-style
models (a task prefix and settings from `config.task_specific_params["translation_en_to_de"]`).
"""

import logging
import re
from collections.abc import Sequence

from transformers import AutoModelForSeq2SeqLM, Pipeline
from transformers.utils import ModelOutput

logger = logging.getLogger(__name__)

TASK = "translation"
MODEL_TYPE = "vanilla_transformer"  # this package's model (the package itself cannot be imported here)
# `translation_XX_to_YY`, as transformers 4 named a language pair; codes may hold underscores (eng_Latn).
PAIR_TASK = re.compile(r"translation_(.+?)_to_(.+)")
NLLB_CODE = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")  # eng_Latn: NLLB's language codes, kept as special tokens
# Two-letter (ISO 639-1) codes of a task name, mapped to the three-letter ones NLLB's codes begin with.
ISO_639_3 = {
    "ar": "arb", "cs": "ces", "de": "deu", "en": "eng", "es": "spa", "et": "est", "fi": "fin", "fr": "fra",
    "hi": "hin", "it": "ita", "ja": "jpn", "ko": "kor", "lt": "lit", "lv": "lvs", "nl": "nld", "pl": "pol",
    "pt": "por", "ro": "ron", "ru": "rus", "tr": "tur", "uk": "ukr", "vi": "vie", "zh": "zho",
}


def task_pair(task: str | None) -> tuple[str, str] | None:
    """("en", "de") for the task name "translation_en_to_de"; None for any other name."""
    match = PAIR_TASK.fullmatch(task or "")
    return None if match is None else (match.group(1), match.group(2))


def language_codes(tokenizer) -> list[str] | None:
    """The language codes of a multilingual tokenizer (NLLB, M2M100, mBART-50); None for a tokenizer without them.

    Such a tokenizer has a settable `src_lang` that puts the source language's code into the input ids.
    """
    if not isinstance(getattr(type(tokenizer), "src_lang", None), property):
        return None
    codes = getattr(tokenizer, "lang_code_to_id", None)  # M2M100 ("en"), mBART-50 ("en_XX")
    if codes:
        return list(codes)
    codes = [token for token in tokenizer.all_special_tokens if NLLB_CODE.fullmatch(token)]  # NLLB ("eng_Latn")
    return codes or sorted(token for token in tokenizer.get_vocab() if NLLB_CODE.fullmatch(token))


def resolve_language_code(code: str, codes: list[str], argument: str) -> str:
    """`code` as the tokenizer writes it: itself, or the one code that a two-letter code stands for (de -> de_DE)."""
    if code in codes:
        return code
    candidates = {code, ISO_639_3.get(code, code)}
    matches = [known for known in codes if known.split("_")[0] in candidates]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(codes[:12]) + (", ..." if len(codes) > 12 else "")
    if matches:
        raise ValueError(f"TranslationPipeline: {argument}={code!r} is ambiguous for this tokenizer: it could be any "
                         f"of {', '.join(matches)}. Pass one of them.")
    raise ValueError(f"TranslationPipeline: {argument}={code!r} is not a language code of this tokenizer; it knows "
                     f"{len(codes)}: {shown}.")


def check_vocabulary_size(model, tokenizer, whose: str, advice: str) -> None:
    """Refuse (ValueError) this package's model with a tokenizer of another size than `config.vocab_size`; warn
    for other models, many of which (T5, some Marian) pad their vocabulary beyond the tokenizer on purpose.

    A smaller tokenizer never produces the missing ids and the model, trained to emit them, translates into empty
    strings; a larger one produces ids the model has no embedding for. `whose` names the tokenizer in the message
    ("the tokenizer of runs/x"), `advice` ends it. Also used by `model_folder.load_model_and_tokenizer`.
    """
    vocab_size = getattr(model.config, "vocab_size", None)
    if vocab_size is None or len(tokenizer) == vocab_size:
        return
    message = f"{whose} has {len(tokenizer)} tokens but the model's config.vocab_size is {vocab_size}"
    if getattr(model.config, "model_type", None) != MODEL_TYPE:
        logger.warning("%s: translations may be wrong if the tokenizer is not the model's own.", message)
        return
    raise ValueError(f"{message}: they must be equal (a smaller tokenizer gives empty translations, a larger one ids "
                     f"the model cannot embed). {advice}")


class TranslationPipeline(Pipeline):
    """Translate text with an encoder-decoder model: tokenize, `generate()`, detokenize.

    Input: a string, a list (or tuple) of strings, a `datasets` column (`dataset["en"]`), a generator of strings, or
    a torch dataset of strings (`KeyDataset(dataset, "en")`, streamed). Output, as transformers 4's translation
    pipeline gave it: `[{"translation_text": ...}]` for a string; one dict per string for a list (a list of
    `num_return_sequences` dicts per string when that is above 1); an iterator of `[{"translation_text": ...}]`
    for a generator or a torch dataset. `batch_size=` (at construction or per call) translates that many inputs per
    `generate()` call, padded on the right.

    Parameters, at construction or per call:
        src_lang, tgt_lang (`str`, *optional*): the languages, for a model whose tokenizer has language codes (NLLB:
            `"eng_Latn"`, M2M100: `"en"`, mBART-50: `"en_XX"`; a two-letter code is mapped when only one code
            matches it). The tokenizer's `src_lang` is set to the source language (by default, the one it was saved
            with), and the target language is forced as the first generated token (`forced_bos_token_id`); such a
            model needs `tgt_lang`. For a T5-style model, the pair picks `config.task_specific_params[
            "translation_{src_lang}_to_{tgt_lang}"]`: its `prefix` goes before each input and its generation
            settings (`max_length`, `num_beams`, ...) apply unless passed. Other models (Marian, this package's)
            take plain text and ignore them. The task name `translation_en_to_de` sets them at construction.
        truncation (`bool`, defaults to `True`): an input longer than the tokenizer's `model_max_length` tokens is
            cut to that length, with a warning. `False` translates it whole.
        clean_up_tokenization_spaces (`bool`, *optional*): passed to the tokenizer's `decode`.
        Any `generate()` argument (`num_beams`, `max_new_tokens`, `length_penalty`, `generation_config`, ...):
            overrides the model's generation config. With neither `max_length` nor `max_new_tokens`, the model's
            `generate()` stops at input length + 50 tokens (section 6.1); in a batch, the length of the longest input.

    An empty or whitespace-only string translates to `""`; anything but a string raises a `TypeError`.

    A tokenizer whose size is not the model's `config.vocab_size` is refused with a `ValueError` for this package's
    model (a smaller one would give empty translations), and warned about for other models, many of which pad their
    vocabulary beyond the tokenizer on purpose.
    """

    _pipeline_calls_generate = True
    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError(
                "TranslationPipeline needs a tokenizer: pass tokenizer=... to pipeline(), or save the tokenizer "
                "into the model folder (tokenizer.save_pretrained(folder))."
            )
        if not getattr(self.model.config, "is_encoder_decoder", False):
            raise ValueError(
                f"TranslationPipeline needs an encoder-decoder model (AutoModelForSeq2SeqLM); "
                f"{type(self.model).__name__} is not one."
            )
        check_vocabulary_size(self.model, self.tokenizer, "TranslationPipeline: the tokenizer",
                              "Use the tokenizer saved with this model (in its folder or Hub repo).")
        self._language_codes = language_codes(self.tokenizer)  # None: plain text in (Marian, T5, this package's)
        self._set_task_languages()
        if self._language_codes is not None:  # by default, the source language the tokenizer was built or saved with
            self._preprocess_params.setdefault("src_lang", self.tokenizer.src_lang)
        # The encoder numbers positions from the first token: padding must come after the tokens, or a padded input
        # would be encoded at other positions than the same input alone.
        self.tokenizer.padding_side = "right"

    def _set_task_languages(self):
        """The task name `translation_XX_to_YY`: its pair becomes the default src_lang and tgt_lang."""
        pair = task_pair(self.task)
        if pair is None:
            return
        source, target = pair
        codes = self._language_codes
        if codes is not None:
            source = resolve_language_code(source, codes, "src_lang")
            target = resolve_language_code(target, codes, "tgt_lang")
        else:
            self._task_settings(source, target)  # a T5-style model without this pair: the error lists its pairs
        defaults = {"src_lang": source, "tgt_lang": target}
        self._preprocess_params = {**defaults, **self._preprocess_params}
        self._forward_params = {**defaults, **self._forward_params}

    def _task_settings(self, src_lang, tgt_lang) -> dict:
        """A T5-style model's `task_specific_params` for the pair (with its `prefix`); {} for other models."""
        params = getattr(self.model.config, "task_specific_params", None) or {}
        pairs = sorted(name for name in params if task_pair(name) is not None)
        if src_lang is None or tgt_lang is None or not pairs or self._language_codes is not None:
            return {}
        name = f"translation_{src_lang}_to_{tgt_lang}"
        if name not in params:
            raise ValueError(
                f"TranslationPipeline: this model does not know the pair {src_lang} -> {tgt_lang} ({name} is not in "
                f"its config.task_specific_params). The pairs it knows: {', '.join(pairs)}."
            )
        return dict(params[name])

    def _language_id(self, code: str) -> int:
        """The id of a language code's token: what the target language forces as the first generated token."""
        get_lang_id = getattr(self.tokenizer, "get_lang_id", None)  # M2M100: "en" is the token "__en__"
        return get_lang_id(code) if get_lang_id is not None else self.tokenizer.convert_tokens_to_ids(code)

    def _missing_target_language(self, codes: list[str]) -> ValueError:
        source = next((code for code in ("eng_Latn", "en_XX", "en") if code in codes), codes[0] if codes else "en")
        target = next((code for code in ("fra_Latn", "fr_XX", "fr") if code in codes), codes[-1] if codes else "fr")
        return ValueError(
            f"TranslationPipeline: {type(self.model).__name__} with {type(self.tokenizer).__name__} translates into "
            f"the language that tgt_lang names: pass it at construction or per call, for example "
            f"pipeline('translation', model=..., src_lang={source!r}, tgt_lang={target!r}) or "
            f"translator(text, tgt_lang={target!r}). Language codes of this tokenizer: "
            f"{', '.join(codes[:12])}{', ...' if len(codes) > 12 else ''}."
        )

    def __call__(self, inputs, **kwargs):
        if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes, list)):
            inputs = list(inputs)  # a tuple or a `datasets` column is translated like a list
        if isinstance(inputs, list) and not inputs:
            return []
        outputs = super().__call__(inputs, **kwargs)
        if isinstance(inputs, list) and all(len(output) == 1 for output in outputs):
            return [output[0] for output in outputs]  # one dict per input string
        return outputs

    def _sanitize_parameters(
        self, truncation=None, clean_up_tokenization_spaces=None, src_lang=None, tgt_lang=None, **generate_kwargs
    ):
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        languages = {key: value for key, value in (("src_lang", src_lang), ("tgt_lang", tgt_lang)) if value is not None}
        preprocess_params.update(languages)
        generate_kwargs.update(languages)  # the forward parameters: _forward takes them out of what generate() gets
        postprocess_params = {}
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess_params, generate_kwargs, postprocess_params

    def preprocess(self, text, truncation=True, src_lang=None, tgt_lang=None):
        if not isinstance(text, str):
            raise TypeError(
                f"TranslationPipeline translates strings, got {type(text).__name__} ({text!r:.80}). Pass a str, a list "
                "of str, a generator of str, or a dataset column such as dataset['en']."
            )
        is_empty = not text.strip()
        codes = self._language_codes
        if codes is not None:  # NLLB, M2M100, mBART-50: the source language's code goes into the input ids
            if tgt_lang is None:
                raise self._missing_target_language(codes)
            resolve_language_code(tgt_lang, codes, "tgt_lang")
            if src_lang is not None:
                self.tokenizer.src_lang = resolve_language_code(src_lang, codes, "src_lang")
        # T5: "translate English to German: " from the pair's task-specific parameters; else the config's prefix.
        prefix = self._task_settings(src_lang, tgt_lang).get("prefix", getattr(self, "prefix", None) or "")
        text = prefix + text if not is_empty else text
        # verbose=False: the tokenizer's own warning about long inputs predicts index errors that cannot happen here.
        encoded = self.tokenizer(text, return_tensors="pt", verbose=False)
        length, limit = encoded["input_ids"].shape[1], self.tokenizer.model_max_length
        if truncation and length > limit:
            logger.warning(
                "Input of %d tokens is longer than the tokenizer's model_max_length (%d): translating its first %d "
                "tokens only. Split the text into sentences, or pass truncation=False to translate all of it.",
                length,
                limit,
                limit,
            )
            encoded = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=limit)
        return {
            "input_ids": encoded["input_ids"],  # (1, S), ending with </s>
            "attention_mask": encoded["attention_mask"],  # (1, S)
            "is_empty": is_empty,
        }

    def _forward(self, model_inputs, src_lang=None, tgt_lang=None, **generate_kwargs):
        input_ids = model_inputs["input_ids"]  # (B, S), padded on the right
        generate_kwargs = self._language_generate_kwargs(src_lang, tgt_lang, generate_kwargs)
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=model_inputs["attention_mask"],
            **self._prepare_generate_kwargs(generate_kwargs),
        )
        sequences = output.sequences if isinstance(output, ModelOutput) else output  # (B * n, T)
        return {
            "output_ids": sequences.reshape(input_ids.shape[0], -1, sequences.shape[-1]),  # (B, n, T)
            "is_empty": model_inputs["is_empty"],
        }

    def _language_generate_kwargs(self, src_lang, tgt_lang, generate_kwargs: dict) -> dict:
        """The call's generate() arguments, with the pair's forced first token and task-specific settings as defaults
        below what the call and the construction pass."""
        if "generation_config" in generate_kwargs:
            return generate_kwargs  # the user's own configuration replaces every default (see _prepare_generate_kwargs)
        passed = {**self._generate_kwargs, **generate_kwargs}
        defaults = {key: value for key, value in self._task_settings(src_lang, tgt_lang).items() if key != "prefix"}
        codes = self._language_codes
        if codes is not None and tgt_lang is not None:
            defaults["forced_bos_token_id"] = self._language_id(resolve_language_code(tgt_lang, codes, "tgt_lang"))
        if "max_new_tokens" in passed:
            defaults.pop("max_length", None)
        return {**{key: value for key, value in defaults.items() if key not in passed}, **generate_kwargs}

    def postprocess(self, model_outputs, clean_up_tokenization_spaces=None):
        output_ids = model_outputs["output_ids"][0]  # (n, T) for one input
        if model_outputs["is_empty"]:
            return [{"translation_text": ""} for _ in range(output_ids.shape[0])]
        texts = self.tokenizer.batch_decode(
            output_ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
        )
        return [{"translation_text": text} for text in texts]


def enable_translation_pipeline() -> None:
    """Bring back `pipeline("translation", ...)` and `pipeline("translation_XX_to_YY", ...)`, without remote code.

    Importing `modeling_vanilla` already calls it; calling it again changes nothing. After it, the task builds a
    `TranslationPipeline` for any encoder-decoder model (Marian / opus-mt, NLLB, M2M100, mBART-50, T5, this package's):

        import modeling_vanilla
        from transformers import pipeline

        modeling_vanilla.enable_translation_pipeline()
        pipeline("translation", model="Helsinki-NLP/opus-mt-fr-en")("Ce cours est produit par Hugging Face.")

    The one place where this package changes transformers' behaviour. How `pipeline()` handles a task in
    transformers 5.24 (transformers/pipelines/__init__.py), and what this does about each step:

    1. When the config is loaded from a folder or repo id and carries `custom_pipelines` naming the task,
       `pipeline()` takes the pipeline class from the folder, and refuses to without `trust_remote_code=True`.
       Saved folders carry that entry (door 1, written by the model's `save_pretrained`), so the installed
       configuration class drops it on load: `modeling_vanilla/__init__.py` sets
       `VanillaTransformerConfig.drop_on_load` beside its call of this function. A copy of the class loaded from a
       folder as remote code is another class and keeps it. A model object passed in has no such check.
    2. `_resolve_deprecated_task` raises `KeyError("The task translation has been removed ...")` for every name in
       the module-level dict `REMOVED_TASKS`, and for every `translation_*` name while "translation" is in it, before
       the registry is consulted: this deletes "translation" from it. Nothing else is removed ("summarization",
       "text2text-generation", ... stay errors).
    3. `PIPELINE_REGISTRY` maps the task to a pipeline class and the Auto class that loads its model: this
       registers `TranslationPipeline` with `AutoModelForSeq2SeqLM`, once. Any encoder-decoder model then translates
       through it, not only this package's.
    4. `PIPELINE_REGISTRY.check_task` knows only registered names, so `translation_en_to_de` would be an unknown task:
       this wraps it, on that one object, so that a name matching `translation_XX_to_YY` resolves to the translation
       entry with the pair as its options, as transformers 4's `check_task` did; every other name goes to the
       original method unchanged. `pipeline()` hands the name to the pipeline, which reads the pair from it.

    If a later transformers release changes this mechanism, tests/model/test_pipeline.py and
    tests/model/test_translation_pipeline_models.py fail: they check that the task is still blocked without this package
    and works with it, and that other tasks are unchanged.
    """
    from transformers import pipelines

    removed_tasks = getattr(pipelines, "REMOVED_TASKS", None)
    if isinstance(removed_tasks, dict):
        removed_tasks.pop(TASK, None)
    registry = pipelines.PIPELINE_REGISTRY
    if registry.supported_tasks.get(TASK, {}).get("impl") is not TranslationPipeline:
        registry.register_pipeline(
            TASK, pipeline_class=TranslationPipeline, pt_model=AutoModelForSeq2SeqLM, type="text"
        )
    if not getattr(registry.check_task, "resolves_translation_pairs", False):
        original_check_task = registry.check_task

        def check_task(task: str):
            pair = task_pair(task)
            if pair is not None and TASK in registry.supported_tasks:
                return TASK, registry.supported_tasks[TASK], pair
            return original_check_task(task)

        check_task.resolves_translation_pairs = True
        registry.check_task = check_task


register_translation_pipeline = enable_translation_pipeline  # its earlier name


__all__ = ["TranslationPipeline", "enable_translation_pipeline", "register_translation_pipeline"]
