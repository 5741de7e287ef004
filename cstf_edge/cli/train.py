"""``cstf-edge train``: train (or resume) a CSTF detector on a DOTA / HRSC2016 / SynthRS data set."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from cstf_edge.data.synthrs import SYNTH_CLASSES
from cstf_edge.errors import CstfError

log = logging.getLogger(__name__)

_EXAMPLES = f"""data layouts (DATA):
  DIR with images/ + labelTxt/ (DOTA) or AllImages/ + Annotations/ (HRSC2016, one class 'ship')
  DIR with train/ and val/ in one of those layouts: trains on train/, validates on val/
  FILE.toml:  train = "train"   val = "val"   classes = ["plane", "ship"]   (paths relative to the file)
Classes: --classes, else the TOML's, else 'ship' for HRSC2016, else SynthRS's ({', '.join(SYNTH_CLASSES)});
objects of other classes are ignored. Large DOTA images: split them first (cstf-edge split).

The run directory holds last.safetensors (full state, for --resume), weights.safetensors (EMA weights, for
val/export), metrics.csv (per epoch; mAP50 = VOC07 mAP of the EMA weights on the validation set) and
results.png (loss/mAP plot; needs matplotlib: pip install matplotlib).

examples:
  cstf-edge synth data/synth --n 400 --size 512 --seed 1 && cstf-edge synth data/synth_val --n 50 --size 512 --seed 2
  cstf-edge train --data data/synth --val data/synth_val --epochs 15 --imgsz 512 --batch 8 --out runs/synth
  cstf-edge train --data data/synth --val data/synth_val --epochs 30 --imgsz 512 --batch 8 --out runs/synth --resume
      continue runs/synth from its last complete epoch (same settings), up to 30 epochs
  cstf-edge synth data/sar --n 400 --size 512 --modalities optical,sar
  cstf-edge train --data data/sar --reference-modality sar --out runs/sar --device cuda --batch 32
      optical query, co-registered SAR reference (data/sar/sar/images/<same id>)
  cstf-edge train --data hrsc.toml --model cstf-s --imgsz 800 --out runs/hrsc --val-every 5
  cstf-edge train --data dota_patches --classes plane,ship,storage-tank,small-vehicle,large-vehicle \\
      --weights cstf_edge/weights/cstf-n-relu-synthrs.safetensors --lr 5e-4 --epochs 20 --out runs/dota_ft
      fine-tune the shipped weights (their class list, in their order) on real patches
"""


def require_train_extra() -> None:
    """Raise a clear :class:`CstfError` when PyTorch (the ``train`` extra) is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CstfError("this command needs PyTorch: pip install 'cstf-edge[train]'") from None


def _classes(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train or resume a CSTF detector (PyTorch)", epilog=_EXAMPLES,
        description="Train a CSTF oriented detector; checkpoints every epoch, resumes exactly.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="training data: a folder or a .toml (see below)")
    parser.add_argument("--val", help="validation folder (DOTA or HRSC2016 layout); overrides DATA's val/")
    parser.add_argument("--model",
                        help="cstf-n, cstf-s, cstf-m or cstf-n-relu (ReLU activations: faster INT8) (default: the "
                             "model of --weights, else cstf-n)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    parser.add_argument("--imgsz", type=int, default=512, help="network input, a multiple of 64 (default 512)")
    parser.add_argument("--batch", type=int, default=16, help="images per step (default 16)")
    parser.add_argument("--out", default="runs/train", help="run directory (default runs/train)")
    parser.add_argument("--resume", action="store_true", help="continue OUT from its last complete epoch")
    parser.add_argument("--weights", help="start from these weights (fine-tuning; same --classes), "
                        "e.g. the shipped cstf_edge/weights/cstf-n-relu-synthrs.safetensors")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: cuda if available)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="data loader processes (default min(4, CPUs); 0 = in the main process)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order, augmentation and init")
    parser.add_argument("--classes", type=_classes, help="comma list of class names (fixes the class ids)")
    parser.add_argument("--reference-modality", metavar="MODALITY",
                        help="pair each image with DATA/<MODALITY>/images/<id> as its reference (e.g. sar)")
    parser.add_argument("--val-every", type=int, default=1, help="validate every K epochs and after the last")
    parser.add_argument("--val-max-images", type=int, default=200,
                        help="validate on the first N images only, 0 = all (default 200)")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                        help="mixed precision on CUDA (default auto: bf16 where supported)")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(run=run)


def _model_of(args) -> str:
    """The model size when ``--model`` is not given: that of the run being resumed (``OUT/last.safetensors``),
    else that of ``--weights``, else ``cstf-n``."""
    from cstf_edge.model.checkpoint import read_safetensors

    last = Path(args.out) / "last.safetensors"
    source = last if args.resume and last.is_file() else args.weights
    return read_safetensors(source)[1].get("model", "cstf-n") if source else "cstf-n"


def run(args) -> int:
    require_train_extra()
    from cstf_edge.model.train import TrainConfig, train
    from cstf_edge.model.train_data import resolve_data

    spec = resolve_data(args.data, args.val)
    class_names = args.classes or spec.class_names or tuple(SYNTH_CLASSES)
    log.info("training on %s, validating on %s; classes %s", spec.train, spec.val or "nothing", list(class_names))
    config = TrainConfig(
        data=str(spec.train), val=None if spec.val is None else str(spec.val), class_names=tuple(class_names),
        out=args.out, model=args.model or _model_of(args), imgsz=args.imgsz, batch=args.batch, epochs=args.epochs,
        lr=args.lr,
        device=args.device, amp=args.amp, workers=args.workers, seed=args.seed, augment=not args.no_augment,
        reference_modality=args.reference_modality, val_every=args.val_every,
        val_max_images=args.val_max_images, resume=args.resume, weights=args.weights,
        progress=not args.no_progress,
    )
    run_dir = train(config)
    print(f"{run_dir}: weights {run_dir / 'weights.safetensors'}, metrics {run_dir / 'metrics.csv'}")
    return 0
