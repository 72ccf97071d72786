"""``precision="auto"`` on a CPU, by measurement: bfloat16 only where it is actually faster on this host.

A CPU that reports native bf16 (AVX512-BF16 or AMX, :func:`~activeseg.uncertainty.estimators.cpu_has_bf16`)
is probed once: the same 3×3 convolution (32 → 32 channels, 8 images of 64 × 64, the shape of a U-Net
level) in float32 and in bfloat16, the best of ``PROBE_REPS`` timings each, on one thread; bf16 is chosen
when it is at least ``PROBE_MARGIN`` times faster. One thread because the ratio is a property of the core's
instructions, and a probe on several threads while another process holds a core waits on that core for
both dtypes alike (on the 2-core AMD EPYC this was written on, a 2-thread probe run while a study held the
other core measured 1.00× and kept float32; the 1-thread probe measures 1.65× there). A CPU without
native bf16 gets float32 without a probe (emulated bf16 ran under 1 GFLOP/s on such hosts). The decision
is logged (logger ``activeseg``) and kept in ``<data dir>/precision.json`` per CPU model and torch version,
so later runs on the same machine reuse it rather than re-measuring: a noisy second probe must not change
what a resumed run computes.
"""

from __future__ import annotations

import json
import logging
import platform
import time

import torch
import torch.nn.functional as F

__all__ = ["PROBE_MARGIN", "auto_cpu_dtype", "probe_bf16_speedup"]

PROBE_MARGIN = 1.25
PROBE_REPS = 5
_DECIDED: dict[str, str] = {}
log = logging.getLogger("activeseg")


def _host_key() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} | torch {torch.__version__} | probed on 1 thread"


def probe_bf16_speedup(reps: int = PROBE_REPS) -> dict:
    """Seconds of the probe convolution in float32 and bfloat16 (best of ``reps``) and their ratio."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 32, 64, 64, generator=gen)
    w = torch.rand(32, 32, 3, 3, generator=gen)
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            out[f"{name}_s"] = _best_conv_seconds(x.to(dtype), w.to(dtype), reps)
    finally:
        torch.set_num_threads(threads)
    out["speedup"] = out["float32_s"] / max(out["bfloat16_s"], 1e-12)
    return out


def _best_conv_seconds(xd: torch.Tensor, wd: torch.Tensor, reps: int) -> float:
    """The best of ``reps`` timings of the probe convolution, after one warm-up (kernels chosen, caches filled)."""
    with torch.inference_mode():
        F.conv2d(xd, wd, padding=1)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            F.conv2d(xd, wd, padding=1)
            best = min(best, time.perf_counter() - t0)
    return best


def auto_cpu_dtype() -> torch.dtype:
    """float32 or bfloat16 for ``precision="auto"`` on this CPU (see the module docstring)."""
    from activeseg.data.fetch import data_dir
    from activeseg.uncertainty.estimators import cpu_has_bf16

    key = _host_key()
    if key not in _DECIDED:
        path = data_dir() / "precision.json"
        saved = {}
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        if key in saved:
            _DECIDED[key] = saved[key]["dtype"]
        elif not cpu_has_bf16():
            _DECIDED[key] = "float32"
            log.info("activeseg: scoring in float32 (this CPU has no native bfloat16)")
        else:
            probe = probe_bf16_speedup()
            _DECIDED[key] = "bfloat16" if probe["speedup"] >= PROBE_MARGIN else "float32"
            log.info("activeseg: scoring in %s: a bf16 convolution ran %.2f× as fast as float32 on %s (chosen "
                     "when ≥ %.2f×)", _DECIDED[key], probe["speedup"], key, PROBE_MARGIN)
            saved[key] = {"dtype": _DECIDED[key], **{k: round(v, 6) for k, v in probe.items()}}
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(saved, indent=1))
                tmp.replace(path)
            except OSError:
                pass  # a read-only cache: decide again next process
    return torch.bfloat16 if _DECIDED[key] == "bfloat16" else torch.float32
