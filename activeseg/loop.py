"""One simulated active-learning run: rounds of train → evaluate → score pool → select → label → record.

Every round's randomness is derived from ``(seed, round)`` (model initialisation, batch sampling,
augmentation, dropout masks, random picks), so a run resumed from its ledger ends with the same records
as one that never stopped. The ledger (``ledger.jsonl``) gets one JSON line per finished round.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from activeseg.acquisition import get_strategy
from activeseg.config import SimConfig
from activeseg.data import ImageDataset, Pool, make_split
from activeseg.models import DEFAULT_MODEL, build_model
from activeseg.report.ledger import append_record, read_ledger, write_ledger
from activeseg.scoring import entropy_histogram, pick_device, score_and_summarize, uncertainty_maps
from activeseg.train import evaluate, fit
from activeseg.uncertainty import COMMITTEES, Committee, fit_committee, get_estimator, has_dropout
from activeseg.uncertainty.committee import member_seed

TRAIN_HISTOGRAM_ITEMS = 200


def round_seed(seed: int, round_: int) -> int:
    """The seed of one round's randomness (rounds of different run seeds never collide)."""
    return int(np.random.SeedSequence([seed, round_]).generate_state(1)[0])


def check_task(cfg: SimConfig, dataset: ImageDataset) -> str:
    """The dataset's task; an error if ``cfg.task`` names another one."""
    if cfg.task not in ("auto", "segmentation", "classification"):
        raise ValueError(f"task '{cfg.task}' is not one of auto, segmentation, classification")
    if cfg.task not in ("auto", dataset.task):
        raise ValueError(
            f"task '{cfg.task}' does not fit dataset '{cfg.dataset}', which is a {dataset.task} dataset; "
            f"use --task {dataset.task} or --task auto"
        )
    return dataset.task


def new_model(cfg: SimConfig, dataset: ImageDataset, seed: int):
    """A freshly initialised model for ``dataset`` (``cfg.model``, or the task's default) from ``seed``."""
    task = check_task(cfg, dataset)
    name = DEFAULT_MODEL[task] if cfg.model == "auto" else cfg.model
    if name in DEFAULT_MODEL.values() and name != DEFAULT_MODEL[task]:
        raise ValueError(f"model '{name}' does not do {task}; use --model {DEFAULT_MODEL[task]} (or auto)")
    kwargs = {"in_channels": dataset.in_channels, "num_classes": dataset.num_classes}
    if name == "unet":
        kwargs.update(depth=cfg.depth, base_filters=cfg.base_filters, dropout=cfg.dropout, residual=cfg.residual)
    else:  # the Gal et al. CNN has the paper's fixed dropout rates; it needs the input side
        kwargs.update(image_size=int(dataset.images.shape[-1]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, **kwargs)


def round_estimator(cfg: SimConfig, seed: int, consistent: bool = False):
    """The configured uncertainty estimator with the round's seed (fixed dropout masks per round);
    ``consistent`` (or ``cfg.consistent_masks``) shares the K masks across items. A committee's K is
    ``cfg.members``."""
    consistent = (consistent or cfg.consistent_masks) and cfg.estimator == "mc_dropout"
    extra = {"consistent": True} if consistent else {}
    if cfg.estimator == "mc_dropout":
        extra.update(precision=cfg.score_precision, compile=cfg.compile_scoring)
    k = cfg.members if cfg.estimator in COMMITTEES else cfg.mc_samples
    return get_estimator(cfg.estimator, k=k, batch_size=cfg.score_batch_size, seed=seed, **extra)


def eval_estimator(cfg: SimConfig, seed: int):
    """None (dropout off, the weight-scaling approximation) or MC dropout with ``cfg.test_mc_samples``
    passes, for the round's validation and test scores."""
    if cfg.test_mc_samples <= 0:
        return None
    if cfg.estimator in COMMITTEES:
        raise ValueError(f"--test-mc-samples is for MC dropout; a {cfg.estimator} committee is evaluated by its "
                         "members' mean prediction: leave --test-mc-samples at 0")
    return get_estimator("mc_dropout", k=cfg.test_mc_samples, batch_size=max(cfg.score_batch_size, 64),
                         seed=seed, consistent=cfg.consistent_masks)


def make_strategy(cfg: SimConfig):
    """The configured strategy with the settings the config changes (an error names a setting the
    strategy does not take, e.g. ``--sampling`` with ``coreset``)."""
    overrides = {"reduction": cfg.reduction} if cfg.reduction and cfg.strategy != "random" else {}
    if cfg.sampling:
        overrides.update(sampling=cfg.sampling, temperature=cfg.temperature)
    if cfg.candidates is not None:
        overrides["candidates"] = cfg.candidates
    if cfg.beta != 1.0:
        overrides["beta"] = cfg.beta
    if cfg.alpha != 1.0:
        overrides["alpha"] = cfg.alpha
    if cfg.mi_bins != 32:
        overrides["bins"] = cfg.mi_bins
    return get_strategy(cfg.strategy, **overrides)


def selection_extras(strategy, model, dataset: ImageDataset, cand_dataset_idx: np.ndarray,
                     train_dataset_idx: np.ndarray, device: str, batch_size: int) -> dict:
    """What a batch strategy needs besides the scores (``strategy.needs``), from the round's model."""
    from activeseg.descriptors import deterministic_outputs

    needs = getattr(strategy, "needs", ())
    want = tuple(n for n in ("descriptors", "embedding") if n in needs)
    extras = deterministic_outputs(model, dataset.images[cand_dataset_idx], want, batch_size, device) if want else {}
    if "images" in needs:
        extras["images"] = dataset.images[cand_dataset_idx]
    if "train_images" in needs:
        extras["train_images"] = dataset.images[np.unique(train_dataset_idx)]
    if "labeled_descriptors" in needs:
        extras["labeled_descriptors"] = deterministic_outputs(
            model, dataset.images[np.unique(train_dataset_idx)], ("descriptors",), batch_size, device
        )["descriptors"]
    return extras


def train_round(cfg: SimConfig, dataset: ImageDataset, train_idx: np.ndarray, val_idx: np.ndarray, seed: int,
                device: str, init_state: dict | None = None):
    """A model trained on ``train_idx`` (duplicates allowed) with the round's seed; best-val weights.

    With a committee estimator (``ensemble``, ``bootstrap``, ``svgd``) the model is a ``Committee`` of
    ``cfg.members`` networks, each initialised from its own seed, trained by ``fit_committee``.
    """
    gen = torch.Generator().manual_seed(seed)  # fit derives batches, augmentation and dropout from it
    if cfg.estimator in COMMITTEES:
        members = [new_model(cfg, dataset, member_seed(seed, i)) for i in range(cfg.members)]
        model = Committee(members)
        if init_state is not None:
            model.load_state_dict(init_state)
        result = fit_committee(cfg.estimator, members, dataset.images[train_idx], dataset.targets[train_idx],
                               dataset.images[val_idx], dataset.targets[val_idx], cfg.train_config(), gen,
                               device=device, num_classes=dataset.num_classes,
                               prior_precision=cfg.prior_precision)
        return model, result
    model = new_model(cfg, dataset, seed)
    if init_state is not None:
        model.load_state_dict(init_state)
    result = fit(
        model,
        dataset.images[train_idx],
        dataset.targets[train_idx],
        dataset.images[val_idx],
        dataset.targets[val_idx],
        cfg.train_config(),
        gen,
        device=device,
        num_classes=dataset.num_classes,
    )
    return model, result


def _as_list(per_item: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: [round(float(x), 6) for x in v] for k, v in per_item.items()}


def run_reference(cfg: SimConfig, dataset: ImageDataset, run_dir: Path) -> dict:
    """Train once on initial + whole pool; the 'full-pool' score that targets are relative to."""
    path = run_dir / "reference.json"
    if path.exists():
        return json.loads(path.read_text())
    device = pick_device(cfg.device)
    split = run_split(cfg, dataset)
    train_idx = np.concatenate([split.initial, split.pool])
    t0 = time.perf_counter()
    model, result = train_round(cfg, dataset, train_idx, split.val, round_seed(cfg.seed, 0), device)
    tester = eval_estimator(cfg, round_seed(cfg.seed, 0))
    _, val = evaluate(model, dataset.images[split.val], dataset.targets[split.val], device=device, estimator=tester)
    _, test = evaluate(model, dataset.images[split.test], dataset.targets[split.test], device=device,
                       estimator=tester)
    ref = {
        **{f"val_{k}": v for k, v in val.items()},
        **{f"test_{k}": v for k, v in test.items()},
        "n_annotations": int(len(train_idx)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref, indent=1))
    return ref


def run_split(cfg: SimConfig, dataset: ImageDataset):
    """The run's initial / pool / validation / test split (see ``activeseg.data.make_split``)."""
    return make_split(dataset, cfg.initial, cfg.split_seed, cfg.seed, max_pool=cfg.max_pool,
                      val_size=cfg.val_size, balanced=cfg.balanced_initial)


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _check_saved_config(run_dir: Path, cfg: SimConfig) -> None:
    # A key the saved config lacks (added to activeseg after the run started) counts as its default.
    saved = {**json.loads(SimConfig().to_json()), **json.loads((run_dir / "config.json").read_text())}
    now = json.loads(cfg.to_json())
    differ = {k for k in now if k not in ("rounds", "device", "heatmaps") and saved.get(k) != now[k]}
    if differ:
        pairs = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {now[k]!r}" for k in sorted(differ))
        raise ValueError(f"{run_dir}: cannot resume with a different config ({pairs}); use another --out")


def run_simulation(cfg: SimConfig, dataset: ImageDataset, run_dir: str | Path, resume: bool = False,
                   progress: bool = True, until_round: int | None = None,
                   deadline: float | None = None) -> list[dict]:
    """Run (or resume) one strategy × seed; return all ledger records.

    Args:
        cfg: the run's config (strategy and seed included).
        dataset: the full labelled dataset; the split is derived from ``cfg``.
        run_dir: output folder: ``config.json``, ``split.json``, ``ledger.jsonl``, ``heatmaps/``.
        resume: continue after the last finished round of an existing ledger.
        progress: show a progress bar over rounds.
        until_round: stop after this round (a later call with ``resume=True`` goes on); default: all.
        deadline: a ``time.time()`` after which no new round starts (the ledger keeps what finished).
    """
    run_dir = Path(run_dir)
    round_estimator(cfg, cfg.seed)  # a bad scoring setting fails here, before any training
    ledger = run_dir / "ledger.jsonl"
    if ledger.exists() and not resume:
        raise FileExistsError(f"{ledger} exists; pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "config.json").exists() and resume:
        _check_saved_config(run_dir, cfg)
    (run_dir / "config.json").write_text(cfg.to_json())
    device = pick_device(cfg.device)
    strategy = make_strategy(cfg)
    split = run_split(cfg, dataset)
    split.to_json(dataset, run_dir / "split.json", cfg.split_seed)
    pool = Pool(np.concatenate([split.initial, split.pool]))
    pool.label(pool.pool_idx_of(split.initial), 1)

    records = read_ledger(ledger) if ledger.exists() else []
    if ledger.exists() and len(records) != _count_lines(ledger):
        write_ledger(ledger, records)  # drop a line cut off by a kill, so appends start clean
    for rec in records:  # replay the picks of finished rounds
        picked = [s["dataset_idx"] for s in rec["selected"]]
        if picked:
            pool.label(pool.pool_idx_of(picked), rec["round"] + 1)
    state = None
    if cfg.warm_start and records:
        state = torch.load(run_dir / "last_model.pt", map_location="cpu", weights_only=True)

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.rounds, initial=len(records), desc=f"{cfg.strategy} seed {cfg.seed}", unit="round",
               disable=not progress, leave=False)
    last = cfg.rounds if until_round is None else min(cfg.rounds, until_round)
    for round_ in range(len(records) + 1, last + 1):
        if deadline is not None and time.time() >= deadline:
            break
        rseed = round_seed(cfg.seed, round_)
        t0 = time.perf_counter()
        model, fitres = train_round(cfg, dataset, pool.training_dataset_idx(), split.val, rseed, device,
                                    state if cfg.warm_start else None)
        t1 = time.perf_counter()
        tester = eval_estimator(cfg, rseed)
        val_items, val = evaluate(model, dataset.images[split.val], dataset.targets[split.val], device=device,
                                  estimator=tester)
        test_items, test = evaluate(model, dataset.images[split.test], dataset.targets[split.test], device=device,
                                    estimator=tester)
        # The uncertainty over (at most 200 of) the training images, for the report's Fig. 12 view.
        train_unique = np.unique(pool.training_dataset_idx())
        if len(train_unique) > TRAIN_HISTOGRAM_ITEMS:
            train_unique = np.sort(np.random.default_rng([rseed, 2]).choice(train_unique, TRAIN_HISTOGRAM_ITEMS,
                                                                             replace=False))
        hist_estimator = (round_estimator(cfg, rseed) if cfg.estimator != "mc_dropout" or has_dropout(model)
                          else get_estimator("deterministic", batch_size=cfg.score_batch_size))
        train_hist = entropy_histogram(model, dataset.images[train_unique], hist_estimator, device)
        t2 = time.perf_counter()
        selected: list[dict] = []
        t3 = t4 = t2
        candidates = pool.candidates(cfg.no_delete)
        if cfg.score_subset is not None and len(candidates) > cfg.score_subset:
            # Gal et al.'s reference code scored a random subset of the pool each round.
            subset_rng = np.random.default_rng([rseed, 1])
            candidates = np.sort(subset_rng.choice(candidates, cfg.score_subset, replace=False))
        if round_ < cfg.rounds and len(candidates):
            cand_dataset_idx = pool.dataset_idx[candidates]
            needs = getattr(strategy, "needs", ())
            scores, summaries = score_and_summarize(
                model, dataset.images[cand_dataset_idx], strategy,
                round_estimator(cfg, rseed, getattr(strategy, "consistent", False)), device,
                summarize="probs" in needs)
            extras = selection_extras(strategy, model, dataset, cand_dataset_idx, pool.training_dataset_idx(),
                                      device, max(cfg.score_batch_size, 64)) if needs else {}
            if summaries is not None:
                extras["probs"] = summaries
            t3 = time.perf_counter()
            chosen = strategy.select(scores, cfg.query, np.random.default_rng(rseed), extras=extras)
            t4 = time.perf_counter()
            picked_pool = candidates[chosen]
            selected = [
                {"dataset_idx": int(d), "item_id": dataset.item_ids[d], "score": float(scores[c])}
                for d, c in zip(pool.dataset_idx[picked_pool], chosen, strict=True)
            ]
            if dataset.task == "segmentation":
                _save_heatmaps(cfg, model, dataset, [s["dataset_idx"] for s in selected], strategy,
                               round_estimator(cfg, rseed), run_dir / "heatmaps" / f"round_{round_:02d}", device)
        record = {
            "round": round_,
            "strategy": cfg.strategy,
            "seed": cfg.seed,
            "n_annotations": pool.n_annotations,
            "train_size": pool.train_size,
            "pool_size": len(pool),
            "train_entropy_hist": train_hist,
            "val": val,
            "test": test,
            **({"val_per_item": _as_list(val_items), "test_per_item": _as_list(test_items)}
               if cfg.save_per_item else {}),
            "selected": selected,
            "seconds": {"train": round(t1 - t0, 3), "evaluate": round(t2 - t1, 3),
                        "score": round(t3 - t2, 3), "select": round(t4 - t3, 4)},
            "best_step": fitres.best_step,
            f"best_val_{fitres.metric}_during_training": fitres.best_val,
            **({"members": fitres.members} if fitres.members else {}),
        }
        if cfg.warm_start:
            torch.save(model.state_dict(), run_dir / "last_model.pt")
            state = model.state_dict()
        append_record(ledger, record)
        records.append(record)
        if selected:
            pool.label(pool.pool_idx_of([s["dataset_idx"] for s in selected]), round_ + 1)
        bar.update(1)
    bar.close()
    return records


def _save_heatmaps(cfg, model, dataset, dataset_idx, strategy, estimator, out_dir: Path, device: str) -> None:
    """Overlays (image, prediction, uncertainty, ground truth) of the first ``cfg.heatmaps`` picks."""
    idx = list(dataset_idx)[: cfg.heatmaps]
    if not idx:
        return
    from activeseg.report.heatmaps import save_overlay

    fg, maps = uncertainty_maps(model, dataset.images[idx], strategy, estimator, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    for j, d in enumerate(idx):
        img = dataset.images[d]
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
        save_overlay(out_dir / f"{dataset.item_ids[d]}.png", img, fg[j], maps[j],
                     title=f"{dataset.item_ids[d]} ({cfg.strategy})", mask_H_W=dataset.targets[d])
