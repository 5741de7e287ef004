"""Checkpoints as safetensors (+ a readable JSON twin), written atomically.

Two kinds of file, both one ``.safetensors`` whose metadata entry ``cstf_edge`` holds the JSON (so the
file is self-contained and one atomic write keeps tensors and metadata consistent), with the same JSON
beside it as ``<name>.json`` for people and tools:

- a **training state** (``last.safetensors``): model, EMA and optimizer tensors; the metadata adds the
  training config, epoch, step, optimizer hyper-parameters and scheduler/scaler state, for ``resume``;
- **weights** (``weights.safetensors``): the EMA model only, with class names, input size and model
  size, for inference and export (:func:`load_weights`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from cstf_edge._io import atomic_write_bytes, atomic_write_text
from cstf_edge.errors import DataError
from cstf_edge.model.detector import CSTFDetector, build_model
from cstf_edge.shipped import SHIPPED_WEIGHTS

log = logging.getLogger(__name__)

META_KEY = "cstf_edge"
WEIGHTS_FORMAT = "cstf-edge-weights/1"
STATE_FORMAT = "cstf-edge-train-state/1"


def _cpu_tensors(prefix: str, state: dict) -> dict[str, torch.Tensor]:
    return {f"{prefix}{name}": value.detach().cpu().contiguous() for name, value in state.items()
            if isinstance(value, torch.Tensor)}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and ``meta`` atomically, then the JSON twin ``path.with_suffix('.json')``."""
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(path, save_safetensors(tensors, metadata={META_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), text + "\n")
    return path


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a file written by :func:`write_safetensors`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint file")
    data = path.read_bytes()
    try:
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {})[META_KEY])
    except (KeyError, ValueError, SafetensorError) as exc:
        raise DataError(f"{path}: not a cstf-edge safetensors checkpoint ({exc})") from None
    return tensors, meta


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Optimizer state split into tensors ``optim.<param>.<name>`` and JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            value = torch.as_tensor(value).detach().cpu()
            tensors[f"optim.{index}.{name}"] = (value if value.ndim else value.reshape(1)).contiguous()
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    """Inverse of :func:`optimizer_tensors`: the scalar ``step``, and the moments of 0-d parameters (a
    learned temperature), come back 0-d."""
    current = optimizer.state_dict()
    shapes = [p.shape for g in optimizer.param_groups for p in g["params"]]  # the state dict's numbering
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            if name == "step" and value.numel() == 1:
                value = value.reshape(())
            elif int(index) < len(shapes) and value.numel() == shapes[int(index)].numel() == 1:
                value = value.reshape(shapes[int(index)])
            state.setdefault(int(index), {})[name] = value
    params = {p for g in current["param_groups"] for p in g["params"]}
    for index in state:
        if index not in params:
            raise DataError(f"checkpoint optimizer state names parameter {index}, which this model lacks")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_weights(path: str | Path, model: CSTFDetector, meta: dict) -> Path:
    """Inference weights of ``model`` with ``meta`` (class names, input size, model name...)."""
    full = {"format": WEIGHTS_FORMAT, **meta}
    return write_safetensors(Path(path), _cpu_tensors("", model.state_dict()), full)


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[CSTFDetector, dict]:
    """The model (eval mode) and metadata of a weights file written by :func:`save_weights`."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != WEIGHTS_FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r} is not {WEIGHTS_FORMAT!r} (a weights file)")
    model = build_model(meta["model"], len(meta["class_names"]))
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta


def shipped_weights() -> Path:
    """The default weights shipped in the package: cstf-n-relu trained on SynthRS optical scenes (the first
    shipped weights, cstf-n with SiLU, are ``cstf_edge.shipped.SILU_WEIGHTS``)."""
    return SHIPPED_WEIGHTS


def load_initial_weights(model: CSTFDetector, path: str | Path, class_names, model_name: str | None = None) -> None:
    """Fine-tuning: copy the tensors of a weights file into ``model``, whose size and class list must match.
    Weights of another activation with the same tensors (cstf-n into cstf-n-relu) load, with a warning naming
    both when ``model_name`` is given."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != WEIGHTS_FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r} is not {WEIGHTS_FORMAT!r} (a weights file)")
    if model_name and meta.get("model") and meta["model"] != model_name:
        log.warning("%s holds %s weights; they start a %s model (same tensors, other layers may differ)", path,
                    meta["model"], model_name)
    if list(meta["class_names"]) != list(class_names):
        raise DataError(f"{path}: its classes are {meta['class_names']}, the run's are {list(class_names)}; "
                        f"train with --classes {','.join(meta['class_names'])} to fine-tune from it")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise DataError(f"{path}: its tensors do not fit this model ({meta.get('model')!r} weights): {exc}") from None
