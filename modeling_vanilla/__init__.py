"""vanilla-transformer: the Transformer of "Attention Is All You Need" as a Hugging Face model.

Importing the package registers the model with the Auto classes, so that `AutoConfig`, `AutoModel` and
`AutoModelForSeq2SeqLM` load its checkpoints without `trust_remote_code`, and marks the classes for
`register_for_auto_class`, so that `save_pretrained` writes the model code and `auto_map` next to the weights
for Hub users who do not have the package. It also enables the translation pipeline, so that
`pipeline("translation", model=...)` and `pipeline("translation_en_to_de", model=...)` work without
`trust_remote_code`, for this model and for Marian, NLLB, M2M100, mBART-50 and T5 (door 2; door 1, for a folder
without the package, is written by the model's `save_pretrained`). `enable_translation_pipeline()` is the documented
switch; importing the package has already called it. Nothing here touches the network.

The registration needs transformers and torch (seconds to import), so it is done when transformers is there: at once
if it is already imported, else as soon as it is, and at the latest when one of the names below is first used
(`modeling_vanilla.VanillaTransformerConfig`). transformers' Auto classes and pipelines cannot be reached before
transformers is imported, so they never see the model unregistered; a command that only parses its arguments
(`vanilla-train --help`) imports neither.

The layering: the configuration imports nothing from the package; the modeling file imports only the
configuration; the pipeline imports nothing from the package; this file wires the three together.
"""

from __future__ import annotations

import importlib
import sys
import threading
from importlib.abc import MetaPathFinder
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on first use (`__getattr__`); named here for type checkers and editors
    from .configuration_vanilla import VanillaTransformerConfig
    from .modeling_vanilla import (
        VanillaTransformerForConditionalGeneration,
        VanillaTransformerModel,
        VanillaTransformerPreTrainedModel,
    )
    from .pipeline_translation import TranslationPipeline, enable_translation_pipeline

__version__ = "0.1.0"

__all__ = [
    "VanillaTransformerConfig",
    "VanillaTransformerPreTrainedModel",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
    "TranslationPipeline",
    "enable_translation_pipeline",
]
MODEL_FILES = ("configuration_vanilla", "modeling_vanilla", "pipeline_translation")
_lock = threading.RLock()


def register() -> None:
    """Register the model with transformers (the Auto classes, `register_for_auto_class`, the translation pipeline)
    and bind the names of `__all__` here; the second call does nothing."""
    with _lock:
        if "VanillaTransformerConfig" in globals():
            return
        _WaitForTransformers.uninstall()
        from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

        from .configuration_vanilla import VanillaTransformerConfig
        from .modeling_vanilla import (
            VanillaTransformerForConditionalGeneration,
            VanillaTransformerModel,
            VanillaTransformerPreTrainedModel,
        )
        from .pipeline_translation import TranslationPipeline, enable_translation_pipeline

        AutoConfig.register(VanillaTransformerConfig.model_type, VanillaTransformerConfig, exist_ok=True)
        AutoModel.register(VanillaTransformerConfig, VanillaTransformerModel, exist_ok=True)
        AutoModelForSeq2SeqLM.register(VanillaTransformerConfig, VanillaTransformerForConditionalGeneration,
                                       exist_ok=True)

        VanillaTransformerConfig.register_for_auto_class()
        VanillaTransformerModel.register_for_auto_class("AutoModel")
        VanillaTransformerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

        # Door 2: pipeline("translation", ...) without trust_remote_code; the task was removed from transformers 5
        # (see the function). Saved folders declare the pipeline for door 1 (`custom_pipelines` in config.json,
        # written by the model's save_pretrained). pipeline() takes a declaration found in a loaded config over the
        # registered class, and then demands trust_remote_code, so the installed configuration class drops it on
        # load. The remote-code copy of the configuration beside the weights is another class, left as it is:
        # without the package, door 1 stays open.
        enable_translation_pipeline()
        VanillaTransformerConfig.drop_on_load = frozenset({"custom_pipelines"})
        globals().update(
            VanillaTransformerConfig=VanillaTransformerConfig, VanillaTransformerModel=VanillaTransformerModel,
            VanillaTransformerPreTrainedModel=VanillaTransformerPreTrainedModel,
            VanillaTransformerForConditionalGeneration=VanillaTransformerForConditionalGeneration,
            TranslationPipeline=TranslationPipeline, enable_translation_pipeline=enable_translation_pipeline,
        )


def __getattr__(name: str):
    """The names of `__all__` (registering first) and the three model files, imported on first use."""
    if name in __all__:
        register()
        return globals()[name]
    if name in MODEL_FILES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *MODEL_FILES})


class _WaitForTransformers(MetaPathFinder):
    """Until `register` has run: watches every import, and calls `register` when the first import that ends with
    transformers in `sys.modules` ends, unless an import of transformers or of this package is still under way in
    this thread (registering imports both: it waits until that import has ended)."""

    running = threading.local()  # the watched imports under way in each thread, outermost first

    @classmethod
    def install(cls) -> None:
        if not any(isinstance(finder, cls) for finder in sys.meta_path):
            sys.meta_path.insert(0, cls())

    @classmethod
    def uninstall(cls) -> None:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, cls)]

    def find_spec(self, name, path, target=None):
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _WatchedLoader(spec.loader)
                return spec
        return None


class _WatchedLoader:
    """A module's own loader, and, after the module has run, the check whether to register now."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the module keeps its own loader
        running = _WaitForTransformers.running.__dict__.setdefault("names", [])
        running.append(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            running.pop()
        if "transformers" in sys.modules and not any(
            name.split(".")[0] in ("transformers", __name__) for name in running
        ):
            register()


if "transformers" in sys.modules:
    register()
else:
    _WaitForTransformers.install()
