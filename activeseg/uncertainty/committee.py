"""Query by committee: K trained networks instead of K dropout masks.

Three ways to train the K members (K = 5 by default, as Nath et al. 2020 used):

* ``ensemble``: K networks from different random initialisations on the same labelled set
  (Lakshminarayanan et al. 2017; the "ensemble" of Nath et al. §5.2).
* ``bootstrap``: member k is trained on a bootstrap resample (N draws with replacement) of the
  labelled set, the committee of Suggestive Annotation (Yang et al. 2017).
* ``svgd``: the K networks are particles of Stein variational gradient descent (Liu & Wang 2016),
  trained jointly: every step each particle moves along its log-posterior gradient, averaged over the
  particles with an RBF kernel, plus a repulsive term that keeps the particles apart
  (:mod:`activeseg.uncertainty.svgd`). As in Nath et al. (2020, §4.2) the log-likelihood of a
  segmentation is the log of its soft Dice score, ``Dice = 2 Σ y ŷ / (Σ y² + Σ ŷ²)`` over the foreground
  classes (their Eq. 2), taken per image, summed over the batch and scaled by N_train / batch size (the
  batch's estimate of the whole training set's log-likelihood); the prior is a Gaussian
  ``log p(θ) = -λ/2 ‖θ‖²`` (λ = ``prior_precision``). For classification the log-likelihood is the log
  softmax of the true class, the original SVGD network setting.

A trained committee is a :class:`Committee` module: its ``forward`` returns the log of the members'
mean softmax, so :func:`activeseg.train.predict` and ``evaluate`` score the committee's mean
prediction unchanged, and :class:`CommitteeEstimator` yields the members' probabilities as
``probs_B_K_C_*`` (K = members, dropout off), so every acquisition function takes committee output as
it takes MC-dropout samples: BALD over members is the Jensen-Shannon divergence of the committee,
``max_entropy`` the entropy of its mean, ``vote_entropy`` the entropy of its votes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from activeseg.data.dataset import task_of
from activeseg.data.loader import iter_batches
from activeseg.losses import log_likelihood
from activeseg.uncertainty.svgd import svgd_direction

COMMITTEES = ("ensemble", "bootstrap", "svgd")


class Committee(nn.Module):
    """K trained members; ``forward`` gives the log of their mean softmax (the committee prediction).

    Descriptors and gradient embeddings for batch selection come from the first member (its
    ``descriptor_layer()`` / ``output_layer()``).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}; set --members 2 or more")
        self.members = nn.ModuleList(members)

    def member_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``probs_B_K_C_*`` of the members, in their current mode."""
        return torch.stack([m(x).float().softmax(1) for m in self.members], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_probs(x).mean(1).log()  # softmax(log p̄) = p̄

    @property
    def size_multiple(self) -> int:
        return getattr(self.members[0], "size_multiple", 1)

    def descriptor_layer(self) -> nn.Module:
        return self.members[0].descriptor_layer()

    def output_layer(self) -> nn.Module:
        return self.members[0].output_layer()


@dataclass(frozen=True)
class CommitteeEstimator:
    """One eval-mode pass per member: ``probs_B_K_C_*`` with K = the committee's members.

    ``k`` is the configured committee size (checked against the model); a trained committee is
    deterministic, so there is no seed.
    """

    k: int = 5
    batch_size: int = 16

    def batches(self, model: nn.Module, images_N_C_H_W, device: str = "cpu") -> Iterator[torch.Tensor]:
        if not isinstance(model, Committee):
            raise ValueError(
                f"a committee estimator needs a Committee of trained members, got {type(model).__name__}; train "
                "with --estimator ensemble, bootstrap or svgd (or use mc_dropout)"
            )
        if len(model.members) != self.k:
            raise ValueError(f"the committee has {len(model.members)} members but k={self.k} was asked for")
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for x in iter_batches(images_N_C_H_W, self.batch_size):
                    if isinstance(x, np.ndarray):
                        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
                    yield model.member_probs(x.to(device, dtype=torch.float32)).cpu()
        finally:
            model.train(was_training)


def member_seed(seed: int, member: int) -> int:
    """The initialisation seed of committee member ``member`` in a round seeded ``seed``."""
    return int(np.random.SeedSequence([seed, member]).generate_state(1)[0])


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def fit_svgd(
    members: Sequence[nn.Module],
    images: np.ndarray,
    targets: np.ndarray,
    val_images: np.ndarray,
    val_targets: np.ndarray,
    cfg,
    generator: torch.Generator,
    device: str = "cpu",
    prior_precision: float = 1.0,
    progress=None,
    repulsion: bool = True,
):
    """Train the members jointly as SVGD particles for ``cfg.steps_for(N)`` steps (see the module doc).

    Every step draws one batch (shared by the particles, augmented as ``cfg.augment`` says), computes
    each particle's ∇ log p(θ | D) = N/B Σ_b ∇ log-lik + ∇ log-prior, turns them into the SVGD
    direction φ and lets Adam (``cfg.lr``, no weight decay: the prior is the regulariser) step along it.
    The committee's mean prediction is validated every ``cfg.eval_every`` steps; ``cfg.checkpoint``
    keeps the best (all particles from the same step) or the last weights. ``repulsion=False`` replaces
    the kernel by the identity: each particle follows its own log-posterior gradient, an ensemble with
    exactly the SVGD objective (the control of ``benchmarks/svgd_vs_ensemble.py``).

    Returns:
        a :class:`activeseg.train.FitResult` of the committee.
    """
    from activeseg.train import PRIMARY_METRIC, FitResult, dropout_generator, evaluate, training_batches
    from activeseg.uncertainty.dropout import seeded_dropout

    if len(images) == 0:
        raise ValueError("cannot train on an empty training set; label at least one image")
    if prior_precision < 0:
        raise ValueError(f"prior_precision={prior_precision}; the Gaussian prior's precision must be ≥ 0")
    committee = Committee(members).to(device)
    n = len(images)
    steps = cfg.steps_for(n)
    task = task_of(targets)
    metric = PRIMARY_METRIC[task]
    keep_last = cfg.checkpoint == "last"
    params = [[p for p in m.parameters() if p.requires_grad] for m in members]
    opt = torch.optim.Adam([p for ps in params for p in ps], lr=cfg.lr)
    scale = n / cfg.batch_size
    best = FitResult(best_val=-1.0, best_step=0, metric=metric)
    best_state = copy.deepcopy(committee.state_dict())
    with seeded_dropout(committee, dropout_generator(generator, device)):
        for step, x, y in training_batches(images, targets, cfg, steps, generator, device):
            grads, loglik_mean = [], 0.0
            for m, ps in zip(members, params, strict=True):
                m.train()
                loglik = log_likelihood(m(x), y)
                log_post = scale * loglik.sum() - 0.5 * prior_precision * sum((p**2).sum() for p in ps)
                grads.append(_flat(torch.autograd.grad(log_post, ps)))
                loglik_mean += float(loglik.detach().mean()) / len(members)
            with torch.no_grad():
                theta = torch.stack([_flat(ps) for ps in params])
                phi = svgd_direction(theta, torch.stack(grads)) if repulsion else torch.stack(grads)
                for ps, phi_i in zip(params, phi, strict=True):
                    offset = 0
                    for p in ps:
                        p.grad = -phi_i[offset : offset + p.numel()].view_as(p).clone()
                        offset += p.numel()
            opt.step()
            if (cfg.eval_every > 0 and step % cfg.eval_every == 0) or step == steps:
                score = evaluate(committee, val_images, val_targets, device=device)[1][metric]
                spread = float(theta.std(0).mean())
                best.history.append({"step": step, "loglik": loglik_mean, f"val_{metric}": score,
                                     "particle_spread": spread})
                if keep_last and step == steps:
                    best.best_val, best.best_step = score, step
                elif not keep_last and score > best.best_val:
                    best.best_val, best.best_step = score, step
                    best_state = copy.deepcopy(committee.state_dict())
            if progress is not None:
                progress(step)
    if not keep_last:
        committee.load_state_dict(best_state)
    committee.train()
    return best


def fit_committee(
    kind: str,
    members: Sequence[nn.Module],
    images: np.ndarray,
    targets: np.ndarray,
    val_images: np.ndarray,
    val_targets: np.ndarray,
    cfg,
    generator: torch.Generator,
    device: str = "cpu",
    num_classes: int | None = None,
    prior_precision: float = 1.0,
):
    """Train the members in place as an ``ensemble``, ``bootstrap`` committee or ``svgd`` particles.

    Ensemble and bootstrap members are trained one after the other with :func:`activeseg.train.fit`
    (each its own checkpoint), each from its own generator drawn from ``generator``; the result's
    ``best_val`` is the committee's mean prediction on the validation set and ``members`` lists each
    member's best step and score.
    """
    from activeseg.train import PRIMARY_METRIC, FitResult, evaluate, fit

    if kind not in COMMITTEES:
        raise ValueError(f"unknown committee '{kind}'; valid: {', '.join(COMMITTEES)}")
    if kind == "svgd":
        return fit_svgd(members, images, targets, val_images, val_targets, cfg, generator, device, prior_precision)
    seeds = torch.randint(2**62, (len(members),), generator=generator).tolist()
    results = []
    for m, s in zip(members, seeds, strict=True):
        gen = torch.Generator().manual_seed(s)
        x, y = images, targets
        if kind == "bootstrap":
            resample = torch.randint(len(images), (len(images),), generator=gen).numpy()
            x, y = images[resample], targets[resample]
        results.append(fit(m, x, y, val_images, val_targets, cfg, gen, device, num_classes=num_classes))
    metric = PRIMARY_METRIC[task_of(targets)]
    score = evaluate(Committee(members), val_images, val_targets, device=device)[1][metric]
    return FitResult(best_val=score, best_step=int(np.median([r.best_step for r in results])), metric=metric,
                     members=[{"best_step": r.best_step, f"best_val_{metric}": r.best_val} for r in results])
