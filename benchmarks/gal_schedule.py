"""Which training schedule converges for the Gal et al. MNIST study, and what it costs.

Trains the paper's CNN on random labelled sets of 100, 300 and 1000 real MNIST digits (2 draws each;
the 100-digit validation set picks the checkpoint; weight decay 0.25/N) under several schedules and
reports the test error on the standard 10k set, the steps taken, the step of the best checkpoint (at the
last step = still improving) and the training seconds. The paper's random acquisition reaches 10% error
at about 275 labelled digits and 4.66% at 1020 (Gal et al. 2017, Table 1 and §5.1); a schedule that
stays well above that is not converged. Writes ``benchmarks/results/gal_schedule.md`` and ``.json``.

Usage: ``python benchmarks/gal_schedule.py`` (about 10 minutes on one core)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from activeseg.data import load_dataset
from activeseg.models import build_model
from activeseg.train import TrainConfig, evaluate, fit

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# (epochs, batch size, learning rate, most steps)
SCHEDULES = [(16, 32, 1e-3, 500), (25, 64, 2e-3, 500), (50, 32, 1e-3, 3000), (50, 128, 1e-3, 3000)]
SIZES = (100, 300, 1000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=2, help="random labelled sets per size")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    mnist = load_dataset("mnist", quiet=True)
    rng = np.random.default_rng(0)
    val = rng.choice(60000, 100, replace=False)
    rest = np.setdiff1d(np.arange(60000), val)
    test = mnist.official_test
    rows, doc = [], {"draws": args.draws, "threads": 1, "schedules": []}
    for epochs, batch, lr, cap in SCHEDULES:
        for n in SIZES:
            errors, best_steps, seconds = [], [], []
            cfg = TrainConfig(steps=cap, epochs=epochs, min_steps=50, batch_size=batch, lr=lr, weight_decay=0.25,
                              weight_decay_rule="per_item", loss="ce", eval_every=25, augment=False)
            for draw in range(args.draws):
                train = np.random.default_rng([n, draw]).choice(rest, n, replace=False)
                torch.manual_seed(draw)
                model = build_model("gal_cnn", in_channels=1, num_classes=10, image_size=28)
                t0 = time.perf_counter()
                res = fit(model, mnist.images[train], mnist.targets[train], mnist.images[val], mnist.targets[val],
                          cfg, torch.Generator().manual_seed(draw))
                seconds.append(time.perf_counter() - t0)
                errors.append(evaluate(model, mnist.images[test], mnist.targets[test])[1]["error"])
                best_steps.append(res.best_step)
            entry = {"epochs": epochs, "batch_size": batch, "lr": lr, "max_steps": cap, "n": n,
                     "steps": cfg.steps_for(n), "test_error": [round(e, 4) for e in errors],
                     "best_step": best_steps, "train_seconds": [round(s, 1) for s in seconds]}
            doc["schedules"].append(entry)
            rows.append(f"| {epochs} | {batch} | {lr:g} | {n} | {entry['steps']} | {100 * np.mean(errors):.2f} "
                        f"({', '.join(f'{100 * e:.2f}' for e in errors)}) | {best_steps} | {np.mean(seconds):.1f} |")
            print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gal_schedule.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = "\n".join([
        "# Training schedules for the Gal et al. CNN on random MNIST subsets",
        "",
        f"Random labelled sets ({args.draws} draws per size), 100 validation digits for the checkpoint, test",
        "error on the standard 10k set, one thread (`python benchmarks/gal_schedule.py`). Paper, random",
        "acquisition: 10% error at about 275 labelled digits, 4.66% at 1020.",
        "",
        "| epochs | batch | lr | labelled | steps | test error % (each draw) | best step | train s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    (RESULTS / "gal_schedule.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
