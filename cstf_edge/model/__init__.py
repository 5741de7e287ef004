"""The PyTorch CSTF detector, its losses and assigner, and the training loop (the only package that
imports torch; nothing outside it imports it)."""
from cstf_edge.model.detector import (
    MODEL_SPECS,
    CSTFDetector,
    ModelConfigError,
    ModelSpec,
    build_model,
    check_input_shape,
    images_to_input,
)

__all__ = [
    "MODEL_SPECS",
    "CSTFDetector",
    "ModelConfigError",
    "ModelSpec",
    "build_model",
    "check_input_shape",
    "images_to_input",
]
