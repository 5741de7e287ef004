"""PyTorch reference backend (imports torch lazily: parity checks and validation only)."""
from __future__ import annotations

from cstf_edge.runtime.backends.torch.matcher import MATCHER_FORMAT, MatcherTorchRunner
from cstf_edge.runtime.backends.torch.runner import TorchRunner, weights_meta


def torch_runner(path, device: str = "cpu", **options):
    """The detector's or the matcher's reference runner, as the weights file's format says."""
    if weights_meta(path).get("format") == MATCHER_FORMAT:
        return MatcherTorchRunner(path, device, **options)
    return TorchRunner(path, device, **options)


__all__ = ["MatcherTorchRunner", "TorchRunner", "torch_runner", "weights_meta"]
