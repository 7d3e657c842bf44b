"""What the machine offers: a GPU, a CPU with fast bf16 units, the precision to train in by default, and the memory
allocator a CPU run uses."""

from __future__ import annotations

import ctypes.util
import os
import sys
import time
from pathlib import Path

import torch

# Memory allocators a CPU run can be restarted on (`preload_allocator`), each with the library names that provide it.
# glibc's malloc fragments as token batches of ever-different sizes come and go: in a 60-minute run its search for a
# free block grew from 8% to 17% of the process's time within 40 minutes, where all of jemalloc stayed under 2%, and
# fresh runs made 1.13x-1.34x the target tokens/s on jemalloc (docs/benchmarks.md).
ALLOCATORS = {"jemalloc": ("jemalloc",), "tcmalloc": ("tcmalloc", "tcmalloc_minimal")}
# The packages that install each: (apt, conda-forge).
PACKAGES = {"jemalloc": ("libjemalloc2", "jemalloc"), "tcmalloc": ("libtcmalloc-minimal4", "gperftools")}
# jemalloc's settings unless the user gives MALLOC_CONF: by default it hands freed pages back to the kernel within
# seconds, and the next batch faults them in again (in a CPU run, 45% of the time in the kernel, zeroing pages).
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
# But kept pages are never handed back: a 60-minute run (6000-token vocabulary) grew to 24 GB resident and was killed
# by the kernel at minute 27 (docs/benchmarks.md). `FreePages` hands them back once a minute, which faults the working
# set in again once a minute instead of at every batch. Runs alone with it held flat (docs/benchmarks.md).
FREE_PAGES_EVERY_S = 60.0
MALLCTL_ARENAS_ALL = 4096  # jemalloc's index for "every arena" in mallctl names
# Set in the environment of the restarted process: the library it was restarted with, so that it never restarts again.
RESTARTED_WITH = "VANILLA_ALLOCATOR_RESTARTED"


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
    return f"CPU, {torch.get_num_threads()} threads, {units}, malloc: {allocator_in_use()}"


def allocator_in_use() -> str:
    """"jemalloc" or "tcmalloc" when this process runs on one of them (LD_PRELOAD), else "system" (the C library's)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    for name, libraries in ALLOCATORS.items():
        if any(f"/lib{library}.so" in maps for library in libraries):
            return name
    return "system"


class FreePages:
    """Hands the freed pages jemalloc keeps (JEMALLOC_CONF) back to the kernel, at most once every `every_s`
    seconds: call it after each update. Does nothing where the process does not run on jemalloc."""

    def __init__(self, every_s: float = FREE_PAGES_EVERY_S):
        self.mallctl = jemalloc_mallctl()
        self.every_s, self.last = every_s, time.monotonic()

    def due(self) -> bool:
        """Whether a call now would hand pages back: on jemalloc, `every_s` after the last time."""
        return self.mallctl is not None and time.monotonic() - self.last >= self.every_s

    def __call__(self) -> bool:
        """True where pages were handed back now."""
        if not self.due():
            return False
        self.last = time.monotonic()
        return self.mallctl(f"arena.{MALLCTL_ARENAS_ALL}.purge".encode(), None, None, None, 0) == 0


def jemalloc_mallctl():
    """jemalloc's `mallctl` where this process runs on it, else None."""
    if allocator_in_use() != "jemalloc":
        return None
    mallctl = getattr(ctypes.CDLL(None), "mallctl", None)  # the preloaded library's symbols are global
    if mallctl is not None:
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        mallctl.restype = ctypes.c_int
    return mallctl


def install_hint(name: str) -> str:
    """How to install allocator `name`, for the messages that ask for it."""
    apt, conda = PACKAGES[name]
    return f"apt install {apt}, or conda install -c conda-forge {conda}"


def find_allocator(name: str) -> str | None:
    """The library of allocator `name` ("jemalloc" or "tcmalloc"): in the environment's lib folder (conda, a venv
    with it), else in the dynamic linker's cache (`apt install libjemalloc2`); None where it is not installed."""
    for library in ALLOCATORS[name]:
        for prefix in dict.fromkeys(filter(None, (os.environ.get("CONDA_PREFIX"), sys.prefix))):
            matches = sorted(Path(prefix, "lib").glob(f"lib{library}.so*"))
            if matches:
                return str(matches[0])
        found = ctypes.util.find_library(library)
        if found:
            return found
    return None


def preload_allocator(choice: str, command: str = "vanilla-train") -> str:
    """Make this CPU process run on jemalloc or tcmalloc (`--allocator`), by restarting it with the library in
    LD_PRELOAD: the C library's malloc cannot be swapped once the process runs. Returns the allocator in use where
    the process goes on; "auto" takes jemalloc, else tcmalloc, else says how to install one and keeps the system's.
    The restarted process runs the same command line (`sys.orig_argv`) with the same environment plus LD_PRELOAD."""
    current = allocator_in_use()
    if choice == "system" or current != "system" or not sys.platform.startswith("linux"):  # LD_PRELOAD is Linux's
        return current
    if os.environ.get(RESTARTED_WITH):  # restarted once, and the library did not load: go on without it
        print(f"{command}: {os.environ[RESTARTED_WITH]} did not load (LD_PRELOAD); training on the system's "
              "malloc.", file=sys.stderr)
        return current
    names = list(ALLOCATORS) if choice == "auto" else [choice]
    library = next(filter(None, map(find_allocator, names)), None)
    if library is None:  # --allocator jemalloc/tcmalloc without the library is refused by options.check_allocator
        print(f"{command}: training on the system's malloc, which is slower and slows a long CPU run down as it "
              f"fragments (docs/benchmarks.md). Install jemalloc ({install_hint('jemalloc')}) and {command} uses it; "
              "--allocator system hides this message.", file=sys.stderr)
        return current
    preload = ":".join(filter(None, (library, os.environ.get("LD_PRELOAD"))))
    print(f"{command}: restarting on {library} (--allocator {choice}; --allocator system keeps the system's "
          "malloc).", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, "LD_PRELOAD": preload, RESTARTED_WITH: library}
    if "jemalloc" in Path(library).name:
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    raise AssertionError("unreachable: os.execve replaces the process")
