"""The machine a bench ran on: CPU model and the instruction-set flags that decide INT8/FP16 speed, memory,
GPU (name, driver, CUDA), and the versions of every library on the inference path."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from cstf_edge import __version__

# Flags that change which kernels ONNX Runtime, oneDNN and PyTorch pick on x86 (and the Arm equivalents).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
             "asimd", "asimddp", "fphp", "asimdhp", "sve", "i8mm", "bf16")


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """Model name (with the x86 family and model numbers, which tell CPU generations apart where a virtual
    machine names only the brand), logical CPUs (and those this process may use) and which of
    :data:`CPU_FLAGS` are present."""
    model, flags, numbers = platform.processor() or platform.machine(), set(), {}
    try:
        with open(path) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
                elif key in ("cpu family", "model") and value.strip():
                    numbers.setdefault(key, value.strip())
    except OSError:
        pass
    if "cpu family" in numbers:
        model = f"{model} (family {numbers['cpu family']}, model {numbers.get('model', '?')})"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "machine": platform.machine(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "flags": {flag: flag in flags for flag in CPU_FLAGS if flags} if flags else {},
            "memory_gib": _memory_gib()}


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024.0 ** 2, 1)
    except OSError:
        pass
    return None


def _module_version(module: str) -> str | None:
    """``module.__version__`` when it imports, else None (the import error is not an error here)."""
    try:
        imported = __import__(module)
    except Exception:  # noqa: BLE001
        return None
    return str(getattr(imported, "__version__", None) or _dist_version(module))


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _load(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "unknown"


def nvidia_smi() -> list[dict]:
    """One entry per GPU from ``nvidia-smi`` (name, driver, memory); empty where it is absent."""
    query = "name,driver_version,memory.total,compute_cap"
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    rows = []
    for line in done.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            rows.append({"name": parts[0], "driver": parts[1], "memory_mib": parts[2], "compute_capability": parts[3]})
    return rows


def torch_info() -> dict | None:
    """torch version, its CUDA/cuDNN, threads and the GPU it sees; None when torch is absent."""
    try:
        import torch
    except Exception:  # noqa: BLE001
        return None
    info = {"version": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return info


def onnxruntime_info() -> dict | None:
    try:
        import onnxruntime
    except Exception:  # noqa: BLE001
        return None
    return {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes competing for the CPUs), None where unknown."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment() -> dict:
    """Everything above, as one JSON-able block (``load_average_start``: when it was taken)."""
    return {
        "cstf_edge": __version__,
        "load_average_start": load_average(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_info(),
        "gpus": nvidia_smi(),
        "torch": torch_info(),
        "onnxruntime": onnxruntime_info(),
        "tensorrt": _module_version("tensorrt"),
        "numpy": _module_version("numpy"),
        "opencv": _module_version("cv2"),
        "onnx": _module_version("onnx"),
        "cuda_python": _dist_version("cuda-python"),
    }


def environment_lines(env: dict) -> list[str]:
    """The block as short ``key: value`` lines for the Markdown report."""
    cpu = env["cpu"]
    present = [flag for flag, on in cpu.get("flags", {}).items() if on]
    torch = env.get("torch") or {}
    ort = env.get("onnxruntime") or {}
    gpus = "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory_mib']} MiB, sm {g['compute_capability']})"
                     for g in env.get("gpus", [])) or "none found (nvidia-smi absent or no device)"
    return [
        f"CPU: {cpu['model']} ({cpu['machine']}), {cpu['usable_cpus']} of {cpu['logical_cpus']} logical CPUs usable, "
        f"{cpu.get('memory_gib')} GiB RAM",
        f"CPU flags: {', '.join(present) or 'unknown'}",
        f"GPU: {gpus}",
        f"PyTorch: {torch.get('version', 'not installed')} (CUDA {torch.get('cuda')}, {torch.get('threads')} threads"
        + (f", {torch['gpu']}" if torch.get("gpu") else "") + ")",
        f"ONNX Runtime: {ort.get('version', 'not installed')} ({', '.join(ort.get('providers', []))})",
        f"TensorRT: {env.get('tensorrt') or 'not installed'}; cuda-python: {env.get('cuda_python') or 'not installed'}",
        f"Load average (1/5/15 min, other processes included) at start: {_load(env.get('load_average_start'))}; "
        f"at end: {_load(env.get('load_average_end'))} — above the CPU count, timings are inflated by other work",
        f"numpy {env.get('numpy')}, OpenCV {env.get('opencv')}, onnx {env.get('onnx')}, Python {env['python']}, "
        f"{env['os']}, cstf-edge {env['cstf_edge']}",
    ]
