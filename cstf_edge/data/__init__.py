"""Data sets: DOTA, HRSC2016, YOLO-OBB readers, the DOTA image splitter and SynthRS scenes."""
from cstf_edge.data.annotations import ImageLabels

__all__ = ["ImageLabels"]
from cstf_edge.data.classes import (  # noqa: E402
    DOTA8_CLASSES,
    DOTA_V1_0_CLASSES,
    DOTA_V1_5_CLASSES,
    DOTA_V2_0_CLASSES,
)
from cstf_edge.data.dota import load_dota_dir, read_dota_labels, write_dota_labels  # noqa: E402
from cstf_edge.data.hrsc import hrsc_header_points, read_hrsc_xml  # noqa: E402
from cstf_edge.data.yolo_obb import load_yolo_obb_dir, read_yolo_obb_labels  # noqa: E402

__all__ += [
    "DOTA8_CLASSES",
    "DOTA_V1_0_CLASSES",
    "DOTA_V1_5_CLASSES",
    "DOTA_V2_0_CLASSES",
    "hrsc_header_points",
    "load_dota_dir",
    "load_yolo_obb_dir",
    "read_dota_labels",
    "read_hrsc_xml",
    "read_yolo_obb_labels",
    "write_dota_labels",
]
