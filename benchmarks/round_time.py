"""Seconds per phase of one round of the demo, before and after the training speed-ups (issue 22).

The round is one of ``make demo`` (``configs/demo.toml``: ``nuclei3``, 32-px patches, a depth-3 8-filter
U-Net with batch norm, the steady recipe, ``bald`` with K = 10 consistent masks) at a mid-demo labelled
set (``--labelled`` patches: the 2 initial ones and the first of the pool), timed phase by phase as the
loop runs them: **train** (``Engine.fit``), **evaluate** (validation, test and the training-entropy
histogram), **score + select** (``Engine.propose`` over every candidate of the pool) and **heatmaps** (the
demo's 2 overlays).

Training variants, interleaved seed by seed in one process (the machine is shared: read the ratios):

* ``before``: ``activeseg/train.py`` as it was before the speed-ups (commit ``BEFORE``, read from git):
  a Python loop over the parameters in AdamW and in the weight average, channels-first tensors;
* ``channels-first``: today's code with ``channels_last = false`` (the committed studies' setting): one
  ``foreach`` call over all tensors in AdamW and in the weight average; the same numbers as ``before``,
  bit for bit (checked here on the final test Dice, and by ``tests/test_train.py``);
* ``default``: today's default, channels-last tensors as well (the same maths, other rounding);
* ``+ bfloat16``: the default with ``train_precision = "bfloat16"``, only on a host with native bf16
  (AVX512-BF16 or AMX), where the results say so.

Each variant trains every seed (``--seeds``: the round's seed, i.e. batches, augmentation and dropout),
and its final test Dice is compared with ``before`` paired by seed, to show what a round learns is not
changed. The phases other than training do not depend on the variant and are timed once per seed on the
default's model. Writes ``benchmarks/results/round_time.md`` and ``.json`` with the host line.

Usage::

    python benchmarks/round_time.py --seeds 5 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEFORE = "66ae8ecca5879457b03f0df7cd1824efa0db6212"
"""The last commit whose ``activeseg/train.py`` had no training speed-ups."""


def train_before():
    """The ``activeseg.train`` module of commit ``BEFORE``, loaded beside today's."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:activeseg/train.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "train_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("train_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_before"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def training_code(module):
    """Run the block with ``activeseg.train.fit`` replaced by ``module.fit`` (None: today's)."""
    import activeseg.train as train

    today = train.fit
    train.fit = today if module is None else module.fit
    try:
        yield
    finally:
        train.fit = today


def one_round(engine, ds, split, idx, seed: int, timed_phases: bool, out: Path) -> dict:
    """Train (and, with ``timed_phases``, evaluate, score, select and draw) one round; seconds and Dice."""
    from activeseg.loop import _save_heatmaps, _train_sample
    from activeseg.scoring import entropy_histogram

    t0 = time.perf_counter()
    model, _ = engine.fit(ds, idx, split.val, seed, "cpu")
    t1 = time.perf_counter()
    engine.evaluate(model, ds, split.val, seed, "cpu")
    _, test = engine.evaluate(model, ds, split.test, seed, "cpu")
    row = {"train": t1 - t0, "test_dice": test["dice"]}
    if not timed_phases:
        return row
    entropy_histogram(model, ds.images[_train_sample(idx, seed)], engine.histogram_estimator(model, seed), "cpu")
    t2 = time.perf_counter()
    cand = np.setdiff1d(split.pool, idx)
    sel = engine.propose(model, ds.images[cand], ds.images[idx], engine.cfg.query_at(1), seed, "cpu")
    t3 = time.perf_counter()
    _save_heatmaps(engine, model, ds, cand[sel.indices], seed, out, "cpu")
    t4 = time.perf_counter()
    return {**row, "evaluate": t2 - t1, "score_select": t3 - t2, "heatmaps": t4 - t3, "candidates": len(cand)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--labelled", type=int, default=20, help="labelled patches of the round")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the demo: 2 runs of 1 thread each)")
    ap.add_argument("--config", default="configs/demo.toml")
    args = ap.parse_args(argv)

    import torch
    from machine import describe, host_line  # benchmarks/ is on sys.path when run as a script
    from tqdm.auto import tqdm

    from activeseg.config import SimConfig, read_toml
    from activeseg.data import load_for
    from activeseg.engine import Engine
    from activeseg.loop import run_split
    from activeseg.statistics import paired_comparison

    torch.set_num_threads(args.threads)
    machine = describe()
    host = host_line(machine)
    cfg = SimConfig(**{**read_toml(ROOT / args.config)["simulate"], "strategy": "bald"})
    ds = load_for(cfg)
    split = run_split(cfg, ds)
    idx = np.concatenate([split.initial, split.pool[: args.labelled - len(split.initial)]])
    before = train_before()
    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(machine["flags"]))
    variants = {"before": (before, cfg.replace(channels_last=False)),
                "channels-first": (None, cfg.replace(channels_last=False)),
                "default": (None, cfg.replace(channels_last=True))}
    if native_bf16:
        variants["+ bfloat16"] = (None, cfg.replace(channels_last=True, train_precision="bfloat16"))
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    seeds = list(range(args.seeds))
    work = Path(tempfile.mkdtemp())
    with tqdm(total=len(seeds) * len(variants), desc="round_time", unit="fit") as bar:
        for seed in seeds:
            for name, (module, vcfg) in variants.items():
                with training_code(module):
                    rows[name].append(one_round(Engine(vcfg), ds, split, idx, 1000 + seed, name == "default",
                                                work / name))
                bar.update(1)
    base_train = np.array([r["train"] for r in rows["before"]])
    summary = {}
    for name, rs in rows.items():
        train = np.array([r["train"] for r in rs])
        dice = [r["test_dice"] for r in rs]
        summary[name] = {"train_s": round(float(np.mean(train)), 2), "train_sd": round(float(np.std(train, ddof=1)), 2)
                         if len(train) > 1 else None,
                         "speedup_vs_before": round(float(np.mean(base_train / train)), 2),
                         "test_dice": round(float(np.mean(dice)), 4),
                         "dice_vs_before": paired_comparison(seeds, dice, [r["test_dice"] for r in rows["before"]]),
                         "identical_dice_to_before": all(a == b for a, b in zip(dice, [r["test_dice"] for r in
                                                                                       rows["before"]], strict=True))}
    phases = {k: round(float(np.mean([r[k] for r in rows["default"]])), 2)
              for k in ("evaluate", "score_select", "heatmaps")}
    doc = {"host": host, "machine": machine, "threads": args.threads, "config": args.config,
           "labelled": len(idx), "candidates": rows["default"][0]["candidates"], "steps": cfg.steps_for(len(idx)),
           "seeds": seeds, "before_commit": BEFORE, "native_bf16": native_bf16, "variants": summary,
           "other_phases_s": phases, "runs": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "round_time.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = write_markdown(doc, args)
    (RESULTS / "round_time.md").write_text(md)
    print(md)
    return 0


def write_markdown(doc: dict, args) -> str:
    def ci(c: dict) -> str:
        if c["mean_diff"] is None:
            return "n/a"
        lo, hi = c["ci"] if c["ci"] else (float("nan"), float("nan"))
        return f"{c['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"

    ph = doc["other_phases_s"]
    lines = [
        "# One demo round, phase by phase, before and after the training speed-ups", "",
        f"Made by `python benchmarks/round_time.py --seeds {args.seeds} --threads {args.threads}`: a round of "
        f"`{doc['config']}` (bald, K = 10) at {doc['labelled']} labelled patches ({doc['steps']} training steps), "
        f"{doc['candidates']} candidates scored; {len(doc['seeds'])} round seeds, the variants interleaved seed by "
        f"seed; {doc['threads']} torch thread(s) (the demo runs two such runs at once on 2 cores). Host: "
        f"{doc['host']}. `before` is `activeseg/train.py` of commit {doc['before_commit'][:7]}.", "",
        "| training variant | train s (mean ± sd) | speed-up vs before (mean of per-seed ratios) | test Dice | "
        "Δ Dice vs before, paired [95% CI] | same Dice as before, every seed |",
        "|---|---|---|---|---|---|"]
    for name, s in doc["variants"].items():
        lines.append(f"| {name} | {s['train_s']} ± {s['train_sd']} | {s['speedup_vs_before']}× | {s['test_dice']} | "
                     f"{ci(s['dice_vs_before'])} | {'yes' if s['identical_dice_to_before'] else 'no'} |")
    total_before = doc["variants"]["before"]["train_s"] + sum(ph.values())
    total_now = doc["variants"]["default"]["train_s"] + sum(ph.values())
    lines += ["", "The other phases (the default's model, mean over seeds):", "",
              "| phase | seconds |", "|---|---|",
              f"| evaluate (validation, test, training-entropy histogram) | {ph['evaluate']} |",
              f"| score + select | {ph['score_select']} |",
              f"| heatmaps | {ph['heatmaps']} |",
              f"| **round, before** | {total_before:.2f} |",
              f"| **round, default** | {total_now:.2f} |", ""]
    if not doc["native_bf16"]:
        lines += ["This host has no native bfloat16: the bfloat16 variant was not run.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
