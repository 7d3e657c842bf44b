"""Section 5.3 of the paper: the optimizer and the learning-rate schedule.

Adam with beta_1 = 0.9, beta_2 = 0.98, epsilon = 1e-9, and the learning rate of Eq. (3),
lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), with warmup_steps = 4000.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Section 5.3: Adam's hyperparameters.
ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-9


def inverse_sqrt_learning_rate(step: int, d_model: int, warmup_steps: int = 4000, scale: float = 1.0) -> float:
    """Eq. (3): lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), step counted from 1.

    The rate rises linearly for `warmup_steps` steps, then decays with the inverse square root of the step.
    `scale` (1 in the paper) multiplies the whole curve.
    """
    step = max(step, 1)
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def build_optimizer(model: nn.Module, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Section 5.3: Adam(beta_1=0.9, beta_2=0.98, epsilon=1e-9). The base rate is 1: the scheduler sets it.

    Fused (one kernel for all parameters, on CPUs and GPUs) where PyTorch has it for the parameters' device: it is
    faster, and it can skip an update on the device (`found_inf`, see loop.apply_update) without a host read.
    """
    fused = fused_adam_supported(model)
    if weight_decay:  # Not in the paper: decoupled weight decay (AdamW) of the matrices and embeddings.
        # Biases and LayerNorm gains and shifts (the 1-D tensors) are not decayed, as in transformers' Trainer.
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS, fused=fused)
    return torch.optim.Adam(model.parameters(), lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS, fused=fused)


def fused_adam_supported(model: nn.Module) -> bool:
    """Whether every parameter is a floating-point tensor on a device that has PyTorch's fused Adam kernel."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    return all(p.device.type in devices and p.is_floating_point() for p in model.parameters())


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer.step()` honours a `found_inf` tensor (fused Adam/AdamW, as torch's GradScaler uses)."""
    return bool(optimizer.defaults.get("fused"))


def linear_cooldown(spent: float, fraction: float) -> float:
    """Not in the paper: the factor of a linear decay of the rate to zero over the last `fraction` of a run's budget
    (1 before it; 1 always when `fraction` is 0). `spent` is the part of the budget already used, from 0 to 1."""
    if not fraction:
        return 1.0
    return min(1.0, max(0.0, (1.0 - spent) / fraction))


def build_scheduler(optimizer: torch.optim.Optimizer, d_model: int, warmup_steps: int = 4000, scale: float = 1.0,
                    factor: Callable[[int], float] | None = None):
    """A LambdaLR that gives the optimizer the Eq. (3) rate for the step about to be taken (1, 2, ...), times
    `factor(updates done)` when given (the loop's --lr-cooldown, not in the paper)."""

    def rate(done: int) -> float:
        eq3 = inverse_sqrt_learning_rate(done + 1, d_model, warmup_steps, scale)
        return eq3 if factor is None else eq3 * factor(done)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
