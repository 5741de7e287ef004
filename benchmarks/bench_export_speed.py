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
    python benchmarks/bench_export_speed.py --models before.int8.onnx after.int8.onnx [--rounds 25]   # an A/B
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


def session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def sessions(folder: Path, name: str, threads: int | None) -> dict[str, ort.InferenceSession]:
    paths = {precision: folder / f"{name}.{precision}.onnx" for precision in ("fp32", "fp16", "int8")}
    return {precision: session(path, threads) for precision, path in paths.items() if path.is_file()}


def example_feed(first: ort.InferenceSession) -> dict[str, np.ndarray]:
    shape = [d if isinstance(d, int) else 1 for d in first.get_inputs()[0].shape]
    return {"images": np.random.default_rng(0).random(shape, dtype=np.float32)}


def measure(runs: dict[str, ort.InferenceSession], rounds: int, settle: float,
            warmup: int = 3) -> dict[str, list[float]]:
    feed = example_feed(next(iter(runs.values())))
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


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="artifacts/cpu-int8", help="folder with <name>.{fp32,fp16,int8}.onnx")
    parser.add_argument("--name", help="the export to time when the folder holds several (e.g. cstf-n-relu-1024)")
    parser.add_argument("--models", nargs="+", type=Path,
                        help="time these ONNX files instead (an A/B: ratios to the first, outputs compared to it)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--settle", type=float, default=0.1, help="idle seconds before each timed run (default 0.1)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def output_differences(runs: dict[str, ort.InferenceSession]) -> dict[str, float]:
    """Largest absolute difference of each model's first output from the first model's, on the timing input."""
    outputs = {label: s.run(None, example_feed(s))[0] for label, s in runs.items()}
    first = next(iter(outputs.values()))
    return {label: float(np.abs(out - first).max()) if out.shape == first.shape else float("nan")
            for label, out in outputs.items()}


def main() -> None:
    args = arguments()
    if args.models:
        missing = [str(p) for p in args.models if not p.is_file()]
        if missing:
            raise SystemExit(f"no such ONNX file: {', '.join(missing)}")
        name, base, key = "A/B", str(args.models[0]), "speedup_vs_first"
        runs = {str(path): session(path, args.threads) for path in args.models}
    else:
        name, base, key = model_name(Path(args.dir), args.name), "fp32", "speedup_vs_fp32"
        runs = sessions(Path(args.dir), name, args.threads)
    times = measure(runs, args.rounds, args.settle)
    reference = float(np.median(times[base]))
    rows = {label: {"median_ms": round(float(np.median(t)), 2), "p90_ms": round(float(np.percentile(t, 90)), 2),
                    key: round(reference / float(np.median(t)), 2)} for label, t in times.items()}
    if args.models:
        for label, difference in output_differences(runs).items():
            rows[label]["max_abs_diff_vs_first"] = difference
    cpu = cpu_info()
    report = {"model": name, "input": runs[base].get_inputs()[0].shape, "rounds": args.rounds,
              "settle_s": args.settle, "cpu_count": os.cpu_count(), "cpu": cpu["model"],
              "cpu_flags": [flag for flag, present in cpu["flags"].items() if present],
              "onnxruntime": ort.__version__, "variants": rows}
    if not args.models:
        report.update(target_int8_speedup=TARGET_INT8_SPEEDUP,
                      target_met=rows.get("int8", {}).get(key, 0.0) >= TARGET_INT8_SPEEDUP)
    print(json.dumps(report, indent=2) if args.json else summary(report, key))


def summary(report: dict, key: str) -> str:
    lines = [f"{report['model']}: input {report['input']}, {report['rounds']} interleaved rounds, ONNX Runtime "
             f"{report['onnxruntime']}, {report['cpu_count']} cores of {report['cpu']}"]
    for label, row in report["variants"].items():
        same = f"  max |diff| vs first {row['max_abs_diff_vs_first']:.3g}" if "max_abs_diff_vs_first" in row else ""
        lines.append(f"  {label}: median {row['median_ms']:7.1f} ms  p90 {row['p90_ms']:7.1f} ms  "
                     f"{row[key]:.2f}x vs {'first' if key.endswith('first') else 'fp32'}{same}")
    if "target_met" in report:
        lines.append(f"INT8 >= {TARGET_INT8_SPEEDUP}x FP32: {'met' if report['target_met'] else 'NOT met'}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
