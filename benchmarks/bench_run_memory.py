"""Peak memory of ``cstf-edge run`` on a large GeoTIFF read window by window (target: under 2 GB at 8000 x 8000).

1. writes a ``--size`` x ``--size`` tiled GeoTIFF (3-band uint8, or ``--sar``: 1-band uint16) in EPSG:32633,
   block by block from SynthRS scenes, so this script never holds it whole either;
2. exports the shipped weights to ONNX at ``--imgsz`` (needs the train extra) unless ``--model`` is given;
3. runs ``cstf-edge run SCENE --model M --tile IMGSZ --format dota,task1,json,geojson --save-vis --json`` in a
   child process under ``/usr/bin/time -v`` (``resource.getrusage(RUSAGE_CHILDREN)`` where that is absent)
   and prints its peak resident set size, wall time, tiles and detections as JSON.

    python benchmarks/bench_run_memory.py [--size 8000] [--imgsz 1024] [--model cstf-n.onnx] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cstf_edge.data.split import window_origins

BLOCK = 2000  # px of SynthRS scene per block of the mosaic
TIME = "/usr/bin/time"


def write_scene(path: Path, size: int, sar: bool) -> None:
    """A ``size`` x ``size`` GeoTIFF mosaic of SynthRS scenes, written block by block."""
    import rasterio
    from rasterio.windows import Window

    from cstf_edge.data.synthrs import make_scene, render

    blocks = [render(make_scene(11, k, size=BLOCK), "sar" if sar else "optical") for k in range(4)]
    profile = dict(driver="GTiff", width=size, height=size, count=1 if sar else 3,
                   dtype="uint16" if sar else "uint8", crs="EPSG:32633", tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", transform=rasterio.Affine(0.5, 0, 500000, 0, -0.5, 4600000))
    with rasterio.open(path, "w", **profile) as dst:
        for n, (up, left) in enumerate((u, v) for u in range(0, size, BLOCK) for v in range(0, size, BLOCK)):
            h, w = min(BLOCK, size - up), min(BLOCK, size - left)
            block = blocks[n % len(blocks)][:h, :w]
            data = (block.astype(np.float32) * 200).astype(np.uint16)[None] if sar else block[..., ::-1].transpose(2, 0, 1)
            dst.write(data, window=Window(left, up, w, h))


def shipped_model() -> str:
    """The model size of the shipped weights (so a kept export of other weights is not reused)."""
    from cstf_edge.model.checkpoint import read_safetensors, shipped_weights

    return read_safetensors(shipped_weights())[1]["model"]


def export_model(path: Path, imgsz: int) -> Path:
    """The shipped weights as an ONNX artifact with cstf-edge metadata (batch 1)."""
    import onnx
    import torch

    from cstf_edge.model.checkpoint import load_weights, shipped_weights
    from cstf_edge.runtime.artifact import METADATA_KEY, ArtifactInfo

    model, meta = load_weights(shipped_weights())
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, imgsz, imgsz),), str(path), opset_version=17,
                          input_names=["images"], output_names=["detections"], dynamo=False)
    info = ArtifactInfo.from_weights_meta(meta)
    info = replace(info, batch=1, preprocess=replace(info.preprocess, height=imgsz, width=imgsz))
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    onnx.save(graph, str(path))
    return path


def measure(command: list[str]) -> tuple[dict, float, float]:
    """Run ``command``; its JSON stdout, peak RSS in MiB and wall seconds."""
    timed = [TIME, "-v", *command] if os.access(TIME, os.X_OK) else command
    start = time.perf_counter()
    done = subprocess.run(timed, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    peak_kib = int(found.group(1)) if found else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(done.stdout.strip().splitlines()[-1]), peak_kib / 1024.0, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8000, help="scene side in px (default 8000)")
    parser.add_argument("--imgsz", type=int, default=1024, help="network input and tile (default 1024)")
    parser.add_argument("--model", help="an exported .onnx (default: export the shipped weights)")
    parser.add_argument("--sar", action="store_true", help="1-band uint16 scene (stretched) instead of RGB uint8")
    parser.add_argument("--keep", help="keep the scene, model and outputs in this folder")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_run_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        scene = work / f"scene{args.size}{'_sar' if args.sar else ''}.tif"
        if not scene.is_file():
            write_scene(scene, args.size, args.sar)
        model = Path(args.model) if args.model else work / f"shipped-{shipped_model()}-{args.imgsz}.onnx"
        if not model.is_file():
            export_model(model, args.imgsz)
        command = [sys.executable, "-m", "cstf_edge", "run", str(scene), "--model", str(model), "--tile",
                   str(args.imgsz), "--out", str(work / "out"), "--format", "dota,task1,json,geojson", "--save-vis",
                   "--json", "--no-progress"]
        summary, peak_mib, wall = measure(command)
        print(json.dumps({"scene": f"{args.size} x {args.size} {'uint16 x 1' if args.sar else 'uint8 x 3'} GeoTIFF",
                          "scene_mib_decoded": round(args.size ** 2 * (2 if args.sar else 3) / 2**20, 1),
                          "imgsz": args.imgsz, "peak_rss_mib": round(peak_mib, 1), "wall_s": round(wall, 1),
                          "tiles": len(window_origins(args.size, args.size, args.imgsz, 200)), "detections": summary["detections"],
                          "timings_ms": summary["timings_ms"], "cpu_count": os.cpu_count()}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
