"""A segmentation benchmark on which strategies can be told apart: ``nuclei3`` with a domain shift.

Stages (each resumable from its ledger under ``benchmarks/results/``, committed after every stage):

1. ``calibrate``: random labelled sets of 2, 4, 8, ..., 128 patches and the full pool, ``--seeds`` seeds
   each (a new random set per seed, nested across sizes), trained with the study's recipe; the full pool
   with the reference budget. The setting has headroom when random at 4 patches is at most 85% of the
   full-pool ceiling and first reaches 95% of it beyond 24 patches; the stage says whether it has.
   Ledger: ``seg_benchmark_calibration.jsonl``.
2. ``study``: the strategies × seeds, the initial set drawn from one source (``--initial-source``) while
   the pool mixes all three (the share of picks per source is reported), ``--initial`` patches and
   ``--query-schedule`` per round; run folders under ``seg_benchmark_runs/``; ``--seeds`` may grow in a
   later call (same seed = same initial set and split for every strategy).
3. ``results`` (after every stage): ``seg_benchmark.md`` / ``.json`` / ``.png`` and the report in
   ``seg_benchmark_report/`` (seed-level paired tests, bootstrap CIs, Holm, random vs random, power).

Usage::

    python benchmarks/seg_benchmark.py calibrate --seeds 5 --hours 1
    python benchmarks/seg_benchmark.py study --seeds 5 --workers 2 --hours 2
    python benchmarks/seg_benchmark.py results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from machine import describe  # benchmarks/ is on sys.path when run as a script

from activeseg.config import SimConfig, load_config, unread_settings
from activeseg.data import load_for, make_split
from activeseg.engine import Engine
from activeseg.simulate import set_threads

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CALIBRATION = RESULTS / "seg_benchmark_calibration.jsonl"
RUNS = RESULTS / "seg_benchmark_runs"
CONFIG = ROOT / "configs" / "seg_benchmark.toml"
STRATEGIES = ["random", "max_entropy", "bald", "std_edt", "power_bald", "batchbald", "max_cover", "coreset"]
BUDGETS = [2, 4, 8, 16, 32, 64, 128]
LOOP_ONLY = {"strategy", "seed", "rounds", "query", "query_schedule", "initial", "initial_source",
             "balanced_initial", "score_subset", "no_delete", "warm_start", "mc_samples", "consistent_masks",
             "score_precision", "compile_scoring", "score_batch_size", "reduction", "sampling", "temperature",
             "candidates", "beta", "alpha", "mi_bins", "strategy_options", "heatmaps", "save_per_item", "device"}
"""Settings that change how a round picks, not how a labelled set is trained and scored: left out of a
calibration row's recipe, so that a study setting can change them without invalidating the calibration."""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def recipe_of(cfg: SimConfig) -> dict:
    """What a calibration fit depends on: data, split, model and training settings (JSON-ready; the SVGD
    settings only when the estimator is ``svgd``)."""
    unread = set(unread_settings(cfg.estimator))
    return {k: v for k, v in sorted(dataclasses.asdict(cfg).items()) if k not in LOOP_ONLY | unread}


def same_recipe(saved: dict, recipe: dict) -> bool:
    """A ledger row's recipe equals ``recipe``, up to the settings its estimator does not read (rows
    written before they were left out of the recipe carry them)."""
    unread = set(unread_settings(saved.get("estimator", "mc_dropout")))
    return {k: v for k, v in saved.items() if k not in unread} == recipe


def calibration_rows(cfg: SimConfig) -> tuple[list[dict], int]:
    """The ledger's rows trained with ``cfg``'s recipe (the full pool with its reference recipe), and
    how many rows were left out because they were trained otherwise."""
    rows, stale = [], 0
    for r in read_jsonl(CALIBRATION):
        if same_recipe(r.get("recipe", {}), recipe_of(cfg.reference_config(r["n"]) if r["budget"] == "full" else cfg)):
            rows.append(r)
        else:
            stale += 1
    return rows, stale


# ------------------------------------------------------------------------------------------ calibrate
def calibrate(cfg: SimConfig, seeds: int, deadline: float | None) -> None:
    """Random sets of every budget and the full pool, ``seeds`` each, appended to the calibration ledger."""
    from tqdm.auto import tqdm

    dataset = load_for(cfg)
    split = make_split(dataset, 1, cfg.split_seed, 0, max_pool=cfg.max_pool)
    pool = np.union1d(split.initial, split.pool)
    rows, stale = calibration_rows(cfg)
    if stale:
        print(f"calibrate: {stale} ledger rows were trained with another recipe; they are kept in the ledger "
              "but neither reused nor summarised")
    done = {(r["budget"], r["seed"]) for r in rows}
    # the cheap budgets of every seed first, then the full-pool references (about 20 min each on 2 cores)
    todo = [(b, s) for s in range(seeds) for b in BUDGETS] + [("full", s) for s in range(seeds)]
    for budget, seed in tqdm(todo, desc="calibrate", unit="fit"):
        if (budget, seed) in done or (deadline is not None and time.time() >= deadline):
            continue
        run_cfg = cfg
        if budget == "full":
            idx = pool
            run_cfg = cfg.reference_config(len(pool))
        else:
            idx = np.sort(np.random.default_rng([seed, 7]).permutation(pool)[:budget])
        engine = Engine(run_cfg)
        t0 = time.perf_counter()
        model, _ = engine.fit(dataset, idx, split.val, 2000 + seed, "cpu")
        seconds = time.perf_counter() - t0
        _, test = engine.evaluate(model, dataset, split.test, 0, "cpu")
        rec = {"budget": budget, "seed": seed, "n": int(len(idx)), "steps": run_cfg.steps_for(len(idx)),
               "seconds": round(seconds, 1), "test": {k: round(float(v), 6) for k, v in test.items()},
               "recipe": recipe_of(run_cfg)}
        with CALIBRATION.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")


def calibration_summary(cfg: SimConfig, metric: str = "dice") -> dict | None:
    recs, stale = calibration_rows(cfg)
    if not recs:
        return None
    by_budget: dict = {}
    for r in recs:
        by_budget.setdefault(str(r["budget"]), []).append(r["test"][metric])
    rows = {b: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None, "seeds": len(v)}
            for b, v in by_budget.items()}
    ceiling = rows.get("full", {}).get("mean")
    out = {"metric": metric, "budgets": rows, "ceiling": ceiling, "rows_of_other_recipes": stale}
    if ceiling:
        at4 = rows.get("4", {}).get("mean")
        reach = [b for b in BUDGETS if str(b) in rows and rows[str(b)]["mean"] >= 0.95 * ceiling]
        out["random_at_4_over_ceiling"] = None if at4 is None else at4 / ceiling
        out["first_budget_at_95pct"] = reach[0] if reach else None
        out["headroom"] = bool(at4 is not None and at4 / ceiling <= 0.85 and (not reach or reach[0] > 24))
    return out


# ------------------------------------------------------------------------------------------ study
def study(cfg: SimConfig, seeds: int, workers: int, deadline: float | None, threads: int) -> None:
    from activeseg.simulate import simulate

    simulate(cfg, STRATEGIES, list(range(seeds)), RUNS, workers=workers, resume=True, deadline=deadline,
             threads=threads)


def pick_shares(runs) -> dict:
    """Per strategy: the share of its picks from each source (item-id prefix), over seeds and rounds."""
    out: dict = {}
    for run in runs:
        counts = out.setdefault(run.strategy, Counter())
        for rec in run.records:
            counts.update(s["item_id"].split("_", 1)[0] for s in rec.get("selected", []))
    return {k: {src: round(n / max(1, sum(c.values())), 3) for src, n in sorted(c.items())} for k, c in out.items()}


# ------------------------------------------------------------------------------------------ results
def write_results(machine: dict, cfg: SimConfig) -> None:
    from activeseg.report import build_report, find_runs
    from activeseg.report.tables import to_markdown

    doc: dict = {"machine": machine, "calibration": calibration_summary(cfg)}
    host = (f"{machine.get('model')} (flags: {', '.join(machine.get('flags', [])) or 'none'}), "
            f"{machine.get('threads')} torch threads, `torch.mm` peak "
            f"{machine.get('matmul_gflops', {}).get('float32', '?')} GFLOP/s float32, "
            f"{machine.get('matmul_gflops', {}).get('bfloat16', '?')} bfloat16")
    md = ["# Segmentation benchmark: nuclei3 with a domain shift", "",
          "Made by `python benchmarks/seg_benchmark.py` (stages calibrate, study; settings in "
          f"`configs/seg_benchmark.toml`). Host: {host}.", ""]
    cal = doc["calibration"]
    if cal:
        ceiling = "–" if cal["ceiling"] is None else f"{cal['ceiling']:.4f}"
        md += ["## Calibration: random at fixed budgets", "",
               "Test Dice (mean over the foreground classes, sources weighted equally); ceiling = the full pool "
               f"trained with the reference budget: {ceiling}. Rows trained with another recipe than the config's "
               f"are left out ({cal['rows_of_other_recipes']} in the ledger).", "",
               "| labelled patches | seeds | test Dice mean | sd | % of ceiling |", "|---|---|---|---|---|"]
        for b in [*map(str, BUDGETS), "full"]:
            row = cal["budgets"].get(b)
            if row is None:
                continue
            pct = "–" if not cal["ceiling"] else f"{100 * row['mean'] / cal['ceiling']:.1f}"
            sd = "–" if row["sd"] is None else f"{row['sd']:.4f}"
            md.append(f"| {b} | {row['seeds']} | {row['mean']:.4f} | {sd} | {pct} |")
        if "headroom" in cal:
            at4 = cal["random_at_4_over_ceiling"]
            md += ["", f"Random at 4 patches: {'–' if at4 is None else f'{100 * at4:.1f}%'} of the ceiling (the "
                   f"issue asks ≤ 85%); first budget at ≥ 95%: {cal['first_budget_at_95pct'] or 'none up to 128'} "
                   f"(asks > 24). Headroom: **{'yes' if cal['headroom'] else 'no'}**."]
    runs = find_runs(RUNS) if RUNS.exists() else []
    if runs:
        summary = build_report(RUNS, RESULTS / "seg_benchmark_report", host=host)
        doc["summary"] = {k: v for k, v in summary.items() if k != "runs"}
        doc["pick_shares"] = pick_shares(runs)
        import shutil

        shutil.copy(RESULTS / "seg_benchmark_report" / "learning_curve.png", RESULTS / "seg_benchmark.png")
        md += ["", "## Study", "", to_markdown(summary), "", "### Share of picks per source", "",
               "| strategy | " + " | ".join(sorted({s for v in doc["pick_shares"].values() for s in v})) + " |"]
        sources = sorted({s for v in doc["pick_shares"].values() for s in v})
        md.append("|---" * (len(sources) + 1) + "|")
        for name, shares in doc["pick_shares"].items():
            md.append(f"| {name} | " + " | ".join(f"{shares.get(s, 0):.3f}" for s in sources) + " |")
    (RESULTS / "seg_benchmark.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    (RESULTS / "seg_benchmark.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["calibrate", "study", "results"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--hours", type=float, default=None, help="start no training / round after this long")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per worker (default: 2 with one worker, else 1), e.g. 1 to leave a core free")
    ap.add_argument("--config", type=Path, default=CONFIG)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    machine_path = RESULTS / "seg_benchmark_machine.json"
    deadline = None if args.hours is None else time.time() + 3600 * args.hours
    threads = args.threads or (2 if args.workers <= 1 else 1)
    if args.stage != "results":
        set_threads(threads)
        machine_path.write_text(json.dumps(describe(), indent=1) + "\n")
    if args.stage == "calibrate":
        calibrate(cfg, args.seeds, deadline)
    elif args.stage == "study":
        study(cfg, args.seeds, args.workers, deadline, threads)
    write_results(json.loads(machine_path.read_text()) if machine_path.exists() else {}, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
