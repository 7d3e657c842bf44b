"""Leave our format: a model trained here as a native `MarianMTModel` (transformers' own code, no remote code), and
a `MarianMTModel` back as ours.

The two architectures compute the same function where our options fit Marian's, with one difference of layout:
section 3.5's encodings interleave sines and cosines (dimension 2i is a sine, 2i+1 its cosine), Marian's put every
sine in the first half of d_model and every cosine in the second. A fixed permutation of the d_model axis,
applied to every weight that reads or writes the residual stream (embeddings and the tied projection, the
attention and feed-forward matrices on their d_model side, LayerNorm's gain and bias), leaves the network's
function unchanged: LayerNorm's mean and variance and every dot product over d_model do not depend on the order
of the dimensions. Chosen as interleaved -> halves, it turns our encodings into Marian's exactly.

Marian has biases on the attention projections and a final logits bias; ours has none, so they are zeros one way
and must be zeros the other way. Options without a Marian equivalent are refused by name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..configuration_vanilla import VanillaTransformerConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class ExportError(ValueError):
    """A model whose options have no exact equivalent in the target format."""


def marian_permutation(d_model: int) -> torch.Tensor:
    """perm with marian[..., m] = ours[..., perm[m]]: our even (sine) dimensions first, then the odd (cosine) ones."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def check_marian_compatible(config: VanillaTransformerConfig) -> None:
    """Refuse, naming the option, what MarianMTModel cannot compute exactly."""
    problems = []
    if config.layer_norm != "post":
        problems.append(f"layer_norm={config.layer_norm!r} (Marian normalizes after each sub-layer, post-norm only)")
    for name in ("d_k", "d_v"):
        value = getattr(config, name)
        if value is not None and value != config.d_model // config.num_heads:
            problems.append(f"{name}={value} (Marian's heads are d_model / num_heads = "
                            f"{config.d_model // config.num_heads} wide)")
    if config.positional_encoding != "sinusoidal":
        problems.append(f"positional_encoding={config.positional_encoding!r} (Marian's positions are sinusoidal)")
    if not config.tie_word_embeddings:
        problems.append("tie_word_embeddings=False (exported models share one embedding matrix)")
    if config.layer_norm_eps != 1e-5:
        problems.append(f"layer_norm_eps={config.layer_norm_eps} (Marian's LayerNorm uses 1e-5)")
    if config.d_model % 2:
        problems.append(f"d_model={config.d_model} (an odd width has no sine/cosine pairing)")
    if problems:
        raise ExportError("cannot export to MarianMTModel exactly: " + "; ".join(problems) + ".")


def marian_config(config: VanillaTransformerConfig):
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=config.vocab_size, decoder_vocab_size=config.vocab_size, d_model=config.d_model,
        encoder_layers=config.num_encoder_layers, decoder_layers=config.num_decoder_layers,
        encoder_attention_heads=config.num_heads, decoder_attention_heads=config.num_heads,
        encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff, activation_function="relu",
        scale_embedding=config.scale_embedding, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        dropout=config.dropout, attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout, max_position_embeddings=config.max_position_embeddings,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id, forced_eos_token_id=None,
    )


def _layer_map(prefix: str, attentions: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(our name, Marian's name, how the d_model axis is permuted: "in" columns, "out" rows, "vector", "none")."""
    names = []
    for attention in attentions:
        for projection in ("q_proj", "k_proj", "v_proj"):
            names.append((f"{prefix}.{attention}.{projection}.weight", f"{prefix}.{attention}.{projection}.weight", "in"))
        names.append((f"{prefix}.{attention}.out_proj.weight", f"{prefix}.{attention}.out_proj.weight", "out"))
        for part in ("weight", "bias"):
            names.append((f"{prefix}.{attention}_layer_norm.{part}", f"{prefix}.{attention}_layer_norm.{part}", "vector"))
    names += [(f"{prefix}.ffn.fc1.weight", f"{prefix}.fc1.weight", "in"), (f"{prefix}.ffn.fc1.bias", f"{prefix}.fc1.bias", "none"),
              (f"{prefix}.ffn.fc2.weight", f"{prefix}.fc2.weight", "out"), (f"{prefix}.ffn.fc2.bias", f"{prefix}.fc2.bias", "vector")]
    for part in ("weight", "bias"):
        names.append((f"{prefix}.final_layer_norm.{part}", f"{prefix}.final_layer_norm.{part}", "vector"))
    return names


def weight_map(config: VanillaTransformerConfig) -> list[tuple[str, str, str]]:
    """Every weight of ours with its Marian name and the side of it that lies on the d_model axis."""
    names = [("model.shared.weight", "model.shared.weight", "in")]
    for i in range(config.num_encoder_layers):
        names += _layer_map(f"model.encoder.layers.{i}", ("self_attn",))
    for i in range(config.num_decoder_layers):
        names += _layer_map(f"model.decoder.layers.{i}", ("self_attn", "encoder_attn"))
    return names


def _permute(tensor: torch.Tensor, side: str, perm: torch.Tensor) -> torch.Tensor:
    if side == "in":
        return tensor[:, perm]
    if side == "out":
        return tensor[perm, :]
    return tensor[perm] if side == "vector" else tensor


@torch.no_grad()
def to_marian(model):
    """A MarianMTModel computing exactly what `model` (ours, for generation) computes; checks the options first."""
    from transformers import MarianMTModel

    config = model.config
    check_marian_compatible(config)
    marian = MarianMTModel(marian_config(config)).eval()
    ours = model.state_dict()
    target = dict(marian.named_parameters())
    perm = marian_permutation(config.d_model)
    written = set()
    for our_name, marian_name, side in weight_map(config):
        target[marian_name].copy_(_permute(ours[our_name], side, perm))
        written.add(marian_name)
    for name, parameter in target.items():
        if name not in written and name.endswith("_proj.bias"):
            parameter.zero_()  # ours has no attention biases
            written.add(name)
    marian.final_logits_bias.zero_()
    marian.tie_weights()  # the encoder's and decoder's embeddings and lm_head are model.shared
    missing = sorted(set(target) - written - {n for n in target if "embed_positions" in n or "embed_tokens" in n
                                              or n == "lm_head.weight"})
    if missing:
        raise ExportError(f"no weight of ours maps to Marian's {', '.join(missing)}.")
    copy_generation_settings(model.generation_config, marian.generation_config, config)
    return marian


def copy_generation_settings(source, target, config) -> None:
    """Beam size and length penalty, and a length limit: ours defaults to input length + 50 (section 6.1), which
    Marian has no way to say, so the exported model gets the position table's size."""
    target.num_beams = source.num_beams
    target.length_penalty = source.length_penalty
    target.max_length = source.max_length or config.max_position_embeddings
    target.decoder_start_token_id = config.decoder_start_token_id
    target.pad_token_id, target.eos_token_id, target.bos_token_id = (
        config.pad_token_id, config.eos_token_id, config.bos_token_id)
    target.forced_eos_token_id = None
    target.bad_words_ids = None


def check_ours_compatible(marian) -> None:
    """Refuse, naming the option, a MarianMTModel that ours cannot compute exactly."""
    config, problems = marian.config, []
    if config.activation_function != "relu":
        problems.append(f"activation_function={config.activation_function!r} (ours is Eq. 2's ReLU)")
    if config.encoder_attention_heads != config.decoder_attention_heads:
        problems.append("encoder_attention_heads != decoder_attention_heads (ours has one num_heads)")
    if config.encoder_ffn_dim != config.decoder_ffn_dim:
        problems.append("encoder_ffn_dim != decoder_ffn_dim (ours has one d_ff)")
    if not config.share_encoder_decoder_embeddings or config.decoder_vocab_size not in (None, config.vocab_size):
        problems.append("separate encoder and decoder vocabularies (ours shares one)")
    if config.d_model % 2:
        problems.append(f"d_model={config.d_model} (odd)")
    state = marian.state_dict()
    biased = sorted(name for name, tensor in state.items()
                    if (name.endswith("_proj.bias") or name == "final_logits_bias") and tensor.abs().max() > 0)
    if biased:
        problems.append(f"non-zero attention or logits biases ({biased[0]}, {len(biased)} tensors; ours has none)")
    if problems:
        raise ExportError("cannot import this MarianMTModel exactly: " + "; ".join(problems) + ".")


@torch.no_grad()
def from_marian(marian):
    """Ours, computing exactly what a fitting MarianMTModel computes (for fine-tuning and the attention tools)."""
    from ..modeling_vanilla import VanillaTransformerForConditionalGeneration

    check_ours_compatible(marian)
    c = marian.config
    config = VanillaTransformerConfig(
        vocab_size=c.vocab_size, d_model=c.d_model, d_ff=c.encoder_ffn_dim, num_heads=c.encoder_attention_heads,
        num_encoder_layers=c.encoder_layers, num_decoder_layers=c.decoder_layers, dropout=c.dropout,
        attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout,
        max_position_embeddings=c.max_position_embeddings, scale_embedding=c.scale_embedding,
        pad_token_id=c.pad_token_id, bos_token_id=c.bos_token_id if c.bos_token_id is not None else c.pad_token_id,
        eos_token_id=c.eos_token_id, decoder_start_token_id=c.decoder_start_token_id,
    )
    model = VanillaTransformerForConditionalGeneration(config).eval()
    theirs = marian.state_dict()
    target = dict(model.named_parameters())
    inverse = torch.argsort(marian_permutation(c.d_model))
    for our_name, marian_name, side in weight_map(config):
        target[our_name].copy_(_permute(theirs[marian_name], side, inverse))
    model.tie_weights()
    model.generation_config.num_beams = marian.generation_config.num_beams or 1
    model.generation_config.length_penalty = marian.generation_config.length_penalty
    return model


def export_folder(source: str | Path, destination: str | Path, direction: str) -> Path:
    """Load a saved model folder, convert it (`direction` "to-marian" or "from-marian"), save it with the
    tokenizer files beside it. Returns the destination."""
    source, destination = Path(source), Path(destination)
    if direction == "to-marian":
        from ..modeling_vanilla import VanillaTransformerForConditionalGeneration

        converted = to_marian(VanillaTransformerForConditionalGeneration.from_pretrained(source))
    else:
        from transformers import MarianMTModel

        converted = from_marian(MarianMTModel.from_pretrained(source))
    converted.save_pretrained(destination)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)
    return destination
