"""Scoring one whole MRI volume by sliding windows: time and peak memory (issue 20's bound: a 181×217×181
volume with K = 5 under 4 GiB RSS).

Colin27 (``hippocampus``'s source volume, 181 × 217 × 181) is scored by a 3-D U-Net with MC dropout, K
passes per window, windows of ``--window``³ at ``--stride`` (Nath et al.: 48 and 36), Gaussian-weighted
(:func:`activeseg.scoring.sliding_maps`): each window's K samples are reduced to its mean and BALD map where
they are made, so only the accumulators and one batch of windows' samples are ever held. Runs in a child
process so its peak RSS (``ru_maxrss``) is the scoring's own; writes ``benchmarks/results/volume_scoring.json``
and ``.md`` with the host line.

Usage::

    python benchmarks/volume_scoring.py --k 5 --window 48 --stride 36
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def child(k: int, window: int, stride: int, batch: int, filters: int) -> dict:
    import resource

    import numpy as np
    import torch

    from activeseg.data.brain import BRAIN_FILES
    from activeseg.data.fetch import fetch_files
    from activeseg.data.volumes import read_volume
    from activeseg.models import build_model
    from activeseg.scoring import sliding_maps
    from activeseg.uncertainty.estimators import MCDropout

    torch.set_num_threads(1)
    vol = read_volume(fetch_files(BRAIN_FILES, "brain", quiet=True)["t1"]).data / 255.0
    net = build_model("unet", seed=0, in_channels=1, num_classes=4, depth=3, base_filters=filters, dropout=0.2,
                      spatial_dims=3).eval()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    mean, umap = sliding_maps(net, vol.astype(np.float32), "bald", MCDropout(k=k, batch_size=batch, seed=0),
                              (window,) * 3, (stride,) * 3, batch=batch)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"shape": list(vol.shape[1:]), "k": k, "window": window, "stride": stride, "batch": batch,
            "filters": filters, "seconds": round(seconds, 1), "peak_rss_mib": round(peak / 1024, 1),
            "rss_before_scoring_mib": round(before / 1024, 1), "map_max": float(umap.max()),
            "mean_sums_to_one": bool(np.allclose(mean.sum(0), 1.0, atol=1e-4))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--window", type=int, default=48)
    ap.add_argument("--stride", type=int, default=36)
    ap.add_argument("--batch", type=int, default=1, help="windows per forward pass")
    ap.add_argument("--filters", type=int, default=8, help="the U-Net's first-level filters")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.k, args.window, args.stride, args.batch, args.filters)))
        return 0
    from machine import describe, host_line  # benchmarks/ is on sys.path when run as a script

    host = host_line(describe())
    cmd = [sys.executable, __file__, "--child", "--k", str(args.k), "--window", str(args.window), "--stride",
           str(args.stride), "--batch", str(args.batch), "--filters", str(args.filters)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    row = {**json.loads(out.stdout.strip().splitlines()[-1]), "host": host}
    (RESULTS / "volume_scoring.json").write_text(json.dumps(row, indent=1) + "\n")
    md = ["# Scoring one MRI volume by sliding windows", "",
          f"Made by `python benchmarks/volume_scoring.py --k {args.k} --window {args.window} --stride {args.stride}`: "
          f"Colin27 ({' × '.join(map(str, row['shape']))} voxels), a depth-3 3-D U-Net ({args.filters} filters), "
          f"MC dropout K = {args.k}, BALD map, Gaussian-weighted windows, 1 torch thread. Host: {host}.", "",
          "| measure | value |", "|---|---|",
          f"| time | {row['seconds']} s |",
          f"| peak RSS of the scoring process | {row['peak_rss_mib']} MiB (issue 20 asks < 4096) |",
          f"| RSS before scoring (volume and model loaded) | {row['rss_before_scoring_mib']} MiB |",
          f"| mean probabilities sum to 1 at every voxel | {row['mean_sums_to_one']} |", ""]
    (RESULTS / "volume_scoring.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
