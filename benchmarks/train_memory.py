"""Memory of a `vanilla-train` run on jemalloc, read from jemalloc itself: does the program hold more as the run goes
on (a leak), or does jemalloc keep more pages than the program holds (what `hardware.FreePages` hands back)?

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 \
        python benchmarks/train_memory.py --log runs/memory.jsonl -- <vanilla-train arguments>

At each once-a-minute purge of `FreePages`, one JSON line: the training minute, VmRSS and jemalloc's
`stats.allocated` (bytes the program holds), `stats.active` (the pages holding them) and `stats.resident` (the pages
jemalloc keeps resident), just before and just after the purge, and the CPU tensors Python can reach (`gc`). At the
end, a table of each column's range over the first and second half of the run. docs/benchmarks.md has the numbers of
a 60-minute run. Without jemalloc preloaded there is nothing to read: the script says so and stops.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
import time
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/train_memory.py): this folder is the package `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_alone, status_kib  # noqa: E402
from modeling_vanilla.utils.arguments import non_negative_float  # noqa: E402

COUNTERS = ("allocated", "active", "resident")


def refresh_statistics(mallctl) -> None:
    """jemalloc's `stats.*` are a snapshot, taken anew when `epoch` is written."""
    epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(8)
    mallctl(b"epoch", ctypes.byref(epoch), ctypes.byref(size), ctypes.byref(epoch), 8)


def jemalloc_mib(mallctl, name: str) -> int:
    """A jemalloc statistic of the last snapshot (`refresh_statistics`), in MiB."""
    value, size = ctypes.c_size_t(0), ctypes.c_size_t(8)
    mallctl(f"stats.{name}".encode(), ctypes.byref(value), ctypes.byref(size), None, 0)
    return value.value >> 20


def reachable_tensors() -> tuple[int, int]:
    """CPU tensors Python can reach, and the MiB of their distinct storages."""
    import torch

    storages, count = {}, 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            count += 1
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return count, sum(storages.values()) >> 20


def reading(mallctl) -> dict:
    """VmRSS and jemalloc's counters, all three from one snapshot (so that allocated <= active <= resident holds)."""
    refresh_statistics(mallctl)
    return {"rss": status_kib("VmRSS") >> 10, **{name: jemalloc_mib(mallctl, name) for name in COUNTERS}}


def log_each_purge(log_path: Path, records: list, every_s: float | None = None) -> None:
    """Wrap `FreePages.__call__` so that each purge is read before and after and logged; `every_s` replaces its
    period (hardware.FREE_PAGES_EVERY_S)."""
    from modeling_vanilla.utils import hardware

    purge, init, start = hardware.FreePages.__call__, hardware.FreePages.__init__, time.monotonic()
    if every_s is not None:
        hardware.FreePages.__init__ = lambda self: init(self, every_s)

    def logged(self) -> bool:
        if not self.due():
            return purge(self)
        before = reading(self.mallctl)
        done = purge(self)
        after = reading(self.mallctl)  # before gc's walk, which allocates
        tensors, tensor_mib = reachable_tensors()
        record = {"minute": round((time.monotonic() - start) / 60, 2), "before": before, "after": after,
                  "tensors": tensors, "tensor_mib": tensor_mib}
        records.append(record)
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        return done

    hardware.FreePages.__call__ = logged


def table(records: list) -> str:
    halves = {"first half": records[: len(records) // 2], "second half": records[len(records) // 2 :]}
    columns = [("before", "rss"), ("after", "rss"), ("before", "allocated"), ("after", "active"),
               ("before", "resident"), ("after", "resident")]
    lines = ["| part | purges | " + " | ".join(f"{name} {when} (MiB)" for when, name in columns) + " | tensors (MiB) |",
             "| --- | ---: |" + " --- |" * (len(columns) + 1)]
    for part, rows in halves.items():
        if not rows:
            continue
        ranges = [f"{min(r[w][n] for r in rows)}-{max(r[w][n] for r in rows)}" for w, n in columns]
        tensors = f"{min(r['tensor_mib'] for r in rows)}-{max(r['tensor_mib'] for r in rows)}"
        lines.append(f"| {part} | {len(rows)} | " + " | ".join(ranges) + f" | {tensors} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", type=Path, required=True, help="JSON lines file, one line per purge (appended)")
    parser.add_argument("--purge-every-s", type=non_negative_float, default=None,
                        help="purge (and log) this often instead of every minute (hardware.FREE_PAGES_EVERY_S): a "
                             "different run from vanilla-train's, for checking this script on a short run")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then vanilla-train's arguments")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from modeling_vanilla.utils import hardware

    if hardware.jemalloc_mallctl() is None:
        parser.error("this process does not run on jemalloc, so there is nothing to read: start it with "
                     f"LD_PRELOAD=<path of libjemalloc.so.2> MALLOC_CONF={hardware.JEMALLOC_CONF} (the settings "
                     "vanilla-train restarts itself with)")


def run(args: argparse.Namespace) -> None:
    from modeling_vanilla.cli.train import main as train
    from modeling_vanilla.utils.hardware import describe_machine

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    records = []
    log_each_purge(args.log, records, args.purge_every_s)
    train(train_args)  # given argv, vanilla-train does not restart itself: the process stays the one measured
    print(f"{describe_machine()}; {len(records)} purges logged to {args.log}")
    print(table(records) if records else "No purge happened (a run shorter than a minute).")


def main(argv=None) -> int:
    return run_alone(__file__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
