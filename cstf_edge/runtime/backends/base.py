"""The interface every backend implements (after Polygraphy's runners): a context manager that loads the
artifact on enter and frees it on exit, with named tensors in and out.

    with open_runner("model.onnx", device="cpu") as runner:
        outputs = runner.infer({"images": batch})     # {"detections": array}

``runner.info`` is the artifact's :class:`~cstf_edge.runtime.artifact.ArtifactInfo`, read when the runner
is created (before activation), so a wrong artifact fails before anything heavy is loaded.
"""
from __future__ import annotations

import abc
import logging
from pathlib import Path

import numpy as np

from cstf_edge.runtime.artifact import ArtifactInfo
from cstf_edge.runtime.errors import ArtifactError

log = logging.getLogger(__name__)

OUTPUT_NAME = "detections"


class Runner(abc.ABC):
    """One loaded model on one device; use it as a context manager."""

    backend: str = "base"

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.path = Path(path)
        self.device = device
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: no such model file")
        self.info: ArtifactInfo = self._read_info()
        self.active = False

    @abc.abstractmethod
    def _read_info(self) -> ArtifactInfo:
        """The artifact's metadata, without loading the model."""

    @abc.abstractmethod
    def activate(self) -> None:
        """Load the model and allocate what inference needs."""

    @abc.abstractmethod
    def deactivate(self) -> None:
        """Free everything :meth:`activate` allocated."""

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named host arrays; return named host arrays."""

    @property
    def precision(self) -> str:
        return self.info.precision

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs (``images`` and, for a two-input model, ``reference``) -> ``{"detections": ...}``."""
        if not self.active:
            raise ArtifactError(f"{self.path}: runner used outside its 'with' block (call activate() first)")
        expected = set(self.info.input_names)
        if set(feed) != expected:
            raise ArtifactError(f"{self.path}: takes inputs {sorted(expected)}, was given {sorted(feed)}")
        return self._infer(feed)

    def check_batch(self, batch: int) -> None:
        """Raise when the artifact cannot take ``batch`` images at once."""
        fixed, top = self.info.batch, self.info.max_batch
        if (fixed is not None and batch != fixed) or (top is not None and batch > top):
            allowed = f"exactly {fixed}" if fixed is not None else f"at most {top}"
            raise ArtifactError(f"{self.path}: built for batch {allowed}, asked for {batch}; use --batch "
                                f"{fixed or top} or re-export with --dynamic-batch 1:{batch}")

    def __enter__(self) -> "Runner":
        self.activate()
        self.active = True
        return self

    def __exit__(self, *exc_info) -> None:
        self.active = False
        self.deactivate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, device={self.device!r}, precision={self.precision!r})"
