"""SVGD committees at the Nath re-run's scale: do they train as well as an ensemble on hundreds of patches?

``benchmarks/svgd_vs_ensemble.py`` gates SVGD at 30 binary patches; the Nath re-run (``configs/nath.toml``:
nuclei3, the steady recipe, dice + weighted cross-entropy, K = 5) trains its full-pool reference on 602.
There, SVGD with the function-space kernel reached a test Dice of 0.37 against 0.75 for MC dropout, and this
benchmark is the check that found why (the likelihood's gradient was taken w.r.t. softmax outputs clamped
away from 0, which vanishes on confidently wrong pixels) and shows the fix.

Trains, on ``--train`` patches (the run's initial set plus a seeded random draw from its pool) for
``--steps`` steps with the config's recipe, each committee from the same seed: ``ensemble`` (members
trained alone), ``independent`` (the SVGD objective with the kernel replaced by the identity), ``svgd``
(function-space kernel) and ``svgd_weight`` (weight-space kernel); prints and appends to
``benchmarks/results/svgd_at_scale.jsonl`` one row each (validation and test Dice, seconds, the last
repulsion / drive ratio, the code's git revision), then writes ``svgd_at_scale.md`` from every row.

Usage::

    python benchmarks/svgd_at_scale.py --train 200 --steps 500
    python benchmarks/svgd_at_scale.py --results-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LEDGER = RESULTS / "svgd_at_scale.jsonl"
COMMITTEES = {"ensemble": {"estimator": "ensemble"}, "independent": {"estimator": "svgd"},
              "svgd": {"estimator": "svgd", "svgd_kernel": "function"},
              "svgd_weight": {"estimator": "svgd", "svgd_kernel": "weight"}}


def revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_one(name: str, cfg, ds, split, train_idx, seed: int) -> dict:
    from activeseg.engine import Engine
    from activeseg.uncertainty import committee

    engine = Engine(cfg.replace(**COMMITTEES[name]))
    real = committee.fit_svgd
    if name == "independent":  # the same objective, the kernel replaced by the identity

        def fit_svgd(*args, **kwargs):
            return real(*args, **{**kwargs, "repulsion": False})

        committee.fit_svgd = fit_svgd
    try:
        t0 = time.perf_counter()
        model, fit = engine.fit(ds, train_idx, split.val, seed, "cpu")
        seconds = time.perf_counter() - t0
    finally:
        committee.fit_svgd = real
    _, val = engine.evaluate(model, ds, split.val, seed, "cpu")
    _, test = engine.evaluate(model, ds, split.test, seed, "cpu")
    last = fit.history[-1] if fit.history else {}
    return {"committee": name, "val_dice": round(val["dice"], 4), "test_dice": round(test["dice"], 4),
            "seconds": round(seconds, 1), "repulsion_over_drive": last.get("repulsion_over_drive")}


def write_results(host: str) -> None:
    rows = [json.loads(line) for line in LEDGER.read_text().splitlines() if line.strip()] if LEDGER.exists() else []
    host = rows[-1].get("host", host) if rows else host  # the machine the rows ran on, not the one writing
    md = ["# SVGD at the Nath re-run's scale", "",
          "Made by `python benchmarks/svgd_at_scale.py` (recipe `configs/nath.toml`: nuclei3, K = 5, the steady "
          f"recipe; 1 torch thread). Host of the last run: {host}.", "",
          "| code | labelled patches | steps | committee | val Dice | test Dice | repulsion / drive at the end | s |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "–" if r["repulsion_over_drive"] is None else f"{r['repulsion_over_drive']:.3g}"
        md.append(f"| {r['revision']} | {r['train']} | {r['steps']} | {r['committee']} | {r['val_dice']:.3f} | "
                  f"{r['test_dice']:.3f} | {ratio} | {r['seconds']:.0f} |")
    (RESULTS / "svgd_at_scale.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=200, help="labelled patches")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--committees", default=",".join(COMMITTEES))
    ap.add_argument("--config", default="configs/nath.toml")
    ap.add_argument("--results-only", action="store_true")
    args = ap.parse_args(argv)
    from machine import describe, host_line  # benchmarks/ is on sys.path when run as a script

    host = host_line(describe()) if not args.results_only else "not measured (results only)"
    if not args.results_only:
        import torch

        from activeseg.config import load_config
        from activeseg.data import load_for
        from activeseg.loop import run_split

        torch.set_num_threads(1)
        cfg = load_config(ROOT / args.config).replace(steps=args.steps, min_steps=args.steps, epochs=None)
        ds = load_for(cfg)
        split = run_split(cfg, ds)
        extra = np.random.default_rng(0).choice(split.pool, args.train - len(split.initial), replace=False)
        train_idx = np.concatenate([split.initial, extra])
        for name in args.committees.split(","):
            row = {"revision": revision(), "train": args.train, "steps": args.steps,
                   **train_one(name, cfg, ds, split, train_idx, seed=1), "host": host}
            print(json.dumps(row), flush=True)
            with open(LEDGER, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    write_results(host)
    print((RESULTS / "svgd_at_scale.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
