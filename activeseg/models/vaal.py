"""VAAL's networks (Sinha, Ebrahimi, Darrell 2019): a convolutional VAE and a discriminator on its latent mean.

The reference implementation is fixed to 32 × 32 inputs (four stride-2 convolutions of 128-1024 filters);
this one adapts to any square-ish input and 1 or 3 channels: stride-2 4 × 4 convolutions (batch norm, ReLU)
halve the side until it is at most 4, doubling the filters from ``width`` up to ``max_width``; the input
is zero-padded to a multiple of the total stride and the reconstruction cropped back. The decoder mirrors the
encoder with transposed convolutions and ends in a 1 × 1 convolution (no activation: the images are
normalised, the loss is MSE). The discriminator is the reference's MLP (latent → 512 → 512 → 1, ReLU),
returning logits.

References:
    Sinha, Ebrahimi, Darrell. Variational Adversarial Active Learning. ICCV 2019.
    https://arxiv.org/abs/1904.00370
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VAE", "Discriminator"]


class VAE(nn.Module):
    """Encoder to ``(μ, log σ²)`` of a ``latent``-dimensional Gaussian, decoder back to the image.

    Args:
        in_channels: image channels (1 or 3, or any).
        size: ``(H, W)`` of the images.
        latent: latent dimensions (VAAL: 32).
        width: filters of the first convolution, doubled per level up to ``max_width``.
        max_width: the most filters of a level.
    """

    def __init__(self, in_channels: int, size: tuple[int, int], latent: int = 32, width: int = 32,
                 max_width: int = 256) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        levels = max(1, math.ceil(math.log2(max(self.size) / 4)))
        step = 2 ** levels
        self.padded = tuple(math.ceil(s / step) * step for s in self.size)
        widths = [min(width * 2 ** i, max_width) for i in range(levels)]
        enc, c = [], in_channels
        for w in widths:
            enc += [nn.Conv2d(c, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.encoder = nn.Sequential(*enc)
        self.bottom = (c, self.padded[0] // step, self.padded[1] // step)
        flat = c * self.bottom[1] * self.bottom[2]
        self.mu = nn.Linear(flat, latent)
        self.logvar = nn.Linear(flat, latent)
        self.expand = nn.Linear(latent, flat)
        dec = []
        for w in reversed([widths[0], *widths[:-1]]):  # back up the levels, ending at the first width
            dec += [nn.ConvTranspose2d(c, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.decoder = nn.Sequential(*dec, nn.Conv2d(c, in_channels, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)``, each ``[B, latent]``, of images ``[B, C, H, W]``."""
        pad = (0, self.padded[1] - x.shape[-1], 0, self.padded[0] - x.shape[-2])
        h = self.encoder(F.pad(x, pad)).flatten(1)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` from latents ``[B, latent]``."""
        out = self.decoder(self.expand(z).view(len(z), *self.bottom))
        return out[..., : self.size[0], : self.size[1]]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """``(reconstruction, μ, log σ²)`` with ``z = μ + σ·ε`` (ε from ``generator``)."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return self.decode(mu + eps * torch.exp(0.5 * logvar)), mu, logvar


class Discriminator(nn.Module):
    """Logit that a latent mean comes from a labelled image (latent → 512 → 512 → 1)."""

    def __init__(self, latent: int = 32, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return self.net(mu).squeeze(1)
