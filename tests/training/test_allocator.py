"""The memory allocator of a CPU run (`vanilla-train --allocator`, `hardware.preload_allocator`): glibc's malloc
fragments over a long run, so a CPU run restarts itself on jemalloc or tcmalloc where one is installed."""

import json
import os
import subprocess
import sys

import pytest

from modeling_vanilla.utils import hardware
from modeling_vanilla.utils.hardware import (
    JEMALLOC_CONF,
    RESTARTED_WITH,
    allocator_in_use,
    find_allocator,
    preload_allocator,
)
from tests.helpers import REPO_ROOT, run_python
from tests.training.test_training import run_train, toy_data, train_args  # noqa: F401 (toy_data is a fixture)

JEMALLOC = find_allocator("jemalloc")
needs_jemalloc = pytest.mark.skipif(JEMALLOC is None, reason="jemalloc is not installed here (apt install "
                                                             "libjemalloc2): the restart itself cannot be run")


def no_preload_env():
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", RESTARTED_WITH)}


@pytest.fixture
def execve(monkeypatch):
    """Record os.execve's call instead of replacing the test process."""
    calls = []

    def fake(path, argv, env):
        calls.append((path, argv, env))
        raise SystemExit("execve")

    monkeypatch.setattr(os, "execve", fake)
    monkeypatch.delenv(RESTARTED_WITH, raising=False)
    monkeypatch.setattr(hardware, "allocator_in_use", lambda: "system")
    return calls


def test_allocator_in_use_reads_the_libraries_mapped_into_the_process(tmp_path):
    code = "from modeling_vanilla.utils.hardware import allocator_in_use; print(allocator_in_use())"
    plain = run_python(code, tmp_path, env={"LD_PRELOAD": ""})
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert plain.stdout.strip() == "system"
    if JEMALLOC is not None:
        preloaded = run_python(code, tmp_path, env={"LD_PRELOAD": JEMALLOC})
        assert preloaded.stdout.strip() == "jemalloc", preloaded.stderr[-2000:]


def test_find_allocator_looks_in_the_environment_first_then_the_linker_cache(tmp_path, monkeypatch):
    library = tmp_path / "lib" / "libjemalloc.so.2"
    library.parent.mkdir()
    library.write_bytes(b"")
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path))
    monkeypatch.setattr(hardware.ctypes.util, "find_library", lambda name: f"lib{name}.so.9")
    assert find_allocator("jemalloc") == str(library)
    # Not in the environment: the linker's cache; tcmalloc's minimal build counts as tcmalloc.
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path / "empty"))
    monkeypatch.setattr(hardware.ctypes.util, "find_library",
                        lambda name: "libtcmalloc_minimal.so.4" if name == "tcmalloc_minimal" else None)
    assert find_allocator("tcmalloc") == "libtcmalloc_minimal.so.4"
    assert find_allocator("jemalloc") is None


def test_preload_restarts_the_same_command_with_the_library_first(execve, monkeypatch):
    monkeypatch.setattr(hardware, "find_allocator", lambda name: {"tcmalloc": "libtcmalloc.so.4"}.get(name))
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    with pytest.raises(SystemExit, match="execve"):
        preload_allocator("auto")  # no jemalloc here: auto takes tcmalloc
    [(path, argv, env)] = execve
    assert path == sys.executable and argv == [sys.executable, *sys.orig_argv[1:]]
    assert env["LD_PRELOAD"] == "libtcmalloc.so.4:libother.so"
    assert env[RESTARTED_WITH] == "libtcmalloc.so.4"
    assert {k: v for k, v in env.items() if k not in ("LD_PRELOAD", RESTARTED_WITH)} == no_preload_env()


def test_preload_prefers_jemalloc_and_honours_an_explicit_choice(execve, monkeypatch):
    monkeypatch.setattr(hardware, "find_allocator", lambda name: f"/opt/lib/lib{name}.so.2")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    for choice, library in (("auto", "/opt/lib/libjemalloc.so.2"), ("tcmalloc", "/opt/lib/libtcmalloc.so.2")):
        with pytest.raises(SystemExit):
            preload_allocator(choice)
        assert execve[-1][2]["LD_PRELOAD"] == library
    # jemalloc keeps the pages it frees (JEMALLOC_CONF) unless the user configured it; tcmalloc is left as it is.
    assert execve[0][2]["MALLOC_CONF"] == JEMALLOC_CONF == "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    assert "MALLOC_CONF" not in execve[1][2]
    monkeypatch.setenv("MALLOC_CONF", "narenas:1")
    with pytest.raises(SystemExit):
        preload_allocator("jemalloc")
    assert execve[-1][2]["MALLOC_CONF"] == "narenas:1"


def test_preload_does_not_restart_when_it_should_not(execve, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "find_allocator", lambda name: None)
    assert preload_allocator("system") == "system"
    assert capsys.readouterr().err == ""  # the user chose the system's malloc: no advice
    assert preload_allocator("auto") == "system"
    assert "apt install libjemalloc2" in capsys.readouterr().err  # nothing installed: how to install it
    monkeypatch.setattr(hardware, "find_allocator", lambda name: "libjemalloc.so.2")
    monkeypatch.setenv(RESTARTED_WITH, "libjemalloc.so.2")  # restarted once and it still did not load: no loop
    assert preload_allocator("auto") == "system"
    assert "libjemalloc.so.2 did not load" in capsys.readouterr().err
    monkeypatch.delenv(RESTARTED_WITH)
    monkeypatch.setattr(sys, "platform", "darwin")  # no LD_PRELOAD there: a restart could not load the library
    assert preload_allocator("auto") == "system"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(hardware, "allocator_in_use", lambda: "tcmalloc")  # the user preloaded one already
    assert preload_allocator("jemalloc") == "tcmalloc"
    assert execve == []


def test_an_allocator_that_is_not_installed_is_refused_before_anything_runs(monkeypatch, capsys, tmp_path):
    from modeling_vanilla.training.options import parse_train_args

    monkeypatch.setattr(hardware, "find_allocator", lambda name: None)
    monkeypatch.setattr(hardware, "allocator_in_use", lambda: "system")
    argv = ["--train-files", "x", "--source-lang", "en", "--target-lang", "de", "--max-steps", "1",
            "--output-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args([*argv, "--allocator", "jemalloc"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--allocator jemalloc: libjemalloc is not installed (apt install libjemalloc2" in err
    assert not (tmp_path / "run").exists()
    assert parse_train_args([*argv, "--allocator", "auto"]).allocator == "auto"
    # vanilla-finetune takes the same flag, with the same check.
    from modeling_vanilla.cli.finetune import parse_args as parse_finetune_args

    with pytest.raises(SystemExit):
        parse_finetune_args([str(tmp_path / "model"), "--train-files", "x", "--source-lang", "en", "--target-lang", "de",
                             "--output-dir", str(tmp_path / "ft"), "--allocator", "tcmalloc"])
    assert "--allocator tcmalloc: libtcmalloc is not installed (apt install libtcmalloc-minimal4" in \
        capsys.readouterr().err


@pytest.mark.slow
@needs_jemalloc
def test_a_cpu_run_restarts_itself_on_jemalloc(toy_data, tmp_path):  # noqa: F811
    result = run_train(train_args(toy_data, tmp_path / "run", "--max-steps", "2", "--eval-every", "0"),
                       env={"LD_PRELOAD": "", RESTARTED_WITH: ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"restarting on {JEMALLOC}" in result.stderr
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["allocator"] == "jemalloc" and summary["step"] == 2
    kept = run_train(train_args(toy_data, tmp_path / "kept", "--max-steps", "1", "--eval-every", "0",
                                "--allocator", "system"), env={"LD_PRELOAD": "", RESTARTED_WITH: ""})
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert "restarting" not in kept.stderr
    assert json.loads((tmp_path / "kept" / "training_summary.json").read_text())["allocator"] == "system"


FREE_PAGES_CODE = """
import torch
from modeling_vanilla.cli.benchmark import load_benchmarks
status_kib = load_benchmarks("common").status_kib
from modeling_vanilla.utils.hardware import FreePages

def rss_mib():
    return status_kib("VmRSS") // 1024

free_pages, not_yet = FreePages(every_s=0), FreePages(every_s=3600)
blocks = [torch.ones(1 << 20) for _ in range(64)]  # 64 blocks of 4 MiB, touched
before = rss_mib()
del blocks
kept = rss_mib()
print(free_pages.mallctl is not None, not_yet(), before, kept, free_pages(), rss_mib())
"""


@needs_jemalloc
def test_free_pages_hands_back_what_jemalloc_keeps(tmp_path):
    # Under JEMALLOC_CONF (no decay) freed memory stays resident, and a long run's memory grew until the kernel killed it.
    result = run_python(FREE_PAGES_CODE, tmp_path, env={"LD_PRELOAD": JEMALLOC, "MALLOC_CONF": JEMALLOC_CONF})
    assert result.returncode == 0, result.stderr[-2000:]
    found, early, before, kept, freed, after = result.stdout.split()
    assert (found, early, freed) == ("True", "False", "True")
    assert int(kept) > int(before) - 32, (before, kept)  # freed, yet still resident
    assert int(after) < int(kept) - 200, (kept, after)  # the 256 MiB handed back


def test_free_pages_does_nothing_on_another_allocator(tmp_path):
    result = run_python(FREE_PAGES_CODE, tmp_path, env={"LD_PRELOAD": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    found, early, _, _, freed, _ = result.stdout.split()
    assert (found, early, freed) == ("False", "False", "False")


def test_main_called_from_python_never_restarts_the_process(execve, monkeypatch, toy_data, tmp_path):  # noqa: F811
    from modeling_vanilla.cli.train import main

    monkeypatch.setattr(hardware, "find_allocator", lambda name: "libjemalloc.so.2")
    # A notebook or a user's script calling main(argv): its process is not the command line to run again.
    assert main(train_args(toy_data, tmp_path / "run", "--max-steps", "1", "--eval-every", "0")) == 0
    assert execve == []
    assert json.loads((tmp_path / "run" / "training_summary.json").read_text())["step"] == 1


@pytest.mark.slow
@needs_jemalloc
def test_the_memory_benchmark_reads_jemalloc_and_refuses_without_it(toy_data, tmp_path):  # noqa: F811
    # benchmarks/train_memory.py reads jemalloc's own counters; on another allocator there is nothing to read.
    log = tmp_path / "memory.jsonl"
    command = [sys.executable, "benchmarks/train_memory.py", "--log", str(log), "--purge-every-s", "0", "--",
               *train_args(toy_data, tmp_path / "run", "--max-steps", "2", "--eval-every", "0")]
    refused = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "LD_PRELOAD": ""})
    assert refused.returncode == 2 and "does not run on jemalloc" in refused.stderr, refused.stderr[-2000:]
    ran = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LD_PRELOAD": JEMALLOC, "MALLOC_CONF": JEMALLOC_CONF})
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "malloc: jemalloc; 2 purges logged" in ran.stdout, ran.stdout[-2000:]  # one after each update
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 2 and "| first half | 1 |" in ran.stdout and "| second half | 1 |" in ran.stdout
    for record in records:  # jemalloc's own counters: the active pages hold what is allocated; a purge keeps none back
        assert 0 < record["before"]["allocated"] <= record["before"]["active"]
        assert record["after"]["resident"] <= record["before"]["resident"]
    assert json.loads((tmp_path / "run" / "training_summary.json").read_text())["step"] == 2
