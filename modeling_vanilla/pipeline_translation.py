"""The translation pipeline: text in, translated text out, through `generate()` (decoding as in section 6.1).

transformers 5 removed its `translation` task. This module brings it back for this model, through two doors:

1. A saved folder or Hub repo, where this package is not installed. The model's `save_pretrained`
   (`VanillaTransformerPreTrainedModel.save_pretrained`) copies this file next to the model code and declares it in
   config.json under `custom_pipelines`. Then `pipeline("translation", model=folder, trust_remote_code=True)` and
   `pipeline(model=folder, trust_remote_code=True)` load it as remote code. That is why this file imports nothing but
   transformers and the standard library, and why no other module of the package imports it but `__init__`.
2. This package imported: `register_translation_pipeline()`, called once by `modeling_vanilla/__init__.py`, makes
   `pipeline("translation", model=folder_or_model, tokenizer=...)` build it without remote code. The whole mechanism,
   and why, is in that function's docstring.
"""

import logging
from collections.abc import Sequence

from transformers import AutoModelForSeq2SeqLM, Pipeline
from transformers.utils import ModelOutput

logger = logging.getLogger(__name__)

TASK = "translation"
MODEL_TYPE = "vanilla_transformer"  # this package's model (the package itself cannot be imported here)


class TranslationPipeline(Pipeline):
    """Translate text with an encoder-decoder model: tokenize, `generate()`, detokenize.

    Input: a string, a list (or tuple) of strings, a `datasets` column (`dataset["en"]`), a generator of strings, or
    a torch dataset of strings (`KeyDataset(dataset, "en")`, streamed). Output, as transformers 4's translation
    pipeline gave it: `[{"translation_text": ...}]` for a string; one dict per string for a list (a list of
    `num_return_sequences` dicts per string when that is above 1); an iterator of `[{"translation_text": ...}]`
    for a generator or a torch dataset. `batch_size=` (at construction or per call) translates that many inputs per
    `generate()` call, padded on the right.

    Parameters, at construction or per call:
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
        self._check_vocabulary_size()
        # The encoder numbers positions from the first token: padding must come after the tokens, or a padded input
        # would be encoded at other positions than the same input alone.
        self.tokenizer.padding_side = "right"

    def _check_vocabulary_size(self):
        vocab_size = getattr(self.model.config, "vocab_size", None)
        if vocab_size is None or len(self.tokenizer) == vocab_size:
            return
        message = (f"the tokenizer has {len(self.tokenizer)} tokens but the model's config.vocab_size is "
                   f"{vocab_size}")
        if getattr(self.model.config, "model_type", None) != MODEL_TYPE:
            logger.warning("TranslationPipeline: %s; translations may be wrong if it is not the model's own.", message)
            return
        raise ValueError(
            f"TranslationPipeline: {message}: they must be equal (a smaller tokenizer gives empty translations, a "
            "larger one ids the model cannot embed). Use the tokenizer saved with this model (in its folder or Hub "
            "repo)."
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

    def _sanitize_parameters(self, truncation=None, clean_up_tokenization_spaces=None, **generate_kwargs):
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        postprocess_params = {}
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess_params, generate_kwargs, postprocess_params

    def preprocess(self, text, truncation=True):
        if not isinstance(text, str):
            raise TypeError(
                f"TranslationPipeline translates strings, got {type(text).__name__} ({text!r:.80}). Pass a str, a list "
                "of str, a generator of str, or a dataset column such as dataset['en']."
            )
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
            "is_empty": not text.strip(),
        }

    def _forward(self, model_inputs, **generate_kwargs):
        input_ids = model_inputs["input_ids"]  # (B, S), padded on the right
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

    def postprocess(self, model_outputs, clean_up_tokenization_spaces=None):
        output_ids = model_outputs["output_ids"][0]  # (n, T) for one input
        if model_outputs["is_empty"]:
            return [{"translation_text": ""} for _ in range(output_ids.shape[0])]
        texts = self.tokenizer.batch_decode(
            output_ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
        )
        return [{"translation_text": text} for text in texts]


def register_translation_pipeline() -> None:
    """Make `pipeline("translation", model=..., tokenizer=...)` build a `TranslationPipeline` without remote code.

    The one place where this package changes transformers' behaviour. How `pipeline()` handles a task in
    transformers 5.24 (transformers/pipelines/__init__.py), and what this does about each step:

    1. When the config is loaded from a folder or repo id and carries `custom_pipelines` naming the task,
       `pipeline()` takes the pipeline class from the folder, and refuses to without `trust_remote_code=True`.
       Saved folders carry that entry (door 1, written by the model's `save_pretrained`), so the installed
       configuration class drops it on load: `modeling_vanilla/__init__.py` sets
       `VanillaTransformerConfig.drop_on_load` beside its call of this function. A copy of the class loaded from a
       folder as remote code is another class and keeps it. A model object passed in has no such check.
    2. `_resolve_deprecated_task` raises `KeyError("The task translation has been removed ...")` for every name in
       the module-level dict `REMOVED_TASKS`, before the registry is consulted: this deletes "translation" from it.
       Nothing else is removed ("summarization", "translation_xx_to_yy", ... stay errors).
    3. `PIPELINE_REGISTRY` maps the task to a pipeline class and the Auto class that loads its model: this
       registers `TranslationPipeline` with `AutoModelForSeq2SeqLM`. Any encoder-decoder model then translates
       through it, not only this package's.

    If a later transformers release changes this mechanism, tests/test_pipeline.py fails: it checks that the task is
    still blocked without this package and works with it, for a model object and for a folder.
    """
    from transformers import pipelines

    removed_tasks = getattr(pipelines, "REMOVED_TASKS", None)
    if isinstance(removed_tasks, dict):
        removed_tasks.pop(TASK, None)
    pipelines.PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=TranslationPipeline, pt_model=AutoModelForSeq2SeqLM, type="text"
    )


__all__ = ["TranslationPipeline", "register_translation_pipeline"]
