"""Nath et al. (2020) Table 1 on the real nuclei patches: random / entropy / entropy+MI, each with Delete
and NoDelete, on an SVGD committee of 5 U-Nets.

The six variants of the paper (§4.3, §5.3-5.4) on ``nuclei``:

* ``random``, ``max_entropy`` (the committee's entropy, summed over the pixels as their Eq. 3 sums
  over voxels; here its mean, which ranks the same fixed-size patches identically) and ``entropy_mi``
  (α·minmax(H) − minmax(MI)/α with α = 1, the image-histogram mutual information to the training set);
* Delete (a queried patch leaves the pool) and NoDelete (it stays; a re-picked patch is duplicated in the
  training set at no annotation cost).

Every round trains an SVGD committee (K = 5 particles, log soft-Dice likelihood, a fixed number of steps
per round as the paper did) from scratch. Per run the best round is the one with the highest validation
Dice (the paper's "best active iteration model"); the table gives its validation Dice, its test Dice and
the data used then (annotations / (initial + pool)), mean ± sd over seeds, and a Wilcoxon signed-rank
p-value of per-patch test Dice at the best rounds against random with Delete, paired by (seed, test
patch). The full-pool SVGD committee of each seed is the reference row.

Writes ``benchmarks/results/nath_nuclei.md`` + ``.json`` and learning curves against annotations and
against training-set size (``nath_nuclei.png``, ``nath_nuclei_train_size.png``); runs live in
``--out`` and resume from their ledgers.

``--recipe fixed`` re-runs it with issue 18's fixes (``configs/nath.toml``): the segmentation
benchmark's nuclei3 setting, SVGD with the loss objective and the function-space kernel, and the
epistemic term named by strategy: ``nath_entropy`` (Eq. 3 as written), ``bald`` (the members'
disagreement) and ``nath_entropy_mi`` (Eq. 3 + MI), into ``nath_fixed_runs`` and ``nath_fixed.md``, with
the seed-level report of each mode (paired over seeds, bootstrap CIs, Holm) beside the paper-style table.

``--recipe 3d`` runs the paper's six variants in 3-D (``configs/nath_3d.toml``: patch queries inside one brain,
``hippocampus``, with a deep-ensemble committee of 3-D U-Nets) into ``nath_3d_runs`` and ``nath_3d.md``.

Usage::

    python benchmarks/nath_nuclei.py --seeds 3 --workers 2 --hours 2.5
    python benchmarks/nath_nuclei.py --results-only
    python benchmarks/nath_nuclei.py --recipe fixed --seeds 5 --hours 3
    python benchmarks/nath_nuclei.py --recipe 3d --seeds 3 --hours 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from activeseg.config import load_config
from activeseg.metrics import wilcoxon_paired
from activeseg.report.curves import plot_learning_curves
from activeseg.report.runs import find_runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STRATEGIES = ["random", "max_entropy", "entropy_mi"]
NAMES = {"random": "Random", "max_entropy": "Epistemic (entropy of the mean)", "entropy_mi": "Epistemic+MI",
         "nath_entropy": "Epistemic (Eq. 3 as written)", "bald": "Epistemic (BALD)",
         "nath_entropy_mi": "Eq. 3 + MI"}
RECIPES = {  # config, strategies, results name, default runs folder
    "committed": ("configs/nath_nuclei.toml", STRATEGIES, "nath_nuclei", str(RESULTS / "nath_nuclei_runs")),
    "fixed": ("configs/nath.toml", ["random", "nath_entropy", "bald", "nath_entropy_mi"], "nath_fixed",
              str(RESULTS / "nath_fixed_runs")),
    "3d": ("configs/nath_3d.toml", ["random", "nath_entropy", "nath_entropy_mi"], "nath_3d",
           str(RESULTS / "nath_3d_runs")),
}
PAPER_ROW = {"nath_entropy": "max_entropy", "nath_entropy_mi": "entropy_mi"}  # the paper's rows they re-run
MODES = {"delete": "Delete", "nodelete": "No Delete"}
# Nath et al. 2020, Table 1 (hippocampus): best validation Dice, its test Dice, % data used.
PAPER = {
    ("max_entropy", "delete"): (0.7246, 0.7051, 30.06), ("entropy_mi", "delete"): (0.7235, 0.7014, 30.06),
    ("random", "nodelete"): (0.7180, 0.6985, 28.22), ("max_entropy", "nodelete"): (0.7211, 0.6931, 26.38),
    ("entropy_mi", "nodelete"): (0.7241, 0.7135, 22.69), ("random", "delete"): (0.7194, 0.7107, 30.06),
}


def best_round(run) -> dict:
    """The record with the highest validation Dice (the earliest on ties)."""
    return max(run.records, key=lambda r: (r["val"]["dice"], -r["round"]))


def started(mode_dir: Path) -> bool:
    """Whether a mode (Delete / NoDelete) has a run with a ledger yet."""
    return any(mode_dir.glob("*/seed_*/ledger.jsonl"))


def table(out: Path, cfg) -> dict:
    available = None if cfg.max_pool is None else cfg.initial + cfg.max_pool  # else: the ledgers' pool size
    rows: dict[str, dict] = {}
    best_items: dict[str, dict[int, np.ndarray]] = {}
    for mode in MODES:
        if not started(out / mode):
            continue
        for run in find_runs([out / mode]):
            if run.run_dir.parent.name == "reference" or not run.records:
                continue
            key = f"{run.strategy}/{mode}"
            rec = best_round(run)
            available = available or int(rec["pool_size"])
            row = rows.setdefault(key, {"strategy": run.strategy, "mode": mode, "seeds": [], "val_dice": [],
                                        "test_dice": [], "pct_data": [], "train_size": [], "best_round": [],
                                        "rounds_done": []})
            row["seeds"].append(run.seed)
            row["val_dice"].append(rec["val"]["dice"])
            row["test_dice"].append(rec["test"]["dice"])
            row["pct_data"].append(100.0 * rec["n_annotations"] / available)
            row["train_size"].append(rec["train_size"])
            row["best_round"].append(rec["round"])
            row["rounds_done"].append(len(run.records))
            if rec.get("test_per_item"):
                best_items.setdefault(key, {})[run.seed] = np.asarray(rec["test_per_item"]["dice"])
    base = best_items.get("random/delete", {})
    for key, row in rows.items():
        if key == "random/delete":
            row["p_vs_random_delete"] = None
            continue
        seeds = sorted(set(best_items.get(key, {})) & set(base))
        if seeds:
            a = np.concatenate([best_items[key][s] for s in seeds])
            b = np.concatenate([base[s] for s in seeds])
            row["p_vs_random_delete"] = wilcoxon_paired(a, b)
            row["paired_patches"] = int(a.size)
        else:
            row["p_vs_random_delete"] = None
    refs = []
    for ref_file in sorted((out / "delete" / "reference").glob("seed_*/reference.json")):
        refs.append(json.loads(ref_file.read_text()))
    return {"rows": rows, "reference": refs, "available": available, "rounds": cfg.rounds}


def _ms(values, digits=4) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _p(p) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def write_results(out: Path, invocations: list[dict], cfg, results: Path = RESULTS, recipe: str = "committed") -> dict:
    from machine import hosts_line  # benchmarks/ is on sys.path when run as a script

    host = hosts_line(invocations)
    _, strategies, name, _ = RECIPES[recipe]
    doc = table(out, cfg)
    doc["invocations"] = invocations
    doc["paper_table1_hippocampus"] = {f"{s}/{m}": v for (s, m), v in PAPER.items()}
    results.mkdir(parents=True, exist_ok=True)
    seed_level = seed_level_reports(out, results, name, host) if recipe in ("fixed", "3d") else []
    committee = {"svgd": "SVGD", "ensemble": "deep ensemble", "bootstrap": "bootstrap"}.get(cfg.estimator,
                                                                                          cfg.estimator)
    if host:
        doc["hosts"] = host
    (results / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    runs = []
    for mode in MODES:
        if started(out / mode):
            for run in find_runs([out / mode]):
                if run.run_dir.parent.name != "reference" and run.records:
                    run.config["strategy"] = f"{run.strategy} {MODES[mode]}"
                    runs.append(run)
    if runs:
        plot_learning_curves(runs, results / f"{name}.png")
        plot_learning_curves(runs, results / f"{name}_train_size.png", x="train_size")
    lines = []
    order = [(s, m) for m in MODES for s in strategies]
    for s, m in order:
        row = doc["rows"].get(f"{s}/{m}")
        if row is None:
            continue
        paper = PAPER.get((PAPER_ROW.get(s, s), m))
        paper_cell = f"{paper[0]:.4f} / {paper[1]:.4f} / {paper[2]:.2f} %" if paper else "— (not in the paper)"
        lines.append(f"| {NAMES[s]} {MODES[m]} | {len(row['seeds'])} | {_ms(row['val_dice'])} "
                     f"| {_ms(row['test_dice'])} "
                     f"| {_ms(row['pct_data'], 1)} % | {_ms(row['train_size'], 1)} | {_p(row['p_vs_random_delete'])} "
                     f"| {paper_cell} |")
    ref = doc["reference"]
    if ref:
        lines.append(f"| Full pool, {committee} | {len(ref)} | {_ms([r['val_dice'] for r in ref])} "
                     f"| {_ms([r['test_dice'] for r in ref])} | 100 % | {ref[0]['n_annotations']} | — "
                     "| 0.7257 / 0.7093 / 100 % |")
    hours = sum(i["hours"] for i in invocations)
    schedule = (f"{cfg.steps} {cfg.optimizer} steps per round" if cfg.epochs is None else
                f"{cfg.optimizer}, {cfg.lr_schedule} lr, {cfg.epochs:g} epochs within [{cfg.min_steps}, {cfg.steps}] "
                "steps per round")
    cfg_name = invocations[-1].get("config", "configs/nath_nuclei.toml") if invocations else "configs/nath_nuclei.toml"
    md = "\n".join([
        f"# Nath et al. (2020) Table 1 on {'3-D patches of one brain' if recipe == '3d' else 'real nuclei patches'}: "
        f"{committee} committee, Delete vs NoDelete",
        "",
        f"Per run, the round with the best validation Dice; its test Dice; the data used then (annotations / "
        f"{doc['available']} patches of initial set + pool); mean ± sd over seeds. p: Wilcoxon signed-rank "
        "test of per-patch test Dice at the best rounds against Random Delete, paired by (seed, patch). "
        "Last column: the paper's hippocampus numbers (val / test / % data), for the form only: "
        + ("their hippocampus MRIs of many subjects against one atlas-labelled brain here." if recipe == "3d" else
           "another dataset and 3-D."),
        "",
        *([volume_note(ref), ""] if recipe == "3d" else []),
        "| method | seeds | best val Dice | its test Dice | % data | training-set size | p vs Random Delete "
        "| paper (hippocampus) |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        f"Protocol (`{cfg_name}`): {cfg.initial} initial patches, +{cfg.query} per round, "
        f"{cfg.rounds} rounds, a pool of {cfg.max_pool or 'all'} patches "
        f"({'×'.join([str(cfg.patch_size)] * (3 if recipe == '3d' else 2))}); "
        f"{committee} of K = {cfg.members} U-Nets (depth {cfg.depth}, {cfg.base_filters} filters), "
        f"{schedule} (lr {cfg.lr:g}, batch {cfg.batch_size})"
        + (f", objective {cfg.svgd_objective}, kernel {cfg.svgd_kernel}, Gaussian prior λ = {cfg.prior_precision:g}"
           if cfg.estimator == "svgd" else "")
        + f", the committee's mean prediction evaluated. Wall time {hours:.2f} h over "
        f"{len(invocations)} invocation(s) of `python benchmarks/nath_nuclei.py` on 2 CPU cores.",
        "",
        f"Hosts: {host}." if host else "Host: not recorded (these runs predate the host line).",
        "",
        *(picks_table(out, strategies) if recipe == "3d" else []),
        *seed_level,
        f"![test Dice vs annotations]({name}.png)",
        "",
        f"![test Dice vs training-set size]({name}_train_size.png)",
        "",
        *([ERRATUM, ""] if recipe == "committed" else []),
    ])
    (results / f"{name}.md").write_text(md)
    return doc


def picks_table(out: Path, strategies: list[str]) -> list[str]:
    """What the queried patches held: per strategy and mode, the share of the patches each run queried
    (every round's picks, the initial set aside) that contain any labelled structure (a recorded click
    cost above 0: a patch of background costs no click) and their mean click cost; a patch re-picked under
    NoDelete counts once."""
    lines = []
    for mode, title in MODES.items():
        if not started(out / mode):
            continue
        for s in strategies:
            shares, costs, picks = [], [], []
            for run in find_runs([out / mode / s]) if (out / mode / s).is_dir() else []:
                seen: dict[int, float] = {}
                for rec in run.records:
                    for pick in rec.get("selected", []):
                        seen.setdefault(pick["dataset_idx"], float(pick["cost"]))
                if seen:
                    cost = np.array(list(seen.values()))
                    shares.append(float(np.mean(cost > 0)))
                    costs.append(float(cost.mean()))
                    picks.append(len(cost))
            if shares:
                lines.append(f"| {NAMES[s]} {title} | {len(shares)} | {_ms(picks, 1)} | {_ms(shares, 2)} "
                             f"| {_ms(costs, 1)} |")
    if not lines:
        return []
    return ["What the queries held: of the patches each run queried (the initial set aside, a re-pick counted "
            "once), the share holding any labelled structure and their mean click cost (outline vertices per "
            "slice, 0 for background); mean ± sd over seeds. Random's share estimates the pool's.", "",
            "| method | seeds | patches queried | share with a structure | mean clicks per patch |",
            "|---|---|---|---|---|", *lines, ""]


def volume_note(refs: list[dict]) -> str:
    """How the 3-D recipe scores its held-out slabs, with the full-pool reference's Dice per structure."""
    names = ("hippocampus", "amygdala", "parahippocampal")
    per_class = ", ".join(f"{c} {_ms([r[f'test_dice_{c}'] for r in refs], 3)}" for c in names
                          if refs and all(f"test_dice_{c}" in r for r in refs))
    return ("Dice here: each held-out slab (validation: the inferior half of the other hemisphere; test: its superior "
            "half) is scored as one region, each class over all its voxels (`eval_over = \"volume\"`), and Dice is "
            "the mean over the three structures"
            + (f"; the full-pool reference's test Dice per structure: {per_class}" if per_class else "")
            + ". The p column pairs per-patch Dice, in which a patch without a structure scores 1 for it whatever "
            "the model does: secondary.")


ERRATUM = """**Erratum (2026-12-04, issue 18 §2).** In this study the Epistemic+MI No Delete arm could never re-pick a
labelled patch: a labelled patch that stayed a candidate had its MI with itself (the largest possible) in its
mean MI to the training set, so min-max MI pushed it to the bottom. Its training-set size equals its
annotation count in every round of all 3 seeds (the ledgers' `train_size` and `n_annotations`: 44 patches from 44
annotations in round 10), i.e. it never
duplicated anything and its row above is effectively a Delete arm, while the other No Delete arms did re-pick
(max_entropy: 44 patches from 29–35 annotations; random: from 39–41). `entropy_mi` now leaves self-pairs
out (`mutual_info.same_images`,
`tests/test_mutual_info.py::test_no_delete_can_re_pick_a_labelled_hard_item`). "Epistemic" here is the entropy
of the committee mean (`max_entropy`), not the paper's Eq. 3; `python benchmarks/nath_nuclei.py --recipe fixed`
re-runs the study with Eq. 3 as written (`nath_entropy`), BALD as the epistemic alternative, and the fixed SVGD."""


def seed_level_reports(out: Path, results: Path, name: str, host: str | None) -> list[str]:
    """The activeseg report of each mode (strategies paired over seeds against that mode's random):
    its summary table as markdown lines, the report in ``{name}_report_{mode}/``."""
    from activeseg.report import build_report
    from activeseg.report.tables import to_markdown

    lines = []
    for mode, title in MODES.items():
        if not any((out / mode).glob("*/seed_*/ledger.jsonl")):
            continue
        summary = build_report(out / mode, results / f"{name}_report_{mode}", host=host)
        lines += [f"## {title}: seed-level comparison with Random {title} (the primary endpoint)", "",
                  to_markdown(summary), ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="committed",
                    help="committed (configs/nath_nuclei.toml, the committed study), fixed (configs/nath.toml) or 3d "
                    "(configs/nath_3d.toml)")
    ap.add_argument("--out", default=None, help="folder of the runs' ledgers (default: the recipe's)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    ap.add_argument("--hours", type=float, default=2.5, help="start no round after this many hours")
    ap.add_argument("--config", default=None, help="the run settings (relative to the repo; default: the recipe's)")
    ap.add_argument("--results-dir", default=str(RESULTS), help="where the .md/.json/.png go")
    ap.add_argument("--results-only", action="store_true")
    args = ap.parse_args(argv)
    config, strategies, name, default_out = RECIPES[args.recipe]
    config = args.config or config
    out = Path(args.out or default_out)
    cfg = load_config(ROOT / config)
    results_dir = Path(args.results_dir)
    previous = results_dir / f"{name}.json"
    saved = json.loads(previous.read_text()) if previous.exists() else {}
    from machine import saved_invocations  # benchmarks/ is on sys.path when run as a script

    invocations = saved_invocations(saved)
    if not args.results_only:
        from machine import describe, host_line  # benchmarks/ is on sys.path when run as a script

        from activeseg.simulate import set_threads, simulate

        if args.threads:
            set_threads(args.threads)  # before describe(): the host line names and measures the runs' threads
        start = time.time()
        invocations.append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "hours": 0.0, "config": config,
                            "host": host_line(describe())})
        seeds = list(range(args.seeds))
        for stage in sorted({max(1, cfg.rounds // 2), cfg.rounds}):  # both modes advance together
            for mode in MODES:
                mode_cfg = cfg.replace(no_delete=mode == "nodelete")
                if mode == "nodelete":  # the full-pool reference does not depend on the mode: train it once
                    for s in seeds:
                        src = out / "delete" / "reference" / f"seed_{s}" / "reference.json"
                        dst = out / "nodelete" / "reference" / f"seed_{s}" / "reference.json"
                        if src.exists() and not dst.exists():
                            dst.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copyfile(src, dst)
                results = simulate(mode_cfg, strategies, seeds, out / mode, workers=args.workers, resume=True,
                                   until_round=stage, deadline=start + 3600 * args.hours, threads=args.threads)
                invocations[-1]["hours"] = round((time.time() - start) / 3600, 3)
                write_results(out, invocations, cfg, results_dir, args.recipe)
                if any(r[2] for r in results):
                    print(f"{name}: some runs failed; see the errors above", flush=True)
                    return 1
    write_results(out, invocations, cfg, results_dir, args.recipe)
    print((results_dir / f"{name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
