"""Train Ultralytics YOLOv8n-obb on a labelled DOTA-layout folder (e.g. SynthRS) with a given budget, for an
equal-budget comparison with cstf-n, and export it for ``cstf-edge bench --peers``.

Runs where Ultralytics imports (it needs a torchvision built for the installed torch; this project's torch
2.13.0 CPU pin has none, so here it runs in a second environment: ``pip install torch==2.14.1
torchvision==0.29.1 ultralytics`` and this repository on ``PYTHONPATH``):

    PYTHONPATH=$PWD python benchmarks/train_peer_yolo.py --train data/synth1000 --epochs 3 --imgsz 512 \\
        --batch 16 --out runs/peer-yolo

1. writes the folder's images (links) and labels in Ultralytics' OBB layout (``class x1 y1 ... x4 y4``,
   normalised) under ``OUT/data`` with the class order ``--classes`` (the cstf-n weights' order by default);
2. trains ``--model`` built from its yaml (``nc`` = the classes, no pretrained weights) with Ultralytics' own
   default recipe, on the CPU unless ``--device`` says otherwise, without validation during training;
3. exports ``last.pt`` to ``OUT/<model>-trained-<imgsz>.onnx`` through :func:`cstf_edge.bench.peers.make_fp32`
   (the bench scores it, since it is trained on these classes) and writes ``OUT/report.json`` (wall time,
   images, epochs, versions).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2

from cstf_edge.bench import peers
from cstf_edge.data.dota import load_dota_dir

CLASSES = ("plane", "ship", "storage-tank", "small-vehicle", "large-vehicle")  # the shipped cstf-n's order


def write_ultralytics_layout(source: Path, out: Path, classes: list[str]) -> int:
    """Links to ``source``'s images and OBB label files under ``out/images/train``, ``out/labels/train``; the
    dataset yaml at ``out/data.yaml``. Returns the number of images."""
    images, labels = out / "images" / "train", out / "labels" / "train"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    items = load_dota_dir(source, classes=classes)
    for item in items:
        image = Path(item.image_path)
        height, width = cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape[:2]
        link = images / image.name
        if not link.exists():
            link.symlink_to(image.resolve())
        lines = []
        for polygon, name in zip(item.polygons, item.classes):
            coords = " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in polygon)
            lines.append(f"{classes.index(name)} {coords}")
        (labels / f"{image.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(classes))
    (out / "data.yaml").write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/train\nnames:\n{names}\n")
    return len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="labelled DOTA-layout folder (images/ + labelTxt/)")
    parser.add_argument("--model", default="yolov8n-obb")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--out", default="runs/peer-yolo")
    args = parser.parse_args()
    from ultralytics import YOLO, __version__ as ultralytics_version

    out, classes = Path(args.out).resolve(), args.classes.split(",")
    count = write_ultralytics_layout(Path(args.train), out / "data", classes)
    yaml_path = peers._yaml_with_classes(args.model, len(classes), out)
    start = time.perf_counter()
    model = YOLO(str(yaml_path), task="obb")
    model.train(data=str(out / "data" / "data.yaml"), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                device=args.device, workers=args.workers, val=False, plots=False, seed=0, deterministic=True,
                project=str(out), name="train", exist_ok=True, amp=False)
    seconds = time.perf_counter() - start
    last = out / "train" / "weights" / "last.pt"
    onnx_path = out / f"{args.model}-trained-{args.imgsz}.onnx"
    peers.make_fp32(str(last), args.imgsz, classes, onnx_path)
    report = {"model": args.model, "train": args.train, "images": count, "epochs": args.epochs,
              "imgsz": args.imgsz, "batch": args.batch, "device": args.device, "train_seconds": round(seconds, 1),
              "weights": str(last), "onnx": str(onnx_path), "ultralytics": ultralytics_version,
              "torch": __import__("torch").__version__, "cpu_count": os.cpu_count(), "machine": platform.processor()}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
