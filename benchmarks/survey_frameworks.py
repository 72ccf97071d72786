"""The survey's frameworks on the segmentation benchmark: region queries priced by clicks, CEAL, VAAL.

Stages (each resumable from its ledgers under ``benchmarks/results/survey_frameworks_runs/``; commit after
every stage):

1. ``study``: on the segmentation benchmark's setting (``configs/seg_benchmark.toml``: nuclei3 with a domain
   shift, 32-px patches), ``--seeds`` seeds of
   * whole-patch arms: ``random``, ``power_bald`` (the benchmark's best whole-image strategy), ``bald`` (VAAL's
     comparison), ``max_entropy`` (CEAL's base), ``ceal`` and ``vaal``;
   * region arms (``configs/survey_regions.toml``: 16-px regions, the same area per round):
     ``random_regions``, ``entropy_regions`` and ``cereals``.
   Same seed = same split and initial set for every arm; every ledger records the clicks and pixels spent.
2. ``mnist``: ``vaal`` against ``random`` and ``bald`` on MNIST with Gal et al.'s protocol
   (``configs/gal_mnist.toml``), into ``survey_frameworks_mnist_runs/``. The ``random`` and ``bald`` runs
   that ``benchmarks/gal_mnist.py`` finished with that config are adopted (their ledgers copied, not run
   again): same config and seed give the same run (this stage's own ``random`` seed 0 repeated the first 84
   rounds of Gal's bit for bit before adoption replaced it), and resuming checks the configs are equal.
3. ``results`` (after every stage): ``survey_frameworks.md`` / ``.json`` / ``.png`` (and ``_pixels.png``), over
   the seeds on which every arm has finished: the seed-level comparison
   with random (paired over seeds, bootstrap CIs, Holm, random vs random) at equal annotation cost (AULC on a
   log2 axis of clicks) and at equal labelled pixels, the clicks to reach 95% (and the secondary fractions)
   of each seed's full-pool reference, CEAL's pseudo-labels (count and accuracy) and, for MNIST, the same
   against acquired images.

Usage::

    python benchmarks/survey_frameworks.py study --seeds 5 --hours 2 --threads 1
    python benchmarks/survey_frameworks.py mnist --seeds 5 --hours 2 --threads 1
    python benchmarks/survey_frameworks.py results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "survey_frameworks_runs"
MNIST_RUNS = RESULTS / "survey_frameworks_mnist_runs"
ARMS = {  # config -> strategies
    "configs/seg_benchmark.toml": ["random", "power_bald", "bald", "max_entropy", "ceal", "vaal"],
    "configs/survey_regions.toml": ["random_regions", "entropy_regions", "cereals"],
}
MNIST = ("configs/gal_mnist.toml", ["random", "bald", "vaal"])
GAL_RUNS = RESULTS / "gal_mnist_runs"  # benchmarks/gal_mnist.py's runs of the same config
PAIRS = {"ceal": "max_entropy", "cereals": "entropy_regions"}  # a framework against its own base


def run_stage(arms: dict[str, list[str]], out: Path, seeds: int, deadline: float | None, threads: int) -> bool:
    """Every arm × seed, seed by seed (every arm of a seed before the next seed, so a deadline leaves whole
    seeds to compare); False if a run failed."""
    from activeseg.config import load_config
    from activeseg.simulate import simulate

    ok = True
    for seed in range(seeds):
        for config, strategies in arms.items():
            cfg = load_config(ROOT / config)
            results = simulate(cfg, strategies, [seed], out, resume=True, deadline=deadline, threads=threads)
            ok &= not any(r[2] for r in results)
    return ok


def adopt_runs(source: Path, out: Path, strategies: list[str], seeds: int) -> list[str]:
    """Copy the finished runs of ``strategies`` × ``seeds`` under ``source`` into ``out`` where ``out``'s run has
    fewer rounds and its rounds are the same as the source's (timings aside); the adopted run folders."""
    import shutil

    from activeseg.records import LEDGER, read_ledger

    def same(a: list[dict], b: list[dict]) -> bool:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in a] == \
            [{k: v for k, v in r.items() if k != "seconds"} for r in b]

    adopted = []
    for strategy in strategies:
        for seed in range(seeds):
            src, dst = source / strategy / f"seed_{seed}", out / strategy / f"seed_{seed}"
            if not (src / LEDGER).is_file():
                continue
            theirs = read_ledger(src / LEDGER)
            ours = read_ledger(dst / LEDGER) if (dst / LEDGER).is_file() else []
            if len(ours) >= len(theirs) or not same(ours, theirs[: len(ours)]):
                continue
            dst.mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                if f.is_file() and f.suffix in (".json", ".jsonl") and f.name != "split.json":
                    shutil.copyfile(f, dst / f.name)
            adopted.append(str(dst))
    return adopted


def pseudo_summary(runs) -> dict:
    """CEAL: per seed the mean pseudo-labelled items and pixel accuracy per round."""
    out = {}
    for run in runs:
        made = [r["pseudo"] for r in run.records if r.get("pseudo")]
        if made:
            acc = [m["accuracy"] for m in made if m["accuracy"] is not None]
            out[run.seed] = {"rounds": len(made), "items_mean": float(np.mean([m["items"] for m in made])),
                             "pixels_mean": float(np.mean([m["pixels"] for m in made])),
                             "accuracy_mean": float(np.mean(acc)) if acc else None}
    return out


def cost_model_summary(runs) -> dict:
    """CEREALS: per seed, how well the cost model predicted the clicks of the regions it priced (Spearman of
    predicted and true cost over its picks, by which model priced them) and the clicks per region picked."""
    from scipy import stats

    out = {}
    for run in runs:
        picks = [s for r in run.records for s in r.get("selected", []) if "predicted_cost" in s]
        by_model: dict[str, list] = {}
        for s in picks:
            by_model.setdefault("proxy" if s["cost_model"] == "proxy" else "ridge", []).append(s)
        clicks = float(np.mean([s["cost"] for s in picks])) if picks else None
        row = {"regions": len(picks), "clicks_per_region": clicks}
        for name, chosen in by_model.items():
            rho = stats.spearmanr([s["predicted_cost"] for s in chosen], [s["cost"] for s in chosen]).statistic
            row[name] = {"regions": len(chosen), "spearman": None if np.isnan(rho) else float(rho)}
        out[run.seed] = row
    return out


def paired(summary: dict, name: str, base: str) -> dict | None:
    """A framework against its own base, seed by seed, on the summary's AULC (log2 budget)."""
    from activeseg import statistics as st

    a = {p["seed"]: p["aulc_log2"] for p in summary["strategies"].get(name, {}).get("per_seed", [])}
    b = {p["seed"]: p["aulc_log2"] for p in summary["strategies"].get(base, {}).get("per_seed", [])}
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    if len(seeds) < 2:
        return None
    return st.paired_comparison(seeds, [a[s] for s in seeds], [b[s] for s in seeds])


def complete_runs(runs_dir: Path) -> tuple[list, list[int]]:
    """The finished runs of the seeds on which every arm has finished (a seed in progress is left out, so
    that no arm's partial curve shortens everyone's AULC range), and those seeds."""
    from activeseg.report import find_runs

    found = find_runs(runs_dir)
    runs = [r for r in found if r.records and len(r.records) == int(r.config["rounds"])]
    arms = {r.strategy for r in found}
    seeds = sorted(s for s in {r.seed for r in runs} if {r.strategy for r in runs if r.seed == s} == arms)
    return [r for r in runs if r.seed in seeds], seeds


SEG_FRACTIONS = (0.90, 0.85, 0.80)
"""Secondary targets of the segmentation sections (fractions of each seed's full-pool reference) beside the
primary 95%: 85% and 80% were added after no arm had reached 90% within the budget, so that the cost of
every arm to a level it reaches can be compared."""


def section(title: str, runs_dir: Path, report: str, host: str, budget: str, target_error: float | None = None):
    """Markdown and JSON of one comparison (as ``activeseg report --budget``) over the complete seeds, and its
    learning curves against the budget (``<report>.png``)."""
    from activeseg.report.curves import plot_learning_curves
    from activeseg.report.summary import summarize
    from activeseg.report.tables import to_markdown

    target = None if target_error is None else 1.0 - target_error
    runs, seeds = complete_runs(runs_dir)
    if not runs:
        return [f"## {title}", "", "No seed has every arm finished yet."], {"seeds": []}
    summary = summarize(runs, target=target, budget=budget, extra_fractions=SEG_FRACTIONS)
    plot_learning_curves(runs, RESULTS / f"{report}.png", metric=summary["metric"], x=budget)
    fractions = ", ".join(f"{f:.0%}" for f in SEG_FRACTIONS)
    secondary = "" if target is not None else (
        f" Targets: 95% of each seed's full-pool reference (primary), then {fractions} (secondary; 85% and 80% "
        "added after no arm reached 90% within the budget).")
    md = [f"## {title}", "", f"Seeds with every arm finished: {', '.join(map(str, seeds))}.{secondary}", "",
          to_markdown(summary), "", f"![test score against {budget}]({report}.png)", ""]
    pairs = {}
    for name, base in PAIRS.items():
        c = paired(summary, name, base)
        if c is not None:
            pairs[f"{name} vs {base}"] = c
            ci = "" if c["ci"] is None else f" [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]"
            p_t = "–" if c["p_t"] is None else f"{c['p_t']:.3g}"
            md.append(f"- {name} vs its base {base}: Δ AULC {c['mean_diff']:+.4f}{ci}, paired t p = {p_t} over "
                      f"{c['pairs']} seeds.")
    return md, {"seeds": seeds, "summary": {k: v for k, v in summary.items() if k != "runs"}, "against_base": pairs,
                "ceal_pseudo_labels": pseudo_summary([r for r in runs if r.strategy == "ceal"]),
                "cereals_cost_model": cost_model_summary([r for r in runs if r.strategy == "cereals"])}


def write_results(host: str) -> None:
    md = ["# The survey's frameworks: region queries priced by clicks, CEAL, VAAL", "",
          "Made by `python benchmarks/survey_frameworks.py` (settings: `configs/seg_benchmark.toml`, "
          f"`configs/survey_regions.toml`, `configs/gal_mnist.toml`). Host: {host}.", ""]
    doc: dict = {"host": host}
    if RUNS.exists():
        for budget, title, png in (("cost", "Segmentation at equal annotation cost (clicks)", "survey_frameworks"),
                                   ("labelled_pixels", "Segmentation at equal labelled pixels",
                                    "survey_frameworks_pixels")):
            part, data = section(title, RUNS, png, host, budget)
            md += [*part, ""]
            doc[budget] = data
        ceal = doc["cost"].get("ceal_pseudo_labels")
        if ceal:
            md += ["### CEAL's pseudo-labels (per round, mean over rounds)", "",
                   "| seed | rounds | pseudo-labelled patches | pixels | pixel accuracy |", "|---|---|---|---|---|"]
            for seed, v in ceal.items():
                acc = "–" if v["accuracy_mean"] is None else f"{v['accuracy_mean']:.4f}"
                md.append(f"| {seed} | {v['rounds']} | {v['items_mean']:.1f} | {v['pixels_mean']:.0f} | {acc} |")
            md.append("")
        costs = doc["cost"].get("cereals_cost_model")
        if costs:
            md += ["### CEREALS' cost model: predicted against true clicks of the regions it picked", "",
                   "| seed | regions | clicks per region | proxy: regions, Spearman | ridge: regions, Spearman |",
                   "|---|---|---|---|---|"]
            for seed, v in costs.items():
                cells = []
                for model in ("proxy", "ridge"):
                    m = v.get(model)
                    rho = "–" if not m or m["spearman"] is None else f"{m['spearman']:.3f}"
                    cells.append("–" if not m else f"{m['regions']}, {rho}")
                per = "–" if v["clicks_per_region"] is None else f"{v['clicks_per_region']:.1f}"
                md.append(f"| {seed} | {v['regions']} | {per} | {cells[0]} | {cells[1]} |")
            md.append("")
    if MNIST_RUNS.exists():
        part, data = section("MNIST (Gal et al.'s protocol): acquired images", MNIST_RUNS,
                             "survey_frameworks_mnist", host, "n_annotations", target_error=0.10)
        md += [*part, "The random and bald runs of seeds that `benchmarks/gal_mnist.py` had finished are its runs "
               "(`gal_mnist_runs/`, the same config and seeds), adopted rather than run twice.", ""]
        doc["mnist"] = data
    (RESULTS / "survey_frameworks.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    (RESULTS / "survey_frameworks.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["study", "mnist", "results"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--hours", type=float, default=None, help="start no round after this long")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves a core to another job)")
    args = ap.parse_args(argv)
    from machine import describe, host_line  # benchmarks/ is on sys.path when run as a script

    from activeseg.simulate import set_threads

    set_threads(args.threads)  # before describe(): the host line names and measures the runs' threads
    host = host_line(describe())
    deadline = None if args.hours is None else time.time() + 3600 * args.hours
    ok = True
    if args.stage == "study":
        ok = run_stage(ARMS, RUNS, args.seeds, deadline, args.threads)
    elif args.stage == "mnist":
        for run in adopt_runs(GAL_RUNS, MNIST_RUNS, ["random", "bald"], args.seeds):
            print(f"adopted benchmarks/gal_mnist.py's run as {run}", flush=True)
        ok = run_stage({MNIST[0]: MNIST[1]}, MNIST_RUNS, args.seeds, deadline, args.threads)
    write_results(host)
    print((RESULTS / "survey_frameworks.md").read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
