"""The bench's four outputs, each written atomically: ``report.json`` (everything), ``report.csv`` (one flat
line per variant, the ones that did not run included with their reason), ``report.md`` (tables, how each
variant was run, the environment) and ``accuracy_vs_fps.png``."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from cstf_edge._io import atomic_write_bytes, atomic_write_text
from cstf_edge.bench.environment import environment_lines
from cstf_edge.bench.plot import plot_accuracy_vs_fps
from cstf_edge.runtime.timing import STAGES

FILES = ("report.md", "report.csv", "report.json", "accuracy_vs_fps.png")


def write_reports(report: dict, out: Path) -> dict[str, Path]:
    """Write the four files into ``out`` (created); returns their paths by name."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    atomic_write_text(paths["report.json"], to_json(report))
    atomic_write_text(paths["report.csv"], to_csv(report))
    atomic_write_text(paths["report.md"], to_markdown(report))
    atomic_write_bytes(paths["accuracy_vs_fps.png"], plot_accuracy_vs_fps(report["rows"], plot_title(report)))
    return paths


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, default=str) + "\n"


def plot_title(report: dict) -> str:
    env = report["environment"]
    if report["device"] == "cpu":
        where = f"{env['cpu']['model']}, {env['cpu']['usable_cpus']} CPUs"
    else:
        where = (env.get("torch") or {}).get("gpu") or report["device"]
    return (f"Accuracy vs speed: {Path(report['weights']).stem} at {report['imgsz']} px on {where}\n"
            f"{report['data'].get('images')} images of {Path(str(report['data'].get('given'))).name}; "
            f"{report['settings']['iters']} timed iterations per variant")


# ---- CSV ---------------------------------------------------------------------------------------------------

def _stage_columns() -> list[str]:
    return [f"{stage}_{stat}_ms" for stage in STAGES for stat in ("p50", "mean")]


CSV_COLUMNS = ["variant", "peer", "backend", "precision", "batch", "device", "status", "reason", "map50_voc07",
               "map50_voc12", "map_drop_voc07", "map_drop_voc12", "detection_parity", "latency_p50_ms",
               "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "fps", "fps_p50", "megapixels_per_s",
               "speedup_vs_reference", "speedup_vs_reference_mean", *_stage_columns(), "peak_rss_mb",
               "rss_before_mb", "rss_after_mb", "gpu_peak_allocated_mb", "artifact", "artifact_mb", "pareto"]


def csv_row(row: dict) -> dict:
    speed, acc, memory = row["speed"], row["accuracy"], row["memory"]
    line = {"variant": row["variant"], "peer": row.get("peer", ""), "backend": row["backend"],
            "precision": row["precision"], "batch": row["batch"], "device": row["device"], "status": "ok",
            "reason": acc.get("note", ""),
            "map50_voc07": acc["map50_voc07"], "map50_voc12": acc["map50_voc12"],
            "map_drop_voc07": row.get("map_drop_voc07"), "map_drop_voc12": row.get("map_drop_voc12"),
            "detection_parity": (row.get("parity") or {}).get("detection_parity"),
            "fps": speed["fps"], "fps_p50": speed["fps_p50"], "megapixels_per_s": speed["megapixels_per_s"],
            "speedup_vs_reference": row.get("speedup_vs_reference"),
            "speedup_vs_reference_mean": row.get("speedup_vs_reference_mean"), "peak_rss_mb": memory["peak_rss_mb"],
            "rss_before_mb": memory["rss_before_mb"], "rss_after_mb": memory["rss_after_mb"],
            "gpu_peak_allocated_mb": memory.get("torch_peak_allocated_mb"), "artifact": row["artifact"],
            "artifact_mb": round(row["artifact_bytes"] / 2 ** 20, 3), "pareto": row.get("pareto")}
    for stat in ("p50", "p90", "p99", "mean"):
        line[f"latency_{stat}_ms"] = speed["latency_ms"][stat]
    for stage, stats in speed["stages_ms"].items():
        line[f"{stage}_p50_ms"], line[f"{stage}_mean_ms"] = stats["p50"], stats["mean"]
    return line


def to_csv(report: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow(csv_row(row))
    for skipped in report["unavailable"]:
        writer.writerow({"variant": skipped["variant"], "backend": skipped["backend"],
                         "precision": skipped["precision"], "batch": skipped["batch"], "device": report["device"],
                         "status": "not run", "reason": skipped["reason"]})
    return buffer.getvalue()


# ---- Markdown ---------------------------------------------------------------------------------------------

def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], lines: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in lines]
    return out


def _main_table(rows: list[dict]) -> list[str]:
    header = ["variant", "mAP07 %", "mAP12 %", "Δ mAP07 vs ref", "parity", "p50 ms", "p90 ms", "p99 ms",
              "mean ms", "FPS", "FPS@p50", "MP/s", "× ref", "Pareto"]
    lines = []
    for r in rows:
        latency, parity = r["speed"]["latency_ms"], r.get("parity") or {}
        lines.append([r["label"], r["accuracy"]["map50_voc07"], r["accuracy"]["map50_voc12"], r.get("map_drop_voc07"),
                      _fmt(parity.get("detection_parity"), 3), latency["p50"], latency["p90"], latency["p99"],
                      latency["mean"], r["speed"]["fps"], r["speed"]["fps_p50"], r["speed"]["megapixels_per_s"],
                      r.get("speedup_vs_reference"), r.get("pareto")])
    return _table(header, lines)


def _stage_table(rows: list[dict]) -> list[str]:
    stages = [s for s in STAGES if any(s in r["speed"]["stages_ms"] for r in rows)]
    header = ["variant", *[f"{s} p50 / mean" for s in stages], "end-to-end p50 / mean"]
    lines = []
    for r in rows:
        cells = [r["label"]]
        for stage in stages:
            stats = r["speed"]["stages_ms"].get(stage)
            cells.append(f"{stats['p50']:.2f} / {stats['mean']:.2f}" if stats and stats["n"] else "–")
        latency = r["speed"]["latency_ms"]
        cells.append(f"{latency['p50']:.2f} / {latency['mean']:.2f}")
        lines.append(cells)
    return _table(header, lines)


def _memory_table(rows: list[dict]) -> list[str]:
    header = ["variant", "peak RSS MiB", "RSS before → after MiB", "GPU peak MiB (torch)", "model file", "size MiB"]
    lines = []
    for r in rows:
        memory = r["memory"]
        peak = _fmt(memory["peak_rss_mb"], 1) + ("" if memory["peak_is_per_variant"] else " (process)")
        lines.append([r["label"], peak, f"{_fmt(memory['rss_before_mb'], 1)} → {_fmt(memory['rss_after_mb'], 1)}",
                      memory.get("torch_peak_allocated_mb"), Path(r["artifact"]).name,
                      round(r["artifact_bytes"] / 2 ** 20, 2)])
    return _table(header, lines)


def _unavailable(report: dict) -> list[str]:
    if not report["unavailable"]:
        return ["Every requested variant ran."]
    return _table(["variant", "why it did not run here"],
                  [[u["label"], u["reason"].replace("|", "/")] for u in report["unavailable"]])


def _header(report: dict) -> list[str]:
    data, settings = report["data"], report["settings"]
    front = ", ".join(report["pareto_front"]) or "–"
    return [
        f"# cstf-edge bench: {Path(report['weights']).name} at {report['imgsz']} px on {report['device']}", "",
        f"Created {report['created']} by cstf-edge {report['cstf_edge']} in {report['seconds']} s.", "",
        f"- Weights: `{report['weights']}` (sha256 {report['weights_sha256'][:16]}…)",
        f"- Data: {data.get('images')} labelled images from `{data.get('given')}` ({data.get('source')})",
        f"- Timing: {settings['warmup']} warm-up then {settings['iters']} timed iterations per variant, "
        + (f"interleaved (every variant loaded, one iteration each per round, so load from other processes falls "
           f"on all alike; {settings.get('settle_s', 0.0)} s idle before each iteration, so the previous variant's "
           f"spinning worker threads are quiet)" if settings.get("schedule") == "interleaved"
           else "one variant after the other")
        + "; one iteration decodes and detects `batch` images",
        f"- Reference for Δ mAP, parity and speed-up: {report['reference'] or 'none (no torch-fp32 row)'}",
        f"- Pareto front (fastest last): {front}",
        f"- INT8 calibration: {settings['calibration'] or 'none'}",
        f"- Exported in this run: {_exports(report)}", "",
    ]


def _exports(report: dict) -> str:
    done = [f"{e['target']} {e['precision']} as {e['name']} ({e['seconds']} s)" for e in report.get("exports") or []]
    done += [f"peer {p['peer']} {p['precision']} as {Path(p['path']).name}" for p in report.get("peer_artifacts") or []]
    if not done:
        return f"nothing (the artifacts in `{report['options'].get('artifacts') or 'OUT/artifacts'}` were up to date)"
    return "; ".join(done)


def _notes(report: dict) -> list[str]:
    s = report["settings"]
    return [
        "## Definitions", "",
        f"- **mAP**: DOTA Task1 rules (polygon IoU > 0.5), VOC07 11-point and VOC12 area, detections at conf >= "
        f"{s['map_conf']} with rotated NMS IoU {s['map_nms_iou']}; Δ is reference minus variant, in points.",
        f"- **parity**: share of the reference's detections (score >= {s['parity_conf']}) matched one-to-one by "
        f"the variant's (same class, rotated IoU >= {s['parity_match_iou']}), over all images.",
        "- **latency**: wall time of one iteration (decode + pre + infer + post, + tiling/merge for scenes larger "
        f"than the input), at the runtime's defaults conf {s['speed_conf']}, NMS IoU {s['speed_nms_iou']}; host "
        "monotonic clock (time.perf_counter), the infer stage of PyTorch on CUDA by CUDA events. "
        "Percentiles interpolate linearly between order statistics.",
        "- **FPS**: images per second over the timed iterations (batch / mean latency; the plot and the Pareto "
        "front use it); **FPS@p50**: batch / median latency; **MP/s**: input megapixels per second; **× ref**: "
        "FPS@p50 over the reference's, robust to load spikes from other processes (the mean-based ratio is "
        "`speedup_vs_reference_mean` in the JSON).",
        "- **peak RSS**: the process's resident high-water mark (VmHWM) over loading the variant, its mAP pass "
        "and warm-up, reset before them (Linux clear_refs; '(process)' where it could not be reset); "
        "'before → after' is VmRSS around those steps (the process holds torch and the other variants too). "
        "**GPU peak**: PyTorch's max_memory_allocated over the same steps (torch on CUDA).",
        "",
    ]


def to_markdown(report: dict) -> str:
    rows = report["rows"]
    parts = _header(report)
    parts += ["## Accuracy and speed", ""] + (_main_table(rows) if rows else ["No variant ran."]) + [""]
    if rows:
        parts += ["## Latency per stage (ms per iteration, p50 / mean)", ""] + _stage_table(rows) + [""]
        parts += ["## Memory and model size", ""] + _memory_table(rows) + [""]
    parts += ["## Not run here", ""] + _unavailable(report) + [""]
    parts += ["## How each variant was run", ""] + [f"- **{r['label']}**: {r['how']}" for r in rows] + [""]
    notes = [f"- **{r['label']}**: {r['accuracy']['note']}" for r in rows if r["accuracy"].get("note")]
    parts += (["## Timed, not scored", ""] + notes + [""]) if notes else []
    parts += ["## Environment", ""] + [f"- {line}" for line in environment_lines(report["environment"])] + [""]
    parts += _notes(report)
    parts += ["![accuracy vs FPS](accuracy_vs_fps.png)", ""]
    return "\n".join(parts)
