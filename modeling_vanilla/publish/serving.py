"""Serve a model with CTranslate2: convert it through the ctranslate2 package's own `Converter`, and translate with
its `Translator` (CPU or GPU, float32 or quantized weights). Install with `pip install "vanilla-transformer[serve]"`.

The conversion fills CTranslate2's `TransformerSpec` from our weights, layer by layer; nothing is approximated:

- Section 3.5's interleaved sinusoids (or learned positions) are given to CTranslate2 as an explicit position table
  (`position_encodings.encodings`), rows 0 .. max_position_embeddings - 1, so CTranslate2 adds exactly our
  encodings (its own sinusoids put the sines and cosines in halves). Inputs are limited to that many tokens.
- Embeddings times sqrt(d_model) (section 3.4) or unscaled; post-norm (the paper) or pre-norm with its final
  LayerNorm; ReLU feed-forward (Eq. 2); no attention biases (CTranslate2's are optional); our LayerNorm epsilon.
- Tied or untied embeddings and projection: CTranslate2 stores each matrix, and aliases equal ones when it saves.
- d_k or d_v other than d_model / num_heads cannot be expressed (CTranslate2 splits a fused projection into
  num_heads equal parts of d_model / num_heads): such a model is refused by name.

The folder gets CTranslate2's files (model.bin, config.json, shared_vocabulary.json), our tokenizer and
generation_config.json (beam size and length penalty), so `vanilla-translate --backend ctranslate2 FOLDER` needs
nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ..inference.translation import length_sorted_batches
from ..modeling_vanilla import MAX_OUTPUT_LENGTH_OFFSET
from .ctranslate2_types import COMPUTE_TYPES, QUANTIZATIONS
from .export import ExportError

GENERATION_CONFIG = "generation_config.json"
SERVE_INSTALL = 'pip install "vanilla-transformer[serve]" (or pip install ctranslate2)'


def require_ctranslate2():
    """The ctranslate2 module, or an ImportError that says how to install it."""
    try:
        import ctranslate2
    except ImportError as error:
        raise ImportError(f"CTranslate2 is not installed: {SERVE_INSTALL}.") from error
    return ctranslate2


def check_ctranslate2_compatible(config) -> None:
    """Refuse, naming the option, what CTranslate2's Transformer cannot compute exactly."""
    width = config.d_model // config.num_heads
    problems = [f"{name}={getattr(config, name)} (CTranslate2's heads are d_model / num_heads = {width} wide)"
                for name in ("d_k", "d_v") if getattr(config, name) not in (None, width)]
    if config.d_model % config.num_heads:
        problems.append(f"d_model={config.d_model} is not a multiple of num_heads={config.num_heads}")
    if problems:
        raise ExportError("cannot export to CTranslate2 exactly: " + "; ".join(problems) + ".")


def vocabulary_tokens(tokenizer, vocab_size: int) -> list[str]:
    """The token string of every id 0 .. vocab_size - 1 (CTranslate2 reads and writes tokens, not ids). Rows that a
    resized model has beyond the tokenizer get placeholder names, which the tokenizer can never produce."""
    if len(tokenizer) > vocab_size:
        raise ExportError(f"the tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} "
                          "(config.vocab_size): save the model with its own tokenizer.")
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return tokens + [f"<unused_{i}>" for i in range(len(tokens), vocab_size)]


def _array(tensor: torch.Tensor):
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()


def _layer_norm(spec, module) -> None:
    spec.gamma, spec.beta = _array(module.weight), _array(module.bias)


def _linear(spec, *modules) -> None:
    """One CTranslate2 linear layer from one of ours, or from several fused along the output axis (q, k, v)."""
    spec.weight = _array(torch.cat([module.weight for module in modules]))
    if all(module.bias is not None for module in modules):
        spec.bias = _array(torch.cat([module.bias for module in modules]))


def _attention(spec, attention, self_attention: bool) -> None:
    if self_attention:  # one fused projection for queries, keys and values
        _linear(spec.linear[0], attention.q_proj, attention.k_proj, attention.v_proj)
    else:  # queries from the decoder; keys and values, fused, from the encoder output
        _linear(spec.linear[0], attention.q_proj)
        _linear(spec.linear[1], attention.k_proj, attention.v_proj)
    _linear(spec.linear[-1], attention.out_proj)


def _stack(spec, stack, config) -> None:
    """Embedding, its scale, the explicit position table, the final LayerNorm of a pre-norm stack."""
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = _array(stack.embed_tokens.weight)
    spec.scale_embeddings = stack.embed_scale  # sqrt(d_model), or 1.0 with scale_embedding=False
    spec.position_encodings.encodings = _array(stack.embed_positions.span(0, config.max_position_embeddings))
    if stack.layer_norm is not None:
        _layer_norm(spec.layer_norm, stack.layer_norm)


def _layer(spec, layer) -> None:
    """An encoder layer (self-attention, feed-forward) or a decoder layer (with encoder-decoder attention between)."""
    _attention(spec.self_attention, layer.self_attn, self_attention=True)
    _layer_norm(spec.self_attention.layer_norm, layer.self_attn_layer_norm)
    if hasattr(layer, "encoder_attn"):
        _attention(spec.attention, layer.encoder_attn, self_attention=False)
        _layer_norm(spec.attention.layer_norm, layer.encoder_attn_layer_norm)
    _linear(spec.ffn.linear_0, layer.ffn.fc1)
    _linear(spec.ffn.linear_1, layer.ffn.fc2)
    _layer_norm(spec.ffn.layer_norm, layer.final_layer_norm)


@torch.no_grad()
def ctranslate2_spec(model, tokens: Sequence[str]):
    """CTranslate2's `TransformerSpec` holding `model`'s weights (ours, for generation) and vocabulary."""
    from ctranslate2.specs import common_spec, transformer_spec

    config = model.config
    check_ctranslate2_compatible(config)
    spec = transformer_spec.TransformerSpec.from_config(
        (config.num_encoder_layers, config.num_decoder_layers), config.num_heads,
        pre_norm=config.layer_norm == "pre", activation=common_spec.Activation.RELU,
    )
    for stack_spec, stack in ((spec.encoder, model.model.encoder), (spec.decoder, model.model.decoder)):
        _stack(stack_spec, stack, config)
        for layer_spec, layer in zip(stack_spec.layer, stack.layers, strict=True):
            _layer(layer_spec, layer)
    _linear(spec.decoder.projection, model.lm_head)

    spec.config.layer_norm_epsilon = config.layer_norm_eps
    spec.config.bos_token = tokens[config.bos_token_id]
    spec.config.eos_token = tokens[config.eos_token_id]
    spec.config.decoder_start_token = tokens[config.decoder_start_token_id]
    unk = [token for token in ("<unk>",) if token in tokens]
    spec.config.unk_token = unk[0] if unk else tokens[config.pad_token_id]
    spec.register_source_vocabulary(list(tokens))
    spec.register_target_vocabulary(list(tokens))
    return spec


def to_ctranslate2(model, tokenizer, destination: str | Path, quantization: str | None = None) -> Path:
    """Write `model` (ours, with its tokenizer) as a CTranslate2 folder, weights stored as `quantization` (default
    float32). The folder is built beside `destination` and moved into place when complete, so a failure leaves no
    half-written model; an existing non-empty `destination` is refused."""
    ctranslate2 = require_ctranslate2()
    if quantization not in (None, *QUANTIZATIONS):
        raise ExportError(f"quantization={quantization!r}: choose one of {', '.join(QUANTIZATIONS)}.")
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"{destination} exists and is not an empty folder: choose a new folder.")
    tokens = vocabulary_tokens(tokenizer, model.config.vocab_size)
    spec = ctranslate2_spec(model, tokens)

    class VanillaConverter(ctranslate2.converters.Converter):
        def _load(self):
            return spec

    destination.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        VanillaConverter().convert(str(building), quantization=quantization, force=True)
        tokenizer.save_pretrained(building)
        model.generation_config.to_json_file(building / GENERATION_CONFIG)
        os.replace(building, destination)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return destination


def export_folder(source: str | Path, destination: str | Path, quantization: str | None = None) -> Path:
    """`to_ctranslate2` of a saved model folder of ours (with its tokenizer). Returns the destination."""
    from ..inference.model_folder import load_model_and_tokenizer

    require_ctranslate2()  # before the model is loaded
    model, tokenizer = load_model_and_tokenizer(source, vanilla_only=True)
    return to_ctranslate2(model, tokenizer, destination, quantization)


class CTranslate2Translator:
    """Translate with a folder written by `to_ctranslate2`: the same decoding as our `generate()` (beam size and
    length penalty from the saved generation config, at most input length + 50 new tokens, section 6.1)."""

    def __init__(self, folder: str | Path, device: str = "cpu", compute_type: str = "default",
                 threads: int | None = None, device_index: int = 0):
        ctranslate2 = require_ctranslate2()
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not (folder / "model.bin").is_file():
            raise FileNotFoundError(f"{folder} has no model.bin: not a CTranslate2 folder. Convert a model with "
                                    f"vanilla-export --to ctranslate2 MODEL {folder}.")
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"compute_type={compute_type!r}: choose one of {', '.join(COMPUTE_TYPES)}.")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        settings = json.loads((folder / GENERATION_CONFIG).read_text()) if (folder / GENERATION_CONFIG).is_file() else {}
        self.num_beams = settings.get("num_beams") or 1
        self.length_penalty = settings.get("length_penalty", 1.0)
        # transformers' min_length counts the decoder's start token, CTranslate2's only the tokens it generates
        self.min_length = max(0, (settings.get("min_length") or 0) - 1)
        self.translator = ctranslate2.Translator(
            str(folder), device=device, device_index=device_index, compute_type=compute_type,
            intra_threads=threads if threads is not None else torch.get_num_threads(),
        )

    def translate_tokens(self, sentences: Sequence[str], num_beams: int | None = None,
                         max_new_tokens: int | None = None) -> list[list[str]]:
        """Output tokens (no </s>) of one batch of sentences."""
        ids = self.tokenizer(list(sentences), truncation=True)["input_ids"]
        sources = [self.tokenizer.convert_ids_to_tokens(row) for row in ids]
        limit = max_new_tokens or max(len(row) for row in ids) + MAX_OUTPUT_LENGTH_OFFSET
        results = self.translator.translate_batch(
            sources, beam_size=num_beams or self.num_beams, length_penalty=self.length_penalty,
            max_decoding_length=limit, min_decoding_length=self.min_length, max_batch_size=0,
        )
        return [result.hypotheses[0] for result in results]

    def translate(self, sentences: Sequence[str], batch_size: int = 32, num_beams: int | None = None,
                  max_new_tokens: int | None = None) -> list[str]:
        """Translations of `sentences`, in their order; a blank sentence gives "". Sentences of similar length are
        batched together, as `translation.translate` does."""
        results = ["" for _ in sentences]
        for chunk in length_sorted_batches(sentences, range(len(sentences)), batch_size):
            outputs = self.translate_tokens([sentences[i] for i in chunk], num_beams, max_new_tokens)
            ids = [self.tokenizer.convert_tokens_to_ids(tokens) for tokens in outputs]
            for i, text in zip(chunk, self.tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
                results[i] = text
        return results
