"""Size, FLOPs, CPU forward time and CSTF-block memory of the CSTF detector.

    python benchmarks/bench_model.py --model cstf-n --threads 2

FLOPs are counted by ``cstf_edge.model.summary.count_gflops`` (``FlopCounterMode``; a multiply-add counts
2, so "GFLOPs" compare with Ultralytics' figures, which count the same way). The block's memory is the peak resident-set
growth (sampled every 0.5 ms) of a fresh process running the CSTF block alone, without gradients, batch 1, fp32.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

import torch

from cstf_edge.model import build_model
from cstf_edge.model.summary import count_gflops, count_parameters


def forward_ms(model, size: int, repeats: int = 5) -> float:
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - start) / repeats * 1000


def block_peak_mib(name: str, size: int) -> float:
    """Run :func:`_block_child` in a fresh interpreter and return its peak RSS growth in MiB."""
    code = f"from benchmarks.bench_model import _block_child; _block_child({name!r}, {size})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _block_child(name: str, size: int) -> None:
    torch.set_num_threads(1)
    model = build_model(name, 5).eval()
    # Random features of the backbone's shapes: running the backbone here would set the RSS peak.
    shapes = zip(model.backbone.out_channels, model.strides)
    feats = tuple(torch.randn(1, c, size // s, size // s) for c, s in shapes)
    before = _current_rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _current_rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with torch.no_grad():
        for _ in range(3):
            model.cstf(feats, feats)
    done.set()
    sampler.join()
    print((peak[0] - before) / 2**20)


def _current_rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cstf-n")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.model, 5).eval()
    gflops, block_gflops = count_gflops(model, 1024)
    report = {
        "model": args.model,
        "params_M": round(count_parameters(model) / 1e6, 3),
        "gflops_1024": round(gflops, 2),
        "gflops_1024_cstf_block": round(block_gflops, 2),
        "cpu_threads": args.threads,
        "forward_ms_512": round(forward_ms(model, 512), 1),
        "forward_ms_1024": round(forward_ms(model, 1024, repeats=3), 1),
    }
    if not args.no_memory:
        report["cstf_block_peak_mib_1024"] = round(block_peak_mib(args.model, 1024), 1)
        report["cstf_block_peak_mib_2048"] = round(block_peak_mib(args.model, 2048), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
