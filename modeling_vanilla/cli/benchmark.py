"""`vanilla-benchmark`: benchmarks that print a table. Ratios between settings measured in the same run are what to
compare: the machine is shared and noisy, absolute numbers are not. Every run starts with a line naming the machine
(`modeling_vanilla.utils.hardware.describe_machine`: the GPU, or the CPU's threads and bf16 units, AMX, AVX512-BF16 or
none). `--device cuda` measures a GPU with the same commands.

    # Ours against MarianMTModel configured to the same architecture, in one process (docs/benchmarks.md):
    vanilla-benchmark speed --shapes base small --json benchmark.json
    vanilla-benchmark speed --shapes base --device cuda --batch-size 512 --length 64 --compile

    # The real training loop (vanilla-train on token batches of a corpus) beside the isolated step of its model:
    vanilla-benchmark loop --data ../shared/data/multi30k --preset small --steps 60

    # Peak training memory with and without activation (gradient) checkpointing, base shape:
    vanilla-benchmark checkpointing --preset base --batch-size 64 --length 32

    # Serving: our generate() (fp32, bf16) against CTranslate2 (fp32, int8) on the same sentences, beam 4:
    vanilla-benchmark serve --model runs/multi30k --input ../shared/data/multi30k/test_2016_flickr.en \
        --reference ../shared/data/multi30k/test_2016_flickr.de

    # Does it run? The smallest settings take seconds (the numbers mean nothing):
    vanilla-benchmark speed --shapes tiny --warmup 0 --repeats 1
    vanilla-benchmark checkpointing --preset tiny --batch-size 2 --length 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import statistics
import time
from pathlib import Path

from ..utils.arguments import non_negative_int, positive_int

SHAPES = {
    # name: (config preset, vocabulary, training batch (sentences x tokens per side))
    "base": ("base", 37000, 64, 32),
    "small": ("small", 8000, 128, 16),
    "tiny": ("tiny", 99, 8, 8),  # a check that the benchmark runs, in seconds; not a measurement
}


# name: (engine, weights): our generate() with the model cast to a dtype, or CTranslate2 with weights quantized so
SERVE_BACKENDS = {"ours-fp32": ("ours", "float32"), "ours-bf16": ("ours", "bfloat16"),
                  "ctranslate2-fp32": ("ctranslate2", None), "ctranslate2-int8": ("ctranslate2", "int8")}


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
    sp.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    sp.add_argument("--batch-size", type=positive_int, help="training sentences (default: the shape's)")
    sp.add_argument("--length", type=positive_int, help="tokens per side (default: the shape's)")
    sp.add_argument("--compile", action="store_true", help="also time torch.compile of both training steps")
    sp.add_argument("--skip-generation", action="store_true", help="training only")
    loop = sub.add_parser("loop", help="vanilla-train's loop on a corpus, beside the isolated step of its model")
    loop.add_argument("--data", required=True, help="a folder with train.{en,de} and val.{en,de} (e.g. Multi30k)")
    loop.add_argument("--source-lang", default="en")
    loop.add_argument("--target-lang", default="de")
    loop.add_argument("--preset", default="small", choices=["tiny", "small", "base", "big"])
    loop.add_argument("--max-tokens", type=positive_int, default=4096)
    loop.add_argument("--vocab-size", type=positive_int, default=8000)
    loop.add_argument("--steps", type=positive_int, default=60, help="updates; the first --log-every are warmup")
    loop.add_argument("--log-every", type=positive_int, default=10)
    loop.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    loop.add_argument("--repeats", type=positive_int, default=5, help="timed isolated steps")
    loop.add_argument("--train-option", action="append", default=[], metavar="OPTION",
                      help="an extra vanilla-train option, e.g. --train-option=--compile (repeatable)")
    loop.add_argument("--tokenizer", help="a saved tokenizer folder (default: one is trained, as vanilla-train does)")
    loop.add_argument("--json", help="also write the results to this file")
    loss = sub.add_parser("loss", help="the loss with and without the (N, V) logits: speed and peak memory")
    loss.add_argument("--vocab", type=positive_int, default=37000)
    loss.add_argument("--d-model", type=positive_int, default=512)
    loss.add_argument("--tokens", type=positive_int, default=8192, help="target positions (N)")
    loss.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    loss.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    loss.add_argument("--repeats", type=positive_int, default=5)
    loss.add_argument("--json", help="also write the results to this file")
    serve = sub.add_parser("serve", help="translation speed of our generate() and of CTranslate2, same sentences")
    serve.add_argument("--model", required=True, help="a model folder of ours, with its tokenizer")
    serve.add_argument("--input", required=True, type=Path, help="sentences to translate, one per line")
    serve.add_argument("--reference", type=Path, help="their translations, one per line: BLEU of every backend")
    serve.add_argument("--sentences", type=positive_int, default=1000, help="the first N lines of --input")
    serve.add_argument("--batch-size", type=positive_int, default=32)
    serve.add_argument("--num-beams", type=positive_int, default=4)
    serve.add_argument("--backends", nargs="+", choices=SERVE_BACKENDS, default=list(SERVE_BACKENDS))
    serve.add_argument("--json", help="also write the results to this file")
    ckpt = sub.add_parser("checkpointing", help="peak training memory with and without activation checkpointing")
    ckpt.add_argument("--preset", default="base", choices=["tiny", "small", "base", "big"])
    ckpt.add_argument("--batch-size", type=positive_int, default=64)
    ckpt.add_argument("--length", type=positive_int, default=32, help="source and target tokens per sentence")
    ckpt.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.benchmark == "serve":
        for flag, path in (("--input", args.input), ("--reference", args.reference)):
            if path is not None and not path.is_file():
                parser.error(f"{flag} {path} does not exist or is not a file.")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_line(getattr(args, "device", "cpu"))
    print(f"vanilla-benchmark {args.benchmark} on {machine}")
    commands = {"checkpointing": checkpointing, "speed": speed, "loop": loop, "loss": loss_paths, "serve": serve}
    results = commands[args.benchmark](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "results": results}, f, indent=2, default=str)
    return 0


def machine_line(device: str = "cpu") -> str:
    """`describe_machine()`; where a GPU is present, which device the numbers are of, and the CPU's bf16 units."""
    import torch

    from ..utils.hardware import cpu_bf16_units, describe_machine

    line = describe_machine()
    if torch.cuda.is_available():  # describe_machine names the GPU
        line += f"; measured on {device}; CPU: {torch.get_num_threads()} threads, bf16 units: {cpu_bf16_units()}"
    return line


def synchronize(device: str) -> None:
    """Wait for the device, so that a timer measures the work and not its launch."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def ratio(value: float, peer: float) -> float:
    """`value / peer`, both measured in this run; nan where the peer measured 0 (tiny settings)."""
    return value / peer if peer else float("nan")


# Memory: each measurement in a fresh process


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: the peak)."""
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
    return status_kib("VmRSS")


def peak_rss() -> int:
    """Peak resident memory since `reset_peak_rss`, in KiB."""
    return status_kib("VmHWM")


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


def _measure_peer_training_memory(shape: tuple, ours: bool, precision: str, device: str, queue) -> None:
    """In a fresh process: peak memory that one training step adds (weights, gradients and Adam's state excluded):
    resident memory on the CPU, allocated memory on a GPU."""
    import torch

    from .. import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    preset, vocab, batch_size, length = shape
    config = getattr(VanillaTransformerConfig, preset)(vocab_size=vocab)
    model = (VanillaTransformerForConditionalGeneration(config) if ours else marian_like(config)).to(device)

    def batch(size):
        ids = torch.randint(4, vocab, (size, length), device=device)
        labels = torch.randint(4, vocab, (size, length), device=device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    optimizer = adam(model)
    train_step_fn(model, batch(2), ours, precision, optimizer)()  # gradients and Adam's state exist from here on
    step = train_step_fn(model, batch(batch_size), ours, precision, optimizer)
    queue.put(peak_added_mib(step, device))


def peak_added_mib(step, device: str) -> float:
    """MiB that one call of `step` adds at its peak: resident memory on the CPU, allocated memory on a GPU."""
    import torch

    if device == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated() - baseline) / 2**20
    baseline_kib = reset_peak_rss()
    step()
    return (peak_rss() - baseline_kib) / 1024


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
    peaks = {"bf16": matmul_peak(torch.bfloat16, args.device), "fp32": matmul_peak(torch.float32, args.device)}
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
    batch_size, length = args.batch_size or batch_size, args.length or length
    config = getattr(VanillaTransformerConfig, preset)(vocab_size=vocab)
    torch.manual_seed(0)
    models = {"ours": VanillaTransformerForConditionalGeneration(config).to(args.device),
              "marian": marian_like(config).to(args.device)}
    input_ids = torch.randint(4, vocab, (batch_size, length), device=args.device)
    labels = torch.randint(4, vocab, (batch_size, length), device=args.device)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    flops = training_flops(config, batch_size, length, length)
    rows = measure_training((preset, vocab, batch_size, length), models, batch, flops, peaks, args)
    if not args.skip_generation:
        rows.update(measure_generation(shape, models, batch, length, args))
        rows["bf16_generation_token_agreement"] = bf16_token_agreement(models["ours"], batch, length)
    print_speed_table(shape, rows)
    return {"batch": [batch_size, length], "train_flops_per_step": flops, "rows": rows}


def measure_training(shape: tuple, models: dict, batch: dict, flops: float, peaks: dict, args) -> dict:
    """Target tokens/s, step time, peak memory (fresh process) and MFU of a training step, per model and precision;
    with --compile, also of the compiled step (bf16), with its compilation time."""
    import torch

    batch_size, length = batch["labels"].shape
    rows = {}
    settings = [(name, precision, False) for name in models for precision in ("fp32", "bf16")]
    settings += [(name, "bf16", True) for name in models] if args.compile else []
    for name, precision, compiled in settings:
        model = models[name]
        label = f"train {name} {precision}" + (" compiled" if compiled else "")
        if compiled:
            torch._dynamo.reset()
            model = torch.compile(model)
        step = train_step_fn(model, batch, name == "ours", precision)
        start = time.perf_counter()
        step()  # the first step compiles
        synchronize(args.device)
        first = time.perf_counter() - start
        seconds = statistics.median(time_it(step, args.warmup, args.repeats, args.device))
        rows[label] = {
            "target_tokens_per_s": batch_size * length / seconds, "seconds": seconds,
            "first_step_seconds": first,
            "mfu_bf16": flops / seconds / peaks["bf16"], "mfu_fp32": flops / seconds / peaks["fp32"],
        }
        if not compiled:  # memory in a fresh process each: in this one, the allocator keeps what earlier runs freed
            rows[label]["peak_mib"] = run_isolated(_measure_peer_training_memory, shape, name == "ours", precision,
                                                   args.device)
        print(f"{label}: {batch_size * length / seconds:.0f} target tokens/s" +
              (f" (first step, with compilation: {first:.0f} s)" if compiled else ""))
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
                seconds = statistics.median(time_it(run, 1, max(2, args.repeats // 2), args.device))
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
    kinds = [("train", p) for p in ("fp32", "bf16")] + [("train", "bf16 compiled")] * ("train ours bf16 compiled" in rows)
    kinds += [(k, p) for k in ("generate beam4", "generate beam1") for p in ("fp32", "bf16")
              if f"{k} ours {p}" in rows]
    for kind, precision in kinds:
        key = "target_tokens_per_s" if kind == "train" else "tokens_per_s"
        o, m = rows[f"{kind} ours {precision}"][key], rows[f"{kind} marian {precision}"][key]
        print(f"| {kind} {precision} tokens/s | {o:.0f} | {m:.0f} | {ratio(o, m):.2f}x |")
    for precision in ("fp32", "bf16"):
        o, m = rows[f"train ours {precision}"], rows[f"train marian {precision}"]
        print(f"| train {precision} peak MiB | {o['peak_mib']:.0f} | {m['peak_mib']:.0f} "
              f"| {ratio(o['peak_mib'], m['peak_mib']):.2f}x |")
        print(f"| train {precision} MFU (of bf16 peak) | {o['mfu_bf16']:.1%} | {m['mfu_bf16']:.1%} "
              f"| {ratio(o['mfu_bf16'], m['mfu_bf16']):.2f}x |")
    train = {k: v["target_tokens_per_s"] for k, v in rows.items() if k.startswith("train ")}
    best = {name: max(v for k, v in train.items() if k.split()[1] == name) for name in ("ours", "marian")}
    eager_marian = max(train[f"train marian {p}"] for p in ("fp32", "bf16"))
    line = (f"ours best / MarianMT best: {ratio(best['ours'], best['marian']):.2f}x; ours best / MarianMT best eager: "
            f"{ratio(best['ours'], eager_marian):.2f}x; ours bf16 / MarianMT fp32: "
            f"{ratio(train['train ours bf16'], train['train marian fp32']):.2f}x")
    if "bf16_generation_token_agreement" in rows:
        line += f"; bf16 beam-4 tokens equal to fp32: {rows['bf16_generation_token_agreement']:.1%}"
    print(line)


# The loss: plain cross-entropy of the logits against projected_cross_entropy


def _measure_loss(path: str, args: argparse.Namespace, queue) -> None:
    """In a fresh process: the seconds of forward + backward of the label-smoothed loss from the decoder output
    (N, d_model) through the projection onto V words, and the peak memory that it adds."""
    import torch

    from ..modeling_vanilla import projected_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(args.tokens, args.d_model, device=args.device, requires_grad=True)
    weight = (torch.randn(args.vocab, args.d_model, device=args.device) * args.d_model**-0.5).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.tokens,), device=args.device)

    def step():
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            if path == "plain":  # what the model computes with output_logits=True, and MarianMT always
                logits = torch.nn.functional.linear(hidden, weight)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels, label_smoothing=0.1, reduction="sum")
            else:
                loss = projected_cross_entropy(hidden, weight, labels, 0.1)
        loss.backward()
        hidden.grad = weight.grad = None

    step()
    seconds = statistics.median(time_it(step, 1, args.repeats, args.device))
    queue.put({"seconds": seconds, "peak_mib": peak_added_mib(step, args.device)})


def loss_paths(args: argparse.Namespace) -> dict:
    results = {path: run_isolated(_measure_loss, path, args) for path in ("plain", "projected")}
    plain, projected = results["plain"], results["projected"]
    print(f"\nLabel-smoothed loss and its gradients, N={args.tokens} positions, d_model {args.d_model}, V={args.vocab}, "
          f"{args.precision}, {args.device}")
    print("| path | forward + backward s | peak MiB added |\n| --- | ---: | ---: |")
    for path, r in results.items():
        print(f"| {path} | {r['seconds']:.3f} | {r['peak_mib']:.0f} |")
    print(f"projected / plain: time x{ratio(projected['seconds'], plain['seconds']):.2f}, peak memory "
          f"x{ratio(projected['peak_mib'], plain['peak_mib']):.2f}")
    return results


# Serving: the same sentences through each backend


def serve(args: argparse.Namespace) -> dict:
    """Translate the first --sentences lines of --input with each backend, beam --num-beams, --batch-size sentences
    per call (one untimed batch first). Tokens/s counts each output's tokens (re-tokenized, plus </s>), the same rule
    for every backend; "same as ours" is the share of outputs identical to ours-fp32's (when it ran)."""
    import copy
    import tempfile

    import torch

    from ..inference.model_folder import load_model_and_tokenizer
    from ..inference.translation import score, translate
    from ..publish.serving import CTranslate2Translator, to_ctranslate2
    from ..utils.arguments import read_lines

    sentences = list(itertools.islice(read_lines(args.input), args.sentences))
    references = list(itertools.islice(read_lines(args.reference), args.sentences)) if args.reference else None
    model, tokenizer = load_model_and_tokenizer(args.model, vanilla_only=True)
    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.backends:
            engine, weights = SERVE_BACKENDS[name]
            if engine == "ours":
                backend = copy.deepcopy(model).to(getattr(torch, weights))  # the float32 model stays as it was
                run = lambda batch, m=backend: translate(m, tokenizer, batch, batch_size=args.batch_size,  # noqa: E731
                                                         num_beams=args.num_beams)
                size = sum(p.numel() * p.element_size() for p in {p.data_ptr(): p for p in backend.parameters()}.values())
            else:
                path = to_ctranslate2(model, tokenizer, Path(folder) / name, quantization=weights)
                translator = CTranslate2Translator(path)
                run = lambda batch, t=translator: t.translate(batch, batch_size=args.batch_size,  # noqa: E731
                                                              num_beams=args.num_beams)
                size = (path / "model.bin").stat().st_size
            run(sentences[: args.batch_size])  # warmup
            start = time.perf_counter()
            hypotheses = run(sentences)
            seconds = time.perf_counter() - start
            tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 for text in hypotheses)
            outputs[name] = hypotheses
            results[name] = {"seconds": seconds, "sentences_per_s": len(sentences) / seconds,
                             "tokens_per_s": tokens / seconds, "weights_mib": size / 2**20,
                             **({"bleu": score(hypotheses, references)["bleu"]} if references else {})}
    print_serve_table(args, results, outputs)
    return results


def print_serve_table(args: argparse.Namespace, results: dict, outputs: dict) -> None:
    first = next(iter(results))
    reference = outputs.get("ours-fp32")
    print(f"\n{len(outputs[first])} sentences of {args.input}, beam {args.num_beams}, batches of {args.batch_size}")
    print("| backend | sentences/s | tokens/s | x ours-fp32 | weights MiB | same as ours-fp32 | BLEU |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        speedup = ratio(r["sentences_per_s"], results["ours-fp32"]["sentences_per_s"]) if "ours-fp32" in results else None
        same = (sum(a == b for a, b in zip(outputs[name], reference, strict=True)) / len(reference)
                if reference is not None else None)
        r["same_as_ours_fp32"] = same
        print(f"| {name} | {r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{'-' if speedup is None else f'{speedup:.2f}x'} | {r['weights_mib']:.1f} | "
              f"{'-' if same is None else f'{same:.1%}'} | {r.get('bleu', '-')} |")


# The training loop on real token batches


def loop(args: argparse.Namespace) -> dict:
    """vanilla-train for --steps updates on the corpus (no validation, no checkpoints), then the isolated step of the
    same model on the first batches of the same epoch: what the loop costs beyond the step itself."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        summary, records = run_training_loop(args, out)
        isolated = isolated_steps(args, out, summary["precision"])
    timed = records[2:]  # the first lines include start-up (and compilation)
    seconds = sum(r["target_tokens"] / r["target_tokens_per_s"] for r in timed)
    loop_rate = sum(r["target_tokens"] for r in timed) / seconds if seconds else float("nan")
    result = {"loop_target_tokens_per_s": loop_rate, "isolated_target_tokens_per_s": isolated["tokens_per_s"],
              "isolated_mfu_bf16": isolated["mfu_bf16"], "loop_mfu_bf16": isolated["mfu_bf16"] * ratio(
                  loop_rate, isolated["tokens_per_s"]), "precision": summary["precision"],
              "updates_timed": sum(r["updates"] for r in timed), "train_options": args.train_option}
    print(f"\nvanilla-train loop, preset {args.preset}, --max-tokens {args.max_tokens}, {summary['precision']}, "
          f"{args.device}, options: {' '.join(args.train_option) or 'none'}")
    print("| measurement | target tokens/s | MFU (of bf16 peak) |\n| --- | ---: | ---: |")
    print(f"| training loop (updates {timed[0]['step'] if timed else '-'}-{records[-1]['step']}) | {loop_rate:.0f} "
          f"| {result['loop_mfu_bf16']:.1%} |")
    print(f"| isolated step, same model and batches | {isolated['tokens_per_s']:.0f} | {isolated['mfu_bf16']:.1%} |")
    print(f"loop / isolated step: {ratio(loop_rate, isolated['tokens_per_s']):.2f}x")
    return result


def run_training_loop(args: argparse.Namespace, out: Path) -> tuple[dict, list[dict]]:
    """vanilla-train as a user runs it; returns its summary and its metric lines, each with its updates."""
    from ..training.loop import main as train
    from ..training.options import parse_train_args

    data = Path(args.data)
    argv = ["--source-lang", args.source_lang, "--target-lang", args.target_lang, "--train-files", str(data / "train"),
            "--preset", args.preset, "--vocab-size", str(args.vocab_size), "--max-tokens", str(args.max_tokens),
            "--max-steps", str(args.steps), "--log-every", str(args.log_every), "--eval-every", "0",
            "--save-every-minutes", "0", "--output-dir", str(out), *(["--cpu"] if args.device == "cpu" else []),
            *(["--tokenizer", args.tokenizer] if args.tokenizer else []), *args.train_option]
    summary = train(parse_train_args(argv))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in lines if "target_tokens_per_s" in r]
    for previous, record in zip([None, *records], records):
        record["updates"] = record["step"] - (previous["step"] if previous else 0)
    return summary, records


def isolated_steps(args: argparse.Namespace, out: Path, precision: str, count: int = 20) -> dict:
    """Forward, backward and Adam of a fresh model of the run's config on the run's first `count` batches, already
    collated and on the device: the step with nothing around it."""
    import torch
    from transformers import AutoTokenizer

    from .. import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
    from ..data.batching import TokenBatchSampler, TranslationCollator
    from ..data.corpus import load_corpus
    from ..data.preprocessing import preprocess_translation

    tokenizer = AutoTokenizer.from_pretrained(out)
    raw = load_corpus(args.source_lang, args.target_lang, train_files=[str(Path(args.data) / "train")])
    splits, _ = preprocess_translation(raw, tokenizer, args.source_lang, args.target_lang)
    sampler = TokenBatchSampler.from_dataset(splits["train"], args.max_tokens, seed=1)
    collator = TranslationCollator(pad_token_id=tokenizer.pad_token_id)
    batches = [{k: v.to(args.device) for k, v in collator(splits["train"].__getitems__(indices)).items()}
               for indices in itertools.islice(sampler, count)]
    config = VanillaTransformerConfig.from_pretrained(out)
    model = VanillaTransformerForConditionalGeneration(config).to(args.device)
    steps = [train_step_fn(model, batch, True, precision) for batch in batches]
    for step in steps[:3]:
        step()
    times = time_it(lambda: [step() for step in steps], 0, args.repeats, args.device)
    seconds = statistics.median(times)
    tokens = sum(int((b["labels"] != -100).sum()) for b in batches)
    flops = sum(training_flops(config, *b["input_ids"].shape, b["labels"].shape[1]) for b in batches)
    peak = matmul_peak(torch.bfloat16, args.device)
    return {"tokens_per_s": tokens / seconds, "mfu_bf16": flops / seconds / peak}


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


def matmul_peak(dtype, device: str = "cpu", size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square matrix product in `dtype` on this device, now."""
    import torch

    size = size * 4 if device == "cuda" else size  # a GPU needs a larger product to reach its peak
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    times = time_it(lambda: a @ b, 3, repeats, device)
    return 2 * size**3 / statistics.median(times)


def time_it(fn, warmup: int, repeats: int, device: str = "cpu") -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def adam(model):
    """Adam as each side trains with it: fused where the device has it (our build_optimizer; Trainer's default
    optimizer, adamw_torch_fused, for MarianMT)."""
    import torch

    from ..training.optimization import fused_adam_supported

    return torch.optim.Adam(model.parameters(), lr=1e-5, fused=fused_adam_supported(model))


def train_step_fn(model, batch, ours: bool, precision: str, optimizer=None):
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
    import torch

    model.eval()
    device = batch["input_ids"].device.type

    def run():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=beams,
                                  max_new_tokens=length, min_new_tokens=length, length_penalty=0.6, do_sample=False)

    return run


if __name__ == "__main__":
    raise SystemExit(main())
