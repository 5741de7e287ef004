"""What a model costs and what a run did: parameter and FLOP counts, and the per-epoch plot of a run.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass (batch 1, no
gradients); a multiply-add counts 2, as in Ultralytics' "GFLOPs", so the figures compare with theirs.
"""
from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cstf_edge._io import atomic_write_bytes
from cstf_edge.model.detector import CSTFDetector, build_model, check_input_shape

log = logging.getLogger(__name__)

# The peer every size is compared with: Ultralytics YOLOv8n-obb, as its documentation lists it
# (parameters in millions, GFLOPs at 1024 x 1024).
REFERENCE_MODEL = {"name": "YOLOv8n-obb", "params_M": 3.1, "gflops": 23.3, "imgsz": 1024}

_warned_no_matplotlib = False


@dataclass(frozen=True)
class ModelSummary:
    """Size and cost of one model at one square input size."""

    model: str
    num_classes: int
    imgsz: int
    params: int
    gflops: float
    cstf_block_gflops: float

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    def as_dict(self) -> dict:
        return {**asdict(self), "params_M": round(self.params_m, 3), "gflops": round(self.gflops, 2),
                "cstf_block_gflops": round(self.cstf_block_gflops, 2), "reference": dict(REFERENCE_MODEL)}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: CSTFDetector, size: int) -> tuple[float, float]:
    """GFLOPs of one forward pass at ``size x size`` (batch 1), and the CSTF block's share."""
    check_input_shape(size, size)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, size, size, device=next(model.parameters()).device))
    model.train(was_training)
    block = sum(counter.get_flop_counts().get(f"{type(model).__name__}.cstf", {}).values())
    return counter.get_total_flops() / 1e9, block / 1e9


def summarize_model(name: str = "cstf-n", imgsz: int = 1024, num_classes: int = 5) -> ModelSummary:
    """Parameters and GFLOPs of a freshly built ``name`` with ``num_classes`` outputs at ``imgsz``."""
    check_input_shape(imgsz, imgsz)
    model = build_model(name, num_classes).eval()
    total, block = count_gflops(model, imgsz)
    return ModelSummary(name, num_classes, imgsz, count_parameters(model), total, block)


def plot_metrics(rows: list[dict], path: str | Path) -> Path | None:
    """``results.png``: training loss terms and validation mAP50 per epoch. Needs matplotlib; without it
    the plot is skipped (one warning per process) and None is returned."""
    global _warned_no_matplotlib
    try:
        from matplotlib.figure import Figure
    except ImportError:
        if not _warned_no_matplotlib:
            log.warning("matplotlib is not installed, so no %s plot is written; pip install matplotlib",
                        Path(path).name)
            _warned_no_matplotlib = True
        return None
    epochs = [int(row["epoch"]) for row in rows]
    figure = Figure(figsize=(10, 4), layout="tight")
    losses, maps = figure.subplots(1, 2)
    for name in ("loss", "cls", "box", "saliency"):
        losses.plot(epochs, [_number(row.get(name)) for row in rows], marker=".", label=name)
    losses.set(xlabel="epoch", ylabel="training loss", title="loss")
    losses.legend()
    scored = [(epoch, _number(row.get("mAP50"))) for epoch, row in zip(epochs, rows)
              if row.get("mAP50") not in (None, "")]
    maps.plot([e for e, _ in scored], [m for _, m in scored], marker="o", color="tab:green")
    maps.set(xlabel="epoch", ylabel="mAP50 (VOC07)", title="validation mAP50", ylim=(0, 1),
             xlim=(min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5))
    if not scored:
        maps.text(0.5, 0.5, "no validation set (train --val DIR)", ha="center", va="center",
                  transform=maps.transAxes, color="grey")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())


def _number(value) -> float:
    """A metrics-CSV cell (a float, or its text after a resume) as a float; empty is NaN."""
    return float("nan") if value is None or value == "" else float(value)
