"""MC-dropout scoring of the Gal et al. CNN: plain K passes vs the cached prefix vs consistent masks.

One Gal et al. round scores 2,000 pool digits with K = 20 passes. This times, side by side in one run
(interleaved, median of ``--repeats``, one thread as each simulation worker has):

* ``naive``: K full forward passes per batch, fresh dropout masks per item (the textbook loop);
* ``prefix``: the convolutions once per batch, the dense layers on K stacked copies, fresh masks;
* ``prefix+consistent``: as ``prefix`` with K masks drawn once and shared by every item (the
  preset's ``consistent_masks``).

It also reports how far the BALD ranking moves between the estimators (Spearman correlation of the
scores, and the overlap of the top 10 picks) on a CNN trained for a few seconds on real digits, since
the three use different random masks. Writes ``benchmarks/results/gal_cnn_scoring.md`` and ``.json``.

Usage: ``python benchmarks/gal_cnn_scoring.py [--n 2000] [--k 20] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from activeseg.acquisition import get_strategy
from activeseg.data import load_dataset
from activeseg.models import build_model
from activeseg.scoring import score_pool
from activeseg.train import TrainConfig, fit
from activeseg.uncertainty import MCDropout

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


class NoSplit(torch.nn.Module):
    """The same network without ``stochastic_split`` and not traced for one (``trace_split = False``), so MC
    dropout takes the plain K-pass loop."""

    trace_split = False

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="pool digits scored")
    ap.add_argument("--k", type=int, default=20, help="MC-dropout passes")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    mnist = load_dataset("mnist", quiet=True)
    rng = np.random.default_rng(0)
    train, pool = rng.choice(60000, 500, replace=False), rng.choice(60000, args.n, replace=False)
    torch.manual_seed(0)
    model = build_model("gal_cnn", in_channels=1, num_classes=10, image_size=28)
    cfg = TrainConfig(steps=200, batch_size=32, eval_every=50, augment=False)
    fit(model, mnist.images[train], mnist.targets[train], mnist.images[train[:100]], mnist.targets[train[:100]],
        cfg, torch.Generator().manual_seed(0))
    images = mnist.images[pool]
    bald = get_strategy("bald")
    variants = {
        "naive": (NoSplit(model), False),
        "prefix": (model, False),
        "prefix+consistent": (model, True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    scores: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, (net, consistent) in variants.items():
            est = MCDropout(k=args.k, batch_size=args.batch_size, seed=1, consistent=consistent)
            t0 = time.perf_counter()
            scores[name] = score_pool(net, images, bald, device="cpu", estimator=est)
            seconds[name].append(time.perf_counter() - t0)
    median = {name: float(np.median(v)) for name, v in seconds.items()}
    # the noise floor: the naive loop again with other masks
    other = score_pool(NoSplit(model), images, bald, device="cpu",
                       estimator=MCDropout(k=args.k, batch_size=args.batch_size, seed=2))
    noise = float(stats.spearmanr(other, scores["naive"]).statistic)
    noise_top = len(set(np.argsort(-other)[:10].tolist()) & set(np.argsort(-scores["naive"])[:10].tolist()))
    top = {name: set(np.argsort(-s)[:10].tolist()) for name, s in scores.items()}
    rows, doc = [], {"n": args.n, "k": args.k, "batch_size": args.batch_size, "repeats": args.repeats,
                     "threads": 1, "machine": platform.processor() or platform.machine(), "variants": {}}
    for name in variants:
        rho = float(stats.spearmanr(scores[name], scores["naive"]).statistic)
        doc["variants"][name] = {
            "seconds_median": round(median[name], 3), "seconds_all": [round(x, 3) for x in seconds[name]],
            "speedup_vs_naive": round(median["naive"] / median[name], 2),
            "images_per_second": round(args.n / median[name], 1),
            "spearman_bald_vs_naive": round(rho, 4), "top10_overlap_vs_naive": len(top[name] & top["naive"]),
        }
        v = doc["variants"][name]
        rows.append(f"| {name} | {v['seconds_median']:.2f} | {v['speedup_vs_naive']:.2f}× | "
                    f"{v['images_per_second']:.0f} | {v['spearman_bald_vs_naive']:.3f} | "
                    f"{v['top10_overlap_vs_naive']}/10 |")
    doc["naive_other_masks"] = {"spearman_bald_vs_naive": round(noise, 4), "top10_overlap_vs_naive": noise_top}
    rows.append(f"| naive, other masks (untimed) | | | | {noise:.3f} | {noise_top}/10 |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gal_cnn_scoring.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = "\n".join([
        "# MC-dropout scoring of the Gal et al. CNN",
        "",
        f"{args.n} real MNIST pool digits, K = {args.k}, BALD, batches of {args.batch_size}, one thread; "
        f"median of {args.repeats} interleaved repeats (`python benchmarks/gal_cnn_scoring.py`).",
        "Measured while two simulation workers shared the 2 cores, so absolute times are inflated; the",
        "ratios come from one interleaved run.",
        "",
        "| variant | seconds | speed-up vs naive | digits/s | Spearman of BALD vs naive | top-10 overlap |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "The variants draw different random masks, so no two rank identically; the last row (the naive",
        "loop with other masks) is the MC noise floor that the other rows' agreement compares with.",
        "",
    ])
    (RESULTS / "gal_cnn_scoring.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
