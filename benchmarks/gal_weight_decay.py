"""The weight decay of Gal et al.'s reference recipe, chosen as the paper says: on validation digits.

Gal et al. (2017, §5.1) optimise the weight decay on a 100-digit validation set (their Fig. 1 protocol;
their Table 2 used 5,000). The authors' Keras script fixes it at ``l2(c / N)`` with c = 3.5 on the hidden
dense layer's weights. This trains the reference CNN (``configs/gal_reference.toml``: 3×3 convolutions,
5×5 pool, 50 Keras passes, dense-only decay) on labelled sets of 20 (class-balanced, as the study starts),
100 and 1020 random MNIST digits for c ∈ {0.5, 1, 2.5, 3.5, 7} (Keras' convention: the loss gains
``c / N · Σ w²``, so ``weight_decay = 2c`` per item here), ``--draws`` draws each, and reports the error
on both validation sets and the standard 10k test set, which c each validation set picks, and the test
error at that pick. Writes ``benchmarks/results/gal_weight_decay.{md,json}`` with the host.

Usage::

    python benchmarks/gal_weight_decay.py --draws 3      # about 10 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe, host_line  # benchmarks/ is on sys.path when run as a script
from tqdm.auto import tqdm

from activeseg.config import load_config
from activeseg.data import load_dataset
from activeseg.models import build_model
from activeseg.train import evaluate, fit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GRID = (0.5, 1.0, 2.5, 3.5, 7.0)
SIZES = (20, 100, 1020)


def labelled_set(targets: np.ndarray, rest: np.ndarray, n: int, draw: int) -> np.ndarray:
    """``n`` random digits of ``rest``; 20 are drawn 2 per class, as the study's initial set."""
    rng = np.random.default_rng([n, draw])
    if n == 20:
        return np.concatenate([rng.choice(rest[targets[rest] == c], 2, replace=False) for c in range(10)])
    return rng.choice(rest, n, replace=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=3, help="random labelled sets per size")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = describe()
    cfg = load_config(ROOT / "configs" / "gal_reference.toml")
    mnist = load_dataset("mnist", quiet=True)
    order = np.random.default_rng(0).permutation(np.setdiff1d(np.arange(len(mnist.targets)), mnist.official_test))
    val100, val5000, rest = order[:100], order[100:5100], order[5100:]
    test = mnist.official_test
    rows = []
    start = time.time()
    bar = tqdm(total=len(SIZES) * len(GRID) * args.draws, desc="weight decay", unit="fit")
    for n in SIZES:
        for c in GRID:
            train_cfg = cfg.replace(weight_decay=2 * c).train_config()
            errors = {"val100": [], "val5000": [], "test": []}
            for draw in range(args.draws):
                train = labelled_set(mnist.targets, rest, n, draw)
                model = build_model("gal_cnn", seed=draw, in_channels=1, num_classes=10, image_size=28,
                                    kernel_size=cfg.gal_kernel, pool=cfg.gal_pool, hidden=cfg.gal_hidden)
                fit(model, mnist.images[train], mnist.targets[train], mnist.images[val100], mnist.targets[val100],
                    train_cfg, torch.Generator().manual_seed(draw))
                for name, idx in (("val100", val100), ("val5000", val5000), ("test", test)):
                    errors[name].append(round(evaluate(model, mnist.images[idx], mnist.targets[idx])[1]["error"], 4))
                bar.update(1)
            rows.append({"n": n, "c": c, "weight_decay_per_item": 2 * c, **errors})
    bar.close()
    picks = {}
    for n in SIZES:
        at_n = [r for r in rows if r["n"] == n]
        picks[n] = {}
        for name in ("val100", "val5000"):
            best = min(at_n, key=lambda r: (np.mean(r[name]), r["c"]))
            per_draw = [min(at_n, key=lambda r, d=d: (r[name][d], r["c"]))["c"] for d in range(args.draws)]
            picks[n][name] = {"c": best["c"], "test_error": float(np.mean(best["test"])), "per_draw_c": per_draw}
    doc = {"rows": rows, "picks": {str(k): v for k, v in picks.items()}, "draws": args.draws, "grid": GRID,
           "sizes": SIZES, "config": "configs/gal_reference.toml", "machine": machine,
           "minutes": round((time.time() - start) / 60, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gal_weight_decay.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = [
        "# Weight decay of Gal et al.'s reference recipe, chosen on validation digits",
        "",
        f"`python benchmarks/gal_weight_decay.py --draws {args.draws}` ({doc['minutes']} min, "
        f"{args.threads} thread(s));",
        f"host: {host_line(machine)}.",
        "",
        "The reference CNN and training of `configs/gal_reference.toml` with Keras `l2(c / N)` on the hidden",
        "dense layer's weights (the authors' script: c = 3.5). Error in % (mean over draws) on the 100-digit",
        "and 5,000-digit validation sets and the standard 10k test set.",
        "",
        "| labelled | c | val 100 | val 5000 | test |",
        "|---|---|---|---|---|",
        *(f"| {r['n']} | {r['c']:g} | {100 * np.mean(r['val100']):.2f} | {100 * np.mean(r['val5000']):.2f} "
          f"| {100 * np.mean(r['test']):.2f} |" for r in rows),
        "",
        "| labelled | c picked on 100 digits (per draw) | its test error % | c picked on 5,000 (per draw) "
        "| its test error % |",
        "|---|---|---|---|---|",
        *(f"| {n} | {p['val100']['c']:g} ({', '.join(f'{c:g}' for c in p['val100']['per_draw_c'])}) "
          f"| {100 * p['val100']['test_error']:.2f} "
          f"| {p['val5000']['c']:g} ({', '.join(f'{c:g}' for c in p['val5000']['per_draw_c'])}) "
          f"| {100 * p['val5000']['test_error']:.2f} |" for n, p in picks.items()),
        "",
    ]
    (RESULTS / "gal_weight_decay.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
