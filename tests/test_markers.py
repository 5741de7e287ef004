"""The ``gpu`` / ``trt`` markers skip with the reason where the hardware or library is absent, and the
GPU probe (which imports torch) runs only when a collected test is marked ``gpu``."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import gpu_missing_reason, trt_missing_reason

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")
_INI = """[pytest]
addopts = --strict-markers
markers =
    gpu: needs a GPU
    trt: needs TensorRT
"""


def run_marked(pytester, body: str):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(_INI)
    pytester.makepyfile(test_marked=body)
    return pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")


@pytest.mark.parametrize("marker, missing", [("gpu", gpu_missing_reason), ("trt", trt_missing_reason)])
def test_marked_test_skips_with_the_reason(pytester, marker, missing):
    result = run_marked(pytester, f"import pytest\n\n@pytest.mark.{marker}\ndef test_needs_it():\n    pass\n")
    reason = missing()
    if reason is None:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines([f"*{reason.split(' (')[0]}*"])


def test_no_gpu_marker_means_torch_is_not_imported(pytester):
    body = "import sys\n\ndef test_plain():\n    assert 'torch' not in sys.modules\n"
    run_marked(pytester, body).assert_outcomes(passed=1)
