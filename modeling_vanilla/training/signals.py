"""Stop signals: SIGTERM (a cluster's preemption) and SIGINT (Ctrl-C) end a run after the current update, with a
checkpoint, and the process exits with 128 + the signal's number, as a killed process would; a second Ctrl-C stops
at once. With several processes, a signal that reaches one stops all at the same update: the loop has them agree
on it every AGREE_EVERY updates, in the collective that agrees on the clock (`Clock.agree`).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from .options import checkpointing
from .run import Run


@contextmanager
def stop_on_signals(run: Run):
    """While inside: SIGTERM and SIGINT set `run.stop_signal` (the loop stops after the update); a second SIGINT
    raises KeyboardInterrupt. The handlers before are put back on leaving."""
    def handler(signum, frame):
        if run.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        run.stop_signal = signum
        run.print(f"\nReceived {signal.Signals(signum).name}: stopping after this update, with a checkpoint.")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_after_signal(run: Run) -> None:
    """Checkpoint (when checkpoints are on) and exit with 128 + the signal's number, as a killed process would."""
    name = signal.Signals(run.stop_signal).name
    if checkpointing(run.args):
        folder = run.save_checkpoint()
        run.print(f"{name}: checkpoint {folder} written at step {run.state.step}. Continue with the same command "
                  "and --resume.")
    else:
        run.print(f"{name}: stopped at step {run.state.step}; checkpoints are off (--save-every-minutes 0), so "
                  "nothing was saved.")
    run.accelerator.end_training()
    raise SystemExit(128 + run.stop_signal)
