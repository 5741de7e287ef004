"""The training loop: ``train(TrainConfig(...)) -> run_dir``.

A run directory holds ``last.safetensors`` (+ ``.json``; full training state, rewritten atomically after
every epoch, so an interrupted run keeps its last complete epoch), ``weights.safetensors`` (+ ``.json``;
EMA weights for inference), ``metrics.csv`` (one row per epoch; ``mAP50`` filled on the epochs the EMA
weights were validated, when a validation set is given) and ``results.png`` (loss and mAP per epoch, when
matplotlib is installed). ``resume=True`` continues from
``last.safetensors``: the data order and augmentations of epoch ``e`` depend only on ``(seed, e)``, so a
resumed run repeats exactly what an uninterrupted one would have done (bit-exact on CPU; on CUDA up to
the non-determinism of cuDNN kernels when ``deterministic`` is off).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cstf_edge._io import atomic_write_text
from cstf_edge.data.augment import default_train_augmentation
from cstf_edge.data.dataset import OrientedDetectionDataset
from cstf_edge.eval import DotaEvalResult
from cstf_edge.errors import CstfError
from cstf_edge.model.checkpoint import (
    STATE_FORMAT, load_initial_weights, optimizer_tensors, read_safetensors, restore_optimizer, save_weights,
    write_safetensors,
)
from cstf_edge.model.detector import build_model, check_input_shape, images_to_input, spec_dict
from cstf_edge.model.loss import DetectionLoss
from cstf_edge.model.optim import ModelEMA, build_optimizer, warmup_cosine
from cstf_edge.model.summary import plot_metrics
from cstf_edge.model.train_data import (
    Batch, collate_samples, data_fingerprint, load_labelled_dir, modality_references, seed_worker,
)
from cstf_edge.model.validate import validate

log = logging.getLogger(__name__)

METRIC_FIELDS = ("epoch", "step", "lr", "loss", "cls", "box", "saliency", "images_per_s", "seconds", "mAP50")
VAL_CONF = 0.001  # the confidence floor of mAP, as `cstf-edge val` uses
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


class TrainConfigError(CstfError):
    """A training configuration that cannot run (bad value, incompatible resume)."""


@dataclass
class TrainConfig:
    """Everything a run depends on. ``data``: a DOTA- or HRSC2016-layout directory (``images/`` +
    ``labelTxt/``, or ``AllImages/`` + ``Annotations/``); ``class_names`` fixes the class ids; ``out``: the
    run directory. ``max_steps`` > 0 stops early (smoke runs). ``amp``: ``auto`` (bf16 where supported, else
    fp16 with loss scaling; off on CPU). ``reference``: None or ``"self"`` (see the data set);
    ``reference_modality`` (e.g. ``"sar"``) instead pairs each image with ``<folder>/<modality>/images/<id>``
    (SynthRS layout), in training and validation. ``val``: a labelled folder whose VOC07 mAP50 (EMA weights,
    at most ``val_max_images`` images, 0 = all) is measured every ``val_every`` epochs and after the last.
    ``weights``: a weights file to start from (fine-tuning; same model size and class list)."""

    data: str
    class_names: tuple[str, ...]
    out: str = "runs/train"
    model: str = "cstf-n"
    imgsz: int = 512
    batch: int = 16
    epochs: int = 30
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.9998
    ema_tau: float = 2000.0
    device: str = "auto"
    amp: str = "auto"
    workers: int = 4
    seed: int = 0
    augment: bool = True
    reference: str | None = None
    reference_modality: str | None = None
    val: str | None = None
    val_every: int = 1
    val_max_images: int = 200
    resume: bool = False
    weights: str | None = None
    max_steps: int = 0
    grad_clip: float = 10.0
    deterministic: bool = False
    progress: bool = True

    def check(self) -> None:
        check_input_shape(self.imgsz, self.imgsz)
        if self.amp not in AMP_CHOICES:
            raise TrainConfigError(f"amp={self.amp!r}; choose one of {AMP_CHOICES}")
        for name in ("batch", "epochs", "val_every"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if not self.class_names:
            raise TrainConfigError("class_names is empty; give the data set's class list")
        if self.reference is not None and self.reference_modality is not None:
            raise TrainConfigError(f"reference={self.reference!r} and reference_modality="
                                   f"{self.reference_modality!r} both set; choose one")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError(f"device={name!r} but CUDA is not available here; use device='cpu'")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


class Trainer:
    """One run's state; :func:`train` drives it epoch by epoch."""

    def __init__(self, config: TrainConfig):
        config.check()
        self.config = config
        seed_everything(config.seed, config.deterministic)
        self.device = resolve_device(config.device)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        self.run_dir = Path(config.out)
        self.dataset = self._dataset()
        self.val_labels, self.val_reference = self._val_set()
        self.steps_per_epoch = len(self.dataset) // config.batch
        self.model = build_model(config.model, len(config.class_names))
        if config.weights:
            load_initial_weights(self.model, config.weights, config.class_names, config.model)
        self.model = self.model.to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = ModelEMA(self.model, config.ema_decay, config.ema_tau)
        self.optimizer = build_optimizer(self.model, config.lr, config.weight_decay)
        total = config.epochs * self.steps_per_epoch
        warmup = int(round(config.warmup_epochs * self.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, warmup, config.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.loss_fn = DetectionLoss(len(config.class_names), self.model.strides)
        self.epoch, self.step, self.metrics = 0, 0, []
        self.data_hash = data_fingerprint(self.dataset)

    def _dataset(self) -> OrientedDetectionDataset:
        cfg = self.config
        augment = default_train_augmentation(cfg.imgsz) if cfg.augment else None
        labels = load_labelled_dir(cfg.data)
        reference = cfg.reference
        if cfg.reference_modality:
            reference = modality_references(cfg.data, cfg.reference_modality, labels)
        dataset = OrientedDetectionDataset(
            labels, cfg.class_names, image_shape=cfg.imgsz, augment=augment, reference=reference,
            seed=cfg.seed, unknown_classes="drop")
        if len(dataset) < cfg.batch:
            raise TrainConfigError(
                f"{cfg.data} holds {len(dataset)} images, fewer than batch={cfg.batch}; lower the batch size")
        return dataset

    def _val_set(self) -> tuple[list, dict | None]:
        cfg = self.config
        if not cfg.val:
            return [], None
        labels = load_labelled_dir(cfg.val)
        if cfg.val_max_images:
            labels = labels[:cfg.val_max_images]
        reference = modality_references(cfg.val, cfg.reference_modality, labels) if cfg.reference_modality else None
        return labels, reference

    def wants_validation(self, epoch: int, stopping: bool) -> bool:
        """Whether epoch ``epoch`` (0-based) ends with a validation: every ``val_every``, and the last."""
        last = stopping or epoch + 1 == self.config.epochs
        return bool(self.val_labels) and (last or (epoch + 1) % self.config.val_every == 0)

    def validate(self) -> DotaEvalResult:
        """VOC07 mAP50 of the EMA weights on the validation set."""
        cfg = self.config
        return validate(self.ema.module, self.val_labels, cfg.class_names, imgsz=cfg.imgsz, batch=cfg.batch,
                        conf=VAL_CONF, reference=self.val_reference, progress=cfg.progress)

    def loader(self, epoch: int) -> DataLoader:
        self.dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        workers = self.config.workers
        return DataLoader(
            self.dataset, batch_size=self.config.batch, shuffle=True, drop_last=True,
            num_workers=workers, collate_fn=collate_samples, generator=generator,
            pin_memory=self.device.type == "cuda", worker_init_fn=seed_worker,
            prefetch_factor=4 if workers else None)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = images_to_input(batch.images, self.device)
        refs = None if batch.references is None else images_to_input(batch.references, self.device)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            outputs = self.model(images, refs)
        loss, terms = self.loss_fn(outputs, batch.targets.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update(self.model)
        self.step += 1
        return {"loss": loss.detach(), **terms}

    def run_epoch(self, epoch: int) -> dict:
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        count, images, start = 0, 0, time.perf_counter()
        bar = tqdm(self.loader(epoch), total=self.steps_per_epoch, leave=False,
                   desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not self.config.progress)
        for batch in bar:
            terms = self.train_step(batch)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
            count, images = count + 1, images + len(batch.image_ids)
            if count % 10 == 0 or count == 1:
                rate = images / (time.perf_counter() - start)
                bar.set_postfix({k: f"{(v / count).item():.3f}" for k, v in sums.items()} | {"img/s": f"{rate:.1f}"})
            if self.config.max_steps and self.step >= self.config.max_steps:
                break
        seconds = time.perf_counter() - start
        row = {name: float(value / max(count, 1)) for name, value in sums.items()}
        return {"epoch": epoch + 1, "step": self.step, "lr": self.scheduler.get_last_lr()[0], **row,
                "images_per_s": images / max(seconds, 1e-9), "seconds": seconds}

    # ------------------------------------------------------------------ persistence

    def meta(self) -> dict:
        cfg = self.config
        return {"model": cfg.model, "class_names": list(cfg.class_names), "imgsz": cfg.imgsz,
                "spec": spec_dict(self.model), "data_hash": self.data_hash,
                "config": asdict(cfg), "epoch": self.epoch, "step": self.step,
                "preprocess": {"letterbox": True, "pad_value": 114, "channels": "RGB", "scale": 1 / 255}}

    def save(self) -> None:
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.ema.module.state_dict().items()}
        optim, groups = optimizer_tensors(self.optimizer)
        meta = {"format": STATE_FORMAT, **self.meta(), "param_groups": groups,
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema_updates": self.ema.updates}
        write_safetensors(self.run_dir / "last.safetensors", tensors | optim, meta)
        save_weights(self.run_dir / "weights.safetensors", self.ema.module, self.meta())
        atomic_write_text(self.run_dir / "metrics.csv", metrics_csv(self.metrics))
        plot_metrics(self.metrics, self.run_dir / "results.png")

    def load(self) -> None:
        tensors, meta = read_safetensors(self.run_dir / "last.safetensors")
        for key in ("model", "imgsz", "class_names"):
            if meta[key] != self.meta()[key]:
                raise TrainConfigError(
                    f"cannot resume {self.run_dir}: its {key} is {meta[key]!r}, the config says "
                    f"{self.meta()[key]!r}; use the same {key} or a new out directory")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.module.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        restore_optimizer(self.optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")},
                          meta["param_groups"])
        self.scheduler.load_state_dict(meta["scheduler"])
        self.scaler.load_state_dict(meta["scaler"])
        self.ema.updates, self.epoch, self.step = meta["ema_updates"], meta["epoch"], meta["step"]
        self.metrics = read_metrics_csv(self.run_dir / "metrics.csv")


def metrics_csv(rows: list[dict], fields=METRIC_FIELDS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_metrics_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [dict(row) for row in csv.DictReader(handle)]


def train(config: TrainConfig) -> Path:
    """Train (or resume) a run; returns its directory. See the module docstring for what it holds."""
    trainer = Trainer(config)
    if config.resume and (trainer.run_dir / "last.safetensors").is_file():
        trainer.load()
        log.info("resuming %s after epoch %d (step %d)", trainer.run_dir, trainer.epoch, trainer.step)
    log.info("training %s on %d images (%s, amp=%s), %d steps/epoch", config.model, len(trainer.dataset),
             trainer.device, trainer.amp_dtype, trainer.steps_per_epoch)
    for epoch in range(trainer.epoch, config.epochs):
        row = trainer.run_epoch(epoch)
        if not all(math.isfinite(row[k]) for k in ("loss", "cls", "box")):
            raise TrainConfigError(f"loss became non-finite in epoch {epoch + 1}: {row}; lower lr={config.lr}")
        stopping = bool(config.max_steps and trainer.step >= config.max_steps)
        if trainer.wants_validation(epoch, stopping):
            row["mAP50"] = trainer.validate().mAP
        trainer.epoch = epoch + 1
        trainer.metrics.append(row)
        trainer.save()
        log.info("epoch %d/%d: %s", epoch + 1, config.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        if stopping:
            break
    return trainer.run_dir
