"""Batch and diversity selectors against BALD top-k and random, on the real nuclei patches.

Two parts, both written to ``benchmarks/results/batch_diversity.md`` (+ ``.json``, learning-curve PNG):

1. **Study** (``--study``): ``random``, ``bald`` (top-k), ``power_bald``, ``max_cover``, ``coreset``,
   ``density_weighted``, ``batchbald`` and ``badge`` × seeds on ``nuclei`` with a query of 8, the
   full-pool reference per seed, then the comparison report (learning curves, final Dice, annotations
   to 95% of the full-pool Dice, Wilcoxon vs random). Runs resume from their ledgers.
2. **Selection time** (always): seconds one ``select`` of k = 8 takes at pools of 1,000 and 10,000
   items, on synthetic descriptors (128-d), embeddings (32-d) and K = 20 × C = 2 probabilities (the
   shapes a 16-filter U-Net gives), median of 3.

Usage::

    python benchmarks/batch_diversity.py                 # selection timing only (a minute)
    python benchmarks/batch_diversity.py --study --seeds 3 --workers 2 --hours 2.5
    python benchmarks/batch_diversity.py --results-only --out benchmarks/results/batch_diversity_runs

The study's run folders (config, split, reference and ledger of each run) are kept in
``benchmarks/results/batch_diversity_runs``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from activeseg.acquisition import get_strategy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STRATEGIES = ["random", "bald", "power_bald", "max_cover", "coreset", "density_weighted", "batchbald", "badge"]
TIMED = ["bald", "power_bald", "max_cover", "coreset", "density_weighted", "batchbald", "badge"]


def time_selection(sizes=(1000, 10_000), k: int = 8, repeats: int = 3) -> dict:
    """Median seconds of one ``select`` per strategy and pool size (synthetic inputs, fixed seeds)."""
    out: dict = {}
    for n in sizes:
        rng = np.random.default_rng(n)
        p1 = rng.beta(0.5, 0.5, size=(n, 20))
        extras_all = {
            "descriptors": np.abs(rng.normal(size=(n, 128))),
            "labeled_descriptors": np.abs(rng.normal(size=(50, 128))),
            "embedding": rng.normal(size=(n, 32)),
            "probs": np.stack([1 - p1, p1], axis=-1),
        }
        scores = rng.random(n)
        for name in TIMED:
            strategy = get_strategy(name)
            extras = {key: extras_all[key] for key in strategy.needs}
            seconds = []
            for r in range(repeats):
                t0 = time.perf_counter()
                strategy.select(scores, k, np.random.default_rng(r), extras=extras)
                seconds.append(time.perf_counter() - t0)
            out.setdefault(name, {})[str(n)] = round(float(np.median(seconds)), 4)
            print(f"select {name:17s} N={n:6d}: {out[name][str(n)]:.4f} s", flush=True)
    return out


ABSOLUTE_TARGETS = (0.90, 0.92)  # test Dice; the 95%-of-full-pool target can be met by the initial set


def run_study(out: Path, seeds: int, workers: int, hours: float) -> None:
    from activeseg.config import load_config
    from activeseg.simulate import simulate

    cfg = load_config(None, dataset="nuclei", patch_size=64, initial=8, query=8, rounds=6, max_pool=300,
                      mc_samples=10, steps=150, heatmaps=0)
    simulate(cfg, STRATEGIES, list(range(seeds)), out, workers=workers, resume=True,
             deadline=time.time() + 3600 * hours)


def study_results(out: Path) -> dict:
    """The comparison report of the study's ledgers, plus annotations to absolute test-Dice targets."""
    from activeseg.report import build_report, find_runs
    from activeseg.report.summary import summarize
    from activeseg.report.tables import _target

    summary = build_report([out], RESULTS / "batch_diversity_report")
    runs = find_runs([out])
    summary["absolute_targets"] = {
        f"{t:.2f}": {name: _target(s) for name, s in summarize(runs, target=t)["strategies"].items()}
        for t in ABSOLUTE_TARGETS
    }
    return summary


def write(timing: dict, summary: dict | None) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"select_seconds": timing, "k": 8}
    md = ["# Batch and diversity selection", ""]
    if summary is not None:
        doc["study"] = summary
        from activeseg.report.tables import to_markdown

        md += ["## Study on real nuclei patches (query 8)", "",
               to_markdown(summary).split("\n", 2)[2], "",
               "Annotations to an absolute test Dice (mean over the seeds that reached it (reached/seeds) "
               "[each seed]):", "",
               "| strategy | " + " | ".join(f"to test Dice {t}" for t in summary["absolute_targets"]) + " |",
               "|---|" + "---|" * len(summary["absolute_targets"])]
        names = list(next(iter(summary["absolute_targets"].values())))
        md += [f"| {name} | " + " | ".join(v[name] for v in summary["absolute_targets"].values()) + " |"
               for name in names]
        md += ["", "![learning curves](batch_diversity_report/learning_curve.png)", ""]
    else:
        md += ["The nuclei study has not been run into this file yet (`--study`).", ""]
    md += ["## Seconds per selection of k = 8 (synthetic inputs, median of 3)", "",
           "| strategy | N = 1,000 | N = 10,000 |", "|---|---|---|"]
    md += [f"| {name} | {v.get('1000', '—')} | {v.get('10000', '—')} |" for name, v in timing.items()]
    (RESULTS / "batch_diversity.json").write_text(json.dumps(doc, indent=1) + "\n")
    (RESULTS / "batch_diversity.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", action="store_true", help="also run the nuclei study (long)")
    ap.add_argument("--out", default="runs/batch_diversity")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hours", type=float, default=2.5, help="start no round after this many hours")
    ap.add_argument("--results-only", action="store_true",
                    help="rebuild the study's tables from the ledgers in --out (keeps the stored timing)")
    args = ap.parse_args(argv)
    if args.study:
        run_study(Path(args.out), args.seeds, args.workers, args.hours)
    summary = study_results(Path(args.out)) if args.study or args.results_only else None
    if args.results_only:
        timing = json.loads((RESULTS / "batch_diversity.json").read_text())["select_seconds"]
    else:
        timing = time_selection()
    write(timing, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
