"""Official class names of the data sets cstf-edge reads, in the order their devkits list them.

DOTA names are hyphenated as in the label files (``small-vehicle``). The v1.0 order is the one of the
official Task1 evaluation script; v1.5 adds ``container-crane``, v2.0 adds ``airport`` and ``helipad``.
"""
from __future__ import annotations

DOTA_V1_0_CLASSES: tuple[str, ...] = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)

DOTA_V1_5_CLASSES: tuple[str, ...] = DOTA_V1_0_CLASSES + ("container-crane",)

DOTA_V2_0_CLASSES: tuple[str, ...] = DOTA_V1_5_CLASSES + ("airport", "helipad")

# Ultralytics DOTA8 / DOTA-v1 YOLO-OBB class ids (dota8.yaml order), mapped to the DOTA label names.
DOTA8_CLASSES: tuple[str, ...] = (
    "plane",
    "ship",
    "storage-tank",
    "baseball-diamond",
    "tennis-court",
    "basketball-court",
    "ground-track-field",
    "harbor",
    "bridge",
    "large-vehicle",
    "small-vehicle",
    "helicopter",
    "roundabout",
    "soccer-ball-field",
    "swimming-pool",
)

# HRSC2016 read class-agnostically (the usual "ship" task) uses this single class.
HRSC_SHIP_CLASSES: tuple[str, ...] = ("ship",)

# SynthRS (cstf_edge.data.synthrs) draws these DOTA classes, in this order (the class ids of its data sets).
SYNTH_CLASSES: tuple[str, ...] = ("plane", "ship", "small-vehicle", "large-vehicle", "storage-tank")
