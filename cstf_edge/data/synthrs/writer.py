"""``generate_dataset``: a SynthRS data set on disk in DOTA layout.

Layout under ``out``::

    images/<id>.png, labelTxt/<id>.txt          optical (BGR PNG) and its DOTA labels
    sar/images, sar/labelTxt                    SAR (single channel), same labels (if asked for)
    infrared/images, infrared/labelTxt          infrared (single channel), same labels (if asked for)
    pairs/reference/{images,labelTxt}           with --pairs N: reference image and labels
    pairs/query/{images,labelTxt}               query image (warped) and its warped labels
    pairs/transforms/<id>.txt                   3x3 H, reference pixel -> query pixel, continuous
                                                coordinates (see pairs.py)
    synthrs.json                                the generation parameters

Scene ``i`` depends only on (seed, i): generation runs in parallel and resumes (a scene whose files all
exist is skipped; files are written atomically, labels last). Resuming needs the generation parameters
recorded in ``synthrs.json``; other parameters are refused, so a folder never mixes two data sets.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

from tqdm import tqdm

from cstf_edge._io import atomic_write_text, write_image
from cstf_edge.data.classes import SYNTH_CLASSES
from cstf_edge.data.dota import write_dota_labels
from cstf_edge.data.synthrs.compose import ClassRequest, check_seed_and_size, make_scene, parse_class_request
from cstf_edge.data.synthrs.materials import MODALITIES
from cstf_edge.data.synthrs.pairs import PAIR_INDEX_BASE, format_transform, pair_from_scene
from cstf_edge.data.synthrs.render import render
from cstf_edge.errors import CstfError

log = logging.getLogger(__name__)

MANIFEST_NAME = "synthrs.json"
# What defines the scenes of a folder: a resumed run must ask for the same.
GENERATION_FIELDS = ("seed", "size", "modalities", "classes", "pair_modalities")
TRANSFORM_NOTE = ("pairs/transforms/<id>.txt: 3x3 H mapping reference pixel (x, y, 1) to query pixel in continuous "
                  "coordinates (pixel (row i, column j) covers [j, j+1) x [i, i+1)); OpenCV warps, which put pixel "
                  "centres at integers, need T(-0.5) @ H @ T(+0.5)")


def modality_root(out: Path, modality: str) -> Path:
    """Folder holding ``images/`` and ``labelTxt/`` of a modality (optical at the top level)."""
    return out if modality == "optical" else out / modality


@dataclass(frozen=True)
class _Job:
    out: Path
    seed: int
    size: int
    classes: ClassRequest
    modalities: tuple[str, ...]
    pair_modalities: tuple[str, str]


@dataclass
class DatasetSummary:
    out: Path
    scenes_written: int = 0
    scenes_skipped: int = 0
    pairs_written: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)


def _scene_task(args: tuple[_Job, int]) -> dict[str, int] | None:
    job, index = args
    image_id = f"synthrs_{job.seed}_{index:06d}"
    targets = [modality_root(job.out, m) for m in job.modalities]
    if all((t / "labelTxt" / f"{image_id}.txt").is_file() and (t / "images" / f"{image_id}.png").is_file()
           for t in targets):
        return None
    scene = make_scene(job.seed, index, job.size, job.classes)
    labels = scene.labels()
    for modality, target in zip(job.modalities, targets):
        write_image(target / "images" / f"{image_id}.png", render(scene, modality))
    for target in targets:
        write_dota_labels(target / "labelTxt" / f"{image_id}.txt", labels)
    return scene.class_counts()


def _pair_task(args: tuple[_Job, int]) -> dict[str, int] | None:
    job, index = args
    pairs = job.out / "pairs"
    transform_file = pairs / "transforms" / f"synthrs_{job.seed}_{PAIR_INDEX_BASE + index:06d}.txt"
    if transform_file.is_file():
        return None
    pair = pair_from_scene(make_scene(job.seed, PAIR_INDEX_BASE + index, job.size, job.classes), job.pair_modalities)
    write_image(pairs / "reference" / "images" / f"{pair.pair_id}.png", pair.reference)
    write_image(pairs / "query" / "images" / f"{pair.pair_id}.png", pair.query)
    write_dota_labels(pairs / "reference" / "labelTxt" / f"{pair.pair_id}.txt", pair.reference_labels)
    write_dota_labels(pairs / "query" / "labelTxt" / f"{pair.pair_id}.txt", pair.query_labels)
    atomic_write_text(transform_file, format_transform(pair.transform))
    return {}


def _check_modalities(modalities, what: str) -> tuple[str, ...]:
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise CstfError(f"{what}: unknown or no modality in {list(modalities)}; choose from {', '.join(MODALITIES)}")
    return modalities


def _make_job(out: Path, n: int, size: int, seed: int, modalities, classes: ClassRequest, pairs: int,
              pair_modalities, workers: int) -> _Job:
    """Every argument checked (nothing is written before this returns)."""
    for name, value, low in (("n", n, 0), ("pairs", pairs, 0), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise CstfError(f"--{name} must be a whole number >= {low}, got {value!r}")
    check_seed_and_size(seed, size)
    modalities = _check_modalities(modalities, "--modalities")
    pair_modalities = _check_modalities(pair_modalities, "--pair-modalities")
    if len(pair_modalities) != 2:
        raise CstfError(f"--pair-modalities needs exactly two (reference, query), got {list(pair_modalities)}")
    wanted, counts = parse_class_request(classes)
    return _Job(out, int(seed), int(size), counts if counts is not None else sorted(wanted), modalities,
                pair_modalities)


def _manifest(job: _Job, n: int, pairs: int) -> dict:
    return {"generator": "SynthRS", "seed": job.seed, "n": n, "size": job.size, "modalities": list(job.modalities),
            "classes": job.classes, "all_classes": list(SYNTH_CLASSES), "pairs": pairs,
            "pair_modalities": list(job.pair_modalities), "transform": TRANSFORM_NOTE}


def _resumed_manifest(path: Path, manifest: dict) -> dict:
    """``manifest`` for a folder that may already hold a data set: the generation parameters must equal
    the ones on disk (``n`` and ``pairs`` may grow, which resumes; they never shrink on disk)."""
    if not path.is_file():
        return manifest
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CstfError(f"{path} is unreadable ({exc}); write the data set to another folder") from exc
    if not isinstance(previous, dict) or previous.get("generator") != "SynthRS":
        raise CstfError(f"{path} is not a SynthRS manifest; write the data set to another folder")
    differ = [f"{key} {previous.get(key)!r} on disk, {manifest[key]!r} asked"
              for key in GENERATION_FIELDS if previous.get(key) != manifest[key]]
    if differ:
        raise CstfError(f"{path.parent} holds another SynthRS data set ({'; '.join(differ)}); resuming needs the "
                        "same generation parameters (only --n and --pairs may grow): use another folder")
    merged = dict(manifest)
    for key in ("n", "pairs"):
        merged[key] = max(int(previous.get(key, 0)), manifest[key])
    return merged


def _run(task, jobs: list, workers: int, desc: str, progress: bool):
    progress = progress and bool(jobs)
    if workers <= 1 or len(jobs) <= 1:
        yield from tqdm(map(task, jobs), total=len(jobs), desc=desc, disable=not progress)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.imap_unordered(task, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))
        yield from tqdm(results, total=len(jobs), desc=desc, disable=not progress)


def generate_dataset(out, n: int, *, size: int = 1024, seed: int = 0, modalities=("optical",),
                     classes: ClassRequest = None, pairs: int = 0, pair_modalities=("optical", "sar"),
                     workers: int = 1, progress: bool = True) -> DatasetSummary:
    """Write ``n`` scenes (and ``pairs`` pairs) of the data set ``seed`` under ``out``; see the module doc.

    A folder holds one data set: if ``out/synthrs.json`` records other generation parameters
    (``GENERATION_FIELDS``), :class:`CstfError` names them and nothing is written."""
    out = Path(out)
    job = _make_job(out, n, size, seed, modalities, classes, pairs, pair_modalities, workers)
    manifest_path = out / MANIFEST_NAME
    manifest = _resumed_manifest(manifest_path, _manifest(job, n, pairs))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    summary = DatasetSummary(out)
    for counts_of_scene in _run(_scene_task, [(job, i) for i in range(n)], workers, "scenes", progress):
        if counts_of_scene is None:
            summary.scenes_skipped += 1
            continue
        summary.scenes_written += 1
        for cls, count in counts_of_scene.items():
            summary.class_counts[cls] = summary.class_counts.get(cls, 0) + count
    for result in _run(_pair_task, [(job, i) for i in range(pairs)], workers, "pairs", progress):
        summary.pairs_written += result is not None
    log.debug("SynthRS: %d scenes written, %d already there, %d pairs, in %s", summary.scenes_written,
              summary.scenes_skipped, summary.pairs_written, out)
    return summary
