"""Estimators: turn (model, images) into ``probs_B_K_C_*`` batches.

* ``mc_dropout``: K stochastic forward passes with dropout on and batch norm in eval mode (running
  statistics), Gal & Ghahramani 2016 / Gal et al. 2017 §3.
* ``deterministic``: one pass, dropout off (K = 1); the "deterministic CNN" baseline of Gal et al. §5.2.

Two speed-ups of MC dropout, both exact:

* **Cached deterministic prefix.** A model may expose ``stochastic_split() -> (prefix, suffix)`` with
  ``model(x) == suffix(prefix(x))`` and no dropout in ``prefix`` (the Gal et al. CNN: its convolutions
  come before the first dropout; the U-Net: its first block and pooling). The prefix then runs once per
  batch and only the suffix K times: on the K copies stacked along the batch dimension, or in a loop
  over K when the prefix says ``stack_passes = False`` (the U-Net, whose full-resolution skip would
  cost K copies of memory).
* **Consistent masks** (``consistent=True``): the K dropout masks are drawn once per call and reused for
  every batch, as BatchBALD needs (Kirsch et al. 2019). Scores no longer depend on the batch size or on
  which other items share a batch, and drawing masks stops costing a Bernoulli draw per activation of
  every pool item (on CPU that draw costs more than the dense layers it masks).

Estimators stream: they yield one batch at a time so the whole pool's ``probs_N_K_C_H_W`` is never held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from activeseg.uncertainty.committee import COMMITTEES, CommitteeEstimator

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, _DROPOUT) and m.p > 0 for m in model.modules())


def _set_mc_mode(model: nn.Module) -> None:
    model.eval()
    for m in model.modules():
        if isinstance(m, _DROPOUT):
            m.train()


class _FixedMasks:
    """K dropout masks per dropout layer, drawn on first use and then reused.

    While installed, each dropout layer multiplies its input, viewed as ``[G, B, ...]`` (G = the number of
    masks in use: 1 for pass ``k``, K when the K passes are stacked), by masks ``active`` of its own
    ``[K, ...]`` masks, already scaled by ``1 / (1 - p)``.
    """

    def __init__(self, model: nn.Module, k: int) -> None:
        self.k = k
        self.layers = [m for m in model.modules() if isinstance(m, _DROPOUT) and m.p > 0]
        self.masks: dict[int, torch.Tensor] = {}
        self.active = slice(0, k)

    def _forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        key = id(layer)
        if key not in self.masks:  # the forked, seeded RNG makes the draw repeatable
            keep = torch.rand((self.k, *x.shape[1:]), device=x.device) >= layer.p
            self.masks[key] = keep.to(x.dtype) / (1.0 - layer.p)
        masks = self.masks[key][self.active]
        if masks.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"consistent MC dropout needs every item to have the same shape; a dropout layer saw "
                f"{tuple(x.shape[1:])} after {tuple(masks.shape[1:])} (resize or pad the images)"
            )
        return (x.view(len(masks), -1, *x.shape[1:]) * masks[:, None]).view_as(x)

    def __enter__(self):
        for layer in self.layers:
            layer.forward = lambda x, layer=layer: self._forward(layer, x)
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers:
            del layer.forward  # back to the class's forward


@dataclass(frozen=True)
class MCDropout:
    """K passes with dropout on; ``seed`` fixes the dropout masks so scores repeat run to run.

    Args:
        k: number of stochastic passes (Gal et al. use 20 for MNIST; default 20).
        batch_size: images per forward pass.
        seed: seed of the dropout masks (a forked torch RNG; the global state is left untouched).
        consistent: the same K masks for every item (see the module docstring); default: fresh masks
            for every item and pass, the textbook estimator.
    """

    k: int = 20
    batch_size: int = 16
    seed: int = 0
    consistent: bool = False

    def batches(self, model: nn.Module, images_N_C_H_W, device: str = "cpu") -> Iterator[torch.Tensor]:
        """Yield ``probs_B_K_C_*`` (float32, on CPU) for consecutive batches of the images."""
        if self.k < 1:
            raise ValueError(f"k={self.k}; MC dropout needs at least one pass")
        if not has_dropout(model):
            raise ValueError(
                "MC dropout needs a model with dropout layers (p > 0); add nn.Dropout or use the "
                "'deterministic' estimator"
            )
        split = getattr(model, "stochastic_split", None)
        prefix, suffix = split() if split is not None else (None, model)
        was_training = model.training
        _set_mc_mode(model)
        devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(self.seed)
                fixed = _FixedMasks(suffix, self.k) if self.consistent else contextlib.nullcontext()
                with fixed:
                    for start in range(0, len(images_N_C_H_W), self.batch_size):
                        x = _as_tensor(images_N_C_H_W[start : start + self.batch_size], device)
                        yield self._passes(prefix, suffix, x, fixed).cpu()
        finally:
            model.train(was_training)

    def _passes(self, prefix, suffix, x: torch.Tensor, fixed) -> torch.Tensor:
        """``probs_B_K_C_*`` of one batch."""
        h = x if prefix is None else prefix(x)  # the deterministic part once per batch
        if prefix is not None and getattr(prefix, "stack_passes", True):  # the rest on K stacked copies
            stacked = h.unsqueeze(0).expand(self.k, *h.shape).reshape(-1, *h.shape[1:])
            out = suffix(stacked).float().softmax(1)
            return out.view(self.k, len(x), *out.shape[1:]).transpose(0, 1)
        passes = []
        for i in range(self.k):
            if isinstance(fixed, _FixedMasks):
                fixed.active = slice(i, i + 1)
            passes.append(suffix(h).float().softmax(1))
        return torch.stack(passes, 1)


@dataclass(frozen=True)
class Deterministic:
    """One pass with dropout off: ``probs_B_1_C_*``."""

    batch_size: int = 16
    k: int = 1

    def batches(self, model: nn.Module, images_N_C_H_W, device: str = "cpu") -> Iterator[torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(images_N_C_H_W), self.batch_size):
                    x = _as_tensor(images_N_C_H_W[start : start + self.batch_size], device)
                    yield model(x).float().softmax(1)[:, None].cpu()
        finally:
            model.train(was_training)


def _as_tensor(x, device: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x.to(device, dtype=torch.float32)


ESTIMATORS = {"mc_dropout": MCDropout, "deterministic": Deterministic,
              **{name: CommitteeEstimator for name in COMMITTEES}}


def get_estimator(name: str, **kwargs):
    """A registered estimator; an unknown name lists the valid ones. ``ensemble``, ``bootstrap`` and
    ``svgd`` all score a trained :class:`~activeseg.uncertainty.committee.Committee` (they differ in how the
    loop trains it); their ``k`` is the number of members."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator '{name}'; valid: {sorted(ESTIMATORS)}")
    if name == "deterministic":
        kwargs = {k: v for k, v in kwargs.items() if k == "batch_size"}
    if name in COMMITTEES:
        kwargs = {k: v for k, v in kwargs.items() if k in ("k", "batch_size", "seed")}
    return ESTIMATORS[name](**kwargs)
