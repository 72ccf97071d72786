"""Dropout layers that draw from a ``torch.Generator`` passed in, never from the global RNG.

``nn.Dropout`` draws its masks from torch's global generator, which a server answering requests on
threads cannot share. Two replacements, both installed on a model for the duration of a ``with`` block:

* :func:`seeded_dropout` (training): every dropout layer draws ``bernoulli(1 - p)`` from the generator,
  the same arithmetic as ``torch.nn.functional.dropout`` (so a generator seeded ``s`` gives exactly the
  masks ``torch.manual_seed(s)`` gave before).
* :class:`FastDropout` (MC-dropout scoring on an inference copy): keep masks cut from 16-bit uniform
  integers (:func:`keep_mask`), in the activations' own layout.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_FEATURE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of ``model`` with ``p > 0``."""
    return [m for m in model.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]


def has_dropout(model: nn.Module) -> bool:
    return bool(dropout_layers(model))


def _check_supported(layer: nn.Module) -> None:
    if isinstance(layer, nn.AlphaDropout | nn.FeatureAlphaDropout):
        raise ValueError(f"{type(layer).__name__} is not supported for seeded (repeatable) dropout; use "
                         "nn.Dropout or nn.Dropout2d in the model")


def bernoulli_dropout(x: torch.Tensor, p: float, generator: torch.Generator, feature: bool = False) -> torch.Tensor:
    """``F.dropout`` (``feature``: ``F.dropout2d``-style, one draw per item and channel) with masks from
    ``generator``."""
    if p >= 1:
        return x * 0
    shape = (*x.shape[:2], *([1] * (x.ndim - 2))) if feature else x.shape
    noise = torch.empty(shape, dtype=x.dtype, device=x.device) if feature else torch.empty_like(x)
    noise.bernoulli_(1 - p, generator=generator).div_(1 - p)
    return x * noise


@contextlib.contextmanager
def seeded_dropout(model: nn.Module, generator: torch.Generator, layers: list[nn.Module] | None = None):
    """Within the block, every dropout layer of ``model`` (or only ``layers``), in training mode, draws from
    ``generator``."""
    layers = dropout_layers(model) if layers is None else layers
    for layer in layers:
        _check_supported(layer)
        feature = isinstance(layer, _FEATURE)
        layer.forward = (lambda x, layer=layer, feature=feature:
                         bernoulli_dropout(x, layer.p, generator, feature) if layer.training else x)
    try:
        yield model
    finally:
        for layer in layers:
            del layer.forward  # back to the class's forward


def keep_mask(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """A Bernoulli keep mask shaped and strided like ``x``, and the scale ``1 / P(keep)``.

    The mask compares 16-bit uniform integers with a threshold, four of them cut from each 64-bit draw of
    the generator: a quarter of the draws ``rand_like`` makes, with no float conversion. The drop rate is
    ``p`` rounded to a multiple of 2⁻¹⁶ (at most 7.6e-6 away); the returned scale uses that rounded rate,
    so the masked activations stay unbiased.
    """
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    n = x.numel()
    drop = min(max(round(p * 65536), 0), 65535)
    bits = torch.empty(4 * -(-n // 4), dtype=torch.int16, device=x.device)
    bits.view(torch.int64).random_(-(2**63), None, generator=generator)  # every int16 slice uniform
    keep = bits[:n].as_strided(x.shape, x.stride()) >= drop - 32768
    return keep, 65536.0 / (65536 - drop)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the keep mask from :func:`keep_mask`, drawn from ``self.generator``, in the
    input's own layout: the same distribution (up to a 2⁻¹⁶ rounding of ``p``), about twice as fast on a
    CPU as ``bernoulli_`` or ``rand_like`` for channels-last bfloat16 activations."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep, scale = keep_mask(x, self.p, self.generator)
        return x.mul(keep).mul_(scale)


def swap_in_fast_dropout(module: nn.Module) -> None:
    """Replace every plain ``nn.Dropout`` below ``module`` by a :class:`FastDropout` of the same rate."""
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p))
        else:
            swap_in_fast_dropout(child)


@contextlib.contextmanager
def generator_for(model: nn.Module, generator: torch.Generator):
    """Within the block, ``model``'s dropout layers draw from ``generator``: :class:`FastDropout` layers
    through their own attribute, any other dropout layer as :func:`seeded_dropout` does."""
    fast = [m for m in model.modules() if isinstance(m, FastDropout)]
    others = [m for m in dropout_layers(model) if not isinstance(m, FastDropout)]
    for m in fast:
        m.generator = generator
    try:
        with seeded_dropout(model, generator, others):
            yield model
    finally:
        for m in fast:
            m.generator = None


def set_mc_mode(model: nn.Module) -> None:
    """Eval mode (batch norm on running statistics) with the dropout layers on."""
    model.eval()
    for m in model.modules():
        if isinstance(m, DROPOUT_TYPES):
            m.train()
