"""PyTorch reference runner over a weights file; torch and the model are imported only on activation, so
``cstf_edge.runtime`` stays importable without torch."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from cstf_edge.runtime.artifact import ArtifactInfo
from cstf_edge.runtime.backends.base import Runner
from cstf_edge.runtime.errors import ArtifactError, BackendUnavailableError
from cstf_edge.runtime.preprocess import PreprocessSpec


def weights_meta(path: Path) -> dict:
    """The JSON metadata of a safetensors weights file, read from its header (no torch needed)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        return json.loads(header["__metadata__"]["cstf_edge"])
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path}: not a cstf-edge weights file ({exc})") from None


class TorchRunner(Runner):
    """Runs the PyTorch model of a ``.safetensors`` weights file (fp32, or fp16 autocast on CUDA). ``imgsz``:
    the input size to feed (default: the size the weights were trained at; the model is fully convolutional,
    so any multiple of 64 works, like the exported artifacts' sizes)."""

    backend = "torch"

    def __init__(self, path, device: str = "cpu", half: bool = False, imgsz: int | None = None):
        self.half = half
        self.imgsz = imgsz
        self.model = None
        self.owns_model = True  # loaded on activation, dropped on deactivation
        super().__init__(path, device)

    @classmethod
    def from_model(cls, model, class_names, imgsz: int) -> "TorchRunner":
        """A runner over a model already in memory (validation during training): the model's device, fp32,
        any batch, input ``imgsz`` x ``imgsz``."""
        runner = cls.__new__(cls)
        runner.path = Path(f"<in-memory {type(model).__name__}>")
        runner.device = str(next(model.parameters()).device)
        runner.half, runner.model, runner.owns_model, runner.active = False, model, False, False
        runner.info = ArtifactInfo(class_names=list(class_names), preprocess=PreprocessSpec(imgsz, imgsz), batch=None)
        return runner

    def _read_info(self) -> ArtifactInfo:
        info = ArtifactInfo.from_weights_meta(weights_meta(self.path))
        info.precision = "fp16" if self.half else "fp32"
        if self.imgsz is not None:
            info.preprocess = replace(info.preprocess, height=self.imgsz, width=self.imgsz)
        return info

    def activate(self) -> None:
        try:
            import torch  # noqa: F401
            from cstf_edge.model.checkpoint import load_weights
        except ImportError:
            raise BackendUnavailableError("the PyTorch reference backend needs torch: pip install "
                                          "'cstf-edge[train]'") from None
        if self.model is None:
            self.model, _ = load_weights(self.path, self.device)
        self.model = self.model.to(self.device).eval()

    def deactivate(self) -> None:
        if self.owns_model:
            self.model = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        device = torch.device(self.device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=self.half):
            images = torch.from_numpy(np.ascontiguousarray(feed["images"])).to(device)
            reference = feed.get("reference")
            if reference is not None:
                reference = torch.from_numpy(np.ascontiguousarray(reference)).to(device)
            return {"detections": self.model(images, reference).float().cpu().numpy()}
