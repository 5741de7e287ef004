"""Per-layer sensitivity sweep for INT8: quantize one group of layers at a time (everything else FP32),
measure how far the output moves from the FP32 model's on a few calibration images, and keep in FP32 the
groups that cost the most. Groups are modules two levels deep (``graph_policy.node_group``), so the table
reads like the model (``/backbone/stage2``, ``/cstf/match_coarse``, ``/head/levels.0/box_branch``).

Error measure, on anchors the FP32 model is confident about (best class score >= ``CONFIDENT``):
``score_error`` = mean absolute change of that class score, ``box_error_px`` = mean absolute change of
``cx, cy, w, h`` in input pixels. A group is kept FP32 when its score error exceeds ``score_tolerance`` or its
box error exceeds ``box_tolerance_px``, at most ``max_float_groups`` of the worst.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cstf_edge._io import atomic_write_text
from cstf_edge.export.graph_policy import node_group
from cstf_edge.export.quantize_ort import QUANT_OP_TYPES, quantize, run_onnx
from cstf_edge.export.weight_rounding import round_conv_weights

log = logging.getLogger(__name__)

CONFIDENT = 0.25
SCORE_TOLERANCE = 0.01
BOX_TOLERANCE_PX = 0.5
MAX_FLOAT_GROUPS = 4


@dataclass
class GroupSensitivity:
    group: str
    nodes: int
    score_error: float
    box_error_px: float
    kept_fp32: bool = False


def output_error(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(mean score error, mean box error in px) on the anchors the reference is confident about."""
    scores = reference[..., 5:]
    best = scores.argmax(-1)
    confident = np.take_along_axis(scores, best[..., None], -1)[..., 0] >= CONFIDENT
    if not confident.any():
        return 0.0, 0.0
    cand_scores = np.take_along_axis(candidate[..., 5:], best[..., None], -1)[..., 0]
    ref_scores = np.take_along_axis(scores, best[..., None], -1)[..., 0]
    score_error = float(np.abs(cand_scores - ref_scores)[confident].mean())
    box_error = float(np.abs(candidate[..., :4] - reference[..., :4])[confident].mean())
    return score_error, box_error


def quantizable_groups(graph, excluded: set[str]) -> dict[str, list[str]]:
    """Group name -> names of its quantizable nodes (op type in ``QUANT_OP_TYPES``, not excluded)."""
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in QUANT_OP_TYPES and node.name not in excluded:
            groups.setdefault(node_group(node.name), []).append(node.name)
    return groups


def sweep(fp32_path: Path, groups: dict[str, list[str]], inputs: list[np.ndarray], *, method: str,
          cache_path: Path, round_weights: bool = True, progress: bool = True,
          exclude: list[str] | None = None) -> list[GroupSensitivity]:
    """Quantize each group alone (ranges from the calibration cache, shared at Concats as in the whole model
    with the nodes ``exclude`` in FP32; with ``round_weights`` its convolution weights first put on the INT8 grid
    by sum-preserving rounding, as the export does, and only its) and measure its output error against
    ``fp32_path``."""
    reference = run_onnx(fp32_path, inputs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cstf-sweep-") as tmp:
        trial, source = Path(tmp) / "trial.onnx", Path(tmp) / "rounded.onnx"
        for group, nodes in tqdm(groups.items(), desc="sensitivity", unit="group", disable=not progress):
            if round_weights:
                round_conv_weights(fp32_path, source, only=nodes)
            quantize(source if round_weights else fp32_path, trial, batcher=None, method=method,
                     cache_path=cache_path, exclude=exclude, only=nodes)
            rows.append(GroupSensitivity(group, len(nodes), *output_error(reference, run_onnx(trial, inputs))))
    return rows


def choose_float_groups(rows: list[GroupSensitivity], score_tolerance: float = SCORE_TOLERANCE,
                        box_tolerance_px: float = BOX_TOLERANCE_PX,
                        max_float_groups: int = MAX_FLOAT_GROUPS) -> list[GroupSensitivity]:
    """Mark (and return) the groups kept FP32: over a tolerance, worst first, at most ``max_float_groups``."""
    over = [r for r in rows if r.score_error > score_tolerance or r.box_error_px > box_tolerance_px]
    over.sort(key=lambda r: (r.score_error / score_tolerance + r.box_error_px / box_tolerance_px), reverse=True)
    for row in over[:max_float_groups]:
        row.kept_fp32 = True
    return over[:max_float_groups]


def save_table(rows: list[GroupSensitivity], path: Path) -> None:
    atomic_write_text(path, json.dumps([asdict(r) for r in rows], indent=2) + "\n")


def load_table(path: Path, groups: dict[str, list[str]]) -> list[GroupSensitivity] | None:
    """The cached sweep at ``path``, or None if there is none or it was made over other groups (a graph policy
    that quantizes more or fewer nodes: the calibration ranges stay valid, the sweep does not)."""
    if not path.is_file():
        return None
    rows = [GroupSensitivity(**row) for row in json.loads(path.read_text())]
    if {r.group: r.nodes for r in rows} != {name: len(nodes) for name, nodes in groups.items()}:
        log.info("cached sensitivity sweep %s covers other groups: sweeping again", path)
        return None
    return rows


def format_table(rows: list[GroupSensitivity]) -> str:
    lines = [f"{'group':34s} {'nodes':>5s} {'score err':>10s} {'box err px':>10s}  kept"]
    for row in sorted(rows, key=lambda r: -r.score_error):
        lines.append(f"{row.group:34s} {row.nodes:5d} {row.score_error:10.5f} {row.box_error_px:10.3f}  "
                     f"{'FP32' if row.kept_fp32 else 'int8'}")
    return "\n".join(lines)
