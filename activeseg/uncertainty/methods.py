"""The registry of uncertainty methods: how a method trains its model(s) and how it samples predictions.

Each :class:`UncertaintyMethod` pairs a *trainer* (one network, or a committee of ``members`` networks
trained as an ensemble, on bootstrap resamples, or as SVGD particles) with a *sampler* (MC dropout, one
deterministic pass, or one pass per committee member) and says which run settings the sampler reads. The
engine asks the registry, never the method's name; adding a method is one entry here (and its class).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from activeseg.uncertainty.committee import Committee, CommitteeEstimator, fit_committee, member_seed
from activeseg.uncertainty.estimators import Deterministic, MCDropout


def _fit_single(model, images, targets, val_images, val_targets, cfg, generator, device, num_classes, settings):
    from activeseg.train import fit

    return fit(model, images, targets, val_images, val_targets, cfg, generator, device=device,
               num_classes=num_classes)


def _committee_fitter(kind: str) -> Callable:
    def fit_(model, images, targets, val_images, val_targets, cfg, generator, device, num_classes, settings):
        return fit_committee(kind, list(model.members), images, targets, val_images, val_targets, cfg, generator,
                             device=device, num_classes=num_classes, prior_precision=settings.prior_precision,
                             svgd_objective=settings.svgd_objective, svgd_kernel=settings.svgd_kernel)

    return fit_


@dataclass(frozen=True)
class UncertaintyMethod:
    """One registered uncertainty method.

    Args:
        name: the registry name (``--estimator``).
        sampler: the estimator class that turns (model, images) into ``probs_B_K_C_*``.
        fitter: trains the model in place: ``(model, images, targets, val_images, val_targets, train_cfg,
            generator, device, num_classes, settings) -> FitResult``.
        committee: the model is a :class:`Committee` of ``settings.members`` networks.
        options: the sampler's keyword arguments from the run settings, the round's seed and whether the
            strategy needs consistent samples.
        summary: one line for ``--help`` and errors.
    """

    name: str
    sampler: type
    fitter: Callable
    committee: bool
    options: Callable
    summary: str

    def build(self, make_model: Callable[[int], nn.Module], seed: int, members: int) -> nn.Module:
        """A fresh model: ``make_model(seed)``, or a committee of ``members`` models from their own seeds."""
        if not self.committee:
            return make_model(seed)
        return Committee([make_model(member_seed(seed, i)) for i in range(members)])

    def fit(self, model: nn.Module, images: np.ndarray, targets: np.ndarray, val_images: np.ndarray,
            val_targets: np.ndarray, train_cfg, generator, device: str, num_classes: int, settings):
        """Train ``model`` (from :meth:`build`) in place; the :class:`~activeseg.train.FitResult`."""
        return self.fitter(model, images, targets, val_images, val_targets, train_cfg, generator, device,
                           num_classes, settings)

    def estimator(self, settings, seed: int, consistent: bool = False):
        """The sampler for one round, its settings read from ``settings`` (a :class:`SimConfig`)."""
        return self.sampler(**self.options(settings, seed, consistent))


def _mc_options(s, seed: int, consistent: bool) -> dict:
    return {"k": s.mc_samples, "batch_size": s.score_batch_size, "seed": seed,
            "consistent": consistent or s.consistent_masks, "precision": s.score_precision,
            "compile": s.compile_scoring}


def _committee_options(s, seed: int, consistent: bool) -> dict:
    return {"k": s.members, "batch_size": s.score_batch_size}  # a trained committee is deterministic


UNCERTAINTY_METHODS: dict[str, UncertaintyMethod] = {
    "mc_dropout": UncertaintyMethod("mc_dropout", MCDropout, _fit_single, False, _mc_options,
                                    "one network, K passes with dropout on (Gal & Ghahramani 2016)"),
    "deterministic": UncertaintyMethod("deterministic", Deterministic, _fit_single, False,
                                       lambda s, seed, consistent: {"batch_size": s.score_batch_size},
                                       "one network, one pass with dropout off (K = 1)"),
    "ensemble": UncertaintyMethod("ensemble", CommitteeEstimator, _committee_fitter("ensemble"), True,
                                  _committee_options, "K networks from different initialisations"),
    "bootstrap": UncertaintyMethod("bootstrap", CommitteeEstimator, _committee_fitter("bootstrap"), True,
                                   _committee_options, "K networks on bootstrap resamples (Yang et al. 2017)"),
    "svgd": UncertaintyMethod("svgd", CommitteeEstimator, _committee_fitter("svgd"), True, _committee_options,
                              "K SVGD particles trained jointly (Nath et al. 2020)"),
}


def get_method(name: str) -> UncertaintyMethod:
    """The registered method ``name``; an unknown name lists the valid ones."""
    if name not in UNCERTAINTY_METHODS:
        valid = ", ".join(f"{n} ({m.summary})" for n, m in UNCERTAINTY_METHODS.items())
        raise ValueError(f"unknown uncertainty method (--estimator) {name!r}; valid: {valid}")
    return UNCERTAINTY_METHODS[name]


def get_estimator(name: str, **kwargs):
    """The sampler of a registered method with these keyword arguments; an argument the sampler does not
    take is an error that lists the ones it does."""
    sampler = get_method(name).sampler
    valid = [f.name for f in dataclasses.fields(sampler) if f.init]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"estimator {name!r} ({sampler.__name__}) takes no {', '.join(unknown)}; "
                         f"valid: {', '.join(valid)}")
    return sampler(**kwargs)
