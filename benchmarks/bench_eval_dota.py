"""Benchmark of the DOTA Task1 evaluator on the design's reference load.

200 images of 4000 x 4000 px, 100 random rotated boxes each (20k objects, one class), 5 detections per
object with centres moved 3-43 px (100k detections), written as DOTA labelTxt files and one Task1
file in a temporary folder (seed fixed). Times the evaluator end to end (reading the files included)
and its in-memory part. The official devkit script takes about 4.7 s on this load (DESIGN.md); the
target is under 0.5 s end to end.

    python benchmarks/bench_eval_dota.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.dota import write_dota_labels
from cstf_edge.data.task1 import Task1Detections, read_task1_dir, write_task1_dir
from cstf_edge.eval import evaluate_detections, evaluate_dota, evaluate_dota_arrays, load_ground_truth
from cstf_edge.geometry import rbox_to_poly

NUM_IMAGES, OBJECTS_PER_IMAGE, DETS_PER_OBJECT, IMAGE_SIZE = 200, 100, 5, 4000
TARGET_S = 0.5
CLASS_NAME = "plane"


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    width = rng.uniform(20, 150, count)
    height = rng.uniform(0.2, 1.0, count) * width
    centre = rng.uniform(100, IMAGE_SIZE - 100, (count, 2))
    angle = rng.uniform(-np.pi / 2, np.pi / 2, count)
    return np.column_stack([centre, width, np.maximum(height, 8), angle])


def jittered(rng: np.random.Generator, boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    shift = rng.uniform(3, 43, len(boxes))
    direction = rng.uniform(0, 2 * np.pi, len(boxes))
    out[:, 0] += shift * np.cos(direction)
    out[:, 1] += shift * np.sin(direction)
    out[:, 2:4] *= rng.uniform(0.9, 1.1, (len(boxes), 2))
    out[:, 4] += rng.normal(0, 0.05, len(boxes))
    return out


def build(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    det_ids, det_polys = [], []
    for index in range(NUM_IMAGES):
        image_id = f"P{index:04d}"
        boxes = random_boxes(rng, OBJECTS_PER_IMAGE)
        polys = np.round(rbox_to_poly(boxes), 1)
        labels = ImageLabels(image_id, polys, [CLASS_NAME] * len(polys), np.zeros(len(polys), int))
        write_dota_labels(root / "labelTxt" / f"{image_id}.txt", labels)
        dets = jittered(rng, np.repeat(boxes, DETS_PER_OBJECT, axis=0))
        det_polys.append(rbox_to_poly(dets))
        det_ids += [image_id] * len(dets)
    polys = np.concatenate(det_polys)
    scores = rng.uniform(0, 1, len(polys))
    write_task1_dir(root / "results", {CLASS_NAME: Task1Detections(det_ids, scores, polys)}, decimals=1)


def best_of(repeat: int, run) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        t_e2e, result = best_of(args.repeat, lambda: evaluate_dota(root / "results", root / "labelTxt"))
        t_read_det, dets = best_of(args.repeat, lambda: read_task1_dir(root / "results"))
        t_read_gt, truth = best_of(args.repeat, lambda: load_ground_truth(root / "labelTxt"))
    t_mem, _ = best_of(args.repeat, lambda: evaluate_dota_arrays(dets, truth))
    index_of = {labels.image_id: i for i, labels in enumerate(truth)}
    d = dets[CLASS_NAME]
    det_image = np.array([index_of[name] for name in d.image_ids])
    gt_image = np.repeat(np.arange(len(truth)), [len(labels) for labels in truth])
    gt_polys = np.concatenate([labels.polygons for labels in truth])
    gt_diff = np.concatenate([labels.difficult for labels in truth])
    t_core, _ = best_of(
        args.repeat,
        lambda: evaluate_detections(det_image, d.scores, d.polygons, gt_image, gt_polys, gt_diff),
    )
    print(f"load: {NUM_IMAGES} images, {len(gt_polys)} objects, {len(d)} detections, 1 class")
    print(f"VOC07 AP {result.mAP:.4f}, recall {result.recall[CLASS_NAME]:.4f}")
    verdict = "met" if t_e2e < TARGET_S else "NOT met"
    print(f"end to end (read labels + Task1 file, evaluate): {t_e2e:.3f} s (target < {TARGET_S} s: {verdict})")
    print(f"  reading Task1 file:                           {t_read_det:.3f} s")
    print(f"  reading label files:                          {t_read_gt:.3f} s")
    print(f"in memory (evaluate_dota_arrays):                {t_mem:.3f} s")
    print(f"in memory, arrays only (evaluate_detections):    {t_core:.3f} s")
    print(f"official devkit reference (DESIGN.md):           4.7 s -> speed-up {4.7 / t_e2e:.1f}x end to end")


if __name__ == "__main__":
    main()
