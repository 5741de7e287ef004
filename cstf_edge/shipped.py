"""Where the shipped weights lie (no torch: the bench and the runtime's callers name them too)."""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_WEIGHTS = WEIGHTS_DIR / "cstf-n-relu-synthrs.safetensors"  # the default detector
SILU_WEIGHTS = WEIGHTS_DIR / "cstf-n-synthrs.safetensors"  # the first shipped detector (cstf-n, SiLU)
