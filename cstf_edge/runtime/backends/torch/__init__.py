"""PyTorch reference backend (imports torch lazily: parity checks and validation only)."""
from cstf_edge.runtime.backends.torch.runner import TorchRunner

__all__ = ["TorchRunner"]
