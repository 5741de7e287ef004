"""Shared test fixtures. Real data lives outside the repository (academic use only) and is used by path:
``$CSTF_DATA`` or ``<repo>/../shared/data``; tests that need it skip with the reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared(name: str, env: str) -> Path:
    return Path(os.environ.get(env, REPO.parent / "shared" / name))


DATA_ROOT = _shared("data", "CSTF_DATA")
FIXTURES_ROOT = _shared("fixtures", "CSTF_FIXTURES")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real sample data (DOTA, HRSC2016, multimodal pairs)."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real sample data not found at {DATA_ROOT} (set CSTF_DATA)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Root of the official-devkit evaluation fixtures."""
    if not FIXTURES_ROOT.is_dir():
        pytest.skip(f"evaluation fixtures not found at {FIXTURES_ROOT} (set CSTF_FIXTURES)")
    return FIXTURES_ROOT


@pytest.fixture(scope="session")
def gpu():
    """Device 0 through cuda-python (skips with the reason where cuda-python or the device is missing)."""
    from cstf_edge.runtime.cuda import _driver
    from cstf_edge.runtime.errors import BackendUnavailableError

    try:
        return _driver.use_device(0)
    except (BackendUnavailableError, _driver.CudaError) as exc:
        pytest.skip(str(exc))


def gpu_missing_reason() -> str | None:
    """Why ``gpu`` tests cannot run here (no CUDA device through PyTorch or CuPy), or None if they can."""
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except Exception:  # noqa: BLE001 - any import failure means no usable GPU stack
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
    except Exception:  # noqa: BLE001
        pass
    return "needs an NVIDIA GPU with CUDA (PyTorch with CUDA or CuPy found none)"


def trt_missing_reason() -> str | None:
    """Why ``trt`` tests cannot run here (``import tensorrt`` fails), or None if they can."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"needs TensorRT (import tensorrt failed: {exc})"
    return None


_REQUIREMENTS = {"gpu": gpu_missing_reason, "trt": trt_missing_reason}


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` / ``trt`` tests with the reason where the GPU or TensorRT is absent; the check (which
    imports torch) runs only when a collected test carries the marker."""
    for marker, missing_reason in _REQUIREMENTS.items():
        marked = [item for item in items if item.get_closest_marker(marker) is not None]
        reason = missing_reason() if marked else None
        for item in marked if reason else []:
            item.add_marker(pytest.mark.skip(reason=reason))
