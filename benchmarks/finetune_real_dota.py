"""Fine-tune the shipped SynthRS weights on the few real DOTA images in the shared sample data, and score
both on a real image never trained on. Honest, tiny-data figures: read them as such.

    python benchmarks/finetune_real_dota.py --work /tmp/dota_ft [--epochs 20]

Training images (split into 512 px patches, gap 100, as DOTA's devkit splits): devkit_example/P0706,
devkit_yolo_demo P0003 and P0004, split_patch (P1478 patch), dota8_yolo_obb/images/train.
Validation: devkit_yolo_demo/P0005 (884 x 977, 130 small and large vehicles), tiled at 512. DOTA8's own
validation images hold no object of the model's five classes (plane, ship, storage-tank, small-vehicle,
large-vehicle: only baseball-diamond, basketball-court, soccer-ball-field), so they cannot score it.
Other DOTA classes are left out of training and scoring.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from cstf_edge._io import read_image, write_image
from cstf_edge.data.classes import DOTA8_CLASSES
from cstf_edge.data.dota import write_dota_labels
from cstf_edge.data.split import split_dataset
from cstf_edge.data.yolo_obb import load_yolo_obb_dir
from cstf_edge.model.checkpoint import load_weights, read_safetensors, shipped_weights
from cstf_edge.model.train import TrainConfig, train
from cstf_edge.model.train_data import load_labelled_dir
from cstf_edge.model.validate import validate

DATA = Path(os.environ.get("CSTF_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def yolo_to_dota(images_dir: Path, labels_dir: Path, out: Path) -> Path:
    """A DOTA-layout copy of a YOLO-OBB folder pair (images re-written as PNG, labels as labelTxt)."""
    for labels in load_yolo_obb_dir(images_dir, labels_dir, DOTA8_CLASSES):
        write_image(out / "images" / f"{labels.image_id}.png", read_image(labels.image_path))
        write_dota_labels(out / "labelTxt" / f"{labels.image_id}.txt", labels)
    return out


def copy_images(src: Path, dst: Path, image_ids) -> Path:
    """A DOTA-layout folder holding only ``image_ids`` of ``src``."""
    for image_id in image_ids:
        for sub, suffix in (("images", ".png"), ("labelTxt", ".txt")):
            (dst / sub).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / sub / f"{image_id}{suffix}", dst / sub / f"{image_id}{suffix}")
    return dst


def build_sets(work: Path) -> tuple[Path, Path]:
    dota = DATA / "dota"
    for old in ("train", "val", "demo_train"):
        shutil.rmtree(work / old, ignore_errors=True)
    train_dir = work / "train"
    dota8_train = yolo_to_dota(dota / "dota8_yolo_obb/images/train", dota / "dota8_yolo_obb/labels/train",
                               work / "dota8_train")
    demo_train = copy_images(dota / "devkit_yolo_demo", work / "demo_train", ("P0003", "P0004"))
    for source in (dota / "devkit_example", demo_train, dota / "split_patch", dota8_train):
        split_dataset(source, train_dir, subsize=512, gap=100, progress=False)
    return train_dir, copy_images(dota / "devkit_yolo_demo", work / "val", ("P0005",))


def score(weights: Path, val_dir: Path) -> dict:
    model, meta = load_weights(weights)
    result = validate(model, load_labelled_dir(val_dir), meta["class_names"], imgsz=512, conf=0.001,
                      progress=False)
    return result.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/dota_ft")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    work = Path(args.work)
    train_dir, val_dir = build_sets(work)
    _, meta = read_safetensors(shipped_weights())
    run_dir = train(TrainConfig(
        data=str(train_dir), class_names=tuple(meta["class_names"]), model=meta["model"], out=str(work / "run"),
        imgsz=512, batch=args.batch, epochs=args.epochs, lr=args.lr, warmup_epochs=1.0, ema_tau=50.0, workers=2,
        weights=str(shipped_weights()), device="cpu", progress=False))
    report = {"train_patches": len(list((train_dir / "images").iterdir())),
              "val_images": len(list((val_dir / "images").iterdir())), "epochs": args.epochs, "lr": args.lr,
              "shipped": score(shipped_weights(), val_dir),
              "fine_tuned": score(run_dir / "weights.safetensors", val_dir)}
    (work / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
