"""Reproduce Table 1 of Gal, Islam & Ghahramani (2017) on real MNIST: acquisitions to 10% / 5% test error.

Runs BALD, Variation Ratios, Max Entropy, Mean STD and Random × 3 seeds with the §5.1 protocol
(``configs/gal_mnist.toml``), one process per core, and writes

* ``benchmarks/results/gal_mnist.md``: the table next to the paper's numbers, plus the test error
  after 1000 acquired images and the time spent;
* ``benchmarks/results/gal_mnist.json``: per-seed ``to_10pct``, ``to_5pct`` (acquired images, ``null``
  if never reached) and ``error_at_1000`` (percent), keyed by strategy;
* ``benchmarks/results/gal_mnist.png``: test accuracy against acquired images (mean, 90% band).

The whole study does not fit in one 3-hour invocation on 2 cores, so it runs in stages (every run to
round 26, then 41, 61, 81, 101) and stops starting rounds at ``--hours``; the ledgers live in
``--out`` (committed, without the per-run split files, which are re-derived) and the next invocation
resumes them. Results files are rewritten after each stage from whatever the ledgers hold; cells of
runs that have not finished say so.

``--recipe reference`` runs the authors' Keras recipe instead (``configs/gal_reference.toml``: 3×3
convolutions, a 5×5 pool, weight decay on the dense layer only, 50 Keras epochs, T = 100) for BALD, Var
Ratios, Max Entropy and Random, into ``gal_reference_runs`` and ``gal_reference.{md,json,png}``.

Crossings are counted two ways: each seed's first crossing, averaged (ours so far), and the first crossing
of the mean curve over seeds (how the paper's averaged curves were read).

Usage::

    python benchmarks/gal_mnist.py --hours 2.5          # run (or resume), then write the results
    python benchmarks/gal_mnist.py --results-only       # rewrite the results from the ledgers
    python benchmarks/gal_mnist.py --recipe reference --hours 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from activeseg.config import load_config
from activeseg.metrics import annotations_to_target
from activeseg.report.curves import plot_learning_curves
from activeseg.report.runs import find_runs, group_by_strategy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STRATEGIES = ["bald", "variation_ratio", "max_entropy", "mean_std", "random"]
NAMES = {"bald": "BALD", "variation_ratio": "Var Ratios", "max_entropy": "Max Entropy", "mean_std": "Mean STD",
         "random": "Random"}
# Gal et al. 2017, Table 1 (acquired images to reach the error) and §5.1 (test error after 1000).
PAPER = {
    "to_10pct": {"bald": 145, "variation_ratio": 120, "max_entropy": 165, "mean_std": 230, "random": 255},
    "to_5pct": {"bald": 335, "variation_ratio": 295, "max_entropy": 355, "mean_std": 695, "random": 835},
    "error_at_1000": {"bald": 1.80, "variation_ratio": 1.64, "max_entropy": 1.74, "mean_std": None, "random": 4.66},
}
STAGES = (26, 41, 61, 81, 101)
RECIPES = {  # config, runs folder, results name, strategies
    "ours": ("gal_mnist.toml", "gal_mnist_runs", "gal_mnist", STRATEGIES),
    "reference": ("gal_reference.toml", "gal_reference_runs", "gal_reference",
                  ["bald", "variation_ratio", "max_entropy", "random"]),
}


PROTOCOL = {
    "ours": ["Protocol (`configs/gal_mnist.toml`): 20 class-balanced initial digits, 100 validation digits, the",
             "standard 10k test set, the rest of the 60k training digits as the pool; 10 acquisitions per round;",
             "retrained from scratch each round (Adam 2e-3, batch 64, 25 epochs and at least 50 steps, the final",
             "weights, weight decay 0.25/N); a random 2000 of the pool scored each round with",
             "K = 20 consistent MC-dropout masks; test error with dropout off (weight scaling), as the paper did."],
    "reference": ["Protocol (`configs/gal_reference.toml`, the authors' Keras script): the same data, initial set,",
                  "pool subset of 2000 and 10 acquisitions per round as `gal_mnist.toml`; conv 32 3×3 – conv 32 3×3 –",
                  "max-pool 5×5 – dropout 0.25 – dense 128 – dropout 0.5 – dense 10; Adam 1e-3, batches of 128, 50",
                  "shuffled passes, the final weights; Keras l2(3.5/N) on the dense layer's weights only (7/N · w",
                  "in the gradient); T = 100 MC-dropout masks drawn per item; float32; test error with dropout off."],
}


def seed_results(records: list[dict], initial: int, rounds: int) -> dict:
    """Acquisitions to 10% and 5% test error and the error after 1000 acquisitions, for one run.

    Acquired images = labelled images minus the initial set. A target not reached is ``None`` when
    the run finished all its rounds, and ``"pending"`` while rounds are still to run.
    """
    acquired = [rec["n_annotations"] - initial for rec in records]
    errors = [rec["test"]["error"] for rec in records]
    done = len(records) >= rounds
    out = {"rounds_done": len(records), "complete": done}
    for key, target in (("to_10pct", 0.10), ("to_5pct", 0.05)):
        n = annotations_to_target(acquired, errors, target, higher_is_better=False)
        out[key] = n if (n is not None or done) else "pending"
    at_1000 = [e for a, e in zip(acquired, errors, strict=True) if a == 1000]
    out["error_at_1000"] = round(100 * at_1000[0], 2) if at_1000 else (None if done else "pending")
    return out


def mean_curve_crossings(runs: list, initial: int) -> dict:
    """Acquisitions at which the mean test-error curve over the runs (rounds every run has finished)
    first reaches 10% and 5%: how averaged curves such as the paper's figures are read."""
    done = min((len(r.records) for r in runs), default=0)
    if not runs or done == 0:
        return {"to_10pct": None, "to_5pct": None, "rounds": 0}
    acquired = [rec["n_annotations"] - initial for rec in runs[0].records[:done]]
    mean = np.mean([[rec["test"]["error"] for rec in r.records[:done]] for r in runs], axis=0)
    return {key: annotations_to_target(acquired, mean.tolist(), target, higher_is_better=False)
            for key, target in (("to_10pct", 0.10), ("to_5pct", 0.05))} | {"rounds": done}


def collect(out: Path, strategies: list[str]) -> dict:
    """Per-strategy, per-seed results of every run under ``out``, and the mean curve's crossings."""
    runs = find_runs(out)
    table: dict = {"to_10pct": {}, "to_5pct": {}, "error_at_1000": {}, "rounds_done": {}, "seconds": {},
                   "mean_curve": {}}
    groups = group_by_strategy(runs)
    for strategy in strategies:
        group = sorted(groups.get(strategy, []), key=lambda r: r.seed)
        for key in table:
            table[key][strategy] = []
        table["mean_curve"][strategy] = mean_curve_crossings(group, 20)
        for run in group:
            res = seed_results(run.records, int(run.config["initial"]), int(run.config["rounds"]))
            for key in ("to_10pct", "to_5pct", "error_at_1000", "rounds_done"):
                table[key][strategy].append(res[key])
            table["seconds"][strategy].append(round(sum(sum(r["seconds"].values()) for r in run.records), 1))
    return table


def pick_balance(out: Path, strategies: list[str], firsts=(100, 300)) -> dict:
    """Per strategy: the digits of its first ``n`` acquisitions (every seed pooled), as counts of 0..9 and the
    histogram's entropy over log 10 (1: balanced), for each ``n`` every seed has acquired."""
    from activeseg.data import load_dataset

    labels = np.asarray(load_dataset("mnist", quiet=True).targets)
    groups = group_by_strategy(find_runs(out))
    doc: dict = {}
    for strategy in strategies:
        picks = [[s["dataset_idx"] for rec in r.records for s in rec["selected"]] for r in groups.get(strategy, [])]
        for n in firsts:
            if not picks or min(len(p) for p in picks) < n:
                continue
            counts = np.bincount(labels[np.concatenate([p[:n] for p in picks])], minlength=10)
            share = counts / counts.sum()
            entropy = float(-(share[share > 0] * np.log(share[share > 0])).sum() / np.log(10))
            doc.setdefault(strategy, {})[str(n)] = {"counts": counts.tolist(), "entropy": round(entropy, 4)}
    return doc


def _cell(values: list, digits: int = 0) -> str:
    """``mean ± sd`` over the seeds with a number; never-reached and pending seeds are spelled out."""
    nums = [v for v in values if isinstance(v, int | float)]
    missing = sum(v is None for v in values)
    pending = sum(v == "pending" for v in values)
    if not values:
        return "not run"
    text = "—"
    if nums:
        mean, sd = float(np.mean(nums)), float(np.std(nums, ddof=1)) if len(nums) > 1 else 0.0
        text = f"{mean:.{digits}f} ± {sd:.{digits}f}" if len(nums) > 1 else f"{mean:.{digits}f}"
        if len(nums) < len(values):
            text += f" ({len(nums)}/{len(values)} seeds)"
    if missing:
        text += f"; {missing} never reached"
    if pending:
        text += f"; {pending} pending"
    return text


def write_results(out: Path, invocations: list[dict], recipe: str = "ours", written_on: str | None = None) -> dict:
    """The results files from the ledgers; each invocation's ``host`` names the machine its runs ran on,
    ``written_on`` the one writing the file (for runs whose host was not recorded)."""
    from machine import hosts_line

    host = hosts_line(invocations)
    config, _, name, strategies = RECIPES[recipe]
    table = collect(out, strategies)
    doc = {
        **{k: table[k] for k in ("to_10pct", "to_5pct", "error_at_1000")},
        "mean_curve_crossings": table["mean_curve"],
        "units": {"to_10pct": "acquired images (initial 20 not counted)", "to_5pct": "acquired images",
                  "error_at_1000": "test error in percent after 1000 acquired images"},
        "rounds_done": table["rounds_done"],
        "compute_seconds_per_run": table["seconds"],
        "paper": PAPER,
        "config": json.loads(load_config(ROOT / "configs" / config).to_json()),
        "invocations": invocations,
    }
    balance = pick_balance(out, strategies)
    doc["pick_balance"] = balance
    if host:
        doc["hosts"] = host
    if written_on:
        doc["written_on"] = written_on
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    runs = find_runs(out)
    if runs:
        plot_learning_curves(runs, RESULTS / f"{name}.png", metric="accuracy")
    rows, mean_rows = [], []
    for s in strategies:
        rows.append(
            f"| {NAMES[s]} | {PAPER['to_10pct'][s]} | {_cell(table['to_10pct'][s])} | {PAPER['to_5pct'][s]} "
            f"| {_cell(table['to_5pct'][s])} | {PAPER['error_at_1000'][s] or '—'} "
            f"| {_cell(table['error_at_1000'][s], 2)} |"
        )
        crossing = table["mean_curve"][s]
        cells = [str(crossing[k]) if crossing[k] is not None else f"not within {max(crossing['rounds'] - 1, 0) * 10}"
                 for k in ("to_10pct", "to_5pct")]
        mean_rows.append(f"| {NAMES[s]} | {cells[0]} | {cells[1]} |")
    hours = sum(inv["hours"] for inv in invocations)
    core_hours = sum(sum(v) for v in table["seconds"].values()) / 3600
    md = [
        "# Gal et al. (2017) Table 1 on real MNIST",
        "",
        "Acquired images (beyond the 20 initial ones) until the test error on the standard 10k test set first",
        "reaches 10% and 5%, and the test error after 1000 acquired images; mean ± sd over seeds.",
        "",
        "| strategy | to 10% error (paper) | ours | to 5% error (paper) | ours | error % at 1000 (paper) | ours |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Read off the mean curve over the seeds instead (rounds every seed has finished), as averaged curves",
        "such as the paper's are read:",
        "",
        "| strategy | to 10% error | to 5% error |",
        "|---|---|---|",
        *mean_rows,
        "",
        "Digits of the first acquisitions (all seeds pooled; entropy of the histogram over log 10, 1 = balanced):",
        "",
        "| strategy | first | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | balance |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {NAMES[s]} | {n} | " + " | ".join(map(str, v["counts"])) + f" | {v['entropy']:.3f} |"
          for s in strategies for n, v in balance.get(s, {}).items()],
        "",
        "Mean STD: the paper's reference script takes `np.std` of a one-element array, so every score is 0 and",
        "its Mean STD rows are random acquisition; ours computes the paper's definition.",
        "",
        "Rounds finished per run (of 101): "
        + ", ".join(f"{NAMES[s]} {table['rounds_done'][s]}" for s in strategies) + ".",
        "",
        f"Wall time: {hours:.2f} h over {len(invocations)} invocation(s) of `python benchmarks/gal_mnist.py"
        f"{' --recipe reference' if recipe == 'reference' else ''}`; {core_hours:.2f} core-hours of rounds "
        "(training, evaluation, scoring).",
        f"Hosts of the runs: {host}." if host else
        f"Host of the runs: not recorded (they predate the host line); this file was written on {written_on}.",
        "",
        *PROTOCOL[recipe],
        "",
        f"![test accuracy vs annotations]({name}.png)",
        "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="ours",
                    help="ours (configs/gal_mnist.toml) or reference (the authors' Keras recipe)")
    ap.add_argument("--out", default=None, help="folder of the runs' ledgers (default: the recipe's)")
    ap.add_argument("--hours", type=float, default=2.5, help="start no round after this many hours")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="parallel runs (one per core)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    ap.add_argument("--results-only", action="store_true", help="only rewrite the results from the ledgers")
    args = ap.parse_args(argv)
    config, runs_dir, name, strategies = RECIPES[args.recipe]
    out = Path(args.out or RESULTS / runs_dir)
    previous = RESULTS / f"{name}.json"
    saved = json.loads(previous.read_text()) if previous.exists() else {}
    from machine import describe, host_line, hosts_line, saved_invocations  # benchmarks/ is on sys.path

    invocations = saved_invocations(saved)

    written_on = None
    if not args.results_only:
        from activeseg.simulate import set_threads, simulate

        if args.threads:
            set_threads(args.threads)  # before describe(): the host line names and measures the runs' threads
        cfg = load_config(ROOT / "configs" / config)
        start = time.time()
        deadline = start + 3600 * args.hours
        invocations.append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "hours": 0.0,
                            "host": host_line(describe())})
        for stage in STAGES:
            if time.time() >= deadline:
                break
            print(f"{name}: every run up to round {stage}", flush=True)
            results = simulate(cfg, strategies, list(range(args.seeds)), out, workers=args.workers, resume=True,
                               quiet=False, until_round=stage, deadline=deadline, threads=args.threads)
            invocations[-1]["hours"] = round((time.time() - start) / 3600, 3)
            write_results(out, invocations, args.recipe, written_on)
            failed = [r for r in results if r[2]]
            if failed:
                print(f"{name}: {len(failed)} run(s) failed; see the errors above", flush=True)
                return 1
    if hosts_line(invocations) is None:
        written_on = host_line(describe())
    doc = write_results(out, invocations, args.recipe, written_on)
    print((RESULTS / f"{name}.md").read_text())
    return 0 if all(all(d == 101 for d in v) for v in doc["rounds_done"].values()) else 2


if __name__ == "__main__":
    raise SystemExit(main())
