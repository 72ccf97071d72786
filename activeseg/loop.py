"""One simulated active-learning run: rounds of train → evaluate → score pool → select → label → record.

The round's work is the engine's (:class:`activeseg.engine.Engine`); this module only runs rounds on a
fully labelled dataset, reveals the picked labels and writes the run folder (:mod:`activeseg.records`).
Every round's randomness is derived from ``(seed, round)`` (model initialisation, batch sampling,
augmentation, dropout masks, random picks), so a run resumed from its ledger ends with the same records
as one that never stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from activeseg import annotation, pseudo, records
from activeseg.acquisition.regions import Region
from activeseg.config import SimConfig, saved_config_defaults, unread_settings
from activeseg.data import ImageDataset, Pool, make_split
from activeseg.engine import Engine, round_seed
from activeseg.scoring import entropy_histogram, pick_device

TRAIN_HISTOGRAM_ITEMS = 200


def run_split(cfg: SimConfig, dataset: ImageDataset):
    """The run's initial / pool / validation / test split (see ``activeseg.data.make_split``)."""
    return make_split(dataset, cfg.initial, cfg.split_seed, cfg.seed, max_pool=cfg.max_pool,
                      val_size=cfg.val_size, balanced=cfg.balanced_initial, initial_source=cfg.initial_source)


def _as_list(per_item: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: [round(float(x), 6) for x in v] for k, v in per_item.items()}


def run_reference(cfg: SimConfig, dataset: ImageDataset, run_dir: Path) -> dict:
    """Train once on initial + whole pool; the 'full-pool' score that targets are relative to."""
    saved = records.read_reference(run_dir)
    if saved is not None:
        return saved
    split = run_split(cfg, dataset)
    train_idx = np.concatenate([split.initial, split.pool])
    cfg = cfg.reference_config(len(train_idx))  # its own, larger budget
    engine = Engine(cfg)
    device = pick_device(cfg.device)
    seed = round_seed(cfg.seed, 0)
    t0 = time.perf_counter()
    model, _ = engine.fit(dataset, train_idx, split.val, seed, device)
    _, val = engine.evaluate(model, dataset, split.val, seed, device)
    _, test = engine.evaluate(model, dataset, split.test, seed, device)
    ref = {**{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()},
           "n_annotations": int(len(train_idx)), "steps": cfg.steps_for(len(train_idx)),
           "seconds": round(time.perf_counter() - t0, 2)}
    records.write_reference(run_dir, ref)
    return ref


def _train_sample(train_dataset_idx: np.ndarray, seed: int) -> np.ndarray:
    """At most ``TRAIN_HISTOGRAM_ITEMS`` distinct training items, for the report's Fig. 12 view."""
    unique = np.unique(train_dataset_idx)
    if len(unique) <= TRAIN_HISTOGRAM_ITEMS:
        return unique
    return np.sort(np.random.default_rng([seed, 2]).choice(unique, TRAIN_HISTOGRAM_ITEMS, replace=False))


def _candidates(cfg: SimConfig, pool: Pool, seed: int, regions: bool = False) -> np.ndarray:
    """The pool positions scored this round (Gal et al.'s reference code scored a random subset); for region
    queries every item with pixels left to label."""
    candidates = pool.region_candidates() if regions else pool.candidates(cfg.no_delete)
    if cfg.score_subset is not None and len(candidates) > cfg.score_subset:
        candidates = np.sort(np.random.default_rng([seed, 1]).choice(candidates, cfg.score_subset, replace=False))
    return candidates


def run_simulation(cfg: SimConfig, dataset: ImageDataset, run_dir: str | Path, resume: bool = False,
                   progress: bool = True, until_round: int | None = None,
                   deadline: float | None = None) -> list[dict]:
    """Run (or resume) one strategy × seed; return all ledger records.

    Args:
        cfg: the run's config (strategy and seed included).
        dataset: the full labelled dataset; the split is derived from ``cfg``.
        run_dir: output folder (see :mod:`activeseg.records`).
        resume: continue after the last finished round of an existing ledger.
        progress: show a progress bar over rounds.
        until_round: stop after this round (a later call with ``resume=True`` goes on); default: all.
        deadline: a ``time.time()`` after which no new round starts (the ledger keeps what finished).
    """
    import torch
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    engine = Engine(cfg)  # bad strategy or scoring settings fail here, before any training
    done = records.open_ledger(run_dir, resume)
    records.write_config(run_dir, cfg.to_json(), resume, json.dumps(saved_config_defaults()),
                         may_change=(*records.MAY_CHANGE, *unread_settings(cfg.estimator, cfg.augment, cfg.reference)))
    records.write_strategy(run_dir, engine.strategy_settings(), fresh=not done)
    if getattr(engine.strategy, "unit", "image") == "region" and (cfg.no_delete or dataset.task != "segmentation"):
        raise ValueError(f"strategy {cfg.strategy!r} labels regions of images: it needs a segmentation dataset and "
                         "no --no-delete (a labelled region is never asked for again)")
    device = pick_device(cfg.device)
    split = run_split(cfg, dataset)
    records.write_split(run_dir, split, dataset.item_ids, cfg.split_seed)
    pool = Pool(np.concatenate([split.initial, split.pool]))
    pool.label(pool.pool_idx_of(split.initial), 1)
    spent = annotation.Spent.start(cfg, dataset, split.initial)
    for rec in done:  # replay the picks of finished rounds
        _reveal(pool, dataset, rec["selected"], rec["round"] + 1)
        spent.add(rec["selected"])
    state = None
    if cfg.warm_start and done:
        state = torch.load(run_dir / "last_model.pt", map_location="cpu", weights_only=True)

    bar = tqdm(total=cfg.rounds, initial=len(done), desc=f"{cfg.strategy} seed {cfg.seed}", unit="round",
               disable=not progress, leave=False)
    last = cfg.rounds if until_round is None else min(cfg.rounds, until_round)
    for round_ in range(len(done) + 1, last + 1):
        if deadline is not None and time.time() >= deadline:
            break
        record, model = _round(engine, dataset, split, pool, round_, device, state, run_dir, spent)
        if cfg.warm_start:
            state = model.state_dict()
            torch.save(state, run_dir / "last_model.pt")
        records.append_record(run_dir / records.LEDGER, record)
        done.append(record)
        _reveal(pool, dataset, record["selected"], round_ + 1)
        spent.add(record["selected"])
        bar.update(1)
    bar.close()
    return done


def _reveal(pool: Pool, dataset: ImageDataset, selected: list[dict], round_: int) -> None:
    """The oracle labels a round's picks: whole items, or the ``box`` of each region (a square, or a cube of
    a volume)."""
    whole = [s["dataset_idx"] for s in selected if "box" not in s]
    if whole:
        pool.label(pool.pool_idx_of(whole), round_)
    for s in selected:
        if "box" in s:
            pool.label_region(pool.pool_idx_of(s["dataset_idx"])[0], Region.from_box(0, s["box"]).slices(), round_,
                              dataset.targets.shape[1:])


def _round(engine: Engine, dataset: ImageDataset, split, pool: Pool, round_: int, device: str, state,
           run_dir: Path, spent: annotation.Spent) -> tuple[dict, object]:
    """One round: train, evaluate, histogram, score and pick (except in the last round), heatmaps."""
    cfg = engine.cfg
    seed = round_seed(cfg.seed, round_)
    regions = getattr(engine.strategy, "unit", "image") == "region"
    makes_pseudo = getattr(engine.strategy, "pseudo_labels", False)
    t0 = time.perf_counter()
    train_idx = pool.training_dataset_idx()
    targets = pool.training_targets(dataset.targets, cfg.ignore_index) if pool.partial else None
    made = pseudo.load(run_dir, round_) if makes_pseudo else None
    if made is not None and len(made[0]):  # CEAL: the previous round's confident pseudo-labels train too
        targets = np.concatenate([dataset.targets[train_idx] if targets is None else targets, made[1]])
        train_idx = np.concatenate([train_idx, made[0]])
    model, fitres = engine.fit(dataset, train_idx, split.val, seed, device, state if cfg.warm_start else None,
                               targets)
    t1 = time.perf_counter()
    val_items, val = engine.evaluate(model, dataset, split.val, seed, device)
    test_items, test = engine.evaluate(model, dataset, split.test, seed, device)
    train_hist = entropy_histogram(model, dataset.images[_train_sample(pool.training_dataset_idx(), seed)],
                                   engine.histogram_estimator(model, seed), device)
    t2 = time.perf_counter()
    selected: list[dict] = []
    seconds = {"score": 0.0, "select": 0.0}
    extra: dict = {}
    candidates = _candidates(cfg, pool, seed, regions)
    if round_ < cfg.rounds and len(candidates) and regions:
        selected, seconds = annotation.propose_regions(engine, model, dataset, pool, candidates,
                                                       cfg.query_at(round_), seed, device, spent)
        picked = list(dict.fromkeys(s["dataset_idx"] for s in selected))  # each image once
        _save_heatmaps(engine, model, dataset, picked, seed, run_dir / "heatmaps" / f"round_{round_:02d}", device)
    elif round_ < cfg.rounds and len(candidates):
        cand_dataset_idx = pool.dataset_idx[candidates]
        labelled = dataset.images[np.unique(pool.training_dataset_idx())]
        sel = engine.propose(model, dataset.images[cand_dataset_idx], labelled, cfg.query_at(round_), seed, device)
        seconds = sel.seconds
        picked_dataset_idx = cand_dataset_idx[sel.indices]
        selected = [{"dataset_idx": int(d), "item_id": dataset.item_ids[d], "score": float(sel.scores[c]),
                     **spent.whole_item(d)}
                    for d, c in zip(picked_dataset_idx, sel.indices, strict=True)]
        if dataset.task == "segmentation":
            _save_heatmaps(engine, model, dataset, picked_dataset_idx, seed,
                           run_dir / "heatmaps" / f"round_{round_:02d}", device)
        if makes_pseudo:  # for the next round; labelled items and this round's picks are not pseudo-labelled
            rest = np.setdiff1d(cand_dataset_idx, np.concatenate([pool.dataset_idx[pool.labeled], picked_dataset_idx]))
            *made, extra["pseudo"] = pseudo.make(engine, model, dataset, rest, round_, seed, device, cfg.ignore_index)
            pseudo.save(run_dir, round_ + 1, *made)
    record = {
        "round": round_,
        "strategy": cfg.strategy,
        "seed": cfg.seed,
        "n_annotations": pool.n_annotations,
        "train_size": pool.train_size,
        "pool_size": len(pool),
        **spent.totals(pool),
        "train_entropy_hist": train_hist,
        "val": val,
        "test": test,
        **({"val_per_item": _as_list(val_items), "test_per_item": _as_list(test_items)}
           if cfg.save_per_item else {}),
        "selected": selected,
        **extra,
        "seconds": {"train": round(t1 - t0, 3), "evaluate": round(t2 - t1, 3), "score": round(seconds["score"], 3),
                    "select": round(seconds["select"], 4)},
        "best_step": fitres.best_step,
        f"best_val_{fitres.metric}_during_training": fitres.best_val,
        **({"members": fitres.members} if fitres.members else {}),
    }
    return record, model


def _save_heatmaps(engine: Engine, model, dataset: ImageDataset, dataset_idx, seed: int, out_dir: Path,
                   device: str) -> None:
    """Overlays (image, prediction, uncertainty, ground truth) of the first ``cfg.heatmaps`` picks."""
    idx = list(dataset_idx)[: engine.cfg.heatmaps]
    if not idx:
        return
    from activeseg.report.heatmaps import save_item_overlay

    probs, maps = engine.maps(model, dataset.images[idx], seed, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    for j, d in enumerate(idx):
        save_item_overlay(out_dir / f"{dataset.item_ids[d]}.png", dataset.images[d], probs[j], maps[j],
                          title=f"{dataset.item_ids[d]} ({engine.cfg.strategy})", mask=dataset.targets[d],
                          class_names=dataset.class_names)
