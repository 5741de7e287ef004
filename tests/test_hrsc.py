"""HRSC2016 XML reading, and a check of the angle mapping against the XML's own bow point and HBB."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from shapely.geometry import Point, Polygon

from cstf_edge.data.hrsc import hrsc_header_points, load_hrsc_ground_truth, read_hrsc_xml
from cstf_edge.errors import DataError, LabelFormatError
from cstf_edge.geometry import poly_to_hbb, rbox_to_poly

XMLS = ("hrsc2016/FullDataSet/Annotations/100000002.xml", "hrsc2016/annotation_only/100000006.xml")

_MINIMAL = """<HRSC_Image><Img_ID>7</Img_ID><HRSC_Objects>
<HRSC_Object><Class_ID>100000005</Class_ID><difficult>1</difficult>
<mbox_cx>50</mbox_cx><mbox_cy>40</mbox_cy><mbox_w>{w}</mbox_w><mbox_h>20</mbox_h><mbox_ang>{ang}</mbox_ang>
</HRSC_Object></HRSC_Objects></HRSC_Image>"""


@pytest.mark.parametrize("relpath", XMLS)
def test_angle_mapping_puts_bow_at_the_end_of_the_long_axis(shared_data, relpath):
    labels = read_hrsc_xml(shared_data / relpath)
    assert labels.classes == ["ship"] and labels.difficult.tolist() == [0]
    header = hrsc_header_points(labels)[0]
    box = Polygon(labels.polygons[0])
    rbox = labels.rboxes()[0]
    axis = np.array([np.cos(rbox[4]), np.sin(rbox[4])])
    offset = header - rbox[:2]
    assert box.buffer(2).contains(Point(header))  # the bow point is on/in the box
    assert abs(offset @ axis) > 0.9 * rbox[2] / 2  # ... near one end of the long axis
    assert abs(offset @ np.array([-axis[1], axis[0]])) < rbox[3] / 2  # ... within the beam
    # The opposite angle sign would put the bow point far outside the box.
    mirrored = rbox_to_poly(np.r_[rbox[:4], -rbox[4]])
    assert Polygon(mirrored).distance(Point(header)) > 50
    # The XML's axis-aligned hull box lies within the rotated box's bounds.
    xmin, ymin, xmax, ymax = poly_to_hbb(labels.polygons[0])
    text = (shared_data / relpath).read_text()
    hbb = [float(text.split(f"<{tag}>")[1].split("<")[0]) for tag in ("box_xmin", "box_ymin", "box_xmax", "box_ymax")]
    assert xmin <= hbb[0] and ymin <= hbb[1] and hbb[2] <= xmax and hbb[3] <= ymax


def test_full_dataset_values_and_image_path(shared_data):
    labels = read_hrsc_xml(shared_data / XMLS[0], class_level="class_id")
    assert labels.image_id == "100000002" and labels.classes == ["100000013"]
    assert labels.image_path is not None and labels.image_path.name == "100000002.bmp"
    assert labels.meta["width"] == "1146" and labels.meta["height"] == "818"
    np.testing.assert_allclose(labels.rboxes()[0], [522.6854, 396.3961, 777.237, 189.8481, 1.078961], atol=1e-6)
    np.testing.assert_array_equal(hrsc_header_points(labels), [[344, 55]])
    assert read_hrsc_xml(shared_data / XMLS[1]).image_path is None


def test_box_taller_than_wide_is_canonicalised(tmp_path):
    path = tmp_path / "7.xml"
    path.write_text(_MINIMAL.format(w=10, ang=0.0))
    labels = read_hrsc_xml(path)
    np.testing.assert_allclose(labels.rboxes()[0], [50, 40, 20, 10, -np.pi / 2], atol=1e-9)
    assert labels.difficult.tolist() == [1]
    assert np.isnan(hrsc_header_points(labels)).all()


@pytest.mark.parametrize("text, reason", [("<HRSC_Image><HRSC_Objects>", "well-formed"),
                                          ("<Annotation/>", "HRSC_Image"),
                                          (_MINIMAL.format(w="abc", ang=0), "not a number"),
                                          (_MINIMAL.format(w="nan", ang=0), "not finite"),
                                          (_MINIMAL.replace("<mbox_ang>{ang}</mbox_ang>", "").format(w=5), "mbox_ang")])
def test_bad_xml_raises_label_format_error(tmp_path, text, reason):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(LabelFormatError, match=reason):
        read_hrsc_xml(path)
    with pytest.raises(ValueError, match="class_level"):
        read_hrsc_xml(path, class_level="category")


def _two_objects(w: str, h: str = "20") -> str:
    first = _MINIMAL.format(w=40, ang=0.1).split("<HRSC_Objects>")[1].split("</HRSC_Objects>")[0]
    second = first.replace("<mbox_w>40</mbox_w>", f"<mbox_w>{w}</mbox_w>").replace(
        "<mbox_h>20</mbox_h>", f"<mbox_h>{h}</mbox_h>")
    return f"<HRSC_Image><Img_ID>7</Img_ID><HRSC_Objects>{first}{second}</HRSC_Objects></HRSC_Image>"


@pytest.mark.parametrize("w, h, reason", [("-30", "20", "positive"), ("0", "20", "positive"),
                                          ("40", "-5", "positive"), ("inf", "20", "not finite"),
                                          ("40", "", "no <mbox_h>")])
def test_bad_object_is_named_by_index_and_raises_or_warns(tmp_path, caplog, w, h, reason):
    path = tmp_path / "7.xml"
    path.write_text(_two_objects(w, h))
    with pytest.raises(LabelFormatError, match=f"object 1 .*{reason}") as info:
        read_hrsc_xml(path)
    assert str(path) in str(info.value)
    with caplog.at_level(logging.WARNING):
        labels = read_hrsc_xml(path, on_error="warn")
    assert len(labels) == 1 and labels.rboxes()[0][2] == pytest.approx(40)
    assert str(path) in caplog.text and "object 1" in caplog.text
    assert hrsc_header_points(labels).shape == (1, 2)
    with pytest.raises(ValueError, match="on_error"):
        read_hrsc_xml(path, on_error="ignore")


def test_load_ground_truth_uses_file_stems_and_image_sets(tmp_path):
    folder = tmp_path / "Annotations"
    folder.mkdir()
    (folder / "100000001.xml").write_text(_MINIMAL.format(w=40, ang=0.0))  # Img_ID 7 inside
    (folder / "100000002.xml").write_text(_MINIMAL.format(w=30, ang=0.0))
    truth = load_hrsc_ground_truth(folder)
    assert [item.image_id for item in truth] == ["100000001", "100000002"] and truth[0].classes == ["ship"]
    imageset = tmp_path / "test.txt"
    imageset.write_text("100000002\n")
    assert [item.image_id for item in load_hrsc_ground_truth(folder, imageset)] == ["100000002"]
    assert load_hrsc_ground_truth(folder, class_level="class_id")[0].classes == ["100000005"]
    imageset.write_text("100000009\n")
    with pytest.raises(DataError, match="100000009.xml"):
        load_hrsc_ground_truth(folder, imageset)
    with pytest.raises(DataError, match=f"did you mean {folder}"):
        load_hrsc_ground_truth(tmp_path)
