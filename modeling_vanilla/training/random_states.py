"""Each process's random states as JSON values, saved with every checkpoint (`rng_state_{rank}.json`) so that a
resumed run draws the same random numbers (dropout masks) as one that never stopped: Python's, NumPy's, torch's on
the CPU and on each CUDA device, and Accelerate's step counter."""

from __future__ import annotations

import random

import torch


def rng_state(accelerator) -> dict:
    """This process's random states as JSON values."""
    import numpy as np

    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
        "accelerate_step": int(getattr(accelerator, "step", 0)),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(accelerator, state: dict) -> None:
    """Restore this process's random states from `rng_state`'s values (CUDA's on the devices there are)."""
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        devices = min(len(state["cuda"]), torch.cuda.device_count())
        for device, saved in enumerate(state["cuda"][:devices]):
            torch.cuda.set_rng_state(torch.tensor(saved, dtype=torch.uint8), device)
    if hasattr(accelerator, "step"):
        accelerator.step = state.get("accelerate_step", 0)
