"""Speed of the exported precisions through ONNX Runtime on this CPU, batch 1, at the artifacts' input size.

Runs the FP32, FP16 and INT8 ONNX of one export (``python -m cstf_edge.export --profile
export/cpu-int8.toml`` writes them to ``artifacts/cpu-int8``) in interleaved rounds, so that load from other
processes hits every variant alike, with ``--settle`` seconds idle before each run (ONNX Runtime's worker threads
spin for tens of milliseconds after a run and, with no pause, slow the next session by 25-50 %), and reports
the median and p90 latency of the network alone
(``session.run``; pre/post-processing are measured by ``cstf-edge bench``) and the ratio to FP32. The issue's
target: INT8 at least 2x faster than FP32 at 1024 x 1024.

    python benchmarks/bench_export_speed.py [--dir artifacts/cpu-int8] [--name cstf-n-relu-1024] [--rounds 20]
                                            [--settle 0.1] [--threads N] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cstf_edge.bench.environment import cpu_info

TARGET_INT8_SPEEDUP = 2.0


def model_name(folder: Path, name: str | None) -> str:
    """The one export in ``folder`` (``<name>.fp32.onnx``), or ``name``; a folder with several needs ``--name``."""
    names = sorted(p.name[: -len(".fp32.onnx")] for p in folder.glob("*.fp32.onnx"))
    if name is None and len(names) == 1:
        return names[0]
    if name in names:
        return name
    if not names:
        raise SystemExit(f"no *.fp32.onnx in {folder}; run python -m cstf_edge.export --profile export/cpu-int8.toml")
    raise SystemExit(f"{folder} holds {', '.join(names)}: name one with --name"
                     + (f" ({name!r} is not there)" if name else ""))


def sessions(folder: Path, name: str, threads: int | None) -> dict[str, ort.InferenceSession]:
    found = {}
    for precision in ("fp32", "fp16", "int8"):
        path = folder / f"{name}.{precision}.onnx"
        if path.is_file():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if threads:
                options.intra_op_num_threads = threads
            found[precision] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return found


def measure(runs: dict[str, ort.InferenceSession], rounds: int, settle: float,
            warmup: int = 3) -> dict[str, list[float]]:
    shape = [d if isinstance(d, int) else 1 for d in runs["fp32"].get_inputs()[0].shape]
    feed = {"images": np.random.default_rng(0).random(shape, dtype=np.float32)}
    for session in runs.values():
        for _ in range(warmup):
            session.run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, session in runs.items():
            time.sleep(settle)
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append(1000.0 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="artifacts/cpu-int8", help="folder with <name>.{fp32,fp16,int8}.onnx")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--settle", type=float, default=0.1, help="idle seconds before each timed run (default 0.1)")
    parser.add_argument("--name", help="the export to time when the folder holds several (e.g. cstf-n-relu-1024)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    name = model_name(Path(args.dir), args.name)
    runs = sessions(Path(args.dir), name, args.threads)
    times = measure(runs, args.rounds, args.settle)
    base = float(np.median(times["fp32"]))
    rows = {name: {"median_ms": round(float(np.median(t)), 2), "p90_ms": round(float(np.percentile(t, 90)), 2),
                   "speedup_vs_fp32": round(base / float(np.median(t)), 2)} for name, t in times.items()}
    shape = runs["fp32"].get_inputs()[0].shape
    cpu = cpu_info()
    report = {"model": name, "input": shape, "rounds": args.rounds, "settle_s": args.settle, "cpu_count": os.cpu_count(),
              "cpu": cpu["model"], "cpu_flags": [flag for flag, present in cpu["flags"].items() if present],
              "onnxruntime": ort.__version__,
              "variants": rows, "target_int8_speedup": TARGET_INT8_SPEEDUP,
              "target_met": rows.get("int8", {}).get("speedup_vs_fp32", 0.0) >= TARGET_INT8_SPEEDUP}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{name}: input {shape}, {args.rounds} interleaved rounds, ONNX Runtime {ort.__version__}, {os.cpu_count()} cores "
          f"of {report['cpu']}")
    for name, row in rows.items():
        print(f"  {name}: median {row['median_ms']:7.1f} ms  p90 {row['p90_ms']:7.1f} ms  "
              f"{row['speedup_vs_fp32']:.2f}x vs fp32")
    print(f"INT8 >= {TARGET_INT8_SPEEDUP}x FP32: {'met' if report['target_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
