"""vanilla-transformer: the Transformer of "Attention Is All You Need" as a Hugging Face model.

Importing the package registers the model with the Auto classes, so that `AutoConfig`, `AutoModel` and
`AutoModelForSeq2SeqLM` load its checkpoints without `trust_remote_code`, and marks the classes for
`register_for_auto_class`, so that `save_pretrained` writes the model code and `auto_map` next to the weights
for Hub users who do not have the package. It also registers the translation pipeline, so that
`pipeline("translation", model=...)` works without `trust_remote_code`. Nothing here touches the network.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from .configuration_vanilla import VanillaTransformerConfig
from .modeling_vanilla import (
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
    VanillaTransformerPreTrainedModel,
)
from .pipeline_translation import TranslationPipeline, register_translation_pipeline

__version__ = "0.1.0"

AutoConfig.register(VanillaTransformerConfig.model_type, VanillaTransformerConfig, exist_ok=True)
AutoModel.register(VanillaTransformerConfig, VanillaTransformerModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, exist_ok=True)

VanillaTransformerConfig.register_for_auto_class()
VanillaTransformerModel.register_for_auto_class("AutoModel")
VanillaTransformerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

# pipeline("translation", ...) without trust_remote_code; the task was removed from transformers 5 (see the function).
register_translation_pipeline()

__all__ = [
    "VanillaTransformerConfig",
    "VanillaTransformerPreTrainedModel",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
    "TranslationPipeline",
]
