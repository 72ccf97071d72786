"""VAAL, Variational Adversarial Active Learning (Sinha et al. 2019): learn a latent space of labelled and
unlabelled images and a discriminator that tells them apart; ask for the unlabelled images it is surest are
unlabelled.

Each round, from scratch and seeded (:func:`discriminate`), ``steps`` iterations on a batch of labelled and a
batch of unlabelled images (drawn with replacement):

* the VAE, twice per iteration as the reference does: reconstruction MSE + β·KL for both batches, plus
  λ·BCE(D(μ), labelled) for both, so that the encoder fools the discriminator into calling every image
  labelled;
* the discriminator once: BCE(D(μ_labelled), 1) + BCE(D(μ_unlabelled), 0) on the encoder's means.

Both with Adam at 5e-4, β = λ = 1, latent 32 (the paper's settings). The query is the ``k`` candidates with
the lowest D(μ) (:class:`VaalStrategy`); the task model is not used, so no MC passes are made. The
reference's networks are far larger (128-1024 filters) and trained longer; ours default to 16-128 filters,
batches of 32 and 300 iterations, so that a round over 600 patches of 32 px takes about a minute on one busy
CPU core (64-image batches of a 32-filter VAE took five). The MSE is
averaged over pixels and the KL over latent units, so β = 1 weighs them alike whatever the image size
(the reference sums the KL over the latent units).

References:
    Sinha, Ebrahimi, Darrell. Variational Adversarial Active Learning. ICCV 2019, §3 and Algorithm 1.
    https://arxiv.org/abs/1904.00370
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["VaalStrategy", "discriminate"]


def _kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def discriminate(labelled_M_C_H_W, unlabelled_N_C_H_W, seed: int, steps: int = 300, batch_size: int = 32,
                 latent: int = 32, width: int = 16, lr: float = 5e-4, beta: float = 1.0, adversary: float = 1.0,
                 device: str = "cpu") -> np.ndarray:
    """``[N]`` D(μ) of each unlabelled image (probability of "labelled") after training VAAL's VAE and
    discriminator on both sets; the global torch random state is left as it was."""
    from activeseg.models.vaal import VAE, Discriminator

    lab = torch.as_tensor(np.asarray(labelled_M_C_H_W, dtype=np.float32))
    unl = torch.as_tensor(np.asarray(unlabelled_N_C_H_W, dtype=np.float32))
    if len(lab) == 0 or len(unl) == 0:
        raise ValueError(f"VAAL needs labelled and unlabelled images; got {len(lab)} and {len(unl)}")
    if lab.ndim != 4:
        raise ValueError(f"vaal's VAE takes 2-D images [N, C, H, W]; these are {lab.ndim - 2}-D {tuple(lab.shape)}: "
                         "3-D volumes are not supported by vaal, pick another strategy")
    if lab.shape[1:] != unl.shape[1:]:
        raise ValueError(f"labelled images {tuple(lab.shape[1:])} and candidates {tuple(unl.shape[1:])} differ")
    gen = torch.Generator().manual_seed(int(seed))  # batches
    noise = gen if device == "cpu" else torch.Generator(device=device).manual_seed(int(seed))  # the VAE's ε
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        vae = VAE(lab.shape[1], tuple(lab.shape[2:]), latent, width).to(device)
        disc = Discriminator(latent).to(device)
    opt_vae = torch.optim.Adam(vae.parameters(), lr=lr)
    opt_disc = torch.optim.Adam(disc.parameters(), lr=lr)
    ones, zeros = torch.ones(batch_size, device=device), torch.zeros(batch_size, device=device)
    for _ in range(steps):
        lb = lab[torch.randint(len(lab), (batch_size,), generator=gen)].to(device)
        ub = unl[torch.randint(len(unl), (batch_size,), generator=gen)].to(device)
        for _ in range(2):  # the reference's two VAE steps per discriminator step
            loss = 0.0
            for x in (lb, ub):
                recon, mu, logvar = vae(x, noise)
                loss = loss + F.mse_loss(recon, x) + beta * _kl(mu, logvar)
                loss = loss + adversary * F.binary_cross_entropy_with_logits(disc(mu), ones)
            opt_vae.zero_grad(set_to_none=True)
            loss.backward()
            opt_vae.step()
        with torch.no_grad():
            mu_l, mu_u = vae.encode(lb)[0], vae.encode(ub)[0]
        loss_d = (F.binary_cross_entropy_with_logits(disc(mu_l), ones)
                  + F.binary_cross_entropy_with_logits(disc(mu_u), zeros))
        opt_disc.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_disc.step()
    vae.eval()
    disc.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(unl), 256):
            out.append(torch.sigmoid(disc(vae.encode(unl[start:start + 256].to(device))[0])).cpu())
    return torch.cat(out).double().numpy()


@dataclass(frozen=True)
class VaalStrategy:
    """The ``k`` candidates with the lowest D(μ) (see the module docstring for the training).

    Args:
        name: registry name.
        steps: training iterations per round (each: two VAE steps, one discriminator step).
        batch_size: labelled and unlabelled images per iteration (each).
        latent: latent dimensions (VAAL: 32).
        width: the VAE's first filters.
        lr: Adam's learning rate (VAAL: 5e-4).
        beta: weight of the KL term (VAAL: 1).
        adversary: weight λ of the VAE's adversarial term (VAAL: 1).
    """

    name: str = "vaal"
    steps: int = 300
    batch_size: int = 32
    latent: int = 32
    width: int = 16
    lr: float = 5e-4
    beta: float = 1.0
    adversary: float = 1.0

    needs_model: ClassVar[bool] = False
    needs_scores: ClassVar[bool] = False
    consistent: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ("images", "train_images", "device")

    def map(self, probs_N_K_C_S):
        """A zero map: VAAL does not read the task model's predictions."""
        shape = (probs_N_K_C_S.shape[0], *probs_N_K_C_S.shape[3:])
        return torch.zeros(shape) if isinstance(probs_N_K_C_S, torch.Tensor) else np.zeros(shape)

    def score(self, probs_N_K_C_S) -> np.ndarray:
        return np.zeros(probs_N_K_C_S.shape[0])

    def summarize(self, probs_N_K_C_S) -> np.ndarray:
        raise TypeError("vaal reads images, not predictions")

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator, extras=None) -> np.ndarray:
        """``min(k, N)`` candidates, lowest D(μ) first (ties: lower index)."""
        extras = extras or {}
        missing = [n for n in ("images", "train_images") if n not in extras]
        if missing:
            raise ValueError(f"strategy {self.name!r} needs {missing} in extras (the loop provides them)")
        if k < 1:
            raise ValueError(f"k must be a positive number of items, got {k}")
        d = discriminate(extras["train_images"], extras["images"], int(rng.integers(2**31)), self.steps,
                         self.batch_size, self.latent, self.width, self.lr, self.beta, self.adversary,
                         extras.get("device", "cpu"))
        return np.argsort(d, kind="stable")[: min(k, len(d))]
