"""How close BatchBALD's per-pixel batches come to log K on real nuclei3 rounds (issue 18's open question).

With K MC samples the mutual information of any batch is at most ``log K``: the labels can at most tell
which of the K samples made them. If one image already carries nearly ``log K``, the greedy picks after it
add little and are close to arbitrary. This measures it on the demo's setting (``configs/demo.toml``:
``nuclei3``, 32-px patches, the steady recipe), at a mid-demo labelled set (``--labelled`` patches), for
each seed: a model is trained, every candidate of the pool is scored with K consistent MC-dropout samples
(K in ``--ks``), summarised to 256 fixed pixels per image (``batchbald``'s default ``labels = "pixels"``),
and the greedy per-pixel BatchBALD (1000 drawn configurations, as the strategy) picks ``--batch`` images,
tracing the estimated information of the batch after each pick (``batchbald_pixels(..., trace=)``).

Writes ``benchmarks/results/batchbald_saturation.md`` and ``.json`` with the host line.

Usage::

    python benchmarks/batchbald_saturation.py --seeds 3 --ks 10,20,40 --batch 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ks", default="10,20,40", help="MC samples K to compare")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--labelled", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results-only", action="store_true", help="rewrite the .md from the .json")
    args = ap.parse_args(argv)
    if args.results_only:
        write_markdown(json.loads((RESULTS / "batchbald_saturation.json").read_text()), args)
        return 0

    import torch
    from machine import describe, host_line  # benchmarks/ is on sys.path when run as a script
    from tqdm.auto import tqdm

    from activeseg.acquisition import get_strategy
    from activeseg.acquisition.batch import batchbald_pixels
    from activeseg.config import SimConfig, read_toml
    from activeseg.data import load_for
    from activeseg.engine import Engine
    from activeseg.loop import run_split
    from activeseg.scoring import score_and_summarize
    from activeseg.uncertainty.estimators import MCDropout

    torch.set_num_threads(args.threads)
    host = host_line(describe())
    ks = [int(k) for k in args.ks.split(",")]
    cfg = SimConfig(**{**read_toml(ROOT / "configs/demo.toml")["simulate"], "strategy": "batchbald"})
    ds = load_for(cfg)
    split = run_split(cfg, ds)
    idx = np.concatenate([split.initial, split.pool[: args.labelled - len(split.initial)]])
    cand = np.setdiff1d(split.pool, idx)
    strategy = get_strategy("batchbald")  # labels = "pixels", 256 pixels, 1000 configurations
    engine = Engine(cfg)
    rows = []
    with tqdm(total=args.seeds * len(ks), desc="batchbald_saturation", unit="scoring") as bar:
        for seed in range(args.seeds):
            model, _ = engine.fit(ds, idx, split.val, 1000 + seed, "cpu")
            for k in ks:
                est = MCDropout(k=k, batch_size=64, seed=seed, consistent=True)
                _, probs, _ = score_and_summarize(model, ds.images[cand], strategy, est, "cpu", summarize=True)
                trace: list[float] = []
                batchbald_pixels(probs, args.batch, np.random.default_rng(seed), num_samples=strategy.num_samples,
                                 trace=trace)
                rows.append({"seed": seed, "k": k, "log_k": float(np.log(k)), "trace": trace})
                bar.update(1)
    steps = [s for s in (1, 2, 4, args.batch) if s <= args.batch]
    summary = {}
    for k in ks:
        mine = [r["trace"] for r in rows if r["k"] == k]
        summary[k] = {"log_k": float(np.log(k)),
                      "mi_after": {s: float(np.mean([t[s - 1] for t in mine])) for s in steps},
                      "share_of_log_k_after": {s: float(np.mean([t[s - 1] for t in mine]) / np.log(k)) for s in steps},
                      "last_gain": float(np.mean([t[-1] - t[-2] for t in mine])) if args.batch > 1 else None}
    doc = {"host": host, "labelled": len(idx), "candidates": len(cand), "seeds": args.seeds, "batch": args.batch,
           "pixels": strategy.pixels, "num_samples": strategy.num_samples, "summary": summary, "runs": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batchbald_saturation.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_markdown(json.loads(json.dumps(doc)), args)  # the keys as the .json has them
    return 0


def write_markdown(doc: dict, args) -> None:
    steps = [s for s in (1, 2, 4, doc["batch"]) if s <= doc["batch"]]
    lines = ["# BatchBALD per pixel against its log K ceiling, on real nuclei3 rounds", "",
             f"Made by `python benchmarks/batchbald_saturation.py --seeds {doc['seeds']} --ks {args.ks} --batch "
             f"{doc['batch']}`: the demo's setting, a model trained on {doc['labelled']} labelled patches per seed, "
             f"{doc['candidates']} candidates, {doc['pixels']} fixed pixels per image, {doc['num_samples']} drawn "
             f"configurations; the estimated information of the greedy batch after each pick (nats, mean over "
             f"{doc['seeds']} seeds). Host: {doc['host']}.", "",
             "| K | log K | " + " | ".join(f"after {s} pick{'s' if s > 1 else ''}" for s in steps)
             + " | gain of the last pick |",
             "|---|---|" + "---|" * len(steps) + "---|"]
    for k, s in doc["summary"].items():
        cells = " | ".join(f"{s['mi_after'][str(n)]:.3f} ({100 * s['share_of_log_k_after'][str(n)]:.0f}%)"
                           for n in steps)
        lines.append(f"| {k} | {s['log_k']:.3f} | {cells} | {s['last_gain']:.3f} |")
    lines += ["", "Each cell: the batch's estimated mutual information and its share of log K. The estimate "
              "averages, over the drawn configurations, log p(y | the sample that drew y) − log mean_k p(y | "
              "sample k): each term lies in [0, log K]. The earlier estimator (the joint entropy of the draws "
              "minus the exact conditional entropy) passed log K on this same setting, by up to 4.5×: this "
              "file at commit 3e74820.", ""]
    md = "\n".join(lines)
    (RESULTS / "batchbald_saturation.md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
