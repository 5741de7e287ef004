"""PyTorch weights -> FP32 ONNX: the TorchScript exporter (opset >= 17), named tensors ``images``
(``reference``) -> ``detections``, static or dynamic batch, simplified with onnxslim, fully checked by
``onnx.checker``, and the artifact metadata (``cstf_edge.runtime.artifact.ArtifactInfo``) in
``metadata_props`` plus a few flat keys other tools read (names, stride, imgsz).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

from cstf_edge._io import atomic_write_bytes
from cstf_edge.export.errors import ExportError
from cstf_edge.export.options import ExportOptions
from cstf_edge.runtime.artifact import METADATA_KEY, ArtifactInfo
from cstf_edge.runtime.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

# Bumped whenever the exported graph changes for the same weights (numbers or speed), so tools that reuse
# artifacts (cstf-edge bench) remake older ones: 2 = entropy as log Z - E[s], CSP input halves as two convolutions;
# 3 = that entropy clamped at 0; 4 = ONNX Runtime INT8 with shared Concat ranges (export/shared_ranges.py);
# 5 = its upsamples and stem in ONNX Runtime's fast INT8 forms (export/ort_layout.py), the CSTF fusion's BatchNorm
# as a depthwise 1x1 convolution (quantized with the convolutions around it) for ONNX Runtime targets.
EXPORT_REVISION = 5


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(weights: str | Path):
    """The model (eval, CPU, fp32) and metadata of a weights file; a missing or corrupt file is an
    :class:`ExportError` naming it."""
    from cstf_edge.errors import DataError
    from cstf_edge.model.checkpoint import load_weights

    try:
        model, meta = load_weights(weights, "cpu")
    except DataError as exc:
        raise ExportError(f"{exc}; pass --weights with a file written by cstf-edge train") from None
    except Exception as exc:  # safetensors/torch raise their own types for a corrupt file
        raise ExportError(f"{weights}: cannot load these weights ({type(exc).__name__}: {exc}); is the file "
                          "complete? pass --weights with a file written by cstf-edge train") from None
    return model.float().eval(), meta


def artifact_info(meta: dict, options: ExportOptions, source_sha256: str, precision: str = "fp32") -> ArtifactInfo:
    """The metadata an artifact exported with ``options`` from weights ``meta`` carries."""
    spec = PreprocessSpec.from_metadata(meta.get("preprocess", {}), options.imgsz, options.imgsz)
    spec = PreprocessSpec(options.imgsz, options.imgsz, spec.pad_value, spec.channels, spec.scale, spec.letterbox)
    dynamic = options.dynamic_batch
    return ArtifactInfo(class_names=list(meta["class_names"]), preprocess=spec,
                        strides=list(meta.get("spec", {}).get("strides", [8, 16, 32])), precision=precision,
                        with_reference=options.with_reference, batch=None if dynamic else options.batch,
                        max_batch=dynamic[1] if dynamic else None, model=meta.get("model", ""),
                        source_sha256=source_sha256, extra={"trained_imgsz": meta.get("imgsz"),
                                                                  "export_revision": EXPORT_REVISION})


def set_metadata(model_proto, info: ArtifactInfo) -> None:
    """Write ``info`` into an ONNX ModelProto's ``metadata_props`` (replacing earlier cstf-edge keys)."""
    flat = {METADATA_KEY: info.to_json(), "names": json.dumps(dict(enumerate(info.class_names))),
            "stride": str(max(info.strides)), "imgsz": json.dumps(list(info.imgsz)), "precision": info.precision,
            "task": "obb" if info.task == "detect" else info.task, "author": "cstf-edge"}
    kept = [p for p in model_proto.metadata_props if p.key not in flat]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(kept)
    for key, value in flat.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def _trace_to_onnx(model, options: ExportOptions) -> bytes:
    import torch

    size = options.imgsz
    batch = options.dynamic_batch[1] if options.dynamic_batch else options.batch
    example = torch.zeros(batch, 3, size, size)
    inputs = (example, example.clone()) if options.with_reference else (example,)
    names = ["images", "reference"] if options.with_reference else ["images"]
    dynamic = {n: {0: "batch"} for n in names + ["detections"]} if options.dynamic_batch else None
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, inputs, buffer, opset_version=options.opset, input_names=names,
                          output_names=["detections"], dynamic_axes=dynamic, do_constant_folding=True,
                          dynamo=False)
    return buffer.getvalue()


def simplify(model_proto):
    """onnxslim's graph simplification (constant folding, dead code, fusable patterns); the input is
    returned unchanged (with a warning) if onnxslim is not installed."""
    try:
        import onnxslim
    except ImportError:
        log.warning("onnxslim is not installed: the ONNX is not simplified (pip install onnxslim)")
        return model_proto
    return onnxslim.slim(model_proto)


def export_onnx(model, meta: dict, options: ExportOptions, path: Path, source_sha256: str) -> ArtifactInfo:
    """Write the FP32 ONNX of ``model`` to ``path`` atomically; return its metadata."""
    import onnx

    from cstf_edge.model.cstf_block import fusion_norms_as_convs
    from cstf_edge.model.layers import split_csp_inputs

    export_form = split_csp_inputs(model)  # a copy; ``model`` keeps its trained layout
    if options.target == "onnxruntime":  # measured there (INT8 0.9 ms faster); TensorRT keeps the BatchNorm
        export_form = fusion_norms_as_convs(export_form)
    proto = onnx.load_from_string(_trace_to_onnx(export_form, options))
    proto = simplify(proto)
    info = artifact_info(meta, options, source_sha256)
    set_metadata(proto, info)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    atomic_write_bytes(path, proto.SerializeToString())
    log.info("wrote %s (%d nodes, opset %d)", path, len(proto.graph.node), options.opset)
    return info
