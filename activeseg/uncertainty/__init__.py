"""Uncertainty methods: estimators yielding ``probs_B_K_C_*`` batches (MC dropout, a deterministic pass,
committees of ensemble, bootstrap or SVGD members) and the registry pairing each with how it trains."""

from activeseg.uncertainty.committee import COMMITTEES, Committee, CommitteeEstimator, fit_committee
from activeseg.uncertainty.dropout import has_dropout
from activeseg.uncertainty.estimators import Deterministic, MCDropout
from activeseg.uncertainty.methods import UNCERTAINTY_METHODS, UncertaintyMethod, get_estimator, get_method

__all__ = ["COMMITTEES", "UNCERTAINTY_METHODS", "Committee", "CommitteeEstimator", "Deterministic", "MCDropout",
           "UncertaintyMethod", "fit_committee", "get_estimator", "get_method", "has_dropout"]
