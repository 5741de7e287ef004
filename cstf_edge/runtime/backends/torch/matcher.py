"""PyTorch reference runner of a CSTF matcher weights file (``cstf-edge train-match`` output); torch is
imported only on activation."""
from __future__ import annotations

import numpy as np

from cstf_edge.runtime.artifact import ArtifactInfo
from cstf_edge.runtime.backends.base import Runner
from cstf_edge.runtime.backends.torch.runner import weights_meta
from cstf_edge.runtime.errors import BackendUnavailableError
from cstf_edge.runtime.preprocess import PreprocessSpec

MATCHER_FORMAT = "cstf-edge-matcher/1"
MATCHER_OUTPUTS = ("ref_points", "query_points", "confidence", "saliency")
DEFAULT_MATCH_SIZE = 512


class MatcherTorchRunner(Runner):
    """``reference [1 or B, 3, S, S]`` and ``query [B, 3, S, S]`` -> the matcher's four outputs, fp32.
    ``imgsz``: the input side to feed (any multiple of 16; default 512)."""

    backend = "torch"

    def __init__(self, path, device: str = "cpu", imgsz: int | None = None):
        self.imgsz = imgsz or DEFAULT_MATCH_SIZE
        self.model = None
        super().__init__(path, device)

    def _read_info(self) -> ArtifactInfo:
        meta = weights_meta(self.path)
        return ArtifactInfo(class_names=[], preprocess=PreprocessSpec(self.imgsz, self.imgsz), strides=[16, 4],
                            batch=None, model=f"cstf-matcher-{meta.get('spec', {}).get('backbone', '')}",
                            task="match", extra={"trained": meta.get("config", {})})

    def activate(self) -> None:
        try:
            import torch  # noqa: F401
            from cstf_edge.model.train_match import load_matcher
        except ImportError:
            raise BackendUnavailableError("the PyTorch reference backend needs torch: pip install "
                                          "'cstf-edge[train]'") from None
        self.model = load_matcher(self.path)[0].to(self.device).eval()

    def deactivate(self) -> None:
        self.model = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            tensors = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device) for n in ("reference", "query")]
            outputs = self.model(*tensors)
        return {name: value.float().cpu().numpy() for name, value in zip(MATCHER_OUTPUTS, outputs)}
