"""The two sides of the comparison and the steps both take: MarianMTModel configured as our architecture, the
matrix-multiply FLOPs of a training step, Adam as each side trains with it, and one training or generation step."""

from __future__ import annotations


def marian_like(config):
    """MarianMTModel configured to our architecture: same sizes, ReLU, sinusoidal positions, sqrt(d_model)
    embedding scale, one shared embedding matrix, post-norm."""
    from transformers import MarianConfig, MarianMTModel

    peer = MarianConfig(
        vocab_size=config.vocab_size, d_model=config.d_model, encoder_layers=config.num_encoder_layers,
        decoder_layers=config.num_decoder_layers, encoder_attention_heads=config.num_heads,
        decoder_attention_heads=config.num_heads, encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff,
        activation_function="relu", scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, dropout=config.dropout, attention_dropout=0.0, activation_dropout=0.0,
        max_position_embeddings=1024, pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id, forced_eos_token_id=None,
    )
    return MarianMTModel(peer)


def training_flops(config, batch: int, src: int, tgt: int) -> float:
    """Matrix-multiply FLOPs of one training step (forward + backward = 3 x forward), from the shapes."""
    d, f, h = config.d_model, config.d_ff, config.num_heads
    d_k = config.d_k or d // h
    d_v = config.d_v or d // h
    # Per token: projections Q,K,V,O and the two FFN matrices; per pair of positions: QK^T and AV.
    enc = config.num_encoder_layers * (src * 2 * d * h * (2 * d_k + d_v) + src * 2 * h * d_v * d
                                       + src * 2 * 2 * d * f + 2 * src * src * h * (d_k + d_v))
    dec_self = tgt * 2 * d * h * (2 * d_k + d_v) + tgt * 2 * h * d_v * d + 2 * tgt * tgt * h * (d_k + d_v)
    dec_cross = (tgt * 2 * d * h * d_k + src * 2 * d * h * (d_k + d_v) + tgt * 2 * h * d_v * d
                 + 2 * tgt * src * h * (d_k + d_v))
    dec = config.num_decoder_layers * (dec_self + dec_cross + tgt * 2 * 2 * d * f)
    logits = tgt * 2 * d * config.vocab_size
    return 3.0 * batch * (enc + dec + logits)


def adam(model):
    """Adam as each side trains with it: fused where the device has it (our build_optimizer; Trainer's default
    optimizer, adamw_torch_fused, for MarianMT)."""
    import torch

    from modeling_vanilla.training.optimization import fused_adam_supported

    return torch.optim.Adam(model.parameters(), lr=1e-5, fused=fused_adam_supported(model))


def train_step_fn(model, batch, ours: bool, precision: str, optimizer=None):
    """One training step (forward, backward, Adam) of `model` on `batch`, as a function to call and time."""
    import torch

    optimizer = optimizer or adam(model)
    model.train()
    device = batch["labels"].device.type

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if ours:  # our training path: label smoothing, the loss without the (N, V) logits
                loss = model(**batch, label_smoothing=0.1, output_logits=False, use_cache=False).loss
            else:
                loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def generate_fn(model, batch, beams: int, length: int, precision: str):
    """generate() of exactly `length` new tokens for `batch`, as a function to call and time."""
    import torch

    model.eval()
    device = batch["input_ids"].device.type

    def run():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=beams,
                                  max_new_tokens=length, min_new_tokens=length, length_penalty=0.6, do_sample=False)

    return run
