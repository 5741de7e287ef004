"""FP16 ONNX: weights and activations in FP16, inputs/outputs kept FP32 (``keep_io_types``), the nodes
of :func:`cstf_edge.export.graph_policy.fp16_float_nodes` kept in FP32. Made with ONNX Runtime's
``float16`` converter (the onnxconverter-common code shipped inside onnxruntime)."""
from __future__ import annotations

import logging
from pathlib import Path

from cstf_edge._io import atomic_write_bytes
from cstf_edge.export.errors import ExportError
from cstf_edge.export.graph_policy import fp16_float_nodes
from cstf_edge.export.onnx_export import set_metadata
from cstf_edge.runtime.artifact import ArtifactInfo

log = logging.getLogger(__name__)


def sort_topologically(graph) -> None:
    """Reorder ``graph.node`` so every node follows its inputs' producers (the converter appends its input
    casts at the end, which ``onnx.checker`` rejects)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ExportError(f"FP16 graph has a cycle or a missing input at node {pending[0].name!r}")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for node in ready:
            available.update(node.output)
        ordered += ready
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(fp32_path: Path, out_path: Path, info: ArtifactInfo) -> ArtifactInfo:
    """Write the FP16 twin of an FP32 ONNX; returns its metadata (precision fp16)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise ExportError("FP16 conversion needs onnxruntime (pip install onnxruntime)") from None
    model = onnx.load(str(fp32_path))
    keep = fp16_float_nodes(model.graph)
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    fp16_info = ArtifactInfo(**{**info.__dict__, "precision": "fp16",
                                "extra": {**info.extra, "fp32_nodes": len(keep)}})
    sort_topologically(converted.graph)
    set_metadata(converted, fp16_info)
    onnx.checker.check_model(converted)
    atomic_write_bytes(out_path, converted.SerializeToString())
    log.info("wrote %s (%d nodes kept in FP32)", out_path, len(keep))
    return fp16_info
