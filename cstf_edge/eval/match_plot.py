"""The ``eval-match`` picture: success rate per modality, one bar per method, the overall last; modalities
whose ground truth is known to be wrong are left out (they are not scored). Drawn with matplotlib's object
API on the Agg canvas (no pyplot); :func:`plot_success` returns None, with a warning, where matplotlib is
not installed (it comes with the ``train`` extra)."""
from __future__ import annotations

import io
import logging

log = logging.getLogger(__name__)

METHOD_COLORS = {"cstf": "#1f77b4", "cstf-net": "#9ecae1", "sift": "#d62728", "orb": "#ff9896"}


def _bars(axes, groups: list[tuple[str, dict]], methods: list[str]) -> None:
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(groups))]
        rates = [100.0 * by_method[method]["success_rate"] if method in by_method else 0.0
                 for _, by_method in groups]
        bars = axes.bar(xs, rates, width, label=method.upper(), color=METHOD_COLORS.get(method, "gray"),
                        edgecolor="black", linewidth=0.5)
        axes.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)


def plot_success(report: dict, methods: list[str], title: str) -> bytes | None:
    """PNG bytes of the grouped bars of ``report`` (as :func:`cstf_edge.eval.match_metrics.aggregate`
    returns it), or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed, so no success.png is written; pip install matplotlib")
        return None
    groups = [(name, by_method) for name, by_method in report["modalities"].items()
              if all(summary["scored"] for summary in by_method.values())]
    groups.append(("overall", report["overall"]))
    figure = Figure(figsize=(max(6.0, 1.3 * len(groups) + 2.0), 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    _bars(axes, groups, methods)
    pairs = [next(iter(by_method.values()))["pairs"] for _, by_method in groups]
    axes.set_xticks(range(len(groups)), [f"{name}\n({n} pairs)" for (name, _), n in zip(groups, pairs)], fontsize=8)
    axes.set_ylim(0, 110)
    axes.set_ylabel("success rate (%)")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8, loc="upper right", ncols=len(methods))
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
