"""What a benchmark's results file says about the machine it ran on: the CPU model, the instruction-set
flags that change float kernels, and the measured ``torch.mm`` peaks in float32 and bfloat16."""

from __future__ import annotations

import platform
import time
from pathlib import Path


def cpu_features() -> dict:
    """The CPU model and the instruction-set flags that change float kernels (bf16, AVX-512, AVX2)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    return {"model": info.get("model name", platform.processor()), "flags": [f for f in wanted if f in flags]}


def matmul_peak(n: int = 4096, repeats: int = 5) -> dict:
    """GFLOP/s of the best of ``repeats`` ``n``² ``torch.mm`` in float32 and bfloat16, with this process's
    torch threads."""
    import torch

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        out[str(dtype).removeprefix("torch.")] = round(2 * n**3 / best / 1e9, 1)
    return out


def describe() -> dict:
    """The machine block of a results file: CPU, flags, torch threads and matmul peaks."""
    import torch

    return {**cpu_features(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "matmul_gflops": matmul_peak(1024, 3), "matmul_size": 1024}


def host_line(machine: dict) -> str:
    """One line naming the host of ``describe()``: CPU, its flags and the measured ``torch.mm`` peaks."""
    peaks = ", ".join(f"{k} {v}" for k, v in machine.get("matmul_gflops", {}).items())
    return (f"{machine.get('model')} (flags: {', '.join(machine.get('flags', [])) or 'none'}), "
            f"{machine.get('threads')} torch thread(s), `torch.mm` peak GFLOP/s: {peaks or 'not measured'}")


def saved_invocations(saved: dict) -> list[dict]:
    """The invocation records of a study's saved results, each with its ``host``: a file written before each
    invocation named its host had one host line (or machine block) for all of them."""
    earlier = saved.get("host") or (host_line(saved["machine"]) if saved.get("machine") else None)
    invocations = saved.get("invocations", [])
    for inv in invocations:
        inv.setdefault("host", earlier)
    return invocations


def hosts_line(invocations: list[dict]) -> str | None:
    """The hosts of a resumable study's invocations (each record's ``host``, a :func:`host_line`), numbered
    from 1, with consecutive invocations on the same line merged: a study resumed over several sessions may
    have run on several machines, and its timings mix them. None when no invocation names its host."""
    if not any(inv.get("host") for inv in invocations):
        return None
    groups: list[list] = []  # [first, last, line]
    for i, inv in enumerate(invocations, 1):
        line = inv.get("host") or "not recorded (before the host line)"
        if groups and groups[-1][2] == line:
            groups[-1][1] = i
        else:
            groups.append([i, i, line])
    if len(groups) == 1:
        return groups[0][2]
    return "; ".join(f"invocation {a}: {line}" if a == b else f"invocations {a}–{b}: {line}" for a, b, line in groups)
