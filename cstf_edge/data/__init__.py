"""Data sets: DOTA, HRSC2016 and YOLO-OBB readers, the DOTA image splitter and SynthRS scenes.

The readers are re-exported here; the splitter (``cstf_edge.data.split``, needs shapely), the training
data set (``cstf_edge.data.dataset``) and SynthRS (``cstf_edge.data.synthrs``) are imported from their
modules.
"""
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.classes import DOTA8_CLASSES, DOTA_V1_0_CLASSES, DOTA_V1_5_CLASSES, DOTA_V2_0_CLASSES
from cstf_edge.data.dota import load_dota_dir, read_dota_labels, write_dota_labels
from cstf_edge.data.hrsc import hrsc_header_points, load_hrsc_ground_truth, read_hrsc_xml
from cstf_edge.data.yolo_obb import load_yolo_obb_dir, read_yolo_obb_labels

__all__ = [
    "DOTA8_CLASSES",
    "DOTA_V1_0_CLASSES",
    "DOTA_V1_5_CLASSES",
    "DOTA_V2_0_CLASSES",
    "ImageLabels",
    "hrsc_header_points",
    "load_hrsc_ground_truth",
    "load_dota_dir",
    "load_yolo_obb_dir",
    "read_dota_labels",
    "read_hrsc_xml",
    "read_yolo_obb_labels",
    "write_dota_labels",
]
