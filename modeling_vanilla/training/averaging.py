"""Section 6.1's checkpoint averaging, and the model weights it reads: "averaging the last 5 checkpoints, which were
written at 10-minute intervals" (base models), the last 20 (big).

- `average_checkpoints`: the element-wise mean of the weights of several training checkpoints or model folders.
- `load_averaged_weights` / `load_model_weights`: weights into a model (tied copies may be absent, then re-tied).
- `current_layout`: weights saved before the model had `shared`, renamed so that they load and average with newer
  ones.
- `find_weights`, `load_weights`, `verified_weights`: the weights file of a folder, read; a training checkpoint's
  checked against its marker first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .checkpoint_files import COMPLETE_MARKER, file_problem, marker_files


def find_weights(folder: str | os.PathLike) -> Path:
    """The model weights inside a training checkpoint or a saved model folder."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"No model.safetensors or pytorch_model.bin in {folder}: not a checkpoint or model folder.")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, or of a .bin state dict (unpickled with weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def verified_weights(folder: str | os.PathLike) -> Path:
    """`find_weights`, and for a training checkpoint (it has a marker) the weights' size and sha256 checked."""
    path = find_weights(folder)
    files = marker_files(path.parent) if (path.parent / COMPLETE_MARKER).is_file() else None
    if files is None:
        return path
    problem = files if isinstance(files, str) else (
        f"{path.name} is not listed in its marker" if path.name not in files else file_problem(path, files[path.name]))
    if problem:
        raise ValueError(f"Cannot use checkpoint {path.parent}: {problem}.")
    return path


def current_layout(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved before the model had `shared` hold section 3.4's one matrix as `encoder.embed_tokens.weight`
    (its tied copies left out; an untied model stores the decoder's too): renamed `shared.weight`, so that they
    average with newer ones and load into today's model. Other weights are returned as they are; `weights` itself
    is not changed."""
    weights = dict(weights)
    for prefix in ("model.", ""):
        names = ("encoder.embed_tokens", "decoder.embed_tokens", "shared")
        old, copy, new = (f"{prefix}{name}.weight" for name in names)
        if old in weights and copy not in weights and new not in weights:
            weights[new] = weights.pop(old)
    return weights


def load_model_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Load `weights` into `model`; only tied copies (`all_tied_weights_keys`) may be absent, then they are re-tied.
    Checkpoints written before the model had `shared` are read in the current layout (`current_layout`)."""
    missing, unexpected = model.load_state_dict(current_layout(weights), strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"The weights in {source} do not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}.")
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def average_checkpoints(folders: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Section 6.1: the element-wise mean of the parameters of several checkpoints of one run (in fp32)."""
    if not folders:
        raise ValueError("No checkpoints to average.")
    total: dict[str, torch.Tensor] = {}
    for folder in folders:
        weights = current_layout(load_weights(verified_weights(folder)))
        if total and weights.keys() != total.keys():
            raise ValueError(f"{folder} holds different parameters than {folders[0]}: checkpoints of different models?")
        for name, tensor in weights.items():
            if name in total:
                if tensor.shape != total[name].shape:
                    raise ValueError(f"{name} has shape {tuple(tensor.shape)} in {folder}, "
                                     f"{tuple(total[name].shape)} before.")
                total[name] += tensor.float()
            else:
                total[name] = tensor.float().clone()
    return {name: tensor / len(folders) for name, tensor in total.items()}


def load_averaged_weights(model: nn.Module, averaged: dict[str, torch.Tensor]) -> None:
    """Load averaged weights into `model` (keys as in a checkpoint or save_pretrained; tied copies may be absent)."""
    load_model_weights(model, averaged, "the averaged checkpoints")
