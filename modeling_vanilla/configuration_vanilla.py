"""Configuration of the Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Field names are the paper's symbols (d_model, d_ff, h -> num_heads, d_k, d_v, N -> num_encoder_layers /
num_decoder_layers, P_drop -> dropout). Hugging Face's standard names (hidden_size, num_attention_heads,
...) are aliases through `attribute_map`. The config holds only what rebuilds the network: warmup, label
smoothing and Adam's betas are training arguments.
"""

import math
from typing import ClassVar

from transformers import PreTrainedConfig

POSITIONAL_ENCODINGS = ("sinusoidal", "learned")
LAYER_NORM_POSITIONS = ("post", "pre")


def _is_int(value) -> bool:
    """An int and not a bool (True is an int to Python, never a size here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float, not a bool and not a string ("1e-5" from JSON is a string, not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class VanillaTransformerConfig(PreTrainedConfig):
    r"""
    Configuration of [`VanillaTransformerModel`] and [`VanillaTransformerForConditionalGeneration`].
    The defaults are the base model of Table 3 (65M parameters in the paper).

    Args:
        vocab_size (`int`, defaults to 37000):
            Size of the shared source-target BPE vocabulary (section 5.1, EN-DE).
        d_model (`int`, defaults to 512):
            Width of every sub-layer output and of the embeddings (section 3.1).
        d_ff (`int`, defaults to 2048):
            Inner width of the position-wise feed-forward network, Eq. (2).
        num_heads (`int`, defaults to 8):
            Number of attention heads h (section 3.2.2).
        d_k (`int`, *optional*):
            Width of queries and keys per head. Defaults to d_model / h.
        d_v (`int`, *optional*):
            Width of values per head. Defaults to d_model / h.
        num_encoder_layers (`int`, defaults to 6):
            N for the encoder stack (section 3.1).
        num_decoder_layers (`int`, defaults to 6):
            N for the decoder stack (section 3.1).
        dropout (`float`, defaults to 0.1):
            P_drop: applied to each sub-layer output before the residual add, and to the sums of embeddings and
            positional encodings (section 5.4).
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights. Not in the paper.
        activation_dropout (`float`, defaults to 0.0):
            Dropout after the ReLU of the feed-forward network. Not in the paper.
        positional_encoding (`str`, defaults to `"sinusoidal"`):
            `"sinusoidal"` (section 3.5) or `"learned"` (Table 3, row E).
        max_position_embeddings (`int`, defaults to 1024):
            Rows of the learned position table; for sinusoidal encodings only the size of the precomputed
            table (longer inputs are encoded on the fly).
        layer_norm (`str`, defaults to `"post"`):
            `"post"`: LayerNorm(x + Sublayer(x)) as in section 3.1. `"pre"`: x + Sublayer(LayerNorm(x)) with a
            final LayerNorm on each stack. Not in the paper.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of every LayerNorm (the paper gives none; PyTorch's default).
        scale_embedding (`bool`, defaults to `True`):
            Multiply the embeddings by sqrt(d_model) (section 3.4).
        tie_word_embeddings (`bool`, defaults to `True`):
            One weight matrix for the encoder embedding, the decoder embedding and the pre-softmax projection
            (section 3.4). `False` gives three separate matrices.
        pad_token_id, bos_token_id, eos_token_id, decoder_start_token_id (`int`):
            Special token ids: `<pad>`=0, `<s>`=1, `</s>`=2 (and `<unk>`=3 in the tokenizer). The decoder starts
            from `<s>`.

    Example:

    ```python
    >>> from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
    >>> config = VanillaTransformerConfig.base(vocab_size=37000)
    >>> model = VanillaTransformerForConditionalGeneration(config)
    >>> round(model.num_parameters() / 1e6, 1)
    63.0
    ```
    """

    model_type = "vanilla_transformer"
    # HF's standard names -> the paper's. `num_hidden_layers` is the decoder's N because transformers sizes the
    # generation cache from it; the encoder keeps no cache.
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "num_heads",
        "intermediate_size": "d_ff",
        "num_hidden_layers": "num_decoder_layers",
        "encoder_layers": "num_encoder_layers",
        "decoder_layers": "num_decoder_layers",
        "encoder_attention_heads": "num_heads",
        "decoder_attention_heads": "num_heads",
        "encoder_ffn_dim": "d_ff",
        "decoder_ffn_dim": "d_ff",
    }

    vocab_size: int = 37000
    d_model: int = 512
    d_ff: int = 2048
    num_heads: int = 8
    d_k: int | None = None
    d_v: int | None = None
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    positional_encoding: str = "sinusoidal"
    max_position_embeddings: int = 1024
    layer_norm: str = "post"
    layer_norm_eps: float = 1e-5
    scale_embedding: bool = True
    tie_word_embeddings: bool = True
    use_cache: bool = True
    is_encoder_decoder: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    decoder_start_token_id: int | None = 1

    # Keys of a loaded config.json that this class discards. Empty here, and therefore in the copy of this file that
    # `save_pretrained` writes beside the weights for users without the package; the installed package's `__init__`
    # fills it with what the package handles itself (see there). This module imports nothing from the package.
    drop_on_load: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self, **kwargs):
        for key in self.drop_on_load:
            kwargs.pop(key, None)
        self._validate()
        super().__post_init__(**kwargs)

    def _validate(self):
        """Fail at construction, naming the field, rather than deep inside torch at the first forward.

        Types are checked, not converted: a string such as "false" (truthy) or "1e-5" (from a hand-edited
        config.json or an unparsed command-line value) is refused, not silently taken for something else.
        """
        for name in ("scale_embedding", "tie_word_embeddings", "use_cache", "is_encoder_decoder"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool (true or false), got {value!r}.")
        for name in ("vocab_size", "d_model", "d_ff", "num_heads", "num_encoder_layers", "num_decoder_layers",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("d_k", "d_v"):
            value = getattr(self, name)
            if value is None:
                if self.d_model % self.num_heads != 0:
                    raise ValueError(
                        f"{name} defaults to d_model / num_heads, but d_model={self.d_model} is not divisible by "
                        f"num_heads={self.num_heads}. Change d_model or num_heads, or set {name} explicitly."
                    )
            elif not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer or None (d_model / num_heads), got {value!r}.")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}.")
        if not _is_number(self.layer_norm_eps) or not 0.0 < self.layer_norm_eps < math.inf:
            raise ValueError(f"layer_norm_eps must be a positive number, got {self.layer_norm_eps!r}.")
        if self.positional_encoding not in POSITIONAL_ENCODINGS:
            raise ValueError(
                f"positional_encoding must be one of {POSITIONAL_ENCODINGS}, got {self.positional_encoding!r}."
            )
        if self.positional_encoding == "sinusoidal" and self.d_model % 2 != 0:
            raise ValueError(f"sinusoidal positional_encoding needs an even d_model (sin/cos pairs), got {self.d_model}.")
        if self.layer_norm not in LAYER_NORM_POSITIONS:
            raise ValueError(f"layer_norm must be one of {LAYER_NORM_POSITIONS}, got {self.layer_norm!r}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            values = getattr(self, name)
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if value is not None and not _is_int(value):
                    raise ValueError(f"{name} must be an integer token id or None, got {value!r}.")
                if value is not None and not 0 <= value < self.vocab_size:
                    raise ValueError(f"{name}={value} is outside the vocabulary (vocab_size={self.vocab_size}).")

    # Presets: Table 3 of the paper.

    @classmethod
    def base(cls, **overrides) -> "VanillaTransformerConfig":
        """Transformer (base), Table 3: N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1."""
        return cls(**overrides)

    @classmethod
    def big(cls, **overrides) -> "VanillaTransformerConfig":
        """Transformer (big), Table 3: N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3 (EN-DE)."""
        return cls(**{"d_model": 1024, "d_ff": 4096, "num_heads": 16, "dropout": 0.3, **overrides})

    @classmethod
    def small(cls, **overrides) -> "VanillaTransformerConfig":
        """A CPU-sized model (not in the paper): N=3, d_model=256, d_ff=1024, h=4, P_drop=0.1."""
        params = {"d_model": 256, "d_ff": 1024, "num_heads": 4, "num_encoder_layers": 3, "num_decoder_layers": 3}
        return cls(**{**params, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> "VanillaTransformerConfig":
        """A toy model for tests and quick runs (not in the paper): N=2, d_model=32, d_ff=64, h=4."""
        params = {"vocab_size": 99, "d_model": 32, "d_ff": 64, "num_heads": 4, "num_encoder_layers": 2,
                  "num_decoder_layers": 2, "max_position_embeddings": 64}
        return cls(**{**params, **overrides})


__all__ = ["VanillaTransformerConfig"]
