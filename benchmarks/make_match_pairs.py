"""Matching pairs with exact ground truth from folders of real images: the tuning set of the matcher's
run-time settings (its dense refinement included), so they are never chosen on the SRIF test pairs.

Each image is a source for ``--per-image`` pairs made by the training pair generator
(``cstf_edge.data.match_pairs.sample_pair`` at full difficulty: a random affine warp of any rotation, scale
ratio 0.5-2, shear and translation, and random modality changes: speckle, intensity maps, inversion, blur,
map-like quantisation, gradient images, night-like low light). The output has the layout of
``cstf-edge synth --pairs`` (``synthrs.json``, ``pairs/{reference,query}/images``, ``pairs/transforms``),
so ``cstf-edge eval-match OUT`` reads it.

    python benchmarks/make_match_pairs.py runs/tune/real --seed 7 --per-image 3 \\
        ../shared/data/dota/devkit_example/images ../shared/data/dota/devkit_yolo_demo/images \\
        ../shared/data/dota/dota8_yolo_obb/images/train ../shared/data/dota/dota8_yolo_obb/images/val \\
        ../shared/data/dota/unlabeled ../shared/data/hrsc2016/FullDataSet/AllImages

(the tuning set of the shipped settings: 14 DOTA and HRSC2016 images, 42 pairs of 512 px). The images are
read where they are; the pairs are written under OUT, which should stay outside the repository.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_text, write_image
from cstf_edge.data.match_pairs import image_sources, sample_pair
from cstf_edge.data.synthrs.pairs import format_transform


def write_pairs(out: Path, folders: list[str], seed: int, per_image: int, size: int) -> int:
    """Write the pairs; returns how many."""
    sources = [source for folder in folders for source in image_sources(folder, size=2 * size)]
    rng = np.random.default_rng(seed)
    count = 0
    for source in sources:
        for _ in range(per_image):
            pair = sample_pair(source, rng, size=size)
            name = f"real_{seed}_{count:04d}"
            write_image(out / "pairs" / "reference" / "images" / f"{name}.png", pair.reference)
            write_image(out / "pairs" / "query" / "images" / f"{name}.png", pair.query)
            atomic_write_text(out / "pairs" / "transforms" / f"{name}.txt", format_transform(pair.transform))
            count += 1
    manifest = {"generator": "benchmarks/make_match_pairs.py", "seed": seed, "per_image": per_image, "size": size,
                "folders": folders, "pairs": count, "pair_modalities": ["real", "changed"],
                "transform": "pairs/transforms/<id>.txt: 3x3 H, reference pixel -> query pixel, continuous "
                             "coordinates (pixel centre at (j + 0.5, i + 0.5))"}
    atomic_write_text(out / "synthrs.json", json.dumps(manifest, indent=1) + "\n")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("folders", nargs="+", help="folders of images (.png, .jpg, .tif, .bmp)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-image", type=int, default=3, help="pairs per image (default 3)")
    parser.add_argument("--size", type=int, default=512, help="pair side in pixels (default 512)")
    args = parser.parse_args()
    count = write_pairs(args.out, args.folders, args.seed, args.per_image, args.size)
    print(f"{count} pairs written to {args.out}")


if __name__ == "__main__":
    main()
