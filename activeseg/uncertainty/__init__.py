"""Uncertainty estimators yielding ``probs_B_K_C_*`` batches: MC dropout, a deterministic pass, and
committees (ensemble, bootstrap, SVGD)."""

from activeseg.uncertainty.committee import COMMITTEES, Committee, CommitteeEstimator, fit_committee
from activeseg.uncertainty.estimators import ESTIMATORS, Deterministic, MCDropout, get_estimator, has_dropout

__all__ = ["COMMITTEES", "ESTIMATORS", "Committee", "CommitteeEstimator", "Deterministic", "MCDropout",
           "fit_committee", "get_estimator", "has_dropout"]
