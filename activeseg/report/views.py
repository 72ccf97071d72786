"""Two views of a study beyond the learning curves (Nath et al. 2020, Figs. 12 and 13).

* :func:`plot_uncertainty_distribution`: the distribution of the per-pixel predictive entropy over the
  training set (the ledger's ``train_entropy_hist``, entropy / log C in 20 bins) at an early, a middle
  and the last round, one line per strategy (mean over seeds). A strategy that labels what the model
  was unsure about moves this mass towards low values as rounds go by.
* :func:`plot_embedding`: a 2-D map of every item of the initial set and pool (pixels → PCA with 6
  components → t-SNE, as the paper did), one panel per strategy (its first seed), coloured by initial /
  queried / never queried. Picks at the edges of clusters and spread over them are the diversity the
  batch strategies aim for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activeseg.report._figure import new_figure, save_png
from activeseg.report.runs import Run, group_by_strategy


def _pick_rounds(rounds: Sequence[int], n: int = 3) -> list[int]:
    """An early, a middle and the last round (fewer when there are fewer)."""
    rounds = sorted(set(rounds))
    if len(rounds) <= n:
        return rounds
    picks = [rounds[1], rounds[len(rounds) // 2], rounds[-1]]  # round 1 is the same initial set for all
    return sorted(set(picks))


def plot_uncertainty_distribution(runs: Sequence[Run], out_png: str | Path) -> Path | None:
    """Save the figure; None when no ledger records ``train_entropy_hist``."""
    groups = {name: [r for r in group if any("train_entropy_hist" in rec for rec in r.records)]
              for name, group in group_by_strategy(runs).items()}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    common = set.intersection(*({rec["round"] for r in g for rec in r.records if "train_entropy_hist" in rec}
                                for g in groups.values()))
    rounds = _pick_rounds(common)
    if not rounds:
        return None
    fig = new_figure(4.2 * len(rounds), 3.8, dpi=110)
    axes = [fig.add_subplot(1, len(rounds), i + 1) for i in range(len(rounds))]
    for ax, round_ in zip(axes, rounds, strict=True):
        for name, group in groups.items():
            hists = []
            for run in group:
                rec = next((r for r in run.records if r["round"] == round_ and "train_entropy_hist" in r), None)
                if rec is not None:
                    counts = np.asarray(rec["train_entropy_hist"], dtype=np.float64)
                    hists.append(counts / max(counts.sum(), 1.0))
            if hists:
                density = np.mean(hists, axis=0)
                edges = np.linspace(0, 1, len(density) + 1)
                ax.stairs(density, edges, label=name, linewidth=1.5)
        ax.set_yscale("log")
        ax.set_title(f"round {round_}")
        ax.set_xlabel("predictive entropy / log C")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of training pixels")
    axes[-1].legend(fontsize="small")
    fig.suptitle("Uncertainty over the training set (mean over seeds)")
    fig.tight_layout()
    return save_png(fig, out_png)


def _run_config(run: Run):
    from activeseg.config import from_saved

    return from_saved(run.config)


def embed_items(images_N: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[N, 2]`` t-SNE of the images' pixels after PCA to 6 components (Nath et al. 2020, §6.6)."""
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError:
        raise ImportError("the report's t-SNE view needs scikit-learn; install it with "
                          "`pip install 'activeseg[plots]'`") from None

    x = images_N.reshape(len(images_N), -1).astype(np.float64)
    feats = PCA(n_components=min(6, *x.shape), random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats)


def plot_embedding(runs: Sequence[Run], out_png: str | Path, max_items: int = 1500) -> Path | None:
    """Save the figure; None when the runs' dataset cannot be loaded (e.g. a moved folder)."""
    from activeseg.data import load_for
    from activeseg.records import read_split

    groups = group_by_strategy(r for r in runs if r.records and r.config)
    if not groups:
        return None
    first = {name: min(group, key=lambda r: r.seed) for name, group in groups.items()}
    cfg = _run_config(next(iter(first.values())))
    try:
        dataset = load_for(cfg)
    except (FileNotFoundError, ValueError, OSError):
        return None
    splits = {name: read_split(run.run_dir) for name, run in first.items()}
    if any(split is None for split in splits.values()):
        return None  # a run folder without split.json (written by every run since the first release)
    split = next(iter(splits.values()))
    items = np.union1d(split["initial"], split["pool"])
    labelled = set()
    for name, run in first.items():
        labelled.update(s["dataset_idx"] for rec in run.records for s in rec["selected"])
        labelled.update(splits[name]["initial"].tolist())
    if len(items) > max_items:  # keep every labelled item, fill up with a seeded sample of the rest
        keep = np.array(sorted(labelled & set(items.tolist())), dtype=np.int64)
        rest = np.setdiff1d(items, keep)
        fill = np.random.default_rng(0).choice(rest, max(0, max_items - len(keep)), replace=False)
        items = np.sort(np.concatenate([keep, fill]))
    xy = embed_items(dataset.images[items])
    pos = {int(d): i for i, d in enumerate(items)}
    n = len(first)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = new_figure(4.2 * cols, 4.0 * rows, dpi=110)
    for i, (name, run) in enumerate(first.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        initial = [pos[int(d)] for d in splits[name]["initial"] if int(d) in pos]
        queried = [pos[s["dataset_idx"]] for rec in run.records for s in rec["selected"] if s["dataset_idx"] in pos]
        never = np.setdiff1d(np.arange(len(items)), initial + queried)
        ax.scatter(xy[never, 0], xy[never, 1], s=4, c="0.75", label="never queried")
        ax.scatter(xy[initial, 0], xy[initial, 1], s=16, c="tab:blue", label="initial")
        ax.scatter(xy[queried, 0], xy[queried, 1], s=16, c="tab:red", marker="^", label="queried")
        ax.set_title(f"{name} (seed {run.seed})", fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.axes[0].legend(fontsize="small", loc="best")
    fig.suptitle("t-SNE of the initial set and pool (pixels → PCA 6 → t-SNE)")
    fig.tight_layout()
    return save_png(fig, out_png)
