"""The acquisition engine: one active-learning round, without file I/O, for every front end.

From the typed settings (:class:`~activeseg.config.SimConfig`) an :class:`Engine` builds the model, the
uncertainty method (registry ``activeseg.uncertainty.methods``) and the strategy (registry
``activeseg.acquisition.strategies``), and exposes the round as calls that take data and a seed and
return results: :meth:`Engine.fit` (train on the labelled items), :meth:`Engine.evaluate`,
:meth:`Engine.propose` (score the candidates and pick ``k``, giving the strategy whatever it declares it
needs), :meth:`Engine.propose_regions` (windows of the candidates, for region strategies),
:meth:`Engine.pseudo_labels` (CEAL's confident labels) and :meth:`Engine.maps` (heatmaps). The simulation
loop, ``suggest`` and the server call these;
none of them scores or selects on its own. Randomness comes only from the seeds passed in.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, is_dataclass, replace

import numpy as np
from torch import nn

from activeseg.acquisition import get_strategy
from activeseg.config import SimConfig
from activeseg.data.dataset import ImageDataset, pad_to_multiple
from activeseg.models import DEFAULT_MODEL, build_model
from activeseg.scoring import score_and_summarize, uncertainty_maps
from activeseg.uncertainty import get_method, has_dropout
from activeseg.uncertainty.committee import SVGD_KERNELS, SVGD_OBJECTIVES
from activeseg.uncertainty.estimators import Deterministic, MCDropout

# Flat config keys that are strategy settings (key -> the strategy's own name for it).
STRATEGY_KEYS = {"reduction": "reduction", "sampling": "sampling", "temperature": "temperature",
                 "candidates": "candidates", "beta": "beta", "alpha": "alpha", "mi_bins": "bins"}


def round_seed(seed: int, round_: int) -> int:
    """The seed of one round's randomness (rounds of different run seeds never collide)."""
    return int(np.random.SeedSequence([seed, round_]).generate_state(1)[0])


def make_strategy(cfg: SimConfig):
    """The configured strategy: a flat key (``--beta``) counts when it differs from its config default, the
    ``[strategy]`` table (``strategy_options``) always; ``get_strategy`` rejects a setting the strategy does
    not take (e.g. ``--sampling`` with ``coreset``) and lists the ones it does."""
    defaults = {f.name: f.default for f in fields(SimConfig)}
    options = {}
    for key, name in STRATEGY_KEYS.items():
        value = getattr(cfg, key)
        if value != defaults[key] and not (key == "reduction" and cfg.strategy == "random"):
            options[name] = value
    options.update(cfg.strategy_options)
    strategy = get_strategy(cfg.strategy, **options)
    if getattr(strategy, "unit", "image") == "region":  # the query unit's geometry, unless the table sets it
        geometry = {"size": cfg.region_size, "stride": cfg.region_stride, "iou_max": cfg.region_iou_max,
                    "labelled": cfg.region_labelled}
        strategy = replace(strategy, **{k: v for k, v in geometry.items() if k not in cfg.strategy_options})
    return strategy


def check_task(cfg: SimConfig, task: str) -> str:
    """``task`` (the dataset's); an error if ``cfg.task`` names another one."""
    if cfg.task not in ("auto", "segmentation", "classification"):
        raise ValueError(f"task '{cfg.task}' is not one of auto, segmentation, classification")
    if cfg.task not in ("auto", task):
        raise ValueError(f"task '{cfg.task}' does not fit dataset '{cfg.dataset}', which is a {task} dataset; "
                         f"use --task {task} or --task auto")
    return task


@dataclass(frozen=True)
class Selection:
    """What :meth:`Engine.propose` picked.

    Attributes:
        indices: positions in the candidates, in pick order (``min(k, N)`` distinct).
        scores: the strategy's score of every candidate ``[N]`` (zeros when the strategy needs none).
        measures: per candidate, the mean of each map asked for in ``measures`` (same MC passes).
        seconds: ``score`` (passes and what the strategy needs) and ``select``.
    """

    indices: np.ndarray
    scores: np.ndarray
    measures: dict[str, np.ndarray]
    seconds: dict[str, float]


@dataclass(frozen=True)
class RegionSelection:
    """What :meth:`Engine.propose_regions` picked: the :class:`~activeseg.acquisition.region_strategy.RegionPick`
    (regions' ``item`` = position in the candidates), which cost model priced them (None: not cost-aware),
    and the seconds spent scoring and selecting."""

    pick: object
    cost_source: str | None
    seconds: dict[str, float]


@dataclass(frozen=True)
class _WholeImages:
    """Scores whole images of any size one by one: each is padded to the model's size multiple and the
    probabilities are cropped back (``probs_1_K_C_*`` per image)."""

    inner: object
    multiple: int

    def batches(self, model, images, device: str = "cpu"):
        for img in images:
            padded = pad_to_multiple(np.asarray(img, dtype=np.float32), self.multiple)
            crop = (..., *(slice(0, side) for side in img.shape[1:]))
            for probs in self.inner.batches(model, padded[None], device):
                yield probs[crop]


def _stack(images, strategy: str) -> np.ndarray:
    """The images as one array; an error when their sizes differ."""
    if isinstance(images, np.ndarray):
        return images
    if len({np.shape(im) for im in images}) > 1:
        raise ValueError(f"strategy {strategy!r} compares images pixel by pixel and needs them all of one size; "
                         "tile the images (--patch-size) or pick another strategy")
    return np.asarray(images, dtype=np.float32)


SOURCE_METRICS = ("dice", "miou", "instance_f1", "aji", "accuracy")
"""The metrics the ledger also records per source (``dice@cells3d``)."""


class Engine:
    """One active-learning round from typed settings; no files, no progress bars, no thread settings.

    Args:
        cfg: the run settings; the strategy and the uncertainty method are built (and checked) here.
    """

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.method = get_method(cfg.estimator)
        self.strategy = make_strategy(cfg)
        self.method.estimator(cfg, 0)  # a bad scoring setting fails here, before any training
        for key, valid in (("svgd_objective", SVGD_OBJECTIVES), ("svgd_kernel", SVGD_KERNELS)):
            if getattr(cfg, key) not in valid:
                raise ValueError(f"{key} '{getattr(cfg, key)}' is not one of {', '.join(valid)}")
        if cfg.test_mc_samples > 0 and self.method.sampler is not MCDropout:
            raise ValueError(f"--test-mc-samples is for MC dropout; a {cfg.estimator} committee is evaluated by "
                             "its members' mean prediction: leave --test-mc-samples at 0")

    def strategy_settings(self) -> dict:
        """Every setting of the strategy (its defaults included), as ``strategy.json`` records them."""
        return asdict(self.strategy) if is_dataclass(self.strategy) else {
            "name": self.strategy.name}

    # -- models ----------------------------------------------------------------------------------------
    def new_network(self, dataset: ImageDataset, seed: int) -> nn.Module:
        """One freshly initialised network for ``dataset`` (``cfg.model`` or the task's default)."""
        cfg = self.cfg
        task = check_task(cfg, dataset.task)
        name = DEFAULT_MODEL[task] if cfg.model == "auto" else cfg.model
        if name in DEFAULT_MODEL.values() and name != DEFAULT_MODEL[task]:
            raise ValueError(f"model '{name}' does not do {task}; use --model {DEFAULT_MODEL[task]} (or auto)")
        kwargs = {"in_channels": dataset.in_channels, "num_classes": dataset.num_classes,
                  "spatial_dims": dataset.spatial_dims}
        if name == "unet":
            kwargs.update(depth=cfg.depth, base_filters=cfg.base_filters, dropout=cfg.dropout, residual=cfg.residual,
                          norm=cfg.norm)
        else:  # the Gal et al. CNN has the paper's fixed dropout rates; it needs the input side
            kwargs.update(image_size=int(dataset.images.shape[-1]), kernel_size=cfg.gal_kernel, pool=cfg.gal_pool,
                          hidden=cfg.gal_hidden)
        return build_model(name, seed=seed, **kwargs)

    def new_model(self, dataset: ImageDataset, seed: int) -> nn.Module:
        """The method's untrained model: one network, or a committee of ``cfg.members``."""
        return self.method.build(lambda s: self.new_network(dataset, s), seed, self.cfg.members)

    def fit(self, dataset: ImageDataset, train_idx: np.ndarray, val_idx: np.ndarray, seed: int,
            device: str = "cpu", init_state: dict | None = None, targets=None):
        """A model trained on ``train_idx`` (dataset indices, duplicates allowed) with the round's seed;
        ``targets``: their training targets when they are not the dataset's (partial labels, pseudo-labels).

        Returns:
            (model, :class:`~activeseg.train.FitResult`); the model holds the best-validation weights
            (``cfg.checkpoint = "last"``: the final ones).
        """
        import torch

        model = self.new_model(dataset, seed)
        if init_state is not None:
            model.load_state_dict(init_state)
        gen = torch.Generator().manual_seed(seed)  # batches, augmentation and dropout derive from it
        targets = dataset.targets[train_idx] if targets is None else targets
        if len(targets) != len(train_idx):
            raise ValueError(f"{len(targets)} training targets for {len(train_idx)} training items")
        result = self.method.fit(model, dataset.images[train_idx], targets,
                                 dataset.images[val_idx], dataset.targets[val_idx], self.cfg.train_config(), gen,
                                 device, dataset.num_classes, self.cfg)
        return model, result

    # -- estimators ------------------------------------------------------------------------------------
    def estimator(self, seed: int, consistent: bool = False):
        """The method's sampler for a round seeded ``seed`` (``consistent``: shared masks across items)."""
        return self.method.estimator(self.cfg, seed, consistent)

    def eval_estimator(self, seed: int):
        """None (dropout off, the weight-scaling approximation) or MC dropout with ``cfg.test_mc_samples``."""
        if self.cfg.test_mc_samples <= 0:
            return None
        return MCDropout(k=self.cfg.test_mc_samples, batch_size=max(self.cfg.score_batch_size, 64), seed=seed,
                         consistent=self.cfg.consistent_masks)

    def evaluate(self, model: nn.Module, dataset: ImageDataset, idx: np.ndarray, seed: int, device: str = "cpu"):
        """Per-item metrics and their summary on the items ``idx`` (see :func:`activeseg.train.evaluate`).

        With ``cfg.source_weighting = "equal"`` and items from several sources (the item-id prefix before
        the first ``_``), the summary is the mean over sources of each source's mean, and it also holds each
        source's own means of the headline metrics as ``<metric>@<source>``. With ``cfg.eval_over =
        "volume"`` a segmentation source's items are scored together, as one region (per source under
        ``equal``, else all at once).
        """
        from activeseg.metrics import by_source
        from activeseg.train import evaluate

        if self.cfg.source_weighting not in ("equal", "items"):
            raise ValueError(f"source_weighting '{self.cfg.source_weighting}' is not one of equal, items")
        sources = [dataset.item_ids[i].split("_", 1)[0] for i in idx]
        per_source = self.cfg.source_weighting == "equal" and len(set(sources)) > 1
        per_item, summary = evaluate(model, dataset.images[idx], dataset.targets[idx], device=device,
                                     estimator=self.eval_estimator(seed), class_names=dataset.class_names,
                                     over=self.cfg.eval_over, groups=sources if per_source else None)
        if per_source:
            equal, own = by_source(per_item, sources)
            first = next(iter(own))  # scores pooled per source (eval_over = volume) are already in the summary
            summary.update({k: v for k, v in equal.items() if f"{k}@{first}" not in summary})
            summary.update({f"{m}@{src}": v[m] for src, v in own.items() for m in SOURCE_METRICS
                            if m in v and f"{m}@{src}" not in summary})
            if "accuracy" in summary:  # classification: keep the error consistent with the accuracy
                summary["error"] = 1.0 - summary["accuracy"]
        return per_item, summary

    def histogram_estimator(self, model: nn.Module, seed: int):
        """The round's sampler, or one deterministic pass for a model without dropout."""
        if self.method.sampler is MCDropout and not has_dropout(model):
            return Deterministic(batch_size=self.cfg.score_batch_size)
        return self.estimator(seed)

    # -- acquisition -----------------------------------------------------------------------------------
    def propose(self, model: nn.Module, candidates, labelled, k: int, seed: int, device: str = "cpu",
                measures: tuple[str, ...] = ()) -> Selection:
        """Score the candidates and pick ``k`` of them with the strategy.

        Args:
            model: the round's trained model.
            candidates: images ``[N, C, *S]``, or a list of ``[C, *S]`` images of different sizes (whole
                images: each padded to the model's size multiple and its maps cropped back).
            labelled: the labelled images ``[M, C, *S]`` (or a list), each once; read by strategies that
                declare ``labeled_descriptors`` or ``train_images``.
            k: items to pick.
            seed: the round's seed: it fixes the dropout masks and the selector's ``numpy`` generator.
            measures: heuristic names whose per-item mean maps to report from the same passes.
        """
        strategy = self.strategy
        if getattr(strategy, "unit", "image") == "region":
            raise ValueError(f"strategy {strategy.name!r} picks regions of images, not whole images: the simulation "
                             "runs it (propose_regions); to rank whole images pick another strategy")
        needs = strategy.needs
        t0 = time.perf_counter()
        pixels = {}  # the images themselves, for strategies that compare them pixel by pixel
        if "images" in needs:
            pixels["images"] = _stack(candidates, strategy.name)
        if "train_images" in needs:
            pixels["train_images"] = _stack(labelled, strategy.name)
        candidates, labelled = self._batchable(model, candidates), self._batchable(model, labelled)
        estimator = self._for_input(model, candidates, self.estimator(seed, strategy.consistent))
        scores, summaries, means = score_and_summarize(model, candidates, strategy, estimator, device,
                                                       summarize="probs" in needs, measures=measures)
        extras = {**self._extras(model, candidates, labelled, needs, device), **pixels}
        if "device" in needs:  # strategies that train networks of their own (vaal)
            extras["device"] = device
        if summaries is not None:
            extras["probs"] = summaries
        t1 = time.perf_counter()
        chosen = strategy.select(scores, k, np.random.default_rng(seed), extras=extras)
        return Selection(np.asarray(chosen, dtype=np.int64), scores, means,
                         {"score": t1 - t0, "select": time.perf_counter() - t1})

    def propose_regions(self, model: nn.Module, candidates, labelled, k: int, seed: int, device: str = "cpu",
                        cost_samples=None, scored=None) -> RegionSelection:
        """Score every window of the candidates and pick ``k`` regions with the (region) strategy.

        Args:
            model: the round's trained model.
            candidates: images ``[N, C, H, W]`` or a list of ``[C, H, W]`` (volumes: ``[C, D, H, W]``).
            labelled: per candidate a bool ``[H, W]`` (``[D, H, W]``) of its labelled pixels (or None: none are).
            k: regions to pick.
            seed: the round's seed (dropout masks, random windows).
            cost_samples: ``(features [M, F], costs [M])`` of the regions labelled so far, which the cost
                model of a cost-aware strategy is fitted on (too few or None: the proxy).
            scored: the candidates' ``(mean probabilities, maps)`` when they are made elsewhere (volumes:
                by sliding windows, :func:`activeseg.scoring.sliding_maps`); None: from the model here.
        """
        from activeseg.acquisition.cost import COST_FEATURES, cost_maps, fit_cost

        strategy = self.strategy
        if getattr(strategy, "unit", "image") != "region":
            raise ValueError(f"strategy {strategy.name!r} picks whole items: call propose")
        t0 = time.perf_counter()
        shapes = [tuple(np.shape(im)[1:]) for im in candidates]
        if scored is not None:
            probs, maps = scored
        elif strategy.needs_model:
            probs, maps = self.maps(model, candidates, seed, device)
        else:
            probs, maps = None, [np.zeros(shape) for shape in shapes]
        features, fit = None, None
        if strategy.cost:
            keep = [np.ones(shape) if labelled is None else ~labelled[n] for n, shape in enumerate(shapes)]
            features = [cost_maps(candidates[n], probs[n], maps[n]) * keep[n] for n in range(len(shapes))]
            fit = fit_cost(*(cost_samples or (np.zeros((0, len(COST_FEATURES))), [])))
        t1 = time.perf_counter()
        pick = strategy.pick(list(maps), k, np.random.default_rng(seed), labelled, features, fit)
        return RegionSelection(pick, None if fit is None else fit.source,
                               {"score": t1 - t0, "select": time.perf_counter() - t1})

    def pseudo_labels(self, model: nn.Module, images, seed: int, threshold: float, device: str = "cpu",
                      ignore_index: int = 255) -> list[np.ndarray]:
        """The model's labels where it is confident: per image ``[*S]`` the argmax of the mean prediction
        where its entropy (nats) is below ``threshold``, ``ignore_index`` elsewhere; for classification per
        item the class, or ``ignore_index`` when not confident (CEAL's pseudo-labels)."""
        from activeseg.acquisition.heuristics import max_entropy

        estimator = self.estimator(seed)
        images = self._batchable(model, images)
        out: list[np.ndarray] = []
        for probs in self._for_input(model, images, estimator).batches(model, images, device):
            label = probs.mean(1).argmax(1)
            label[max_entropy(probs) >= threshold] = ignore_index
            out.extend(label.numpy())
        return out

    def maps(self, model: nn.Module, images, seed: int, device: str = "cpu"):
        """``(mean class probabilities [N, C, *S], uncertainty map [N, *S])`` of the images, for heatmaps; lists
        of ``[C, *S]`` and ``[*S]`` for a list of differently sized images."""
        estimator = self.estimator(seed)
        images = self._batchable(model, images)
        if isinstance(images, np.ndarray):
            return uncertainty_maps(model, images, self.strategy, estimator, device)
        wrapped = self._for_input(model, images, estimator)
        pairs = [uncertainty_maps(model, [img], self.strategy, wrapped, device) for img in images]
        return [fg[0] for fg, _ in pairs], [m[0] for _, m in pairs]

    @staticmethod
    def _batchable(model: nn.Module, images):
        """``images`` as one array when they share a shape the model takes as it is; else a list."""
        if images is None:
            return None
        multiple = int(getattr(model, "size_multiple", 1))
        shapes = {tuple(np.shape(im)) for im in images} if not isinstance(images, np.ndarray) else {images.shape[1:]}
        if len(shapes) <= 1 and all(side % multiple == 0 for shape in shapes for side in shape[1:]):
            return images if isinstance(images, np.ndarray) else np.asarray(images, dtype=np.float32)
        return list(images)

    def _for_input(self, model: nn.Module, images, estimator):
        if isinstance(images, np.ndarray):
            return estimator
        return _WholeImages(estimator, int(getattr(model, "size_multiple", 1)))

    def _extras(self, model: nn.Module, candidates, labelled, needs, device: str) -> dict:
        """What the strategy declares it needs besides the scores, from the round's model."""
        from activeseg.descriptors import deterministic_outputs

        batch = max(self.cfg.score_batch_size, 64)
        multiple = int(getattr(model, "size_multiple", 1))

        def outputs(images, want):
            if isinstance(images, np.ndarray):
                return deterministic_outputs(model, images, want, batch, device)
            parts = [deterministic_outputs(model, pad_to_multiple(np.asarray(im, np.float32), multiple)[None], want,
                                           1, device) for im in images]
            return {w: np.concatenate([p[w] for p in parts]) for w in want}

        want = tuple(n for n in ("descriptors", "embedding") if n in needs)
        extras = outputs(candidates, want) if want else {}
        if "labeled_descriptors" in needs:
            extras["labeled_descriptors"] = outputs(labelled, ("descriptors",))["descriptors"]
        return extras
