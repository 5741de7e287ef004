"""``cstf-edge demo``: the whole pipeline on a fresh machine with no data, in a few minutes on 2 CPU cores.

1. SynthRS scenes: ``scenes`` of 1024 x 1024 (data-set seed 2, never trained on) and one large scene of
   ``large`` pixels (seed 4) that needs tiling, together in ``OUT/scenes`` (DOTA layout);
2. export of the shipped weights to FP32, FP16 and INT8 ONNX, INT8 calibrated on 16 other SynthRS scenes
   (seed 3) with the per-layer sensitivity sweep (``OUT/artifacts``);
3. detection with the INT8 ONNX through the runtime on every scene, the large one tiled (``OUT/detections``:
   DOTA labels, Task1 files, JSON, rendered images);
4. the Task1 output scored with the DOTA evaluator;
5. a short bench report of torch-fp32, onnxruntime-fp32 and onnxruntime-int8 (+ FP16 and CUDA on a GPU)
   on the 1024 scenes (``OUT/bench``).

With ``device="cuda:N"`` step 3 runs pre/post-processing through the CUDA pipeline and step 5 adds the
FP16 variants and PyTorch on the GPU.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cstf_edge._io import atomic_write_text

log = logging.getLogger(__name__)

VIS_CONF = 0.25  # the rendered pictures show these; the files keep every detection down to 0.05 for the mAP
CALIBRATION_MANIFEST = 'source = "synthrs"\nseed = 3\nsize = 1024\ncount = 16\n'


@dataclass
class DemoOptions:
    out: str = "demo_out"
    scenes: int = 8
    large: int = 2560
    device: str = "cpu"
    iters: int = 10
    progress: bool = True


def _scenes(options: DemoOptions, out: Path) -> Path:
    """SynthRS scenes (and the large one) in one DOTA-layout folder; returns it."""
    from cstf_edge.data.synthrs import generate_dataset

    generate_dataset(out / "synthrs-1024", options.scenes, size=1024, seed=2, progress=options.progress)
    generate_dataset(out / "synthrs-large", 1, size=options.large, seed=4, progress=options.progress)
    scenes = out / "scenes"
    for source, prefix in ((out / "synthrs-1024", ""), (out / "synthrs-large", "large_")):
        for sub in ("images", "labelTxt"):
            (scenes / sub).mkdir(parents=True, exist_ok=True)
            for path in sorted((source / sub).iterdir()):
                target = scenes / sub / f"{prefix}{path.name}"
                if not target.exists():
                    shutil.copyfile(path, target)
    return scenes


def _export(options: DemoOptions, out: Path) -> dict:
    from cstf_edge.export import ExportOptions, run_export

    manifest = out / "calibration.toml"
    atomic_write_text(manifest, CALIBRATION_MANIFEST)
    return run_export(ExportOptions(precision="int8", imgsz=1024, calib=str(manifest), out=str(out / "artifacts")),
                      progress=options.progress)


def _detect(options: DemoOptions, out: Path, scenes: Path, model: Path):
    from cstf_edge.runtime.run import RunConfig, run

    # ONNX Runtime's CPU build runs the network; on a GPU machine pre/post-processing move to the CUDA twins.
    pipeline = "cuda" if options.device.startswith("cuda") else "cpu"
    return run(RunConfig([str(scenes / "images")], model=str(model), device="cpu", out=str(out / "detections"),
                         conf=0.05, iou=0.1, formats=("dota", "task1", "json", "geojson"), save_vis=True,
                         vis_conf=VIS_CONF, pipeline=pipeline, progress=options.progress))


def _bench(options: DemoOptions, out: Path) -> dict:
    from cstf_edge.bench import BenchOptions, run_bench

    gpu = options.device.startswith("cuda")
    return run_bench(BenchOptions(
        data=str(out / "synthrs-1024"), backends=("torch", "onnxruntime"),
        precisions=("fp32", "fp16", "int8") if gpu else ("fp32", "int8"), imgsz=1024, batches=(1,),
        device=options.device, warmup=2, iters=options.iters, out=str(out / "bench"),
        artifacts=str(out / "artifacts"), calib=str(out / "calibration.toml"), progress=options.progress))


def run_demo(options: DemoOptions) -> dict:
    """Run every step; returns where things are and the headline figures."""
    from cstf_edge.eval import evaluate_dota

    start = time.perf_counter()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("1/5 SynthRS scenes -> %s", out / "scenes")
    scenes = _scenes(options, out)
    log.info("2/5 export FP32 / FP16 / INT8 ONNX -> %s", out / "artifacts")
    export = _export(options, out)
    int8 = Path(export["artifacts"]["int8"]["artifact"])
    log.info("3/5 detection with %s -> %s", int8.name, out / "detections")
    summary = _detect(options, out, scenes, int8)
    log.info("4/5 DOTA Task1 mAP of the detections")
    score = evaluate_dota(out / "detections", scenes / "labelTxt")
    log.info("5/5 bench -> %s", out / "bench")
    bench = _bench(options, out)
    return {"seconds": round(time.perf_counter() - start, 1), "scenes": str(scenes),
            "artifacts": {p: r["artifact"] for p, r in export["artifacts"].items()},
            "detections": str(out / "detections"), "rendered": str(out / "detections" / "vis"),
            "detections_found": summary.detections, "failed_sources": summary.failed,
            "map50_voc07_int8_run": round(100 * score.mAP, 2), "per_class_ap": score.per_class_ap,
            "bench_report": str(out / "bench" / "report.md"), "bench_plot": str(out / "bench" / "accuracy_vs_fps.png"),
            "bench_rows": [{"variant": r["variant"], "map50_voc07": r["accuracy"]["map50_voc07"],
                            "fps": r["speed"]["fps"]} for r in bench["rows"]]}
