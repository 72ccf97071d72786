"""Uncertainty estimators yielding ``probs_B_K_C_*`` batches."""

from activeseg.uncertainty.estimators import ESTIMATORS, Deterministic, MCDropout, get_estimator, has_dropout

__all__ = ["ESTIMATORS", "Deterministic", "MCDropout", "get_estimator", "has_dropout"]
