"""Benchmarks that print a table. Ratios between settings measured in the same run are what to compare:
the machine is shared and noisy, absolute numbers are not.

    # Ours against MarianMTModel configured to the same architecture, in one process (docs/benchmarks.md):
    python scripts/benchmark.py speed --shapes base small --json benchmark.json

    # Peak training memory with and without activation (gradient) checkpointing, base shape:
    python scripts/benchmark.py checkpointing --preset base --batch-size 64 --length 32
"""

import argparse
import json
import multiprocessing
import statistics
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the process's peak resident memory (Linux) and return the current one, in KiB. (ru_maxrss cannot be
    used: a process started by fork + exec inherits its parent's peak.)"""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")


def peak_rss() -> int:
    """Peak resident memory since `reset_peak_rss`, in KiB."""
    return _status_kib("VmHWM")


def _measure_training_step(preset: str, batch_size: int, length: int, checkpointing: bool, queue) -> None:
    """In a fresh process: peak resident memory added by one forward + backward step, and its time."""
    import torch

    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    torch.manual_seed(0)
    config = getattr(VanillaTransformerConfig, preset)()
    model = VanillaTransformerForConditionalGeneration(config).train()
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})

    def step(size: int) -> float:
        input_ids = torch.randint(4, config.vocab_size, (size, length))
        labels = torch.randint(4, config.vocab_size, (size, length))
        start = time.perf_counter()
        model(input_ids=input_ids, labels=labels).loss.backward()
        return time.perf_counter() - start

    step(1)  # allocates the gradients, so that the baseline holds weights + gradients
    baseline_kib = reset_peak_rss()
    seconds = step(batch_size)
    peak_kib = peak_rss()
    queue.put({"activation_mib": (peak_kib - baseline_kib) / 1024, "peak_mib": peak_kib / 1024, "seconds": seconds})


def run_isolated(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _measure_peer_training_memory(shape: str, ours: bool, precision: str, queue) -> None:
    """In a fresh process: peak resident memory that one training step adds (weights and gradients excluded)."""
    import torch

    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    preset, vocab, batch_size, length = SHAPES[shape]
    config = getattr(VanillaTransformerConfig, preset)(vocab_size=vocab)
    model = VanillaTransformerForConditionalGeneration(config) if ours else marian_like(config)

    def batch(size):
        ids = torch.randint(4, vocab, (size, length))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(4, vocab, (size, length))}

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    train_step_fn(model, batch(2), ours, precision, optimizer)()  # gradients and Adam's state exist from here on
    step = train_step_fn(model, batch(batch_size), ours, precision, optimizer)
    baseline_kib = reset_peak_rss()
    step()
    queue.put((peak_rss() - baseline_kib) / 1024)


def checkpointing(args: argparse.Namespace) -> dict:
    results = {
        name: run_isolated(_measure_training_step, args.preset, args.batch_size, args.length, enabled)
        for name, enabled in (("plain", False), ("checkpointing", True))
    }
    print(f"\nTraining step, preset {args.preset}, batch {args.batch_size} x {args.length} tokens, fp32, CPU")
    print(f"| {'setting':<14} | {'activation peak MiB':>19} | {'process peak MiB':>16} | {'step s':>7} |")
    print(f"|{'-' * 16}|{'-' * 21}|{'-' * 18}|{'-' * 9}|")
    for name, r in results.items():
        print(f"| {name:<14} | {r['activation_mib']:>19.0f} | {r['peak_mib']:>16.0f} | {r['seconds']:>7.2f} |")
    plain, ckpt = results["plain"], results["checkpointing"]
    ratio = ckpt["activation_mib"] / plain["activation_mib"]
    print(f"\ncheckpointing / plain: activation memory x{ratio:.2f}, step time x{ckpt['seconds'] / plain['seconds']:.2f}")
    return results


# Speed: ours against MarianMTModel


SHAPES = {
    # name: (config preset, vocabulary, training batch (sentences x tokens per side))
    "base": ("base", 37000, 64, 32),
    "small": ("small", 8000, 128, 16),
}


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
    dec_cross = tgt * 2 * d * h * d_k + src * 2 * d * h * (d_k + d_v) + tgt * 2 * h * d_v * d + 2 * tgt * src * h * (d_k + d_v)
    dec = config.num_decoder_layers * (dec_self + dec_cross + tgt * 2 * 2 * d * f)
    logits = tgt * 2 * d * config.vocab_size
    return 3.0 * batch * (enc + dec + logits)


def matmul_peak(dtype, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square matrix product in `dtype` on this machine, now."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def time_it(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def train_step_fn(model, batch, ours: bool, precision: str, optimizer=None):
    import torch

    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-5)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if ours:  # our training path: label smoothing, only target positions projected onto the vocabulary
                loss = model(**batch, label_smoothing=0.1, output_logits=False, use_cache=False).loss
            else:
                loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def generate_fn(model, batch, beams: int, length: int, precision: str):
    import torch

    model.eval()

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=beams,
                                  max_new_tokens=length, min_new_tokens=length, length_penalty=0.6, do_sample=False)

    return run


def speed(args: argparse.Namespace) -> dict:
    import torch

    from modeling_vanilla import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    torch.manual_seed(0)
    peaks = {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}
    print(f"matmul peak now: bf16 {peaks['bf16'] / 1e12:.2f} TFLOP/s, fp32 {peaks['fp32'] / 1e12:.2f} TFLOP/s")
    results = {"matmul_peak_flops": peaks, "shapes": {}}
    for shape in args.shapes:
        preset, vocab, batch_size, length = SHAPES[shape]
        config = getattr(VanillaTransformerConfig, preset)(vocab_size=vocab)
        torch.manual_seed(0)
        ours = VanillaTransformerForConditionalGeneration(config)
        peer = marian_like(config)
        input_ids = torch.randint(4, vocab, (batch_size, length))
        labels = torch.randint(4, vocab, (batch_size, length))
        attention_mask = torch.ones_like(input_ids)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        flops = training_flops(config, batch_size, length, length)
        rows = {}
        for name, model, is_ours in (("ours", ours, True), ("marian", peer, False)):
            for precision in ("fp32", "bf16"):
                step = train_step_fn(model, batch, is_ours, precision)
                times = time_it(step, args.warmup, args.repeats)
                seconds = statistics.median(times)
                rows[f"train {name} {precision}"] = {
                    "target_tokens_per_s": batch_size * length / seconds, "seconds": seconds,
                    # memory in a fresh process each: in this one, the allocator keeps what earlier runs freed
                    "peak_mib": run_isolated(_measure_peer_training_memory, shape, is_ours, precision),
                    "mfu_bf16": flops / seconds / peaks["bf16"],
                    "mfu_fp32": flops / seconds / peaks["fp32"],
                }
                print(f"{shape} train {name} {precision}: {batch_size * length / seconds:.0f} target tokens/s")
        source = {"input_ids": input_ids[:, :length], "attention_mask": attention_mask}
        for beams, gen_batch in ((4, 16), (1, 64)):
            gen_inputs = {k: v[:gen_batch] for k, v in source.items()}
            for name, model in (("ours", ours), ("marian", peer)):
                for precision in ("fp32", "bf16"):
                    run = generate_fn(model, gen_inputs, beams, length, precision)
                    times = time_it(run, 1, max(2, args.repeats // 2))
                    seconds = statistics.median(times)
                    rows[f"generate beam{beams} {name} {precision}"] = {
                        "tokens_per_s": gen_batch * length / seconds, "seconds": seconds}
                    print(f"{shape} generate beam {beams} {name} {precision}: {gen_batch * length / seconds:.0f} tokens/s")
        # Same tokens as our own fp32 path?
        with torch.no_grad():
            ref = generate_fn(ours, {k: v[:16] for k, v in source.items()}, 4, length, "fp32")()
            fast = generate_fn(ours, {k: v[:16] for k, v in source.items()}, 4, length, "bf16")()
        rows["bf16_generation_token_agreement"] = (ref == fast).float().mean().item()
        results["shapes"][shape] = {"batch": [batch_size, length], "train_flops_per_step": flops, "rows": rows}
        print_speed_table(shape, rows)
    return results


def print_speed_table(shape: str, rows: dict) -> None:
    print(f"\n{shape}: | measurement | ours | MarianMT | ours / MarianMT |")
    for kind in ("train", "generate beam4", "generate beam1"):
        key = "target_tokens_per_s" if kind == "train" else "tokens_per_s"
        for precision in ("fp32", "bf16"):
            o, m = rows[f"{kind} ours {precision}"][key], rows[f"{kind} marian {precision}"][key]
            print(f"| {kind} {precision} tokens/s | {o:.0f} | {m:.0f} | {o / m:.2f}x |")
    for precision in ("fp32", "bf16"):
        o, m = rows[f"train ours {precision}"], rows[f"train marian {precision}"]
        print(f"| train {precision} peak MiB | {o['peak_mib']:.0f} | {m['peak_mib']:.0f} | {o['peak_mib'] / max(m['peak_mib'], 1):.2f}x |")
        print(f"| train {precision} MFU (of bf16 peak) | {o['mfu_bf16']:.1%} | {m['mfu_bf16']:.1%} | |")
    best_marian = max(rows["train marian fp32"]["target_tokens_per_s"], rows["train marian bf16"]["target_tokens_per_s"])
    ours_best = rows["train ours bf16"]["target_tokens_per_s"]
    print(f"ours bf16 / MarianMT fp32: {ours_best / rows['train marian fp32']['target_tokens_per_s']:.2f}x; "
          f"/ MarianMT best: {ours_best / best_marian:.2f}x; bf16 beam-4 tokens equal to fp32: "
          f"{rows['bf16_generation_token_agreement']:.1%}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    sp = sub.add_parser("speed", help="training and generation speed of ours and MarianMT, same architecture")
    sp.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["base", "small"])
    sp.add_argument("--warmup", type=int, default=2)
    sp.add_argument("--repeats", type=int, default=5)
    sp.add_argument("--json", help="also write the results to this file")
    ckpt = sub.add_parser("checkpointing", help="peak training memory with and without activation checkpointing")
    ckpt.add_argument("--preset", default="base", choices=["tiny", "base", "big"])
    ckpt.add_argument("--batch-size", type=int, default=64)
    ckpt.add_argument("--length", type=int, default=32, help="source and target tokens per sentence")
    ckpt.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = {"checkpointing": checkpointing, "speed": speed}[args.benchmark](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
