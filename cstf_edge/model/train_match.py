"""``cstf-edge train-match``: self-supervised training of the CSTF matcher on pairs made on the fly.

Each step draws ``batch`` pairs (harder as training goes on: ``curriculum``) (``cstf_edge.data.match_pairs``: SynthRS scenes in optical/SAR/infrared,
or the images of a folder, a random affine warp and a random modality change), turns each query by the
quarter turns the matcher's rotation search would find, and minimises ``match_loss.matcher_loss``. The
pair of step ``s`` depends only on ``(seed, s)``, so ``--resume`` continues exactly. The run folder holds
``last.safetensors`` (model + optimizer, atomic, every ``save_every`` steps and at the end),
``matcher.safetensors`` (the weights ``cstf-edge match`` and the export take), ``metrics.csv`` and
``metrics.png``.
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cstf_edge._io import atomic_write_bytes, atomic_write_text
from cstf_edge.data.match_pairs import canonical_pair, image_sources, sample_pair, sources_digest, synthrs_sources
from cstf_edge.errors import CstfError, DataError
from cstf_edge.model.checkpoint import optimizer_tensors, read_safetensors, restore_optimizer, write_safetensors
from cstf_edge.model.match_loss import matcher_loss
from cstf_edge.model.matcher import CSTFMatcher, MatcherSpec, check_matcher_input, matcher_spec_dict
from cstf_edge.model.optim import build_optimizer, warmup_cosine
from cstf_edge.model.train import metrics_csv, read_metrics_csv
from cstf_edge.runtime.backends.torch.matcher import MATCHER_FORMAT
from cstf_edge.runtime.preprocess import to_tensor
from cstf_edge.shipped import SILU_WEIGHTS

log = logging.getLogger(__name__)

MATCH_STATE_FORMAT = "cstf-edge-match-train-state/1"
METRIC_FIELDS = ("step", "loss", "coarse", "fine", "saliency", "recall", "lr", "seconds")


@dataclass
class MatchTrainConfig:
    out: Path
    steps: int = 5000
    batch: int = 8
    imgsz: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    scenes: int = 300
    scene_seed: int = 11  # SynthRS data set of the training scenes (detector: 1, val: 2, calibration: 3)
    images: str | None = None  # a folder of images instead of SynthRS scenes
    init: str | None = "detector"  # "detector" (the SiLU detector weights' backbone), a weights file, or None
    backbone: str = "cstf-n"
    save_every: int = 200
    curriculum: float = 0.4  # share of the steps over which pair difficulty ramps from 0 to 1
    resume: bool = False
    threads: int | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)


def save_matcher(path: Path, matcher: CSTFMatcher, meta: dict, dtype: torch.dtype | None = None) -> Path:
    """Inference weights of ``matcher`` with ``meta`` (training facts); ``dtype``: store floating tensors
    in it (float16 halves a shipped file; loading casts back to the model's float32)."""
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in matcher.state_dict().items()}
    if dtype is not None:
        meta = {**meta, "stored_dtype": str(dtype).replace("torch.", "")}
    return write_safetensors(Path(path), tensors, {"format": MATCHER_FORMAT, "spec": matcher_spec_dict(matcher),
                                                   **meta})


def load_matcher(path: str | Path) -> tuple[CSTFMatcher, dict]:
    """The matcher (eval mode) and metadata of a file written by :func:`save_matcher`."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != MATCHER_FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r} is not {MATCHER_FORMAT!r} (matcher weights); "
                        "train one with cstf-edge train-match")
    matcher = CSTFMatcher(MatcherSpec(**meta["spec"]))
    matcher.load_state_dict(tensors)
    return matcher.eval(), meta


def init_from_detector(matcher: CSTFMatcher, weights: str | Path | None = None) -> int:
    """Copy the detector's backbone tensors (stem, stages 1-3) into ``matcher``; returns how many. By default
    from the SiLU detector weights, whose activation the matcher's ``cstf-n`` backbone shares."""
    tensors, _ = read_safetensors(weights or SILU_WEIGHTS)
    own = matcher.state_dict()
    picked = {k: v.to(own[k].dtype) for k, v in tensors.items() if k in own and own[k].shape == v.shape
              and k.startswith("backbone.")}
    matcher.load_state_dict(picked, strict=False)
    return len(picked)


class MatchTrainer:
    """One training run's state."""

    def __init__(self, config: MatchTrainConfig):
        check_matcher_input(config.imgsz, config.imgsz)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config = config
        self.run_dir = Path(config.out)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        self.matcher = CSTFMatcher(MatcherSpec(backbone=config.backbone))
        if config.init == "detector":
            log.info("initialised %d backbone tensors from the SiLU detector weights", init_from_detector(self.matcher))
        elif config.init:
            self.matcher.load_state_dict(load_matcher(config.init)[0].state_dict())
        self.optimizer = build_optimizer(self.matcher, config.lr, config.weight_decay)
        self.schedule = warmup_cosine(config.steps, min(200, config.steps // 10), 0.05)
        self.step = 0
        self.metrics: list[dict] = []
        self.sources = self._sources()
        self.data_hash = sources_digest(self.sources)

    def _sources(self):
        if self.config.images:
            return image_sources(self.config.images)
        from cstf_edge.export.calibration import cache_dir

        return synthrs_sources(self.config.scene_seed, self.config.scenes, cache=cache_dir(),
                               progress=self.config.progress)

    def batch(self, step: int):
        """The pairs of ``step`` as tensors: reference, query, transform, query mask."""
        rng = np.random.default_rng([self.config.seed, step])
        ramp = self.config.curriculum * self.config.steps
        difficulty = min(1.0, step / ramp) if ramp > 0 else 1.0
        pairs = [canonical_pair(sample_pair(self.sources[int(rng.integers(len(self.sources)))], rng,
                                            self.config.imgsz, difficulty=difficulty))
                 for _ in range(self.config.batch)]
        reference = torch.from_numpy(to_tensor(np.stack([p.reference for p in pairs])))
        query = torch.from_numpy(to_tensor(np.stack([p.query for p in pairs])))
        transform = torch.tensor(np.stack([p.transform for p in pairs]), dtype=torch.float32)
        mask = torch.from_numpy(np.stack([p.query_mask for p in pairs]))
        return reference, query, transform, mask

    def train_step(self) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * self.schedule(self.step)
        reference, query, transform, mask = self.batch(self.step)
        self.matcher.train()
        loss, terms = matcher_loss(self.matcher, self.matcher(reference, query), transform, mask)
        if not torch.isfinite(loss):
            raise CstfError(f"matcher loss became non-finite at step {self.step}: {terms}; lower --lr {self.config.lr}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.matcher.parameters(), 5.0)
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()), **terms, "lr": self.optimizer.param_groups[0]["lr"]}

    def meta(self) -> dict:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()}
        return {"config": config, "step": self.step, "data_hash": self.data_hash, "imgsz": self.config.imgsz}

    def save(self) -> None:
        tensors, groups = optimizer_tensors(self.optimizer)
        state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.matcher.state_dict().items()}
        write_safetensors(self.run_dir / "last.safetensors", {**state, **tensors},
                          {"format": MATCH_STATE_FORMAT, "param_groups": groups, **self.meta()})
        save_matcher(self.run_dir / "matcher.safetensors", self.matcher, self.meta())
        atomic_write_text(self.run_dir / "metrics.csv", metrics_csv(self.metrics, METRIC_FIELDS))
        plot_match_metrics(self.metrics, self.run_dir / "metrics.png")

    def load(self) -> None:
        tensors, meta = read_safetensors(self.run_dir / "last.safetensors")
        if meta.get("format") != MATCH_STATE_FORMAT:
            raise DataError(f"{self.run_dir / 'last.safetensors'}: not a matcher training state")
        self.matcher.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(self.optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")},
                          meta["param_groups"])
        self.step = int(meta["step"])
        self.metrics = read_metrics_csv(self.run_dir / "metrics.csv")


def plot_match_metrics(rows: list[dict], path: Path) -> Path | None:
    """Loss terms and coarse recall against the step (skipped without matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    steps = [int(float(r["step"])) for r in rows]
    figure = Figure(figsize=(10, 4), layout="tight")
    losses, recall = figure.subplots(1, 2)
    for name in ("loss", "coarse", "fine", "saliency"):
        losses.plot(steps, [float(r[name]) for r in rows], label=name)
    losses.set(xlabel="step", ylabel="training loss", title="loss (mean over the last steps)")
    losses.legend()
    recall.plot(steps, [float(r["recall"]) for r in rows], color="tab:green")
    recall.set(xlabel="step", ylabel="fraction", title="coarse recall (true reference token ranked first)",
               ylim=(0, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())


def train_matcher(config: MatchTrainConfig) -> Path:
    """Train (or resume) a matcher run; returns its folder."""
    trainer = MatchTrainer(config)
    if config.resume and (trainer.run_dir / "last.safetensors").is_file():
        trainer.load()
        log.info("resuming %s at step %d", trainer.run_dir, trainer.step)
    window: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=trainer.step, desc="train-match", disable=not config.progress)
    while trainer.step < config.steps:
        window.append(trainer.train_step())
        bar.update(1)
        bar.set_postfix(loss=f"{window[-1]['loss']:.3f}", recall=f"{window[-1]['recall']:.2f}")
        if trainer.step % config.save_every == 0 or trainer.step == config.steps:
            row = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            trainer.metrics.append({"step": trainer.step, **row, "seconds": time.perf_counter() - start})
            window = []
            trainer.save()
    bar.close()
    if not (trainer.run_dir / "matcher.safetensors").is_file():
        trainer.save()
    return trainer.run_dir
