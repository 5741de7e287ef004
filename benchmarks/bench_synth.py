"""SynthRS generation speed, single process: scenes per second at 1024 x 1024, all in (scene layout,
optical render, PNG encode + atomic write, DOTA labels), and the time of each stage.

    python benchmarks/bench_synth.py [--n 40] [--size 1024] [--modalities optical]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cstf_edge._io import write_image
from cstf_edge.data.dota import write_dota_labels
from cstf_edge.data.synthrs import make_scene, render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modalities", default="optical")
    args = parser.parse_args()
    modalities = args.modalities.split(",")
    render(make_scene(args.seed, 10**6, args.size), modalities[0])  # build the cached textures first
    stages = {"layout": 0.0, "render": 0.0, "write": 0.0}
    objects = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        start = time.perf_counter()
        for index in range(args.n):
            t0 = time.perf_counter()
            scene = make_scene(args.seed, index, args.size)
            t1 = time.perf_counter()
            images = {m: render(scene, m) for m in modalities}
            t2 = time.perf_counter()
            for modality, image in images.items():
                write_image(out / modality / "images" / f"{scene.image_id}.png", image)
                write_dota_labels(out / modality / "labelTxt" / f"{scene.image_id}.txt", scene.labels())
            t3 = time.perf_counter()
            stages["layout"] += t1 - t0
            stages["render"] += t2 - t1
            stages["write"] += t3 - t2
            objects += len(scene.objects)
        total = time.perf_counter() - start
    print(f"SynthRS {args.size}x{args.size}, modalities {','.join(modalities)}, {args.n} scenes, 1 process")
    print(f"  {args.n / total:.2f} scenes/s  ({1e3 * total / args.n:.1f} ms/scene, {objects / args.n:.0f} objects/scene)")
    for name, seconds in stages.items():
        print(f"  {name:7s} {1e3 * seconds / args.n:6.1f} ms/scene")


if __name__ == "__main__":
    main()
