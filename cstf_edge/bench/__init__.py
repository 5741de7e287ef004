"""``cstf-edge bench``: accuracy against speed for every variant (backend x precision x batch) side by side,
in one run, on this machine.

    from cstf_edge.bench import BenchOptions, run_bench
    report = run_bench(BenchOptions(data="calibration/synthrs-val.toml", imgsz=1024, out="runs/bench"))

Missing ONNX files and TensorRT engines are exported with :mod:`cstf_edge.export`; every variant is run
through the runtime's :class:`~cstf_edge.runtime.detector.Detector`, scored with the project's DOTA evaluator
and timed per stage; variants this machine cannot run are listed with the reason. Outputs: ``report.md``,
``report.csv``, ``report.json`` and ``accuracy_vs_fps.png`` in ``out``.
"""
from cstf_edge.bench.options import BACKENDS, PRECISIONS, BenchError, BenchOptions, parse_batches, parse_names
from cstf_edge.bench.plot import pareto_front


def run_bench(options: BenchOptions) -> dict:
    """Run the bench (see :mod:`cstf_edge.bench.runner`); returns the report, also written to ``options.out``."""
    from cstf_edge.bench.runner import run_bench as _run

    return _run(options)


__all__ = ["BACKENDS", "PRECISIONS", "BenchError", "BenchOptions", "pareto_front", "parse_batches", "parse_names",
           "run_bench"]
