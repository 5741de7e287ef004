"""The accuracy-vs-speed picture: mAP (VOC07) against end-to-end FPS, one labelled point per variant, the
Pareto front (variants no other variant beats on both) drawn as a step line and ringed. Drawn with
matplotlib's object API on the Agg canvas (no pyplot, no global backend switch)."""
from __future__ import annotations

import io

BACKEND_COLORS = {"torch": "#d62728", "onnxruntime": "#1f77b4", "tensorrt": "#2ca02c"}
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "int8": "D"}
PEER_COLOR = "#7f7f7f"  # peers (cstf-edge bench --peers), whatever their backend


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(speed, accuracy)`` that no other point dominates (at least as fast and as
    accurate, and better in one), ordered by increasing speed. Equal points are all kept."""
    front = []
    for i, (speed, accuracy) in enumerate(points):
        dominated = any(s >= speed and a >= accuracy and (s > speed or a > accuracy)
                        for j, (s, a) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _axes(figure, rows: list[dict]):
    axes = figure.add_subplot(1, 1, 1)
    speeds = [r["speed"]["fps"] for r in rows if r["speed"]["fps"]]
    if speeds and max(speeds) / min(speeds) > 20:
        axes.set_xscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.set_xlabel("end-to-end throughput, images/s = FPS\n(mean over the timed iterations; decode + pre + infer + post)")
    axes.set_ylabel("mAP50, VOC07 11-point (%)")
    return axes


def _points(axes, rows: list[dict]) -> None:
    for row in rows:
        x, y = row["speed"]["fps"], row["accuracy"]["map50_voc07"]
        color = PEER_COLOR if row.get("peer") else BACKEND_COLORS.get(row["backend"], "gray")
        axes.scatter([x], [y], s=60 + 15 * row["batch"], c=color,
                     marker=PRECISION_MARKERS.get(row["precision"], "o"), edgecolors="black", linewidths=0.6,
                     zorder=3)


# Label positions tried in turn (offset in points from the marker, horizontal alignment).
_LABEL_SPOTS = ((5, 9, "left"), (5, -19, "left"), (-5, 9, "right"), (-5, -19, "right"), (5, 23, "left"),
                (5, -33, "left"), (-5, 23, "right"), (-5, -33, "right"))
_MARKER_HALF = 9  # points: half the side of the square kept clear around each marker (Pareto ring included)


def _overlaps(box, others) -> bool:
    return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)


def _front_segments(axes, rows: list[dict], pad: float) -> list[tuple]:
    """Display-pixel boxes around the segments of the Pareto step line (see :func:`_front`)."""
    front = sorted((r["speed"]["fps"], r["accuracy"]["map50_voc07"]) for r in rows if r.get("pareto"))
    points = [axes.transData.transform(p) for p in front]
    boxes = []
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        boxes.append((x0 - pad, min(y0, y1) - pad, x0 + pad, max(y0, y1) + pad))  # the drop at x0
        boxes.append((x0 - pad, y1 - pad, x1 + pad, y1 + pad))  # then across to x1
    return boxes


def _labels(figure, axes, rows: list[dict]) -> None:
    """One label per point, at the first spot that covers neither another label nor a marker (estimated in
    display pixels once the axes limits are final)."""
    scale = figure.dpi / 72.0
    centers = [axes.transData.transform((r["speed"]["fps"], r["accuracy"]["map50_voc07"])) for r in rows]
    half = _MARKER_HALF * scale
    taken = [(cx - half, cy - half, cx + half, cy + half) for cx, cy in centers]
    taken += _front_segments(axes, rows, pad=3 * scale)
    for row, (cx, cy) in zip(rows, centers):
        width, height = 4.9 * len(row["label"]) * scale, 10 * scale
        for dx, dy, align in _LABEL_SPOTS:
            left = cx + dx * scale - (width if align == "right" else 0.0)
            box = (left, cy + dy * scale, left + width, cy + dy * scale + height)
            if not _overlaps(box, taken):
                break
        taken.append(box)
        axes.annotate(row["label"], (row["speed"]["fps"], row["accuracy"]["map50_voc07"]), textcoords="offset points",
                      xytext=(dx, dy), ha=align, fontsize=8, zorder=4)


def _front(axes, rows: list[dict]) -> None:
    front = [r for r in rows if r.get("pareto")]
    front.sort(key=lambda r: r["speed"]["fps"])
    xs = [r["speed"]["fps"] for r in front]
    ys = [r["accuracy"]["map50_voc07"] for r in front]
    # The attainable frontier: left of a front point nothing beats its accuracy; between two front points the
    # faster one's accuracy is the best on offer.
    axes.step(xs, ys, where="pre", linestyle="--", color="black", linewidth=1.2, zorder=2)
    axes.scatter(xs, ys, s=260, facecolors="none", edgecolors="black", linewidths=1.4, zorder=2,
                 label="Pareto front (no variant faster and more accurate)")


def _timed_only(axes, rows: list[dict]) -> None:
    """Variants timed but not scored (an untrained peer): a dotted vertical line at their FPS, labelled."""
    for row in rows:
        axes.axvline(row["speed"]["fps"], color=PEER_COLOR if row.get("peer") else "gray", linestyle=":",
                     linewidth=1.4, zorder=1)
        axes.annotate(f"{row['label']} (timed, not scored)", (row["speed"]["fps"], 0.02), rotation=90,
                      xycoords=("data", "axes fraction"), xytext=(-4, 0), textcoords="offset points", ha="right",
                      va="bottom", fontsize=7, color="dimgray")


def _legend(axes, rows: list[dict]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=BACKEND_COLORS[b], label=b)
               for b in BACKEND_COLORS if any(r["backend"] == b and not r.get("peer") for r in rows)]
    if any(r.get("peer") and r["accuracy"]["map50_voc07"] is not None for r in rows):
        handles.append(Line2D([], [], marker="o", linestyle="", color=PEER_COLOR, label="peer (Ultralytics)"))
    if any(r["accuracy"]["map50_voc07"] is None for r in rows):
        handles.append(Line2D([], [], linestyle=":", color=PEER_COLOR, label="timed, not scored (FPS)"))
    handles += [Line2D([], [], marker=PRECISION_MARKERS[p], linestyle="", color="gray", label=p)
                for p in PRECISION_MARKERS if any(r["precision"] == p for r in rows)]
    front, labels = axes.get_legend_handles_labels()
    axes.legend(handles=handles + front, labels=[h.get_label() for h in handles] + labels, loc="best",
                fontsize=8, title="backend / precision (size: batch)", title_fontsize=8)


def _margins(axes, rows: list[dict]) -> None:
    ys = [r["accuracy"]["map50_voc07"] for r in rows]
    low, high = min(ys), max(ys)
    pad = max(1.0, 0.15 * (high - low))
    axes.set_ylim(max(0.0, low - pad), high + pad)  # room above the top point for its label
    axes.margins(x=0.15)


def plot_accuracy_vs_fps(rows: list[dict], title: str) -> bytes:
    """PNG bytes of the scatter (rows as in the bench report, each with ``pareto`` set)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.5, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = _axes(figure, rows)
    scored = [r for r in rows if r["accuracy"]["map50_voc07"] is not None]
    if scored:
        _points(axes, scored)
        _front(axes, scored)
        _timed_only(axes, [r for r in rows if r["accuracy"]["map50_voc07"] is None])
        _legend(axes, rows)
        _margins(axes, scored)
        figure.tight_layout()
        _labels(figure, axes, scored)
    else:
        axes.text(0.5, 0.5, "no scored variant ran on this machine", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
