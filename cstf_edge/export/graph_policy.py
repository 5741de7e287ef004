"""Which nodes of the exported CSTF graph stay in FP32 whatever the precision, by construction.

The exported graph's node names follow the PyTorch modules (``/backbone/...``, ``/cstf/...``, ``/neck/...``,
``/head/...``); everything outside those scopes is the in-graph decode (anchor points, distances -> boxes,
angle canonicalisation, class sigmoid), which works on input pixels and must keep FP32.

- FP16: the decode, and every non-convolution of the correspondence (SoftMax, its maximum, the entropy as
  ``log Z - E[s]``, a difference FP16 would round to about 0.01; they are fused back as confidences).
- INT8: additionally the head's output convolutions (class logits, box distances, angle) — quantizing them
  moves boxes by whole pixels. The keypoint saliency and the fusion are quantized like the backbone (their
  sweep errors are among the smallest; quantizing them took 4 % off the INT8 CPU time). The per-layer
  sensitivity sweep (``cstf_edge.export.sensitivity``) adds the groups it measures as costly.
"""
from __future__ import annotations

MODULE_SCOPES = ("/backbone/", "/neck/", "/cstf/", "/head/")
CORRESPONDENCE_SCOPES = ("/cstf/match_fine/", "/cstf/match_coarse/")


def is_decode(name: str) -> bool:
    return not name.startswith(MODULE_SCOPES)


def _always_float(node) -> bool:
    """The decode, and the correspondence's non-convolutions."""
    return is_decode(node.name) or (node.name.startswith(CORRESPONDENCE_SCOPES) and node.op_type != "Conv")


def fp16_float_nodes(graph) -> list[str]:
    """Nodes an FP16 export keeps in FP32."""
    return [n.name for n in graph.node if _always_float(n)]


def int8_float_nodes(graph, fp32_groups: tuple[str, ...] = ()) -> list[str]:
    """Nodes an INT8 export never quantizes: those FP16 keeps, the head's output convolutions, and the nodes
    under the ``fp32_groups`` scopes an export profile names (``/backbone/stem``: a scope matches itself and
    what is under it)."""
    scopes = tuple(g.rstrip("/") + "/" for g in fp32_groups)
    return [n.name for n in graph.node
            if _always_float(n) or "_out/" in n.name or (scopes and n.name.startswith(scopes))]


def node_group(name: str) -> str:
    """The sensitivity-sweep group of a node: its module two levels deep (``/neck/top_down3``,
    ``/head/levels.0/cls_branch``...)."""
    parts = [p for p in name.split("/") if p]
    depth = 3 if parts and parts[0] == "head" else 2
    return "/" + "/".join(parts[:depth]) if len(parts) > depth else "/" + "/".join(parts[:-1] or parts)
