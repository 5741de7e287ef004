"""Data sets: DOTA, HRSC2016, YOLO-OBB readers, the DOTA image splitter and SynthRS scenes."""
from cstf_edge.data.annotations import ImageLabels

__all__ = ["ImageLabels"]
