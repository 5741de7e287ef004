"""Export of the CSTF matcher to ONNX: two inputs (``reference [1 or B, 3, S, S]``, ``query [B, 3, S, S]``),
the four per-token outputs of ``cstf_edge.model.matcher``, dynamic query batch (the rotation search sends
up to four turns of the query at once), checked by ``onnx.checker`` and against PyTorch, with the matcher's :class:`ArtifactInfo` (``task="match"``) in
its metadata, written atomically.

Not simplified by onnxslim: its shape inference gives the reference's and the query's batch dimensions one
symbol (the two pass through the same layers), after which ONNX Runtime refuses a reference batch of 1
with a query batch of 4; ONNX Runtime's own graph optimisations still apply at load.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_bytes
from cstf_edge.export.onnx_export import ExportError, set_metadata, sha256_file
from cstf_edge.runtime.artifact import ArtifactInfo
from cstf_edge.runtime.backends.torch.matcher import MATCHER_OUTPUTS
from cstf_edge.runtime.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

MAX_QUERY_BATCH = 4
OPSET = 17
POINT_TOLERANCE = 0.05  # px, matched points of tokens whose match agrees
CONFIDENCE_TOLERANCE = 1e-3


def _trace(matcher, imgsz: int) -> bytes:
    import torch

    reference, query = torch.rand(1, 3, imgsz, imgsz), torch.rand(2, 3, imgsz, imgsz)
    dynamic = {"reference": {0: "reference_batch"}, "query": {0: "batch"},
               **{name: {0: "batch"} for name in MATCHER_OUTPUTS}}
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(matcher, (reference, query), buffer, opset_version=OPSET, input_names=["reference", "query"],
                          output_names=list(MATCHER_OUTPUTS), dynamic_axes=dynamic, do_constant_folding=True,
                          dynamo=False)
    return buffer.getvalue()


def parity(matcher, path: Path, imgsz: int, seed: int = 0) -> dict:
    """Largest differences between PyTorch and ONNX Runtime outputs on one random pair batch (two query
    turns against one reference): confidence, and points of tokens whose matched reference token agrees."""
    import onnxruntime
    import torch

    rng = np.random.default_rng(seed)
    base = rng.random((1, 3, imgsz, imgsz), dtype=np.float32)
    reference = np.ascontiguousarray(base)
    query = np.ascontiguousarray(np.concatenate([np.flip(base, 3), np.rot90(base, 1, (2, 3))]))
    with torch.no_grad():
        expected = [t.numpy() for t in matcher(torch.from_numpy(reference), torch.from_numpy(query))]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(MATCHER_OUTPUTS), {"reference": reference, "query": query})
    same = np.abs(got[0] - expected[0]).max(-1) < 1.0  # same matched window (points within a pixel)
    return {"confidence_max_abs": float(np.abs(got[2] - expected[2]).max()),
            "points_max_abs": float(np.abs(got[0] - expected[0]).max(-1)[same].max(initial=0.0)),
            "tokens_same_match": float(same.mean())}


def export_matcher(weights: str | Path, path: str | Path, imgsz: int = 512) -> tuple[ArtifactInfo, dict]:
    """Write the FP32 ONNX of the matcher in ``weights`` to ``path``; returns its info and parity figures.
    :class:`ExportError` when the graph fails the checker or PyTorch and ONNX Runtime disagree."""
    import onnx

    from cstf_edge.model.layers import split_csp_inputs
    from cstf_edge.model.matcher import check_matcher_input
    from cstf_edge.model.train_match import load_matcher

    check_matcher_input(imgsz, imgsz)
    matcher, meta = load_matcher(weights)
    proto = onnx.load_from_string(_trace(split_csp_inputs(matcher), imgsz))
    info = ArtifactInfo(class_names=[], preprocess=PreprocessSpec(imgsz, imgsz), strides=[16, 4], batch=None,
                        max_batch=MAX_QUERY_BATCH, model=f"cstf-matcher-{meta['spec']['backbone']}",
                        source_sha256=sha256_file(weights), task="match",
                        extra={"trained": meta.get("config", {}), "data_hash": meta.get("data_hash", "")})
    set_metadata(proto, info)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported matcher graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    figures = parity(matcher, path, imgsz)
    if figures["confidence_max_abs"] > CONFIDENCE_TOLERANCE or figures["points_max_abs"] > POINT_TOLERANCE:
        raise ExportError(f"{path}: ONNX Runtime and PyTorch disagree ({figures}); the file is kept for inspection")
    log.info("wrote %s (%d nodes, opset %d); parity %s", path, len(proto.graph.node), OPSET, figures)
    return info, figures
