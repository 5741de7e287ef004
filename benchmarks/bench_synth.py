"""SynthRS generation speed: the shipped writer, ``generate_dataset(out, n, workers=1, progress=False)``,
end to end into a temporary folder (scene layout, rendering, PNG encode + atomic write, DOTA labels),
in scenes per second, with the time of each stage.

The stages are measured by wrapping the functions the writer calls (``make_scene``, ``render``,
``write_image``, ``write_dota_labels``) with timers for the run; the loop itself is the writer's own.

    python benchmarks/bench_synth.py [--n 40] [--size 1024] [--modalities optical]
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections import defaultdict

from cstf_edge.data.synthrs import make_scene, render, writer

STAGES = {"make_scene": "layout", "render": "render", "write_image": "png", "write_dota_labels": "labels"}


@contextlib.contextmanager
def timed_stages(seconds: dict[str, float]):
    """Wrap the writer's stage functions so that each call adds its time to ``seconds[stage]``."""
    originals = {name: getattr(writer, name) for name in STAGES}

    def timer(name, function):
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[STAGES[name]] += time.perf_counter() - start
        return wrapped

    try:
        for name, function in originals.items():
            setattr(writer, name, timer(name, function))
        yield seconds
    finally:
        for name, function in originals.items():
            setattr(writer, name, function)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modalities", default="optical")
    args = parser.parse_args()
    modalities = args.modalities.split(",")
    for modality in modalities:  # build the cached textures first, as a long run amortises them
        render(make_scene(args.seed, 10**6, args.size), modality)
    seconds: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp, timed_stages(seconds):
        start = time.perf_counter()
        summary = writer.generate_dataset(tmp, args.n, size=args.size, seed=args.seed, modalities=modalities,
                                          workers=1, progress=False)
        total = time.perf_counter() - start
    objects = sum(summary.class_counts.values())
    print(f"SynthRS {args.size}x{args.size}, modalities {','.join(modalities)}, {args.n} scenes, "
          "generate_dataset(workers=1)")
    print(f"  {args.n / total:.2f} scenes/s  ({1e3 * total / args.n:.1f} ms/scene, "
          f"{objects / max(args.n, 1):.0f} objects/scene)")
    for stage in STAGES.values():
        print(f"  {stage:7s} {1e3 * seconds[stage] / args.n:6.1f} ms/scene")


if __name__ == "__main__":
    main()
