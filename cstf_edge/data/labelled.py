"""Labelled folders: DOTA layout (``images/`` + ``labelTxt/``) or HRSC2016 (``AllImages/`` + ``Annotations/``),
read into :class:`~cstf_edge.data.annotations.ImageLabels` (no torch: training, validation, export gates and
the benchmark all read them here)."""
from __future__ import annotations

from pathlib import Path

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.errors import DataError

DOTA_DIRS = ("images", "labelTxt")
HRSC_DIRS = ("AllImages", "Annotations")


def data_layout(root: Path) -> str | None:
    """``"dota"`` (``images/`` + ``labelTxt/``), ``"hrsc"`` (``AllImages/`` + ``Annotations/``) or None."""
    if all((root / name).is_dir() for name in DOTA_DIRS):
        return "dota"
    if all((root / name).is_dir() for name in HRSC_DIRS):
        return "hrsc"
    return None


def load_labelled_dir(root) -> list[ImageLabels]:
    """Labels (with ``image_path``) of every image of a DOTA- or HRSC2016-layout folder, sorted by id;
    HRSC2016 objects are read class-agnostically (``ship``)."""
    from cstf_edge.data.dota import load_dota_dir
    from cstf_edge.data.hrsc import read_hrsc_xml

    root = Path(root)
    layout = data_layout(root)
    if layout == "hrsc":
        labels = [read_hrsc_xml(xml) for xml in sorted((root / "Annotations").glob("*.xml"))]
    elif layout == "dota":
        labels = load_dota_dir(root)
    else:
        raise DataError(f"{root}: expected images/ + labelTxt/ (DOTA) or AllImages/ + Annotations/ (HRSC2016)")
    labels = sorted((item for item in labels if item.image_path is not None), key=lambda item: item.image_id)
    if not labels:
        raise DataError(f"{root}: no labelled images found (looked in {root / DOTA_DIRS[0]} or {root / HRSC_DIRS[0]})")
    return labels
