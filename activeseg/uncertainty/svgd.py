"""Stein variational gradient descent (Liu & Wang 2016) on flattened parameter vectors.

M particles θ_1..θ_M (each a network's trainable parameters, flattened; batch-norm statistics are not
particles) move along

    φ(θ_i) = (1/M) Σ_j [ k(θ_j, θ_i) ∇_{θ_j} log p(θ_j | D) + ∇_{θ_j} k(θ_j, θ_i) ]

with the RBF kernel ``k(θ_i, θ_j) = exp(-‖θ_i - θ_j‖² / h)`` and the median heuristic
``h = median(‖θ_i - θ_j‖² over all i, j, the zero diagonal included) / log(M + 1)``. The repulsive term
in closed form is ``Σ_j k_ij (θ_i - θ_j) · 2 / h``: it pushes particles apart so the committee does not
collapse onto one mode. An optimiser then steps with ``grad = -φ`` (ascent on the posterior).

Nath et al. (2020) use K = 5 particles with the log of a soft Dice score as the log-likelihood, scaled
by N_train / batch size, plus a Gaussian prior on the weights.

The same update serves function space (D'Angelo & Fortuin 2021, "On Stein variational neural network
ensembles"): the particles are then the members' softmax outputs on the shared batch, flattened, and the
gradients are those of the log-likelihood with respect to the members' logits (bounded, unlike those with
respect to the softmax outputs); each member's parameters then move along its Jacobians' transposes applied
to the drive (through its logits) and the repulsion (through its softmax outputs)
(``activeseg.uncertainty.committee.fit_svgd``). With 1e5 parameters and 5
particles every pairwise weight distance is nearly the same, so the weight-space kernel is ≈ 1/(M + 1)
off the diagonal whatever the networks compute; distances between the members' predictions are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SVGDTerms", "rbf_kernel", "svgd_direction", "svgd_terms"]


@dataclass(frozen=True)
class SVGDTerms:
    """The two parts of φ·M (``drive`` = Σ_j k_ij ∇log p(θ_j), ``repulse`` = Σ_j ∇_{θ_j} k(θ_j, θ_i)), the
    kernel matrix and its bandwidth."""

    drive: torch.Tensor
    repulse: torch.Tensor
    kernel: torch.Tensor
    h: float

    @property
    def direction(self) -> torch.Tensor:
        return (self.drive + self.repulse) / len(self.kernel)

    def summary(self) -> dict:
        """Kernel off-diagonal mean / min / max, the bandwidth and the repulsion-to-drive norm ratio."""
        m = len(self.kernel)
        off = self.kernel[~torch.eye(m, dtype=torch.bool, device=self.kernel.device)]
        if not len(off):
            off = torch.ones(1)
        drive = float(self.drive.norm())
        return {"kernel_offdiag_mean": round(float(off.mean()), 6), "kernel_offdiag_min": round(float(off.min()), 6),
                "kernel_offdiag_max": round(float(off.max()), 6), "bandwidth": float(self.h),
                "repulsion_over_drive": round(float(self.repulse.norm()) / drive, 6) if drive > 0 else None}


def rbf_kernel(theta_M_D: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(K_M_M, h)``: the RBF kernel matrix of the particles and its median-heuristic bandwidth."""
    if theta_M_D.ndim != 2 or len(theta_M_D) < 1:
        raise ValueError(f"particles must be a matrix [M, D] with M ≥ 1, got shape {tuple(theta_M_D.shape)}")
    sq = torch.cdist(theta_M_D, theta_M_D).pow(2)
    m = len(theta_M_D)
    h = float(torch.quantile(sq.flatten(), 0.5)) / math.log(m + 1)  # the mean of the two middle values
    if h <= 0:  # all particles equal (or M = 1): no repulsion, k = 1
        return torch.ones_like(sq), 1.0
    return torch.exp(-sq / h), h


def svgd_terms(theta_M_D: torch.Tensor, grad_logp_M_D: torch.Tensor) -> SVGDTerms:
    """The drive and repulsion of every particle ``[M, D]`` from the particles and their log-posterior
    gradients (in weight space: parameters; in function space: the members' outputs)."""
    if theta_M_D.shape != grad_logp_M_D.shape:
        raise ValueError(f"particles {tuple(theta_M_D.shape)} and gradients {tuple(grad_logp_M_D.shape)} differ")
    k_M_M, h = rbf_kernel(theta_M_D)
    drive = k_M_M @ grad_logp_M_D  # Σ_j k_ij ∇log p(θ_j)  (k symmetric)
    repulse = (k_M_M.sum(1, keepdim=True) * theta_M_D - k_M_M @ theta_M_D) * (2.0 / h)  # Σ_j k_ij (θ_i - θ_j) 2/h
    return SVGDTerms(drive, repulse, k_M_M, h)


def svgd_direction(theta_M_D: torch.Tensor, grad_logp_M_D: torch.Tensor) -> torch.Tensor:
    """φ for every particle ``[M, D]`` from the particles and their log-posterior gradients."""
    return svgd_terms(theta_M_D, grad_logp_M_D).direction
