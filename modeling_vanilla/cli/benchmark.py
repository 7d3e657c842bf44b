"""`vanilla-benchmark`: benchmarks that print a table. Ratios between settings measured in the same run are what to
compare: the machine is shared and noisy, absolute numbers are not. Every run starts with a line naming the machine
(`modeling_vanilla.hardware.describe_machine`: the GPU, or the CPU's threads and bf16 units, AMX, AVX512-BF16 or
none), and everything runs on the CPU.

    # Ours against MarianMTModel configured to the same architecture, in one process (docs/benchmarks.md):
    vanilla-benchmark speed --shapes base small --json benchmark.json

    # Peak training memory with and without activation (gradient) checkpointing, base shape:
    vanilla-benchmark checkpointing --preset base --batch-size 64 --length 32

    # Does it run? The smallest settings take seconds (the numbers mean nothing):
    vanilla-benchmark speed --shapes tiny --warmup 0 --repeats 1
    vanilla-benchmark checkpointing --preset tiny --batch-size 2 --length 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time

from ..arguments import non_negative_int, positive_int

SHAPES = {
    # name: (config preset, vocabulary, training batch (sentences x tokens per side))
    "base": ("base", 37000, 64, 32),
    "small": ("small", 8000, 128, 16),
    "tiny": ("tiny", 99, 8, 8),  # a check that the benchmark runs, in seconds; not a measurement
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vanilla-benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="benchmark", required=True)
    sp = sub.add_parser("speed", help="training and generation speed of ours and MarianMT, same architecture")
    sp.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["base", "small"])
    sp.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs before the timed ones")
    sp.add_argument("--repeats", type=positive_int, default=5, help="timed runs (the median is shown)")
    sp.add_argument("--json", help="also write the results to this file")
    ckpt = sub.add_parser("checkpointing", help="peak training memory with and without activation checkpointing")
    ckpt.add_argument("--preset", default="base", choices=["tiny", "small", "base", "big"])
    ckpt.add_argument("--batch-size", type=positive_int, default=64)
    ckpt.add_argument("--length", type=positive_int, default=32, help="source and target tokens per sentence")
    ckpt.add_argument("--json", help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_line()
    print(f"vanilla-benchmark {args.benchmark} on {machine}")
    results = {"checkpointing": checkpointing, "speed": speed}[args.benchmark](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "results": results}, f, indent=2)
    return 0


def machine_line() -> str:
    """`describe_machine()`; on a GPU machine, also the CPU's threads and bf16 units, since these numbers are CPU's."""
    import torch

    from ..hardware import cpu_bf16_units, describe_machine

    line = describe_machine()
    if torch.cuda.is_available():  # describe_machine names the GPU, which nothing here uses
        line += f"; measured on the CPU: {torch.get_num_threads()} threads, bf16 units: {cpu_bf16_units()}"
    return line


def ratio(value: float, peer: float) -> float:
    """`value / peer`, both measured in this run; nan where the peer measured 0 (tiny settings)."""
    return value / peer if peer else float("nan")


# Memory: each measurement in a fresh process


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

    from .. import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

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

    from .. import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    preset, vocab, batch_size, length = SHAPES[shape]
    config = getattr(VanillaTransformerConfig, preset)(vocab_size=vocab)
    model = VanillaTransformerForConditionalGeneration(config) if ours else marian_like(config)

    def batch(size):
        ids = torch.randint(4, vocab, (size, length))
        labels = torch.randint(4, vocab, (size, length))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    train_step_fn(model, batch(2), ours, precision, optimizer)()  # gradients and Adam's state exist from here on
    step = train_step_fn(model, batch(batch_size), ours, precision, optimizer)
    baseline_kib = reset_peak_rss()
    step()
    queue.put((peak_rss() - baseline_kib) / 1024)


def checkpointing(args: argparse.Namespace) -> dict:
    """Activation memory and step time of one training step, plain and with checkpointing, each in a fresh process."""
    results = {
        name: run_isolated(_measure_training_step, args.preset, args.batch_size, args.length, enabled)
        for name, enabled in (("plain", False), ("checkpointing", True))
    }
    plain = results["plain"]
    print(f"\nTraining step, preset {args.preset}, batch {args.batch_size} x {args.length} tokens, fp32")
    print(f"| {'setting':<14} | {'activation peak MiB':>19} | {'x plain':>7} | {'process peak MiB':>16} "
          f"| {'step s':>7} | {'x plain':>7} |")
    print(f"|{'-' * 16}|{'-' * 21}|{'-' * 9}|{'-' * 18}|{'-' * 9}|{'-' * 9}|")
    for name, r in results.items():
        memory, step = ratio(r["activation_mib"], plain["activation_mib"]), ratio(r["seconds"], plain["seconds"])
        print(f"| {name:<14} | {r['activation_mib']:>19.0f} | {memory:>7.2f} | {r['peak_mib']:>16.0f} "
              f"| {r['seconds']:>7.2f} | {step:>7.2f} |")
    ckpt = results["checkpointing"]
    memory, step = ratio(ckpt["activation_mib"], plain["activation_mib"]), ratio(ckpt["seconds"], plain["seconds"])
    print(f"\ncheckpointing / plain: activation memory x{memory:.2f}, step time x{step:.2f}")
    return results


# Speed: ours against MarianMTModel


def speed(args: argparse.Namespace) -> dict:
    """Per shape: training and generation speed, memory and MFU of ours and MarianMT, with ratios of the two."""
    import torch

    torch.manual_seed(0)
    peaks = {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}
    print(f"matmul peak now: bf16 {peaks['bf16'] / 1e12:.2f} TFLOP/s, fp32 {peaks['fp32'] / 1e12:.2f} TFLOP/s "
          f"(bf16 / fp32: {ratio(peaks['bf16'], peaks['fp32']):.2f}x)")
    results = {"matmul_peak_flops": peaks, "shapes": {}}
    for shape in args.shapes:
        results["shapes"][shape] = speed_of_shape(shape, peaks, args)
    return results


def speed_of_shape(shape: str, peaks: dict, args: argparse.Namespace) -> dict:
    """Both models built from one config, measured on the same random batch, then the table."""
    import torch

    from .. import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    preset, vocab, batch_size, length = SHAPES[shape]
    config = getattr(VanillaTransformerConfig, preset)(vocab_size=vocab)
    torch.manual_seed(0)
    models = {"ours": VanillaTransformerForConditionalGeneration(config), "marian": marian_like(config)}
    input_ids = torch.randint(4, vocab, (batch_size, length))
    labels = torch.randint(4, vocab, (batch_size, length))
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    flops = training_flops(config, batch_size, length, length)
    rows = measure_training(shape, models, batch, flops, peaks, args)
    rows.update(measure_generation(shape, models, batch, length, args))
    rows["bf16_generation_token_agreement"] = bf16_token_agreement(models["ours"], batch, length)
    print_speed_table(shape, rows)
    return {"batch": [batch_size, length], "train_flops_per_step": flops, "rows": rows}


def measure_training(shape: str, models: dict, batch: dict, flops: float, peaks: dict, args) -> dict:
    """Target tokens/s, step time, peak memory (fresh process) and MFU of a training step, per model and precision."""
    batch_size, length = batch["labels"].shape
    rows = {}
    for name, model in models.items():
        for precision in ("fp32", "bf16"):
            step = train_step_fn(model, batch, name == "ours", precision)
            seconds = statistics.median(time_it(step, args.warmup, args.repeats))
            rows[f"train {name} {precision}"] = {
                "target_tokens_per_s": batch_size * length / seconds, "seconds": seconds,
                # memory in a fresh process each: in this one, the allocator keeps what earlier runs freed
                "peak_mib": run_isolated(_measure_peer_training_memory, shape, name == "ours", precision),
                "mfu_bf16": flops / seconds / peaks["bf16"],
                "mfu_fp32": flops / seconds / peaks["fp32"],
            }
            print(f"{shape} train {name} {precision}: {batch_size * length / seconds:.0f} target tokens/s")
    return rows


def measure_generation(shape: str, models: dict, batch: dict, length: int, args) -> dict:
    """Generated tokens/s with beam 4 (batch 16) and greedy (batch 64), per model and precision."""
    source = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    rows = {}
    for beams, gen_batch in ((4, 16), (1, 64)):
        gen_inputs = {k: v[:gen_batch] for k, v in source.items()}
        gen_batch = len(gen_inputs["input_ids"])  # the tiny shape has fewer sentences
        for name, model in models.items():
            for precision in ("fp32", "bf16"):
                run = generate_fn(model, gen_inputs, beams, length, precision)
                seconds = statistics.median(time_it(run, 1, max(2, args.repeats // 2)))
                rows[f"generate beam{beams} {name} {precision}"] = {
                    "tokens_per_s": gen_batch * length / seconds, "seconds": seconds}
                print(f"{shape} generate beam {beams} {name} {precision}: {gen_batch * length / seconds:.0f} tokens/s")
    return rows


def bf16_token_agreement(model, batch: dict, length: int) -> float:
    """Share of beam-4 tokens of our bf16 path equal to our fp32 path's, on the first 16 sentences."""
    import torch

    source = {k: batch[k][:16] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        ref = generate_fn(model, source, 4, length, "fp32")()
        fast = generate_fn(model, source, 4, length, "bf16")()
    return (ref == fast).float().mean().item()


def print_speed_table(shape: str, rows: dict) -> None:
    """Ours against MarianMT, each row measured in this run, with the ratio of the two."""
    print(f"\n{shape}:\n| measurement | ours | MarianMT | ours / MarianMT |\n| --- | ---: | ---: | ---: |")
    for kind in ("train", "generate beam4", "generate beam1"):
        key = "target_tokens_per_s" if kind == "train" else "tokens_per_s"
        for precision in ("fp32", "bf16"):
            o, m = rows[f"{kind} ours {precision}"][key], rows[f"{kind} marian {precision}"][key]
            print(f"| {kind} {precision} tokens/s | {o:.0f} | {m:.0f} | {ratio(o, m):.2f}x |")
    for precision in ("fp32", "bf16"):
        o, m = rows[f"train ours {precision}"], rows[f"train marian {precision}"]
        print(f"| train {precision} peak MiB | {o['peak_mib']:.0f} | {m['peak_mib']:.0f} "
              f"| {ratio(o['peak_mib'], m['peak_mib']):.2f}x |")
        print(f"| train {precision} MFU (of bf16 peak) | {o['mfu_bf16']:.1%} | {m['mfu_bf16']:.1%} "
              f"| {ratio(o['mfu_bf16'], m['mfu_bf16']):.2f}x |")
    best_marian = max(rows[f"train marian {precision}"]["target_tokens_per_s"] for precision in ("fp32", "bf16"))
    ours_best = rows["train ours bf16"]["target_tokens_per_s"]
    print(f"ours bf16 / MarianMT fp32: {ratio(ours_best, rows['train marian fp32']['target_tokens_per_s']):.2f}x; "
          f"/ MarianMT best: {ratio(ours_best, best_marian):.2f}x; bf16 beam-4 tokens equal to fp32: "
          f"{rows['bf16_generation_token_agreement']:.1%}")


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


if __name__ == "__main__":
    raise SystemExit(main())
