"""Train the demo weights: cstf-n on SynthRS (optical), then validate.

    python benchmarks/train_demo.py --out runs/demo --epochs 9 --device cuda

1. makes a SynthRS training set (``--train-seed``) and a validation set (``--val-seed``, never trained on);
2. trains (``cstf_edge.model.train``) for ``--epochs`` (the shipped weights: 9 epochs of 8000 scenes,
   166 s on an H200 at about 430 images/s; a short timed probe was tried before and misjudged the rate,
   since data-loader start-up and cuDNN autotuning dominate its first steps);
3. scores the EMA weights on the validation set with the DOTA Task1 rules (VOC07 and VOC12) and writes
   ``report.json`` beside the weights. Everything it measured is in ``report.json``; nothing is assumed.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from cstf_edge.data.dota import load_dota_dir
from cstf_edge.data.synthrs import generate_dataset
from cstf_edge.model.checkpoint import load_weights
from cstf_edge.model.train import TrainConfig, read_metrics_csv, train
from cstf_edge.eval import evaluate_dota_arrays
from cstf_edge.model.validate import detect_labelled_set

CLASSES = ("plane", "ship", "storage-tank", "small-vehicle", "large-vehicle")
log = logging.getLogger("train_demo")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="run directory (weights, metrics, report)")
    parser.add_argument("--work", default=None, help="where the data sets go (default: OUT/data)")
    parser.add_argument("--model", default="cstf-n")
    parser.add_argument("--size", type=int, default=512, help="scene size and network input (pixels)")
    parser.add_argument("--train-n", type=int, default=8000)
    parser.add_argument("--val-n", type=int, default=400)
    parser.add_argument("--train-seed", type=int, default=1)
    parser.add_argument("--val-seed", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=8, help="data loader and generator processes")
    return parser.parse_args()


def make_data(args, work: Path) -> tuple[Path, Path, float]:
    start = time.perf_counter()
    train_dir, val_dir = work / "train", work / "val"
    generate_dataset(train_dir, args.train_n, size=args.size, seed=args.train_seed, workers=args.workers)
    generate_dataset(val_dir, args.val_n, size=args.size, seed=args.val_seed, workers=args.workers)
    return train_dir, val_dir, time.perf_counter() - start


def config(args, data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), class_names=CLASSES, out=str(out), model=args.model, imgsz=args.size,
                batch=args.batch, lr=args.lr, device=args.device, workers=args.workers, seed=0)
    return TrainConfig(**(base | overrides))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "data"
    train_dir, val_dir, data_seconds = make_data(args, work)
    total_steps = args.epochs * (args.train_n // args.batch)
    start = time.perf_counter()
    run_dir = train(config(args, train_dir, out / "run", epochs=args.epochs, ema_tau=max(total_steps / 5, 10.0),
                           progress=False))
    train_seconds = time.perf_counter() - start
    model, meta = load_weights(run_dir / "weights.safetensors", device=args.device if args.device != "auto"
                               else ("cuda" if torch.cuda.is_available() else "cpu"))
    val_labels = load_dota_dir(val_dir)
    detections = detect_labelled_set(model, val_labels, CLASSES, imgsz=args.size, progress=False)
    scores = {metric: evaluate_dota_arrays(detections, val_labels, metric=metric) for metric in ("voc07", "voc12")}
    report = {
        "command": "python benchmarks/train_demo.py " + " ".join(f"--{k.replace('_', '-')} {v}"
                                                                  for k, v in vars(args).items() if v is not None),
        "hardware": {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                     "cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "data": {"train": {"n": args.train_n, "seed": args.train_seed, "size": args.size},
                 "val": {"n": args.val_n, "seed": args.val_seed, "size": args.size},
                 "generation_seconds": round(data_seconds, 1)},
        "epochs": args.epochs, "steps": total_steps,
        "train_seconds": round(train_seconds, 1),
        "metrics_last_epoch": read_metrics_csv(run_dir / "metrics.csv")[-1],
        "val": {metric: result.summary() for metric, result in scores.items()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    log.info("validation VOC07 mAP %.4f, VOC12 mAP %.4f", scores["voc07"].mAP, scores["voc12"].mAP)
    print(json.dumps(report["val"], indent=2))


if __name__ == "__main__":
    main()
