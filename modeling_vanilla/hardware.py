"""What the machine offers: a GPU, a CPU with fast bf16 units, and the precision to train in by default."""

from __future__ import annotations

from pathlib import Path

import torch


def gpu_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def cpu_bf16_units() -> str:
    """"amx" (bf16 matrix products ~9x fp32), "avx512_bf16" (~2x), or "none", read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "none"
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "none"


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16 units: bf16 matrix products then run several times faster than fp32."""
    return cpu_bf16_units() != "none"


def default_precision(cpu: bool = False) -> str:
    """bf16 where the hardware runs it fast (recent GPUs, CPUs with AMX/AVX512-BF16), else fp16 on a GPU, fp32."""
    if torch.cuda.is_available() and not cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def describe_machine() -> str:
    """One line for benchmark and training logs: the device, and which bf16 units the CPU has."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    units = {"amx": "AMX (bf16 ~9x fp32)", "avx512_bf16": "AVX512-BF16, no AMX (bf16 ~2x fp32)",
             "none": "no bf16 units"}[cpu_bf16_units()]
    return f"CPU, {torch.get_num_threads()} threads, {units}"
