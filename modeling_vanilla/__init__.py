"""vanilla-transformer: the Transformer of "Attention Is All You Need" as a Hugging Face model.

Importing the package registers the model with the Auto classes, so that `AutoConfig`, `AutoModel` and
`AutoModelForSeq2SeqLM` load its checkpoints without `trust_remote_code`, and marks the classes for
`register_for_auto_class`, so that `save_pretrained` writes the model code and `auto_map` next to the weights
for Hub users who do not have the package. It also enables the translation pipeline, so that
`pipeline("translation", model=...)` and `pipeline("translation_en_to_de", model=...)` work without
`trust_remote_code`, for this model and for Marian, NLLB, M2M100, mBART-50 and T5 (door 2; door 1, for a folder
without the package, is written by the model's `save_pretrained`). `enable_translation_pipeline()` is the documented
switch; importing the package has already called it. Nothing here touches the network.

The layering: the configuration imports nothing from the package; the modeling file imports only the
configuration; the pipeline imports nothing from the package; this file wires the three together.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from .configuration_vanilla import VanillaTransformerConfig
from .modeling_vanilla import (
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
    VanillaTransformerPreTrainedModel,
)
from .pipeline_translation import TranslationPipeline, enable_translation_pipeline

__version__ = "0.1.0"

AutoConfig.register(VanillaTransformerConfig.model_type, VanillaTransformerConfig, exist_ok=True)
AutoModel.register(VanillaTransformerConfig, VanillaTransformerModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, exist_ok=True)

VanillaTransformerConfig.register_for_auto_class()
VanillaTransformerModel.register_for_auto_class("AutoModel")
VanillaTransformerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

# Door 2: pipeline("translation", ...) without trust_remote_code; the task was removed from transformers 5 (see the
# function). Saved folders declare the pipeline for door 1 (`custom_pipelines` in config.json, written by the model's
# save_pretrained). pipeline() takes a declaration found in a loaded config over the registered class, and then
# demands trust_remote_code, so the installed configuration class drops it on load. The remote-code copy of the
# configuration beside the weights is another class, left as it is: without the package, door 1 stays open.
enable_translation_pipeline()
VanillaTransformerConfig.drop_on_load = frozenset({"custom_pipelines"})

__all__ = [
    "VanillaTransformerConfig",
    "VanillaTransformerPreTrainedModel",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
    "TranslationPipeline",
    "enable_translation_pipeline",
]
