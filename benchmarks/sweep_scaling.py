"""How a sweep scales with Ray workers: the same 8-run sweep with 1 and with 2 workers.

8 runs (random, bald, max_entropy, coreset × 2 seeds) of a small real nuclei setting, references off;
each sweep starts its own local Ray instance and writes into a fresh folder. Three layouts
(workers × torch threads per run): 1 × 1 (one core, the baseline: ideal speed-up 2.0 on 2 cores),
1 × 2 (one run at a time using both cores through PyTorch's own threads) and 2 × 1 (one run per core,
what ``activeseg sweep`` does by default). The wall time of each sweep (Ray start-up included) and the
speed-ups are written to ``benchmarks/results/sweep_scaling.md`` and ``.json``.

Usage: ``python benchmarks/sweep_scaling.py [--layouts 1x1,1x2,2x1]`` (about 12 minutes on an idle
2-core CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from activeseg.sweep import load_sweep, run_sweep

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SWEEP = """
[base]
dataset = "nuclei"
patch_size = 64
initial = 4
query = 4
rounds = 4
max_pool = 100
mc_samples = 10
steps = 60
heatmaps = 0
reference = false
[grid]
strategy = ["random", "bald", "max_entropy", "coreset"]
seed = [0, 1]
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default="1x1,1x2,2x1",
                    help="workers x threads per run to compare (comma-separated; the first is the baseline)")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="sweep_scaling_"))
    path = work / "sweep.toml"
    path.write_text(SWEEP)
    sweep = load_sweep(path)
    rows = []
    for layout in args.layouts.split(","):
        workers, threads = (int(v) for v in layout.lower().split("x"))
        out = work / f"workers_{workers}_threads_{threads}"
        t0 = time.perf_counter()
        status = run_sweep(sweep, out, workers=workers, threads=threads, quiet=True)
        seconds = time.perf_counter() - t0
        failed = [s for s in status if s["state"] != "done"]
        if failed:
            raise SystemExit(f"sweep_scaling: {len(failed)} run(s) failed: {failed[0].get('error')}")
        rows.append({"workers": workers, "threads_per_run": threads, "runs": len(status),
                     "wall_seconds": round(seconds, 1)})
        print(f"{workers} worker(s) × {threads} thread(s): {seconds:.1f} s for {len(status)} runs", flush=True)
    base = rows[0]["wall_seconds"]
    for r in rows:
        r["speedup"] = round(base / r["wall_seconds"], 2)
        r["cores_used"] = min(cores, r["workers"] * r["threads_per_run"])
    shutil.rmtree(work, ignore_errors=True)
    doc = {"cores": cores, "sweep": SWEEP.strip(), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sweep_scaling.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = "\n".join([
        "# Sweep scaling on a local Ray instance",
        "",
        f"The same 8-run sweep (4 strategies × 2 seeds on real nuclei patches, 4 rounds each) on {cores} cores; "
        "wall time includes starting Ray (`python benchmarks/sweep_scaling.py`). Speed-up against the first "
        f"row; with one core as the baseline the ideal on {cores} cores is {cores:.1f}.",
        "",
        "| workers | torch threads per run | runs | wall time | speed-up |",
        "|---|---|---|---|---|",
        *(f"| {r['workers']} | {r['threads_per_run']} | {r['runs']} | {r['wall_seconds']:.1f} s | {r['speedup']:.2f} |"
          for r in rows),
        "",
    ])
    (RESULTS / "sweep_scaling.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
